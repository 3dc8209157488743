/** Shared setup: a machine with a hypervisor below it, kernels with the mshv plugin, the section's steps. */
import { attachHypervisor, createMachine, type Hypervisor, type Machine } from '@liveupdate/hw';
import { Kernel, type Plugin, type Process } from '@liveupdate/sdk';
import mshv, { mshvRoot, type MshvRoot } from '@liveupdate/plugin-mshv';

export const CMDLINE = 'kho=on liveupdate=on';

export function hvMachine(l1vh: boolean, memory = '8GiB'): { machine: Machine; hv: Hypervisor } {
  const machine = createMachine({ memory });
  return { machine, hv: attachHypervisor(machine, { l1vh }) };
}

export function bootWith(machine: Machine, plugins: Plugin[] = [mshv()], release = '7.1.0'): { k: Kernel; root: MshvRoot; p: Process } {
  const k = Kernel.boot(machine, { cmdline: CMDLINE, plugins, release });
  return { k, root: mshvRoot(k), p: k.spawn('vmm') };
}

/** Deposited runs of the hypervisor and tracked runs of the driver, for equality checks. */
export function depositedRuns(hv: Hypervisor): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  hv.forEachDepositedRun((s, e) => out.push([s, e]));
  return out;
}

export const pagesIn = (runs: ReadonlyArray<readonly [number, number]>): number => runs.reduce((n, [s, e]) => n + e - s, 0);
