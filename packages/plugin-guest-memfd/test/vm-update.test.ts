import { describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '@liveupdate/hw';
import { createSession, finishSession, preserveFd, retrieveFd, retrieveSession } from '@liveupdate/sdk';
import { memfdCreate } from '@liveupdate/plugin-memfd';
import {
  bindRam, counterGpa, createGuest, gmemLoad, guestDigest, regionGpa, restoreVcpus, saveVcpus, vcpuTag,
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
    expect(runFor(o.p, guest.vcpuFds[0] as number, 150).exit).toBe(KVM_EXIT_INTR);
    expect(runFor(o.p, guest.vcpuFds[1] as number, 321).exit).toBe(KVM_EXIT_INTR);
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
    for (const v of [0, 1]) {
      const page = gmemLoad(i.p2, gmem, 16, regionGpa(v, 64) + 63 * PAGE_SIZE);
      expect([u64At(page, 0), u64At(page, 8)]).toEqual([64n, vcpuTag(v)]);
    }
  });
});
