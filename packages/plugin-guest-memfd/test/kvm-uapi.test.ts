import { describe, expect, it } from 'vitest';
import { OP, PAGE_SIZE, assemble } from '@liveupdate/hw';
import { errnoOf } from '@liveupdate/sdk';
import {
  FALLOC_FL_KEEP_SIZE, SigbusError, gmemLoad, gmemMemoryFailure, gmemStore, kvmAbi, kvmCreateGuestMemfdFd, kvmCreateVcpu,
  kvmCreateVm, kvmRunPage, kvmSetMemoryRegion2, kvmVmKill, runOnce,
} from '../src/index.js';
import { start } from './support.js';

const A = kvmAbi;
const SHARED = A.GUEST_MEMFD_FLAG_MMAP | A.GUEST_MEMFD_FLAG_INIT_SHARED;

/** A VM with one page of guest_memfd RAM at gpa 0 holding `program`, and one vCPU. */
function vmWith(program: Uint8Array) {
  const o = start();
  const vm = kvmCreateVm(o.p, o.kvm, 0);
  const gmem = kvmCreateGuestMemfdFd(o.p, vm, 2 * PAGE_SIZE, SHARED);
  kvmSetMemoryRegion2(o.p, vm, { slot: 0, gpa: 0, size: 2 * PAGE_SIZE, guestMemfd: gmem, guestMemfdOffset: 0 });
  gmemStore(o.p, gmem, program, 0);
  return { o, vm, gmem, vcpu: kvmCreateVcpu(o.p, vm, 0) };
}

describe('the KVM uAPI numbers and layouts (include/uapi/linux/kvm.h, x86)', () => {
  it('ioctl request numbers', () => {
    expect([A.KVM_GET_API_VERSION, A.KVM_CREATE_VM, A.KVM_CHECK_EXTENSION, A.KVM_GET_VCPU_MMAP_SIZE, A.KVM_CREATE_VCPU, A.KVM_RUN])
      .toEqual([0xae00, 0xae01, 0xae03, 0xae04, 0xae41, 0xae80]);
    expect([A.KVM_SET_USER_MEMORY_REGION2, A.KVM_CREATE_GUEST_MEMFD, A.KVM_GET_REGS, A.KVM_SET_REGS])
      .toEqual([0x40a0ae49, 0xc040aed4, 0x8090ae81, 0x4090ae82]);
  });

  it('struct sizes and kvm_run offsets', () => {
    expect([A.kvmUserspaceMemoryRegion2.size, A.kvmCreateGuestMemfd.size, A.kvmRegs.size]).toEqual([160, 64, 144]);
    expect(A.kvmUserspaceMemoryRegion2.offsets).toMatchObject({ slot: 0, flags: 4, guest_phys_addr: 8, memory_size: 16, userspace_addr: 24, guest_memfd_offset: 32, guest_memfd: 40 });
    expect(A.kvmRunHead.offsets.exit_reason).toBe(8);
    expect(A.kvmRunMmio.offsets).toMatchObject({ phys_addr: 0, data: 8, len: 16, is_write: 20 });
    expect([A.KVM_EXIT_HLT, A.KVM_EXIT_MMIO, A.KVM_EXIT_INTR, A.KVM_EXIT_INTERNAL_ERROR, A.KVM_EXIT_MEMORY_FAULT]).toEqual([5, 6, 10, 17, 39]);
    expect([A.GUEST_MEMFD_FLAG_MMAP, A.GUEST_MEMFD_FLAG_INIT_SHARED, A.KVM_MEM_GUEST_MEMFD]).toEqual([1, 2, 4]);
  });
});

describe('/dev/kvm and VM ioctls', () => {
  it('answers the API version, capabilities, and refuses unknown VM types', () => {
    const o = start();
    expect(o.p.ioctl(o.kvm, A.KVM_GET_API_VERSION, new Uint8Array(0))).toBe(12);
    const cap = (c: number): number => { const b = new Uint8Array(8); b[0] = c; return o.p.ioctl(o.kvm, A.KVM_CHECK_EXTENSION, b); };
    expect([cap(A.KVM_CAP_GUEST_MEMFD), cap(A.KVM_CAP_USER_MEMORY2), cap(A.KVM_CAP_VM_TYPES)]).toEqual([1, 1, 0b11]);
    expect(errnoOf(() => kvmCreateVm(o.p, o.kvm, A.KVM_X86_TDX_VM))).toBe('EINVAL');
  });

  it('KVM_CREATE_GUEST_MEMFD checks size and flags', () => {
    const o = start();
    const vm = kvmCreateVm(o.p, o.kvm, 0);
    expect(errnoOf(() => kvmCreateGuestMemfdFd(o.p, vm, 0, SHARED))).toBe('EINVAL');
    expect(errnoOf(() => kvmCreateGuestMemfdFd(o.p, vm, 100, SHARED))).toBe('EINVAL');
    expect(errnoOf(() => kvmCreateGuestMemfdFd(o.p, vm, PAGE_SIZE, 1 << 7))).toBe('EINVAL');
  });

  it('KVM_SET_USER_MEMORY_REGION2 binds only this VM\'s guest_memfd, inside it, without overlap', () => {
    const o = start();
    const vm = kvmCreateVm(o.p, o.kvm, 0);
    const other = kvmCreateVm(o.p, o.kvm, 0);
    const gmem = kvmCreateGuestMemfdFd(o.p, vm, 4 * PAGE_SIZE, SHARED);
    const foreign = kvmCreateGuestMemfdFd(o.p, other, 4 * PAGE_SIZE, SHARED);
    const set = (r: Partial<Parameters<typeof kvmSetMemoryRegion2>[2]>) => errnoOf(() => kvmSetMemoryRegion2(o.p, vm, { slot: 0, gpa: 0, size: PAGE_SIZE, guestMemfd: gmem, guestMemfdOffset: 0, ...r }));
    expect(set({ guestMemfd: foreign })).toBe('EINVAL');
    expect(set({ guestMemfdOffset: 4 * PAGE_SIZE })).toBe('EINVAL');
    expect(set({ flags: 0 })).toBe('EINVAL');
    expect(set({ gpa: 1 })).toBe('EINVAL');
    expect(set({})).toBe(0);
    expect(set({ slot: 1, gpa: 0 })).toBe('EEXIST');
    expect(set({ size: 0 })).toBe(0); // deletes slot 0
    expect(set({ slot: 1 })).toBe(0);
  });

  it('a vCPU id is unique per VM, and a dead VM answers EIO', () => {
    const o = start();
    const vm = kvmCreateVm(o.p, o.kvm, 0);
    kvmCreateVcpu(o.p, vm, 3);
    expect(errnoOf(() => kvmCreateVcpu(o.p, vm, 3))).toBe('EEXIST');
    kvmVmKill(o.p, vm);
    expect(errnoOf(() => kvmCreateVcpu(o.p, vm, 4))).toBe('EIO');
  });
});

