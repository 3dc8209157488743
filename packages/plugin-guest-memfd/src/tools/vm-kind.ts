/**
 * The scenario object 'kvm-vm': a VM with vCPUs running the counter guest in guest_memfd RAM.
 * Kernel A creates it, lets each vCPU run `pauseAfter` instructions, and preserves the VM file
 * (under `vmToken`) and its guest_memfd (under `token`: the object is the guest RAM it checks), in
 * one of the VMM's two flows:
 *  - 'pause': pause the vCPUs, then preserve (recommended by Documentation/liveupdate/vmm.rst);
 *  - 'relaxed': preserve, then run until the vCPUs exit (a memory fault once they need a new
 *    page under guest_memfd_luo_v1), then pause.
 * The VMM keeps the vCPU registers in the guest_memfd page after guest RAM (no memslot maps it),
 * so they cross the kexec as bytes. Kernel B retrieves the guest_memfd first (its VM comes on
 * demand), rebinds it at gpa 0, recreates the vCPUs, and runs them to HLT: guest RAM must be
 * identical to the moment of the pause, then to what the program writes without an update.
 */
import { PAGE_SIZE } from '@liveupdate/hw';
import { defineObjectKind, type ScenarioObjectSpec } from '@liveupdate/sdk';
import { KVM_EXIT_HLT, KVM_EXIT_INTR, KVM_EXIT_MEMORY_FAULT, KVM_EXIT_MMIO, kvmRegs } from '../abi/kvm.js';
import { gmemLoad, gmemStore } from '../gmem.js';
import { KVM_RUN_QUANTUM, kvmVcpuSetQuantum } from '../kvm.js';
import {
  bindRam, createGuest, expectedFinalDigest, guestDigest, guestRamBytes, restoreVcpus, runOnce, saveVcpus, type GuestSpec,
} from '../vmm.js';

export interface VmSpec extends ScenarioObjectSpec {
  /** Token of the VM file (the guest_memfd, the object itself, is preserved under `token`). */
  readonly vmToken: number;
  readonly vcpus?: number;
  readonly pagesPerVcpu?: number;
  readonly pauseAfter?: number;
  readonly flow?: 'pause' | 'relaxed';
}

export interface VmExpect {
  readonly vcpus: number;
  readonly pagesPerVcpu: number;
  readonly ramPages: number;
  readonly digestAtPause: string;
  readonly pagesAtPause: number;
  readonly memoryFaults: number;
  /** Counts rung on the doorbell in kernel A, per vCPU (null: not yet): a vCPU may finish before the pause. */
  readonly doorbell: ReadonlyArray<number | null>;
  /** Machine clock (ns) when the vCPUs were paused: the guest's blackout ends when they run again. */
  readonly pausedAtNs: number;
}

/** The count naming one VM's paused time, e.g. "ns paused (VM vm0/2)" (session / guest_memfd token). */
export const blackoutKey = (session: string, token: number): string => `ns paused (VM ${session}/${token})`;

const guestOf = (spec: VmSpec): GuestSpec => ({ vcpus: spec.vcpus ?? 2, pagesPerVcpu: spec.pagesPerVcpu ?? 64, extraBytes: PAGE_SIZE });
/** Enough KVM_RUN entries for the program to reach its HLT from anywhere. */
const MAX_ENTRIES = 16;

