/**
 * One function's configuration space: 4 KiB of registers with a write mask per byte (as
 * QEMU's PCIDevice.wmask), the power-on image FLR returns to, and side effects the function
 * reacts to (FLR, SR-IOV VF Enable). Little-endian, as PCI is.
 */
import type { Restore } from '../state.js';
import * as R from './regs.js';

export interface ConfigEffects {
  /** Initiate Function Level Reset was written. */
  flr(): void;
  /** A register in [offset, offset+size) changed (after the mask was applied). */
  written?(offset: number, size: number): void;
}

export class PciConfig {
  readonly bytes = new Uint8Array(R.PCI_CFG_SPACE_EXP_SIZE);
  readonly wmask = new Uint8Array(R.PCI_CFG_SPACE_EXP_SIZE);
  /** Bytes FLR does not touch (sticky, or the bridge's bus numbers that FLR of an endpoint never has). */
  private powerOn: Uint8Array | null = null;
  private nextCap = 0;
  private lastExt = -1;
  effects: ConfigEffects | null = null;
  /** Bumped by every change of `bytes` through this class (and by a restore): a restore copies only when it moved. */
  private gen = 0;

  read8(off: number): number { return this.bytes[off] ?? 0xff; }
  read16(off: number): number { return this.read8(off) | (this.read8(off + 1) << 8); }
  read32(off: number): number { return (this.read16(off) | (this.read16(off + 2) << 16)) >>> 0; }

  /** Set a register at build time (not through the mask). */
  init8(off: number, v: number, wmask = 0): void { this.gen++; this.bytes[off] = v & 0xff; this.wmask[off] = wmask & 0xff; }
  init16(off: number, v: number, wmask = 0): void { this.init8(off, v, wmask); this.init8(off + 1, v >> 8, wmask >> 8); }
  init32(off: number, v: number, wmask = 0): void { this.init16(off, v & 0xffff, wmask & 0xffff); this.init16(off + 2, v >>> 16, wmask >>> 16); }

  /** A config write as the bus delivers it: only writable bits change. */
  write(off: number, size: 1 | 2 | 4, value: number): void {
    if (off < 0 || off + size > R.PCI_CFG_SPACE_EXP_SIZE || off % size !== 0) return;
    let flr = false;
    this.gen++;
    for (let i = 0; i < size; i++) {
      const b = (value >>> (8 * i)) & 0xff;
      const o = off + i;
      const m = this.wmask[o] as number;
      this.bytes[o] = ((this.bytes[o] as number) & ~m) | (b & m);
    }
    // Initiate FLR is write-1-to-act and always reads 0.
    const devctl = this.capExp + R.PCI_EXP_DEVCTL;
    if (this.capExp > 0 && off <= devctl + 1 && off + size > devctl + 1 && ((value >>> (8 * (devctl + 1 - off))) & 0x80)) {
      flr = (this.read32(this.capExp + R.PCI_EXP_DEVCAP) & R.PCI_EXP_DEVCAP_FLR) !== 0;
      this.bytes[devctl + 1] = (this.bytes[devctl + 1] as number) & 0x7f;
    }
    this.effects?.written?.(off, size);
    if (flr) this.effects?.flr();
  }

  /** Freeze the built image: what FLR restores. */
  sealPowerOn(): void { this.powerOn = this.bytes.slice(); }

  /** FLR: every register back to its power-on value. */
  resetToPowerOn(): void {
    this.gen++;
    if (this.powerOn) this.bytes.set(this.powerOn);
  }

  /** The registers as they are now (a 4 KiB copy); the restore copies back only if a register changed since. */
  save(): Restore {
    const bytes = this.bytes.slice();
    // The generation at which `bytes` held the copy; it only grows, so equal means untouched since.
    let clean = this.gen;
    return () => {
      if (this.gen === clean) return;
      this.bytes.set(bytes);
      clean = ++this.gen;
    };
  }

  // ---- capabilities ----------------------------------------------------------------------

  capExp = 0;
  capMsix = 0;
  capPm = 0;
  extAcs = 0;
  extAri = 0;
  extSriov = 0;

  addCap(at: number, id: number, size: number): number {
    this.init16(R.PCI_STATUS, this.read16(R.PCI_STATUS) | R.PCI_STATUS_CAP_LIST);
    if (this.nextCap === 0) this.init8(R.PCI_CAPABILITY_LIST, at);
    else this.init8(this.nextCap + 1, at);
    this.init8(at, id);
    this.init8(at + 1, 0);
    this.nextCap = at;
    void size;
    return at;
  }

  addExtCap(at: number, id: number): number {
    this.init32(at, id | (1 << 16));
    if (this.lastExt >= 0) this.init32(this.lastExt, (this.read32(this.lastExt) & 0xfffff) | (at << 20));
    this.lastExt = at;
    return at;
  }

  /** Walk the capability list for `id` (bounded: a looping list ends after 48 hops, as pci_find_capability). */
  findCap(id: number): number {
    let pos = this.read8(R.PCI_CAPABILITY_LIST) & ~3;
    for (let ttl = 48; pos >= 0x40 && ttl > 0; ttl--) {
      if (this.read8(pos) === id) return pos;
      pos = this.read8(pos + 1) & ~3;
    }
    return 0;
  }

  findExtCap(id: number): number {
    let pos = 0x100;
    for (let ttl = (R.PCI_CFG_SPACE_EXP_SIZE - 0x100) / 8; pos >= 0x100 && ttl > 0; ttl--) {
      const hdr = this.read32(pos);
      if (hdr === 0) return 0;
      if ((hdr & 0xffff) === id) return pos;
      pos = hdr >>> 20;
    }
    return 0;
  }
}
