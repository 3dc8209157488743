/**
 * The PCI core's live update side (drivers/pci/liveupdate.c in David Matlack's series, v6
 * 2026-05-22 and v7 2026-07-10), per kernel: enumeration that inherits bus numbers when devices
 * are incoming, pci_liveupdate_preserve/unpreserve walking to the root, the kexec shutdown that
 * leaves bus mastering on only for preserved devices and their bridges, and
 * pci_liveupdate_finish. The hardware is @liveupdate/hw's PCI host; nothing here crosses the kexec.
 */
import {
  chargeOp, ErrnoError, KernelPanic, PAGE_SIZE, type Kernel,
} from '@liveupdate/sdk';
import { formatBdf, PciBridge, pciHostOf, pciRegs as R, type PciFunction, type PciHost } from '@liveupdate/hw';
import { pciDevKey } from './abi/pci.js';
import { BlockPciSer, FlatPciSer, readPciSerV6, readPciSerV7, type PciSerRead, type PciSerWriter } from './pci-ser.js';

/** struct pci_dev, reduced to what live update needs. */
export class PciDev {
  driver: string | null = null;
  /** Outgoing: this device's refcount in pci_ser (0: not preserved). */
  outgoing = 0;
  /** Incoming: the refcount handed over (0: not incoming). */
  incoming = 0;
  removed = false;
  constructor(readonly hw: PciFunction, readonly domain: number, readonly bdf: number, readonly parent: PciDev | null) {}
  get key(): number { return pciDevKey(this.domain, this.bdf); }
  get name(): string { return formatBdf(this.domain, this.bdf); }
  get isBridge(): boolean { return this.hw instanceof PciBridge; }
  get isVirtfn(): boolean { return this.hw.isVirtfn; }
}

/** Which pci_ser layout this kernel build writes and reads. */
export type PciAbi = 'v6' | 'v7' | 'v6-patch02';

export interface IncomingPci {
  readonly compatible: string;
  readonly version: string;
  readonly read: PciSerRead;
}

export class PciCore {
  readonly devices: PciDev[] = [];
  private readonly byKey = new Map<number, PciDev>();
  writer: PciSerWriter | null = null;
  /** Set at kexec shutdown: preserve and unpreserve are refused from then on. */
  frozen = false;
  /** Incoming records by key, after the FLB was read at enumeration. */
  incoming: Map<number, number> | null = null;
  incomingSource: IncomingPci | null = null;
  /** Incoming devices that have not finished: each holds a reference on the incoming FLB. */
  private incomingRefs = 0;
  incomingReleased = false;
  /** Folios of the incoming pci_ser, restored at retrieve and freed when the last device finished. */
  private readonly restored: Array<{ pfn: number; order: number }> = [];
  /** Bus numbers were read back from bridges, not assigned. */
  inherited = false;

  constructor(readonly kernel: Kernel, readonly host: PciHost | undefined, readonly abi: PciAbi) {}

  private log(level: 'info' | 'warn' | 'err', text: string): void { this.kernel.dmesg.log(level, 'pci', text); }

  byBdf(domain: number, bdf: number): PciDev | undefined { return this.byKey.get(pciDevKey(domain, bdf)); }
  byHw(fn: PciFunction): PciDev | undefined {
    for (const d of this.devices) if (d.hw === fn && !d.removed) return d;
    return undefined;
  }

  // ---- incoming FLB ----------------------------------------------------------------------

  /**
   * pci_liveupdate_flb_retrieve, at enumeration. v6: a failure is a one-time warning and nothing
   * is incoming; v7: panic, since preserved devices may still be doing DMA into memory the new
   * kernel would hand out. No PCI FLB, or one of another ABI: logged once, nothing incoming.
   */
  readIncoming(flbs: ReadonlyArray<{ name: string; data: bigint }>, reads: ReadonlyArray<{ compatible: string; version: string }>): void {
    const match = flbs.map((f) => ({ f, r: reads.find((r) => r.compatible === f.name) })).find((x) => x.r);
    if (!match?.r) {
      const other = flbs.find((f) => f.name.startsWith('pci-'));
      this.log('info', other ? `PCI FLB '${other.name}' is not an ABI this kernel reads: no devices incoming` : 'no incoming PCI FLB: no devices incoming');
      return;
    }
    const { f, r } = match;
    const phys = Number(f.data);
    const mem = this.kernel.machine.memory;
    const v7 = r.version.startsWith('4.');
    let read: PciSerRead;
    if (v7) {
      read = readPciSerV7(mem, phys);
      if (read.problems.length === 0) {
        for (const p of read.pages) {
          const folio = this.kernel.khoIn?.restoreFolio(p.pfn * PAGE_SIZE) ?? null;
          if (!folio) { read.problems.push(`page 0x${(p.pfn * PAGE_SIZE).toString(16)} of the PCI FLB was not preserved`); break; }
          this.restored.push(folio);
        }
      }
    } else {
      // The flat array is one kho_alloc_preserve allocation: its folio bounds the array.
      const folio = this.kernel.khoIn?.restoreFolio(phys) ?? null;
      if (folio) this.restored.push(folio);
      read = folio ? readPciSerV6(mem, phys, PAGE_SIZE * 2 ** folio.order) : { devices: [], problems: [`pci_ser at 0x${phys.toString(16)} is not a preserved folio`], fields: {}, pages: [] };
    }
    if (read.problems.length > 0) {
      if (v7) {
        throw new KernelPanic(`pci: failed to retrieve the PCI FLB (${read.problems[0]}): preserved devices may be doing DMA`);
      }
      this.log('warn', `failed to retrieve the incoming PCI FLB: ${read.problems[0]}; no devices incoming`);
      this.releaseIncoming();
      return;
    }
    const map = new Map<number, number>();
    for (const d of read.devices) map.set(pciDevKey(d.domain, d.bdf), d.refcount);
    this.incoming = map;
    this.incomingSource = { compatible: f.name, version: r.version, read };
  }