describe('KVM_RUN exits', () => {
  it('an MMIO load exits with KVM_EXIT_MMIO and completes with the data userspace puts in kvm_run.mmio', () => {
    const { o, gmem, vcpu } = vmWith(assemble([
      { op: OP.LD, rd: 1, rs: 0, imm: 0x100000 },
      { op: OP.ST, rd: 1, rs: 0, imm: 0x808 },
      { op: OP.HLT },
    ]));
    expect(runOnce(o.p, vcpu)).toEqual({ exit: A.KVM_EXIT_MMIO, errno: 0, mmio: { gpa: 0x100000, data: 0n, isWrite: false } });
    new DataView(kvmRunPage(o.p, vcpu).buffer).setBigUint64(A.KVM_RUN_EXIT_UNION + 8, 0x1234n, true);
    expect(runOnce(o.p, vcpu).exit).toBe(A.KVM_EXIT_HLT);
    expect(new DataView(gmemLoad(o.p, gmem, 8, 0x808).buffer).getBigUint64(0, true)).toBe(0x1234n);
  });

  it('immediate_exit fails KVM_RUN at once with EINTR and KVM_EXIT_INTR; an undefined opcode is KVM_EXIT_INTERNAL_ERROR', () => {
    const { o, vcpu } = vmWith(new Uint8Array([0xee, 0, 0, 0, 0, 0, 0, 0]));
    const run = kvmRunPage(o.p, vcpu);
    run[A.kvmRunHead.offsets.immediate_exit] = 1;
    expect(runOnce(o.p, vcpu)).toEqual({ exit: A.KVM_EXIT_INTR, errno: 'EINTR' });
    run[A.kvmRunHead.offsets.immediate_exit] = 0;
    expect(runOnce(o.p, vcpu).exit).toBe(A.KVM_EXIT_INTERNAL_ERROR);
    expect(new DataView(run.buffer).getUint32(A.KVM_RUN_EXIT_UNION, true)).toBe(A.KVM_INTERNAL_ERROR_EMULATION);
  });

  it('a guest access to a hardware-poisoned page fails KVM_RUN with EHWPOISON and a memory fault exit', () => {
    const { o, gmem, vcpu } = vmWith(assemble([{ op: OP.LD, rd: 1, rs: 0, imm: PAGE_SIZE }, { op: OP.HLT }]));
    gmemStore(o.p, gmem, new Uint8Array([1]), PAGE_SIZE);
    gmemMemoryFailure(o.p, gmem, PAGE_SIZE);
    expect(runOnce(o.p, vcpu)).toEqual({ exit: A.KVM_EXIT_MEMORY_FAULT, errno: 'EHWPOISON', fault: { gpa: PAGE_SIZE, size: PAGE_SIZE } });
  });
});

describe('guest_memfd as a file', () => {
  it('mmap needs GUEST_MEMFD_FLAG_MMAP (ENODEV); private memory and offsets past i_size are SIGBUS', () => {
    const o = start();
    const vm = kvmCreateVm(o.p, o.kvm, 0);
    expect(errnoOf(() => gmemLoad(o.p, kvmCreateGuestMemfdFd(o.p, vm, PAGE_SIZE, 0), 1, 0))).toBe('ENODEV');
    expect(() => gmemLoad(o.p, kvmCreateGuestMemfdFd(o.p, vm, PAGE_SIZE, A.GUEST_MEMFD_FLAG_MMAP), 1, 0)).toThrow(SigbusError);
    expect(() => gmemLoad(o.p, kvmCreateGuestMemfdFd(o.p, vm, PAGE_SIZE, SHARED), 1, PAGE_SIZE)).toThrow(SigbusError);
  });

  it('has a fixed size (ftruncate EINVAL) and fallocate needs FALLOC_FL_KEEP_SIZE (EOPNOTSUPP)', () => {
    const o = start();
    const gmem = kvmCreateGuestMemfdFd(o.p, kvmCreateVm(o.p, o.kvm, 0), PAGE_SIZE, SHARED);
    expect(errnoOf(() => o.p.ftruncate(gmem, 2 * PAGE_SIZE))).toBe('EINVAL');
    expect(errnoOf(() => o.p.fallocate(gmem, 0, 0, PAGE_SIZE))).toBe('EOPNOTSUPP');
    expect(errnoOf(() => o.p.fallocate(gmem, FALLOC_FL_KEEP_SIZE, 0, PAGE_SIZE))).toBe(0);
  });
});
