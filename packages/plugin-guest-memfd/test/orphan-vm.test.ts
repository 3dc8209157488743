import { describe, expect, it } from 'vitest';
import { CARETAKER_HANDED_BACK, PAGE_SIZE, STOP_FAULT, STOP_MMIO, VCPU_STATE_BYTES } from '@liveupdate/hw';
import { createSession, errnoOf, finishSession, preserveFd, retrieveFd, retrieveSession } from '@liveupdate/sdk';
import {
  bindRam, counterGpa, createGuest, expectedFinalDigest, gmemLoad, gmemStore, guestDigest, kvmCreateGuestMemfdFd, kvmCreateVm, runOnce,
} from '../src/index.js';
import { bootNext, jumpOnly, u64 } from './handover.js';
import { KVM_EXIT_HLT, KVM_EXIT_MMIO, TWO_VCPUS, jump, plugins, runFor, start } from './support.js';

const ORPHAN = { plugins: plugins({ writes: ['1.0.0'], orphanVm: true }), next: plugins({ writes: ['1.0.0'], orphanVm: true }) };
const u64At = (b: Uint8Array, at: number): bigint => new DataView(b.buffer, b.byteOffset).getBigUint64(at, true);

/** A running guest whose VM, guest_memfd and vCPUs are preserved without pausing (tokens: VM 1, RAM 2, vCPUs 10, 11). */
function orphanScene(prefault: boolean) {
  const o = start(ORPHAN);
  const guest = createGuest(o.p, o.kvm, TWO_VCPUS);
  if (prefault) gmemStore(o.p, guest.gmemFd, new Uint8Array(guest.ramBytes - PAGE_SIZE), PAGE_SIZE);
  for (const fd of guest.vcpuFds) runFor(o.p, fd, 100);
  const s = createSession(o.p, o.dev, 'vm0');
  preserveFd(o.p, s, guest.vmFd, 1);
  preserveFd(o.p, s, guest.gmemFd, 2);
  guest.vcpuFds.forEach((fd, i) => preserveFd(o.p, s, fd, 10 + i));
  return { o, guest };
}