  // ---- enumeration ----------------------------------------------------------------------

  /**
   * The bus scan. When any device is incoming, bus numbers are inherited from every bridge
   * (the bus-number space is flat, so all of them); a bridge whose numbers do not fit under its
   * parent is cleared and nothing below it is enumerated. Otherwise the kernel assigns bus
   * numbers depth-first. ARI Forwarding Enable and ACS are left as found when inheriting.
   */
  enumerate(): void {
    if (!this.host) return;
    this.inherited = this.incoming !== null && this.incoming.size > 0;
    for (const seg of this.host.topology.segments) {
      this.scanBus(seg.domain, 0, null, 0, 255, { next: 1 });
    }
    if (this.incoming && this.incomingRefs === 0) this.releaseIncoming();
  }

  private rescanning = false;

  /** echo 1 > /sys/bus/pci/rescan: new functions on buses that already have numbers. */
  rescan(): PciDev[] {
    if (!this.host) return [];
    const before = new Set(this.devices);
    this.rescanning = true;
    try {
      for (const seg of this.host.topology.segments) this.scanBus(seg.domain, 0, null, 0, 255, { next: 1 });
    } finally {
      this.rescanning = false;
    }
    return this.devices.filter((d) => !before.has(d));
  }

  private read(domain: number, bus: number, df: number, off: number, size: 1 | 2 | 4): number {
    chargeOp(this.kernel.machine, 'pciConfigAccess');
    return (this.host as PciHost).topology.configRead(domain, bus, df, off, size);
  }

  private write(dev: PciDev | { domain: number; bdf: number }, off: number, size: 1 | 2 | 4, v: number): void {
    chargeOp(this.kernel.machine, 'pciConfigAccess');
    (this.host as PciHost).topology.configWrite(dev.domain, dev.bdf >> 8, dev.bdf & 0xff, off, size, v);
  }

  /**
   * Returns the highest bus number found below. Two passes, as pci_scan_child_bus: find the
   * functions on the bus, then the bridges; when assigning, every bridge's old numbers are
   * cleared first, so stale ranges cannot capture a bus being numbered anew.
   */
  private scanBus(domain: number, bus: number, parent: PciDev | null, lo: number, hi: number, alloc: { next: number }): number {
    let max = bus;
    const topo = (this.host as PciHost).topology;
    const found: PciDev[] = [];
    for (let slot = 0; slot < 32; slot++) {
      for (let fn = 0; fn < 8; fn++) {
        const df = R.devfn(slot, fn);
        if (this.read(domain, bus, df, R.PCI_VENDOR_ID, 2) === 0xffff) { if (fn === 0) break; continue; }
        const hw = topo.resolve(domain, bus, df);
        if (!hw) continue;
        const known = this.byHw(hw);
        if (known) { found.push(known); if (fn === 0 && !hw.opts.multifunction) break; continue; }
        const dev = new PciDev(hw, domain, R.bdfOf(bus, df), parent);
        this.devices.push(dev);
        this.byKey.set(dev.key, dev);
        this.setupDevice(dev);
        found.push(dev);
        if (fn === 0 && (this.read(domain, bus, df, R.PCI_HEADER_TYPE, 1) & R.PCI_HEADER_TYPE_MFD) === 0) break;
      }
    }
    const bridges = found.filter((d) => d.isBridge);
    if (this.rescanning) {
      // A rescan keeps the numbers the bridges have; a new bridge gets none (no hotplug bus reservation).
      for (const b of bridges) {
        const hb = b.hw as PciBridge;
        if (hb.secondary > bus) max = Math.max(max, this.scanBus(domain, hb.secondary, b, hb.secondary, hb.subordinate, alloc));
        else this.log('warn', `${b.name}: hot-added bridge has no bus numbers; nothing enumerated below`);
      }
      return max;
    }
    if (!this.inherited) for (const b of bridges) this.clearBusNumbers(b);
    for (const b of bridges) max = Math.max(max, this.scanBridge(b, bus, lo, hi, alloc));
    return max;
  }