export const vmKind = defineObjectKind<VmSpec, VmExpect>({
  type: 'kvm-vm',
  description: 'a KVM VM with vCPUs running a guest program in guest_memfd RAM; the VM file and its guest_memfd are preserved and linked by token',
  properties: {
    vmToken: { type: 'integer', minimum: 0, description: 'token of the VM file (the guest_memfd is preserved under token)' },
    vcpus: { type: 'integer', minimum: 1, maximum: 64, default: 2 },
    pagesPerVcpu: { type: 'integer', minimum: 1, maximum: 65536, default: 64 },
    pauseAfter: { type: 'integer', minimum: 0, default: 200, description: 'guest instructions each vCPU runs in kernel A' },
    flow: { enum: ['pause', 'relaxed'], default: 'pause' },
  },
  required: ['vmToken'],
  // Two files of one session cannot share a token (PRESERVE_FD would fail with EEXIST).
  validate: (spec) => (spec.vmToken === spec.token ? [{ field: 'vmToken', message: `must differ from token (${spec.token}): the VM file and its guest_memfd are two files of the session` }] : []),
  hostBytes: (spec) => guestRamBytes(guestOf(spec)) + PAGE_SIZE,
  units: (spec) => guestRamBytes(guestOf(spec)) / PAGE_SIZE,
  create(ctx, spec) {
    const g = guestOf(spec);
    const p = ctx.vmm;
    const kvm = p.open('/dev/kvm');
    const guest = createGuest(p, kvm, g);
    const saveArea = guest.ramBytes;
    // The save area must exist before preservation freezes the mapping.
    gmemStore(p, guest.gmemFd, new Uint8Array(kvmRegs.size * g.vcpus), saveArea);
    const doorbell: Array<number | null> = guest.vcpuFds.map(() => null);
    let pausedAtNs = 0;
    // Each vCPU runs `pauseAfter` instructions or until it exits to the VMM (a memory fault, the
    // doorbell, HLT); then the VMM pauses them all: the guest's blackout starts on the machine clock.
    const run = (): number => {
      let faults = 0;
      guest.vcpuFds.forEach((fd, i) => {
        kvmVcpuSetQuantum(p, fd, Math.max(1, spec.pauseAfter ?? 200));
        const r = runOnce(p, fd);
        if (r.exit === KVM_EXIT_MEMORY_FAULT) faults++;
        if (r.exit === KVM_EXIT_MMIO && r.mmio) doorbell[i] = Number(r.mmio.data);
        kvmVcpuSetQuantum(p, fd, KVM_RUN_QUANTUM);
      });
      pausedAtNs = ctx.machine.clock.now;
      return faults;
    };
    const preserve = (): void => { ctx.preserve(guest.vmFd, spec.vmToken); ctx.preserve(guest.gmemFd, spec.token); };
    let faults: number;
    if ((spec.flow ?? 'pause') === 'pause') { faults = run(); preserve(); } else { preserve(); faults = run(); }
    gmemStore(p, guest.gmemFd, saveVcpus(p, guest.vcpuFds), saveArea);
    const at = guestDigest(p, guest.gmemFd, guest.ramBytes / PAGE_SIZE);
    ctx.note(`kvm-vm (VM token ${spec.vmToken}, guest_memfd token ${spec.token}): ${g.vcpus} vCPUs paused, ${at.pages} guest pages, ${faults} memory fault exit(s)`);
    ctx.tick(guest.ramBytes / PAGE_SIZE);
    p.close(kvm);
    return {
      fd: guest.gmemFd, preservedPages: at.pages,
      expect: {
        vcpus: g.vcpus, pagesPerVcpu: g.pagesPerVcpu, ramPages: guest.ramBytes / PAGE_SIZE, digestAtPause: at.digest, pagesAtPause: at.pages,
        memoryFaults: faults, doorbell, pausedAtNs,
      },
    };
  },
  restore(ctx, spec, expect) {
    const p = ctx.vmm;
    const problems: string[] = [];
    const gmem = ctx.retrieve(spec.token);
    const vm = ctx.retrieve(spec.vmToken);
    const at = guestDigest(p, gmem, expect.ramPages);
    if (at.digest !== expect.digestAtPause) problems.push(`guest RAM differs from the moment of the pause (${at.pages} pages now, ${expect.pagesAtPause} then)`);
    const ramBytes = expect.ramPages * PAGE_SIZE;
    bindRam(p, vm, gmem, ramBytes);
    const vcpus = restoreVcpus(p, vm, gmemLoad(p, gmem, kvmRegs.size * expect.vcpus, ramBytes));
    // The vCPUs run again: the VM's blackout, read off the machine clock (boot, kexec and every
    // kernel operation in between are charged to it).
    const blackoutNs = ctx.machine.clock.now - expect.pausedAtNs;
    vcpus.forEach((fd, i) => {
      const rung = expect.doorbell[i];
      let counted: bigint | null = rung === null || rung === undefined ? null : BigInt(rung);
      for (let n = 0; n < MAX_ENTRIES; n++) {
        const r = runOnce(p, fd);
        if (r.exit === KVM_EXIT_MMIO && r.mmio) { counted = r.mmio.data; continue; }
        if (r.exit === KVM_EXIT_HLT) break;
        if (r.exit !== KVM_EXIT_INTR) { problems.push(`vCPU ${i}: exit ${r.exit} (${r.errno}) after the update`); break; }
      }
      if (counted !== BigInt(expect.pagesPerVcpu)) problems.push(`vCPU ${i}: rang the doorbell with ${counted ?? 'nothing'}, expected ${expect.pagesPerVcpu}`);
    });
    const final = guestDigest(p, gmem, expect.ramPages);
    const want = expectedFinalDigest({ vcpus: expect.vcpus, pagesPerVcpu: expect.pagesPerVcpu });
    if (final.digest !== want.digest) problems.push(`guest RAM after the program halted differs from a run without an update (${final.pages} pages, expected ${want.pages})`);
    ctx.tick(expect.ramPages);
    for (const fd of vcpus) p.close(fd);
    p.close(vm);
    return {
      fd: gmem, restoredPages: at.pages,
      check: {
        ok: problems.length === 0,
        summary: `${expect.vcpus} vCPUs resumed after ${(blackoutNs / 1e6).toFixed(3)} ms paused (machine clock) and halted; ${at.pages} guest pages identical at the pause, ${final.pages} at the end`,
        problems,
        // Counts add up over a scenario's objects: the blackout is keyed by VM so each one shows.
        counts: { guestPages: final.pages, memoryFaults: expect.memoryFaults, vcpus: expect.vcpus, [blackoutKey(ctx.session, spec.token)]: blackoutNs },
      },
    };
  },
});
