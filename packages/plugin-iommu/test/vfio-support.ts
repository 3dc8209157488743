/**
 * The real stack for the end-to-end tests: a machine with a PCI host (DSA-like engines behind
 * root ports) and one VT-d unit, kernels with plugin-memfd, plugin-pci (vfio-pci cdev) and this
 * plugin, and a VMM's set-up through the real uAPI: guest RAM in a sealed memfd mapped with
 * IOMMU_IOAS_MAP_FILE, the engine's cdev bound and attached to a marked HWPT.
 */
import {
  DSA_OPCODE_SEQWRITE, PAGE_SIZE, attachPci, createMachine, dmarOf, pciRegs as R,
  type Machine, type PciHost, type PciTopologySpec, type VtdIommu,
} from '@liveupdate/hw';
import { Kernel, boot, openLiveupdate, type KexecConfig, type Plugin, type Process } from '@liveupdate/sdk';
import memfd, { memfdPagemap, type MemfdPluginOptions } from '@liveupdate/plugin-memfd';
import pci, {
  vfioAttachIommufdPt, vfioBindDevice, vfioBindIommufd, vfioConfigWrite, vfioKeepRunning, vfioMmapPortal, type PciPluginOptions,
} from '@liveupdate/plugin-pci';
import iommu, { type IommuPluginOptions } from '../src/index.js';
import { CMDLINE, GUEST_IOVA, REG_BASE, guestRam, hwptAlloc, ioasAlloc, mapFile, markPreserve, type Passthrough } from './support.js';

export type { Passthrough };

/** dsa0 behind rp0 (bus 1, requester 0x0100), dsa1 behind rp1 (bus 2, requester 0x0200). */
export const TWO_ENGINES: PciTopologySpec = {
  segments: [{
    domain: 0,
    devices: [
      { kind: 'root-port', name: 'rp0', slot: 1, children: [{ kind: 'endpoint', name: 'dsa0', slot: 0, model: 'dsa' }] },
      { kind: 'root-port', name: 'rp1', slot: 2, children: [{ kind: 'endpoint', name: 'dsa1', slot: 0, model: 'dsa' }] },
    ],
  }],
};
export const DSA0 = { bdf: '0000:01:00.0', rid: 0x0100 };
export const DSA1 = { bdf: '0000:02:00.0', rid: 0x0200 };

export interface StackOptions {
  readonly memfd?: MemfdPluginOptions;
  readonly pci?: PciPluginOptions;
  readonly iommu?: IommuPluginOptions;
}

export const stackPlugins = (o: StackOptions = {}): Plugin[] => [memfd(o.memfd), pci(o.pci), iommu(o.iommu)];

export interface Rig {
  readonly machine: Machine;
  readonly host: PciHost;
  readonly unit: VtdIommu;
  readonly k1: Kernel;
  readonly p: Process;
  readonly dev: number;
  readonly next: KexecConfig;
}

/** The hardware only: memory, one VT-d unit covering segment 0, the PCI host with two engines. */
export function platform(): { machine: Machine; host: PciHost; unit: VtdIommu } {
  const machine = createMachine({ memory: '1GiB' });
  const unit = dmarOf(machine).addUnit({ segment: 0, regBase: REG_BASE });
  const host = attachPci(machine, TWO_ENGINES);
  return { machine, host, unit };
}

export function rig(from: StackOptions = {}, to: StackOptions = from): Rig {
  const { machine, host, unit } = platform();
  const k1 = boot(machine, { cmdline: CMDLINE, plugins: stackPlugins(from), release: '7.1.0' });
  const p = k1.spawn('vmm');
  return { machine, host, unit, k1, p, dev: openLiveupdate(p), next: { cmdline: CMDLINE, plugins: stackPlugins(to), release: '7.2.0' } };
}

export function bootNext(r: Rig): { k2: Kernel; p2: Process; dev2: number } {
  const k2 = Kernel.boot(r.machine, r.next);
  const p2 = k2.spawn('vmm');
  return { k2, p2, dev2: openLiveupdate(p2) };
}


/**
 * A VMM passes `engine` through: guest RAM (`pages` pages, filled 0x11, sealed), /dev/iommu, an
 * IOAS with the RAM at GUEST_IOVA, the real vfio cdev bound (VFIO_DEVICE_BIND_IOMMUFD) and
 * attached (VFIO_DEVICE_ATTACH_IOMMUFD_PT) to a HWPT marked for preservation, bus mastering on.
 */
export function passthrough(r: Rig, engine: string, opts: { pages?: number; token?: bigint; mark?: boolean; ram?: number; ifd?: number; ioas?: number } = {}): Passthrough {
  const { p, k1 } = r;
  const pages = opts.pages ?? 64;
  const ram = opts.ram ?? guestRam(p, pages * PAGE_SIZE, 0x11);
  const ifd = opts.ifd ?? p.open('/dev/iommu');
  const ioas = opts.ioas ?? ioasAlloc(p, ifd);
  const cdev = p.open(vfioBindDevice(k1, engine).cdevPath);
  const devid = vfioBindIommufd(p, cdev, ifd);
  if (opts.ioas === undefined) mapFile(p, ifd, ioas, ram, 0, pages * PAGE_SIZE, GUEST_IOVA);
  const hwpt = hwptAlloc(p, ifd, devid, ioas);
  vfioAttachIommufdPt(p, cdev, hwpt);
  if (opts.mark ?? true) markPreserve(p, ifd, hwpt, opts.token ?? 0x5eedn);
  vfioConfigWrite(p, cdev, R.PCI_COMMAND, 2, R.PCI_COMMAND_MEMORY | R.PCI_COMMAND_MASTER);
  return { ram, ifd, ioas, cdev, devid, hwpt };
}

/** The engine writes seq numbers round-robin over `pages` pages of guest RAM (IOVAs, translated by VT-d). */
export function startSeqWrite(r: Rig, engine: string, x: Passthrough, pages: number, startSeq: number, keepRunning = true): void {
  const ring = Array.from({ length: pages }, (_, i) => ({ iova: GUEST_IOVA + i * PAGE_SIZE, length: PAGE_SIZE }));
  if (!vfioMmapPortal(r.p, x.cdev, r.host.engine(engine)).submit({ opcode: DSA_OPCODE_SEQWRITE, ring, startSeq, count: Infinity })) throw new Error('portal refused');
  if (keepRunning) vfioKeepRunning(r.p, x.cdev);
}

/** The pfns backing the first `pages` pages of a memfd (pagemap). */
export function memfdPfns(p: Process, fd: number, pages: number): Set<number> {
  const file = p.file(fd, 'pagemap');
  const out = new Set<number>();
  for (let i = 0; i < pages; i++) out.add(memfdPagemap(file, i * PAGE_SIZE));
  return out;
}

/**
 * The reference model: guest RAM as it must be if the engine's n-th write (seq startSeq + n)
 * landed at slot n mod (pages × 512) of the ring and nothing else touched it.
 */
export function referenceRam(pages: number, fill: number, startSeq: number, lastSeq: number): Uint8Array {
  const out = new Uint8Array(pages * PAGE_SIZE).fill(fill);
  const v = new DataView(out.buffer);
  const slots = pages * (PAGE_SIZE / 8);
  for (let seq = startSeq; seq <= lastSeq; seq++) v.setBigUint64(((seq - startSeq) % slots) * 8, BigInt(seq), true);
  return out;
}