  private clearBusNumbers(dev: PciDev): void {
    this.write(dev, R.PCI_PRIMARY_BUS, 1, 0);
    this.write(dev, R.PCI_SECONDARY_BUS, 1, 0);
    this.write(dev, R.PCI_SUBORDINATE_BUS, 1, 0);
  }

  private scanBridge(dev: PciDev, bus: number, lo: number, hi: number, alloc: { next: number }): number {
    const b = dev.hw as PciBridge;
    if (this.inherited) {
      const sec = b.secondary;
      const sub = b.subordinate;
      // A bridge must forward a range strictly below its own bus, inside its parent's range.
      if (sec <= bus || sub < sec || sec < lo || sub > hi || sec < alloc.next) {
        this.log('warn', `${dev.name}: bridge bus numbers [${sec}-${sub}] are misconfigured; clearing them, nothing enumerated below`);
        this.clearBusNumbers(dev);
        return bus;
      }
      alloc.next = sec + 1;
      this.scanBus(dev.domain, sec, dev, sec, sub, alloc);
      alloc.next = Math.max(alloc.next, sub + 1);
      return sub;
    }
    const sec = alloc.next++;
    if (sec > hi) {
      this.log('warn', `${dev.name}: no bus number left for the bridge`);
      return bus;
    }
    this.write(dev, R.PCI_PRIMARY_BUS, 1, bus);
    this.write(dev, R.PCI_SECONDARY_BUS, 1, sec);
    this.write(dev, R.PCI_SUBORDINATE_BUS, 1, hi);
    // pci_enable_acs / pci_configure_ari on a fresh boot: the kernel programs what the port supports.
    if (b.config.extAcs) this.write(dev, b.config.extAcs + R.PCI_ACS_CTRL, 2, b.config.read16(b.config.extAcs + R.PCI_ACS_CAP));
    if (b.config.capExp && (b.config.read32(b.config.capExp + R.PCI_EXP_DEVCAP2) & R.PCI_EXP_DEVCAP2_ARI)) {
      this.write(dev, b.config.capExp + R.PCI_EXP_DEVCTL2, 2, R.PCI_EXP_DEVCTL2_ARI);
    }
    // pci_enable_bridge: a bridge forwards memory and DMA for the devices below it.
    this.write(dev, R.PCI_COMMAND, 2, b.command | R.PCI_COMMAND_MEMORY | R.PCI_COMMAND_MASTER);
    const max = this.scanBus(dev.domain, sec, dev, sec, hi, alloc);
    this.write(dev, R.PCI_SUBORDINATE_BUS, 1, max);
    return max;
  }

  /** pci_liveupdate_setup_device: refcount > 0 in the incoming map → incoming, holding an FLB reference. */
  private setupDevice(dev: PciDev): void {
    const rc = this.incoming?.get(dev.key) ?? 0;
    if (rc > 0) {
      dev.incoming = rc;
      this.incomingRefs++;
    }
  }

  /** Add the VFs a PF enabled (sriov_numvfs): they are never scanned, the PF driver creates them. */
  addVirtfns(pf: PciDev): PciDev[] {
    const added: PciDev[] = [];
    for (const vf of pf.hw.vfs) {
      if (this.byHw(vf)) continue;
      const dev = new PciDev(vf, pf.domain, vf.requesterId, pf.parent);
      this.devices.push(dev);
      this.byKey.set(dev.key, dev);
      added.push(dev);
    }
    return added;
  }

  // ---- outgoing --------------------------------------------------------------------------

  /** pci_liveupdate_flb_preserve: v6 sizes the array for every function present now. */
  startOutgoing(): PciSerWriter {
    if (this.writer) return this.writer;
    const present = this.devices.filter((d) => !d.removed).length;
    this.writer = this.abi === 'v7' ? new BlockPciSer(this.kernel) : new FlatPciSer(this.kernel, present);
    return this.writer;
  }

  stopOutgoing(): void {
    this.writer?.destroy();
    this.writer = null;
    for (const d of this.devices) d.outgoing = 0;
  }

