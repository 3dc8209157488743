import { describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '@liveupdate/hw';
import { createSession, errnoOf, finishSession, preserveFd, retrieveFd, retrieveSession } from '@liveupdate/sdk';
import { memfdCreate } from '@liveupdate/plugin-memfd';
import { bindRam, createGuest, guestDigest, regionGpa, restoreVcpus, runOnce, saveVcpus } from '../src/index.js';
import { KVM_EXIT_MEMORY_FAULT, TWO_VCPUS, jump, plugins, referenceRun, runToHalt, start } from './support.js';

const UPSTREAM = { plugins: plugins({ writes: ['1.0.0'] }), next: plugins({ writes: ['1.0.0'] }) };

describe('the relaxed-fault flow: faults after preservation exit to the VMM', () => {
  it('a vCPU faulting on an unallocated page exits with KVM_EXIT_MEMORY_FAULT; after the kexec the retried fault succeeds', () => {
    const o = start(UPSTREAM);
    const guest = createGuest(o.p, o.kvm, TWO_VCPUS);
    const s = createSession(o.p, o.dev, 'vm0');
    // The VMM preserves while the vCPUs still run (option 2 of Documentation/liveupdate/vmm.rst).
    preserveFd(o.p, s, guest.gmemFd, 2);
    preserveFd(o.p, s, guest.vmFd, 1);
    const r = runOnce(o.p, guest.vcpuFds[0] as number);
    // Page 0 (program and counters) exists; the first page of vCPU 0's region does not.
    expect(r).toEqual({ exit: KVM_EXIT_MEMORY_FAULT, errno: 'EFAULT', fault: { gpa: regionGpa(0, 64), size: PAGE_SIZE } });
    // Re-entering faults again: nothing may allocate while preserved.
    expect(runOnce(o.p, guest.vcpuFds[0] as number).fault).toEqual({ gpa: regionGpa(0, 64), size: PAGE_SIZE });
    // The VMM pauses: the saved rip is the faulting store.
    const saved = saveVcpus(o.p, guest.vcpuFds);
    expect(new DataView(saved.buffer).getBigUint64(128, true)).toBe(0x30n);
    const st = memfdCreate(o.p, 'vcpu-state', 0);
    o.p.pwrite(st, saved, 0);
    preserveFd(o.p, s, st, 3);

    const i = jump(o);
    const s2 = retrieveSession(i.p2, i.dev2, 'vm0');
    const vm = retrieveFd(i.p2, s2, 1);
    const gmem = retrieveFd(i.p2, s2, 2);
    bindRam(i.p2, vm, gmem, guest.ramBytes);
    const vcpus = restoreVcpus(i.p2, vm, i.p2.pread(retrieveFd(i.p2, s2, 3), saved.length, 0));
    expect(vcpus.map((fd) => runToHalt(i.p2, fd))).toEqual([64n, 64n]);
    finishSession(i.p2, s2);
    const ref = referenceRun(TWO_VCPUS);
    expect(guestDigest(i.p2, gmem)).toEqual(guestDigest(ref.p, ref.guest.gmemFd));
    expect(i.k2.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
  });

  it('the VMM may abort instead: closing the session unpreserves, and the retried fault succeeds in the same kernel', () => {
    const o = start(UPSTREAM);
    const guest = createGuest(o.p, o.kvm, TWO_VCPUS);
    const s = createSession(o.p, o.dev, 'vm0');
    preserveFd(o.p, s, guest.vmFd, 1);
    preserveFd(o.p, s, guest.gmemFd, 2);
    expect(runOnce(o.p, guest.vcpuFds[1] as number).exit).toBe(KVM_EXIT_MEMORY_FAULT);
    o.p.close(s);
    expect(guest.vcpuFds.map((fd) => runToHalt(o.p, fd))).toEqual([64n, 64n]);
    expect(errnoOf(() => o.p.fallocate(guest.gmemFd, 0x01, 0, PAGE_SIZE))).toBe(0);
  });

  it('with the sparse format faults still allocate after preservation (until freeze), so the guest never exits', () => {
    const o = start();
    const guest = createGuest(o.p, o.kvm, TWO_VCPUS);
    const s = createSession(o.p, o.dev, 'vm0');
    preserveFd(o.p, s, guest.vmFd, 1);
    preserveFd(o.p, s, guest.gmemFd, 2);
    expect(guest.vcpuFds.map((fd) => runToHalt(o.p, fd))).toEqual([64n, 64n]);
    const digest = guestDigest(o.p, guest.gmemFd);
    expect(digest.pages).toBe(129);
    const i = jump(o);
    const s2 = retrieveSession(i.p2, i.dev2, 'vm0');
    expect(guestDigest(i.p2, retrieveFd(i.p2, s2, 2))).toEqual(digest);
    finishSession(i.p2, s2);
    expect(i.k2.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
  });
});
