import { describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '@liveupdate/hw';
import { createSession, finishSession, preserveFd, retrieveFd, retrieveSession } from '@liveupdate/sdk';
import { memfdCreate } from '@liveupdate/plugin-memfd';
import {
  bindRam, counterGpa, createGuest, expectedFinalDigest, gmemLoad, guestDigest, regionGpa, restoreVcpus, saveVcpus, vcpuTag,
} from '../src/index.js';
import { KVM_EXIT_INTR, TWO_VCPUS, jump, plugins, referenceRun, runFor, runToHalt, start } from './support.js';

const u64At = (b: Uint8Array, at: number): bigint => new DataView(b.buffer, b.byteOffset).getBigUint64(at, true);

describe.each([
  ['guest_memfd_luo_v1 (upstream)', ['1.0.0']],
  ['the sparse format 2.0.0', ['1.0.0', '2.0.0']],
])('a running VM across the live update in %s (VMM pauses the vCPUs first)', (_name, writes) => {
  it('two vCPUs continue their guest program from where they stopped, every guest page identical', () => {
    const o = start({ plugins: plugins({ writes }), next: plugins({ writes }) });
    const guest = createGuest(o.p, o.kvm, TWO_VCPUS);
    // Both vCPUs run part of the program (a timer signal ends each KVM_RUN), at different points.
    expect(runFor(o.p, guest.vcpuFds[0] as number, 150)).toEqual({ exit: KVM_EXIT_INTR, errno: 'EINTR' });
    expect(runFor(o.p, guest.vcpuFds[1] as number, 321)).toEqual({ exit: KVM_EXIT_INTR, errno: 'EINTR' });
    const counters = gmemLoad(o.p, guest.gmemFd, 16, counterGpa(0));
    // 3 setup instructions, then 7 per iteration whose third stores the counter:
    // 150 = 3 + 21 x 7; 321 = 3 + 45 x 7 + 3 (the 46th store done, its page not yet written).
    expect([u64At(counters, 0), u64At(counters, 8)]).toEqual([21n, 46n]);
    // Pause: registers into a memfd that is preserved with the VM and its RAM.
    const saved = saveVcpus(o.p, guest.vcpuFds);
    const state = memfdCreate(o.p, 'vcpu-state', 0);
    o.p.pwrite(state, saved, 0);
    const digest = guestDigest(o.p, guest.gmemFd);
    const s = createSession(o.p, o.dev, 'vm0');
    preserveFd(o.p, s, guest.vmFd, 1);
    preserveFd(o.p, s, guest.gmemFd, 2);
    preserveFd(o.p, s, state, 3);
    const clockBefore = o.machine.clock.now;

    const i = jump(o);
    expect(o.machine.clock.now).toBeGreaterThan(clockBefore);
    const s2 = retrieveSession(i.p2, i.dev2, 'vm0');
    // guest_memfd first: its VM is retrieved on demand by token; retrieving the VM then returns that VM.
    const gmem = retrieveFd(i.p2, s2, 2);
    const vm = retrieveFd(i.p2, s2, 1);
    const st = retrieveFd(i.p2, s2, 3);
    expect(guestDigest(i.p2, gmem)).toEqual(digest);
    bindRam(i.p2, vm, gmem, guest.ramBytes);
    const vcpus = restoreVcpus(i.p2, vm, i.p2.pread(st, saved.length, 0));
    expect(vcpus.map((fd) => runToHalt(i.p2, fd))).toEqual([64n, 64n]);
    finishSession(i.p2, s2);
    expect(i.k2.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
    expect(o.machine.memory.poisonReads).toBe(0);

    // Exactly what the same guest writes without an update.
    const ref = referenceRun(TWO_VCPUS);
    expect(ref.counts).toEqual([64n, 64n]);
    expect(guestDigest(i.p2, gmem)).toEqual(guestDigest(ref.p, ref.guest.gmemFd));
    expect(guestDigest(ref.p, ref.guest.gmemFd)).toEqual(expectedFinalDigest(TWO_VCPUS));
    for (const v of [0, 1]) {
      const page = gmemLoad(i.p2, gmem, 16, regionGpa(v, 64) + 63 * PAGE_SIZE);
      expect([u64At(page, 0), u64At(page, 8)]).toEqual([64n, vcpuTag(v)]);
    }
  });
});

describe('a VM across two live updates in a row', () => {
  it('the retrieved VM and guest_memfd are preserved again and the guest still finishes exactly', () => {
    const o = start();
    const guest = createGuest(o.p, o.kvm, TWO_VCPUS);
    for (const fd of guest.vcpuFds) runFor(o.p, fd, 100);
    const keep = (p: typeof o.p, dev: number, vm: number, gmem: number, regs: Uint8Array): void => {
      const st = memfdCreate(p, 'vcpu-state', 0);
      p.pwrite(st, regs, 0);
      const s = createSession(p, dev, 'vm0');
      preserveFd(p, s, vm, 1);
      preserveFd(p, s, gmem, 2);
      preserveFd(p, s, st, 3);
    };
    keep(o.p, o.dev, guest.vmFd, guest.gmemFd, saveVcpus(o.p, guest.vcpuFds));
    const first = jump(o);
    const s1 = retrieveSession(first.p2, first.dev2, 'vm0');
    const gmem1 = retrieveFd(first.p2, s1, 2);
    const vm1 = retrieveFd(first.p2, s1, 1);
    bindRam(first.p2, vm1, gmem1, guest.ramBytes);
    const vcpus1 = restoreVcpus(first.p2, vm1, first.p2.pread(retrieveFd(first.p2, s1, 3), 2 * 144, 0));
    for (const fd of vcpus1) runFor(first.p2, fd, 150);
    const regs = saveVcpus(first.p2, vcpus1);
    finishSession(first.p2, s1);
    keep(first.p2, first.dev2, vm1, gmem1, regs);
    const digest = guestDigest(first.p2, gmem1);

    const o2 = { ...o, k1: first.k2, p: first.p2, dev: first.dev2, kvm: first.kvm2 };
    const second = jump(o2);
    const s2 = retrieveSession(second.p2, second.dev2, 'vm0');
    const gmem2 = retrieveFd(second.p2, s2, 2);
    const vm2 = retrieveFd(second.p2, s2, 1);
    expect(guestDigest(second.p2, gmem2)).toEqual(digest);
    bindRam(second.p2, vm2, gmem2, guest.ramBytes);
    const vcpus2 = restoreVcpus(second.p2, vm2, second.p2.pread(retrieveFd(second.p2, s2, 3), 2 * 144, 0));
    expect(vcpus2.map((fd) => runToHalt(second.p2, fd))).toEqual([64n, 64n]);
    finishSession(second.p2, s2);
    expect(guestDigest(second.p2, gmem2, guest.ramBytes / PAGE_SIZE)).toEqual(expectedFinalDigest(TWO_VCPUS));
    expect(second.k2.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
  });
});