  /**
   * pci_liveupdate_preserve(dev), in the series' order: a VF → EINVAL; after the shutdown
   * freeze → EINVAL; an endpoint already preserved → EBUSY; then the device and every bridge up
   * to the root: a preserved bridge gets refcount + 1, a new record may hit ENOSPC (v6). A
   * failure undoes the part of the walk already done.
   */
  preserve(dev: PciDev): void {
    if (dev.isVirtfn) throw new ErrnoError('EINVAL', 'pci_liveupdate_preserve', `${dev.name} is a VF`);
    if (this.frozen) throw new ErrnoError('EINVAL', 'pci_liveupdate_preserve', 'preservation is frozen for kexec');
    const w = this.writer;
    if (!w) throw new ErrnoError('ENOENT', 'pci_liveupdate_preserve', 'the PCI FLB is not preserved');
    if (dev.outgoing > 0) throw new ErrnoError('EBUSY', 'pci_liveupdate_preserve', `${dev.name} is already preserved`);
    const done: PciDev[] = [];
    try {
      for (let d: PciDev | null = dev; d; d = d.parent) {
        if (d.outgoing > 0) w.setRefcount(d.key, d.outgoing + 1);
        else w.add(d.domain, d.bdf, 1);
        d.outgoing++;
        done.push(d);
        chargeOp(this.kernel.machine, 'pciDeviceRecord');
      }
    } catch (e) {
      for (const d of done) this.drop(d);
      throw e;
    }
  }

  private drop(d: PciDev): void {
    const w = this.writer;
    if (!w || d.outgoing === 0) return;
    d.outgoing--;
    if (d.outgoing === 0) w.remove(d.key);
    else w.setRefcount(d.key, d.outgoing);
  }

  /** pci_liveupdate_unpreserve(dev): decrement along the path to the root; a slot at 0 is zeroed. */
  unpreserve(dev: PciDev): void {
    if (this.frozen) throw new ErrnoError('EINVAL', 'pci_liveupdate_unpreserve', 'preservation is frozen for kexec');
    if (dev.outgoing === 0) throw new ErrnoError('EINVAL', 'pci_liveupdate_unpreserve', `${dev.name} is not preserved`);
    for (let d: PciDev | null = dev; d; d = d.parent) this.drop(d);
  }

  /**
   * kexec shutdown (pci_device_shutdown with kexec_in_progress): every device loses bus
   * mastering except the preserved ones and the bridges above them, whose DMA must keep flowing.
   */
  shutdown(): void {
    this.frozen = true;
    for (const d of [...this.devices].reverse()) {
      if (d.removed || d.outgoing > 0 || !d.hw.reachable) continue;
      if (d.hw.busMaster) this.write(d, R.PCI_COMMAND, 2, d.hw.command & ~R.PCI_COMMAND_MASTER);
    }
  }

  // ---- incoming finish -------------------------------------------------------------------

  /** pci_liveupdate_finish(dev): decrement along the path to the root; a device at 0 drops its FLB reference. */
  finish(dev: PciDev): void {
    if (dev.incoming === 0) return;
    for (let d: PciDev | null = dev; d; d = d.parent) {
      if (d.incoming === 0) continue;
      d.incoming--;
      // A device re-enumerated later (hotplug) finds refcount 0: not incoming.
      this.incoming?.set(d.key, d.incoming);
      if (d.incoming === 0 && --this.incomingRefs === 0) this.releaseIncoming();
    }
  }

  /** The last incoming reference is gone: the handed-over pci_ser pages go back to the allocator. */
  private releaseIncoming(): void {
    if (this.incomingReleased) return;
    this.incomingReleased = true;
    for (const f of this.restored.splice(0)) this.kernel.mm.freePages(f.pfn, f.order);
  }

  get outstandingIncoming(): number { return this.incomingRefs; }

  /** Removing a device (hot-unplug, sysfs remove): a preserved one is warned about, as pci_liveupdate_cleanup_device does. */
  remove(dev: PciDev): void {
    if (dev.outgoing > 0 || dev.incoming > 0) {
      this.log('warn', `${dev.name}: destroying a device that is still preserved (${dev.outgoing > 0 ? 'outgoing' : 'incoming'}); drivers must block removal`);
    }
    dev.removed = true;
    this.byKey.delete(dev.key);
  }
}

const cores = new WeakMap<Kernel, PciCore>();

export function pciCoreOf(kernel: Kernel): PciCore {
  const c = cores.get(kernel);
  if (!c) throw new ErrnoError('ENODEV', 'pci', 'the PCI core of this kernel is not set up (is @liveupdate/plugin-pci loaded?)');
  return c;
}

export function createPciCore(kernel: Kernel, abi: PciAbi): PciCore {
  const c = new PciCore(kernel, pciHostOf(kernel.machine), abi);
  cores.set(kernel, c);
  return c;
}

export function hasPciCore(kernel: Kernel): boolean { return cores.has(kernel); }