describe('OrphanVM (follow-up RFC): vCPUs keep running on caretaker CPUs during the kexec', () => {
  it('the guest finishes its work during the jump; after retrieve KVM_RUN reports the doorbell it rang, then HLT', () => {
    const { o, guest } = orphanScene(true);
    const data = jumpOnly(o);
    // The caretakers ran the guest while no kernel ran and handed it back at the doorbell.
    for (const token of [10, 11]) {
      const cb = Number(u64(o.machine, data(token) + 24));
      expect([o.machine.memory.readU32(cb + 4), o.machine.memory.readU32(cb + 8), u64(o.machine, cb + 48)]).toEqual([CARETAKER_HANDED_BACK, STOP_MMIO, 64n]);
    }
    const i = bootNext(o);
    const s = retrieveSession(i.p2, i.dev2, 'vm0');
    const vcpus = [retrieveFd(i.p2, s, 10), retrieveFd(i.p2, s, 11)];
    const gmem = retrieveFd(i.p2, s, 2);
    const vm = retrieveFd(i.p2, s, 1);
    const counters = gmemLoad(i.p2, gmem, 16, counterGpa(0));
    expect([u64At(counters, 0), u64At(counters, 8)]).toEqual([64n, 64n]);
    bindRam(i.p2, vm, gmem, guest.ramBytes);
    for (const fd of vcpus) {
      expect(runOnce(i.p2, fd)).toMatchObject({ exit: KVM_EXIT_MMIO, mmio: { data: 64n, isWrite: true } });
      expect(runOnce(i.p2, fd).exit).toBe(KVM_EXIT_HLT);
    }
    finishSession(i.p2, s);
    expect(guestDigest(i.p2, gmem, guest.ramBytes / PAGE_SIZE)).toEqual(expectedFinalDigest(TWO_VCPUS));
    expect(i.k2.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
  });

  it('a caretaker stops at a page the guest never had (a hole in the table); the new kernel retries the access and the guest finishes', () => {
    const { o, guest } = orphanScene(false);
    const data = jumpOnly(o);
    const cb = Number(u64(o.machine, data(10) + 24));
    expect(o.machine.memory.readU32(cb + 8)).toBe(STOP_FAULT);
    const i = bootNext(o);
    const s = retrieveSession(i.p2, i.dev2, 'vm0');
    const vm = retrieveFd(i.p2, s, 1);
    const gmem = retrieveFd(i.p2, s, 2);
    bindRam(i.p2, vm, gmem, guest.ramBytes);
    for (const token of [10, 11]) {
      const fd = retrieveFd(i.p2, s, token);
      expect(runOnce(i.p2, fd)).toMatchObject({ exit: KVM_EXIT_MMIO, mmio: { data: 64n } });
      expect(runOnce(i.p2, fd).exit).toBe(KVM_EXIT_HLT);
    }
    finishSession(i.p2, s);
    expect(guestDigest(i.p2, gmem, guest.ramBytes / PAGE_SIZE)).toEqual(expectedFinalDigest(TWO_VCPUS));
  });

  it('kvm_vcpu_ser bytes: { u32 vcpu_id; u32 flags; u64 vm_token; u64 arch_state; u64 cb }, and the VM hands over its table in kho_folios', () => {
    const { o } = orphanScene(true);
    const data = jumpOnly(o);
    const m = o.machine;
    const ser = data(11);
    expect([m.memory.readU32(ser), m.memory.readU32(ser + 4), u64(m, ser + 8)]).toEqual([1, 0, 1n]);
    expect(u64(m, ser + 16) % BigInt(PAGE_SIZE)).toBe(0n);
    expect(u64(m, ser + 16)).not.toBe(u64(m, ser + 24));
    // 129 guest pages: one table page listed in kvm_kho_folios_ser.
    const list = Number(u64(m, data(1) + 8));
    expect(u64(m, list)).toBe(1n);
    const table = Number(u64(m, list + 8));
    expect(u64(m, table) & 1n).toBe(1n); // gfn 0 present
    expect(u64(m, table + 8 * 129)).toBe(0n); // beyond guest RAM: no RAM
    expect(VCPU_STATE_BYTES).toBe(72);
    // The decoders name the table and the caretaker's result.
    const tools = plugins({ orphanVm: true })[1]?.tools;
    const vmDec = tools?.decoders?.find((d) => d.target.kind === 'file' && d.target.family === 'kvm_vm');
    const vcpuDec = tools?.decoders?.find((d) => d.target.kind === 'file' && d.target.family === 'kvm_vcpu');
    expect(vmDec?.decode(m.memory, BigInt(data(1)), '1.0.0', { label: 'vm' }).pages.map((p) => p.structure)).toEqual(['kvm_luo_ser', 'kvm_kho_folios_ser', 'second-stage table']);
    const vc = vcpuDec?.decode(m.memory, BigInt(ser), '1.0.0', { label: 'vcpu1' });
    expect(vc?.problems).toEqual([]);
    expect(vc?.fields).toMatchObject({ vcpu_id: 1, vm_token: 1n, caretaker_state: CARETAKER_HANDED_BACK, caretaker_stop: STOP_MMIO });
    bootNext(o);
  });

  it('a failed reboot drops the table and disarms nothing; the next attempt updates with nothing leaked', () => {
    const { o, guest } = orphanScene(true);
    const bad = createSession(o.p, o.dev, 'bad');
    preserveFd(o.p, bad, kvmCreateGuestMemfdFd(o.p, kvmCreateVm(o.p, o.kvm, 0), PAGE_SIZE, 3), 1);
    expect(errnoOf(() => o.k1.kexecJump(o.cfg))).toBe('ENOENT');
    o.p.close(bad);
    const i = jump(o);
    const s = retrieveSession(i.p2, i.dev2, 'vm0');
    const vm = retrieveFd(i.p2, s, 1);
    const gmem = retrieveFd(i.p2, s, 2);
    bindRam(i.p2, vm, gmem, guest.ramBytes);
    for (const token of [10, 11]) expect(runOnce(i.p2, retrieveFd(i.p2, s, token)).mmio?.data).toBe(64n);
    finishSession(i.p2, s);
    expect(i.k2.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
  });

  it('a vCPU preserved without its VM fails the freeze with ENOENT', () => {
    const o = start(ORPHAN);
    const guest = createGuest(o.p, o.kvm, TWO_VCPUS);
    const s = createSession(o.p, o.dev, 'vm0');
    preserveFd(o.p, s, guest.vcpuFds[0] as number, 10);
    expect(errnoOf(() => o.k1.kexecJump(o.cfg))).toBe('ENOENT');
  });

  it('without the option vCPU files are not preservable (ENOENT), as in the posted v3 series', () => {
    const o = start();
    const guest = createGuest(o.p, o.kvm, TWO_VCPUS);
    const s = createSession(o.p, o.dev, 'vm0');
    expect(errnoOf(() => preserveFd(o.p, s, guest.vcpuFds[0] as number, 10))).toBe('ENOENT');
  });
});
