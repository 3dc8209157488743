/**
 * Test helpers: the four-engine rig (two root ports, a switch), a kernel with memfd and pci,
 * a VMM that opens VFIO devices by cdev and binds them noiommu, and a pagemap for memfds.
 */
import { attachPci, createMachine, PAGE_SIZE, pciRegs as R, type Machine, type PciHost, type PciTopologySpec } from '@liveupdate/hw';
import { boot, createSession, openLiveupdate, type Kernel, type Plugin, type Process } from '@liveupdate/sdk';
import memfd, { memfdCreate, memfdPagemap } from '@liveupdate/plugin-memfd';
import pci, { vfioBindDevice, vfioBindIommufd, vfioConfigWrite, type PciPluginOptions } from '../src/index.js';

export { errnoOf, pattern } from '@liveupdate/sdk/testing';

export const CMDLINE = 'kho=on liveupdate=on vfio.enable_unsafe_noiommu_mode=1';

/** Root port rp0 → switch sw0 → dsa0, dsa1; root port rp1 → dsa2, dsa3. */
export const fourEngines: PciTopologySpec = {
  segments: [{
    domain: 0,
    devices: [
      { kind: 'root-port', name: 'rp0', slot: 1, children: [
        { kind: 'switch', name: 'sw0', slot: 0, ports: [
          { slot: 0, name: 'sw0-dp0', children: [{ kind: 'endpoint', name: 'dsa0', slot: 0, model: 'dsa' }] },
          { slot: 1, name: 'sw0-dp1', children: [{ kind: 'endpoint', name: 'dsa1', slot: 0, model: 'dsa' }] },
        ] },
      ] },
      { kind: 'root-port', name: 'rp1', slot: 2, children: [
        { kind: 'endpoint', name: 'dsa2', slot: 0, model: 'dsa' },
        { kind: 'endpoint', name: 'dsa3', slot: 1, model: 'dsa' },
      ] },
    ],
  }],
};

export interface Rig {
  readonly machine: Machine;
  readonly host: PciHost;
  readonly k1: Kernel;
  readonly p: Process;
  readonly dev: number;
  readonly plugins: readonly Plugin[];
}

export function startRig(opts: PciPluginOptions = {}, spec: PciTopologySpec = fourEngines, cmdline = CMDLINE): Rig {
  const machine = createMachine({ memory: '512MiB' });
  const host = attachPci(machine, spec);
  const plugins = [memfd(), pci(opts)];
  const k1 = boot(machine, { cmdline, plugins, release: '7.1.0' });
  const p = k1.spawn('vmm');
  return { machine, host, k1, p, dev: openLiveupdate(p), plugins };
}

/** /proc/<pid>/pagemap for a memfd: the physical address behind a file offset (a VMM pins guest RAM and looks it up for noiommu DMA). */
export function memfdPhys(p: Process, fd: number, offset: number): number {
  const pfn = memfdPagemap(p.file(fd, 'pagemap'), offset);
  if (pfn < 0) throw new Error(`pagemap: offset ${offset} is not resident`);
  return pfn * PAGE_SIZE + (offset % PAGE_SIZE);
}

export function memfdPfns(p: Process, fd: number, pages: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < pages; i++) out.push(memfdPhys(p, fd, i * PAGE_SIZE) / PAGE_SIZE);
  return out;
}

/** A memfd of `pages` pages filled with `fill(i)` per page. */
export function guestRam(p: Process, name: string, pages: number, byte = 0x5a): number {
  const fd = memfdCreate(p, name, 0);
  p.ftruncate(fd, pages * PAGE_SIZE);
  p.pwrite(fd, new Uint8Array(pages * PAGE_SIZE).fill(byte), 0);
  return fd;
}

/** Bind to vfio-pci, open the cdev, bind noiommu, enable memory decoding and bus mastering. */
export function openEngine(k: Kernel, p: Process, name: string, master = true): number {
  const vdev = vfioBindDevice(k, name);
  const fd = p.open(vdev.cdevPath);
  vfioBindIommufd(p, fd, -1);
  vfioConfigWrite(p, fd, R.PCI_COMMAND, 2, R.PCI_COMMAND_MEMORY | (master ? R.PCI_COMMAND_MASTER : 0));
  return fd;
}

export { createSession };
