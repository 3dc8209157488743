/**
 * The VMM side: guest RAM blocks backed by memfds (QEMU's memory-backend-memfd, share=on),
 * and the cpr-luo convention for getting them back — a CPR state memfd at token 1 names every
 * RAM block's token, size and content digest, so the new VMM knows what to retrieve and can
 * prove the guest's memory is intact. The state memfd crosses the kexec as bytes like the rest.
 */
import { createHash } from 'node:crypto';
import { PAGE_SIZE } from '@liveupdate/hw';
import {
  F_ADD_SEALS, MFD_ALLOW_SEALING, MFD_CLOEXEC, memfdAbi, memfdCreate, memfdResidentPages, memfdStore,
} from '@liveupdate/plugin-memfd';
import { getName, preserveFd, retrieveFd, type Process } from '@liveupdate/sdk';

export interface RamBlockSpec {
  readonly name: string;
  readonly size: number;
  /** The guest has written one page in `stride` (1 = every page); the rest are holes. */
  readonly stride: number;
}

export const DEFAULT_RAM: readonly RamBlockSpec[] = [
  { name: 'pc.ram', size: 128 << 20, stride: 16 },
  { name: 'vga.vram', size: 8 << 20, stride: 1 },
];

/** The CPR state memfd's token (cpr-luo reserves token 1 for it). */
export const CPR_STATE_TOKEN = 1;

export interface RamBlock {
  readonly name: string;
  readonly fd: number;
  readonly size: number;
  readonly token: number;
}

interface CprState {
  readonly version: 1;
  readonly vm: string;
  readonly blocks: ReadonlyArray<{ name: string; token: number; size: number; sha256: string }>;
}

const CHUNK = 4 << 20;

/** sha256 of the whole file, read the way a VMM reads guest RAM. */
export function digest(proc: Process, fd: number, size: number): string {
  const h = createHash('sha256');
  for (let off = 0; off < size; off += CHUNK) h.update(proc.pread(fd, Math.min(CHUNK, size - off), off));
  return h.digest('hex');
}

/** What the guest wrote into page `page` of block `name`: different for every page and block. */
function guestPage(name: string, page: number): Uint8Array {
  const words = new Uint32Array(PAGE_SIZE / 4);
  let x = (Math.imul(page + 1, 0x9e3779b1) ^ Math.imul(name.length + name.charCodeAt(0), 0x85ebca6b)) >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    words[i] = x >>> 0;
  }
  return new Uint8Array(words.buffer);
}

export class Vmm {
  private constructor(readonly proc: Process, readonly vm: string, readonly ram: readonly RamBlock[]) {}

  /** Start a VM: one memfd per RAM block, and the guest touches its pages. */
  static launch(proc: Process, vm: string, spec: readonly RamBlockSpec[] = DEFAULT_RAM): Vmm {
    const ram = spec.map((b, i) => {
      const fd = memfdCreate(proc, b.name, MFD_CLOEXEC);
      proc.ftruncate(fd, b.size);
      for (let page = 0; page < b.size / PAGE_SIZE; page += b.stride) memfdStore(proc, fd, guestPage(b.name, page), page * PAGE_SIZE);
      return { name: b.name, fd, size: b.size, token: CPR_STATE_TOKEN + 1 + i };
    });
    return new Vmm(proc, vm, ram);
  }

  residentPages(block: RamBlock): number { return memfdResidentPages(this.proc, block.fd); }

  /**
   * Pause the guest and preserve its RAM into the session (RAM first, as the dependency order
   * asks), then the CPR state memfd naming the blocks, sealed so nobody changes it afterwards.
   */
  preserve(sessionFd: number): CprState {
    for (const b of this.ram) preserveFd(this.proc, sessionFd, b.fd, b.token);
    const state: CprState = {
      version: 1, vm: this.vm,
      blocks: this.ram.map((b) => ({ name: b.name, token: b.token, size: b.size, sha256: digest(this.proc, b.fd, b.size) })),
    };
    const json = new TextEncoder().encode(JSON.stringify(state));
    const fd = memfdCreate(this.proc, 'cpr-state', MFD_CLOEXEC | MFD_ALLOW_SEALING);
    this.proc.pwrite(fd, json, 0);
    this.proc.fcntl(fd, F_ADD_SEALS, memfdAbi.F_SEAL_WRITE | memfdAbi.F_SEAL_GROW | memfdAbi.F_SEAL_SHRINK | memfdAbi.F_SEAL_SEAL);
    preserveFd(this.proc, sessionFd, fd, CPR_STATE_TOKEN);
    return state;
  }

  /**
   * The new VMM after the kexec: read the CPR state memfd, retrieve every RAM block by its
   * token and check its digest. Returns the VMM and, per block, whether the bytes match.
   */
  static resume(proc: Process, sessionFd: number): { vmm: Vmm; session: string; checks: Array<{ name: string; sha256: string; ok: boolean }> } {
    const stateFd = retrieveFd(proc, sessionFd, CPR_STATE_TOKEN);
    const size = proc.lseek(stateFd, 0, 2);
    const state = JSON.parse(new TextDecoder().decode(proc.pread(stateFd, size, 0))) as CprState;
    proc.close(stateFd);
    const ram: RamBlock[] = [];
    const checks = state.blocks.map((b) => {
      const fd = retrieveFd(proc, sessionFd, b.token);
      ram.push({ name: b.name, fd, size: b.size, token: b.token });
      const sha256 = digest(proc, fd, b.size);
      return { name: b.name, sha256, ok: sha256 === b.sha256 && proc.lseek(fd, 0, 2) === b.size };
    });
    return { vmm: new Vmm(proc, state.vm, ram), session: getName(proc, sessionFd), checks };
  }
}
