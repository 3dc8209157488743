/** Test helpers: a kernel with the plugin (and plugin-memfd), a VMM with /dev/kvm and /dev/liveupdate. */
import { createMachine, type Machine } from '@liveupdate/hw';
import { Kernel, boot, openLiveupdate, type KexecConfig, type Plugin, type Process } from '@liveupdate/sdk';
import memfd from '@liveupdate/plugin-memfd';
import guestMemfd, {
  KVM_RUN_QUANTUM, createGuest, kvmAbi, kvmVcpuSetQuantum, runOnce, type Guest, type GuestSpec, type RunResult,
} from '../src/index.js';

export { errnoOf, pattern } from '@liveupdate/sdk/testing';
export const CMDLINE = 'kho=on liveupdate=on';
export const { KVM_EXIT_HLT, KVM_EXIT_MMIO, KVM_EXIT_INTR, KVM_EXIT_MEMORY_FAULT } = kvmAbi;

export const plugins = (opts?: Parameters<typeof guestMemfd>[0]): Plugin[] => [memfd(), guestMemfd(opts)];

export interface Outgoing {
  readonly machine: Machine;
  readonly cfg: KexecConfig;
  readonly k1: Kernel;
  readonly p: Process;
  readonly dev: number;
  readonly kvm: number;
}

export function start(opts: { memory?: string; plugins?: Plugin[]; next?: Plugin[] } = {}): Outgoing {
  const machine = createMachine({ memory: opts.memory ?? '1GiB' });
  const ps = opts.plugins ?? plugins();
  const k1 = boot(machine, { cmdline: CMDLINE, plugins: ps, release: '7.1.0' });
  const p = k1.spawn('vmm');
  return { machine, cfg: { cmdline: CMDLINE, plugins: opts.next ?? plugins(), release: '7.2.0' }, k1, p, dev: openLiveupdate(p), kvm: p.open('/dev/kvm') };
}

export interface Incoming { readonly k2: Kernel; readonly p2: Process; readonly dev2: number; readonly kvm2: number }

export function jump(o: Outgoing): Incoming {
  o.k1.kexecJump(o.cfg);
  const k2 = Kernel.boot(o.machine, o.cfg);
  const p2 = k2.spawn('vmm');
  return { k2, p2, dev2: openLiveupdate(p2), kvm2: p2.open('/dev/kvm') };
}

export const TWO_VCPUS: GuestSpec = { vcpus: 2, pagesPerVcpu: 64 };

/** Run a vCPU for at most `insns` instructions (one KVM_RUN with that quantum). */
export function runFor(p: Process, vcpuFd: number, insns: number): RunResult {
  kvmVcpuSetQuantum(p, vcpuFd, insns);
  const r = runOnce(p, vcpuFd);
  kvmVcpuSetQuantum(p, vcpuFd, KVM_RUN_QUANTUM);
  return r;
}

/** Run until the doorbell, then the HLT: the guest's final count. */
export function runToHalt(p: Process, vcpuFd: number): bigint {
  const ring = runOnce(p, vcpuFd);
  if (ring.exit !== KVM_EXIT_MMIO || !ring.mmio) throw new Error(`expected the doorbell, got exit ${ring.exit} (${ring.errno})`);
  const halt = runOnce(p, vcpuFd);
  if (halt.exit !== KVM_EXIT_HLT) throw new Error(`expected HLT, got exit ${halt.exit}`);
  return ring.mmio.data;
}

/** The same guest run to completion without any update: the reference final memory. */
export function referenceRun(spec: GuestSpec): { counts: bigint[]; guest: Guest; p: Process } {
  const o = start();
  const guest = createGuest(o.p, o.kvm, spec);
  return { counts: guest.vcpuFds.map((fd) => runToHalt(o.p, fd)), guest, p: o.p };
}
