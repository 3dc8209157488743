import { describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '@liveupdate/hw';
import { createSession, errnoOf, finishSession, preserveFd, retrieveFd, retrieveSession } from '@liveupdate/sdk';
import {
  FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, SigbusError, createGuest, gmemCollapse, gmemLoad, gmemMemoryFailure, gmemResident, gmemStore,
  kvmAbi, kvmCreateGuestMemfdFd, kvmCreateVcpu, kvmCreateVm, kvmVmKill,
} from '../src/index.js';
import { jump, plugins, start } from './support.js';

const { GUEST_MEMFD_FLAG_MMAP: MMAP, GUEST_MEMFD_FLAG_INIT_SHARED: SHARED, GUEST_MEMFD_FLAG_NO_DIRECT_MAP, KVM_X86_SW_PROTECTED_VM } = kvmAbi;
const UPSTREAM = { plugins: plugins({ writes: ['1.0.0'] }), next: plugins({ writes: ['1.0.0'] }) };
const MiB = 1 << 20;

function setup(opts: Parameters<typeof start>[0] = UPSTREAM, flags = MMAP | SHARED, type = 0) {
  const o = start(opts);
  const vm = kvmCreateVm(o.p, o.kvm, type);
  const gmem = kvmCreateGuestMemfdFd(o.p, vm, 4 * MiB, flags);
  const s = createSession(o.p, o.dev, 'vm0');
  return { o, vm, gmem, s, preserve: (fd: number, token: number) => errnoOf(() => preserveFd(o.p, s, fd, token)) };
}

const preservedBlocks = (o: ReturnType<typeof start>): number => o.k1.khoOut?.survivors().blocks ?? 0;

describe('can_preserve: PRESERVE_FD is ENOENT for what the guest_memfd handler refuses', () => {
  it('a file that is not a guest_memfd nor a VM (a vCPU, /dev/kvm)', () => {
    const { o, vm, preserve } = setup();
    expect(preserve(kvmCreateVcpu(o.p, vm, 0), 1)).toBe('ENOENT');
    expect(preserve(o.kvm, 2)).toBe('ENOENT');
  });

  it('a guest_memfd without INIT_SHARED (flags 0, or MMAP only)', () => {
    const { o, vm, preserve } = setup();
    expect(preserve(kvmCreateGuestMemfdFd(o.p, vm, MiB, 0), 1)).toBe('ENOENT');
    expect(preserve(kvmCreateGuestMemfdFd(o.p, vm, MiB, MMAP), 2)).toBe('ENOENT');
  });

  it('a guest_memfd of a VM with private memory (which cannot even create an INIT_SHARED one)', () => {
    const { o, vm, gmem, preserve } = setup(UPSTREAM, MMAP, KVM_X86_SW_PROTECTED_VM);
    expect(errnoOf(() => kvmCreateGuestMemfdFd(o.p, vm, MiB, MMAP | SHARED))).toBe('EINVAL');
    expect(preserve(gmem, 1)).toBe('ENOENT');
    // The VM file itself may be preserved.
    expect(preserve(vm, 2)).toBe(0);
  });

  it('a mapping with a large folio, for a build that writes only guest_memfd_luo_v1', () => {
    const { o, gmem, preserve } = setup();
    gmemStore(o.p, gmem, new Uint8Array([7]), 2 * MiB + 5);
    gmemCollapse(o.p, gmem, 2 * MiB);
    expect(preserve(gmem, 1)).toBe('ENOENT');
  });
});

describe('preserve', () => {
  it('a dead or bugged VM is EINVAL at VM preserve', () => {
    const { o, vm, preserve } = setup();
    kvmVmKill(o.p, vm);
    expect(preserve(vm, 1)).toBe('EINVAL');
    const vm2 = kvmCreateVm(o.p, o.kvm, 0);
    kvmVmKill(o.p, vm2, true);
    expect(preserve(vm2, 2)).toBe('EINVAL');
  });

  it('flags outside MMAP|INIT_SHARED are EOPNOTSUPP, and the frozen mapping is thawed again', () => {
    const { o, gmem, preserve } = setup(UPSTREAM, MMAP | SHARED | GUEST_MEMFD_FLAG_NO_DIRECT_MAP);
    const base = preservedBlocks(o);
    expect(preserve(gmem, 1)).toBe('EOPNOTSUPP');
    expect(preservedBlocks(o)).toBe(base);
    expect(errnoOf(() => o.p.fallocate(gmem, FALLOC_FL_KEEP_SIZE, 0, PAGE_SIZE))).toBe(0);
  });

  it('a HWPOISON folio is EHWPOISON; nothing stays preserved and the mapping is thawed', () => {
    const { o, gmem, preserve } = setup();
    gmemStore(o.p, gmem, new Uint8Array(3 * PAGE_SIZE).fill(1), 0);
    gmemMemoryFailure(o.p, gmem, PAGE_SIZE);
    const base = preservedBlocks(o);
    expect(preserve(gmem, 1)).toBe('EHWPOISON');
    expect(preservedBlocks(o)).toBe(base);
    expect(errnoOf(() => o.p.fallocate(gmem, FALLOC_FL_KEEP_SIZE, 8 * PAGE_SIZE, PAGE_SIZE))).toBe(0);
    expect(() => gmemLoad(o.p, gmem, 1, PAGE_SIZE)).toThrow(SigbusError);
  });

  it('after preserve: fallocate (KEEP_SIZE or PUNCH_HOLE) is EPERM and a host touch of a hole is SIGBUS; present pages stay usable', () => {
    const { o, gmem, preserve } = setup();
    gmemStore(o.p, gmem, new Uint8Array([1, 2, 3]), 0);
    expect(preserve(gmem, 1)).toBe(0);
    expect(errnoOf(() => o.p.fallocate(gmem, FALLOC_FL_KEEP_SIZE, PAGE_SIZE, PAGE_SIZE))).toBe('EPERM');
    expect(errnoOf(() => o.p.fallocate(gmem, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, 0, PAGE_SIZE))).toBe('EPERM');
    let sig: unknown;
    try { gmemStore(o.p, gmem, new Uint8Array([9]), PAGE_SIZE); } catch (e) { sig = e; }
    expect(sig).toBeInstanceOf(SigbusError);
    expect((sig as SigbusError).offset).toBe(PAGE_SIZE);
    gmemStore(o.p, gmem, new Uint8Array([4]), 3);
    expect([...gmemLoad(o.p, gmem, 4, 0)]).toEqual([1, 2, 3, 4]);
  });

  it('unpreserve (closing the session) thaws the mapping', () => {
    const { o, gmem, s, preserve } = setup();
    expect(preserve(gmem, 1)).toBe(0);
    o.p.close(s);
    expect(errnoOf(() => o.p.fallocate(gmem, FALLOC_FL_KEEP_SIZE, 0, 2 * PAGE_SIZE))).toBe(0);
    gmemStore(o.p, gmem, new Uint8Array([5]), 3 * PAGE_SIZE);
  });

  it('the sparse format keeps the mapping open until freeze: fallocate and host faults allocate after preserve', () => {
    const { o, gmem, preserve } = setup({});
    expect(preserve(gmem, 1)).toBe(0);
    expect(errnoOf(() => o.p.fallocate(gmem, FALLOC_FL_KEEP_SIZE, 0, 4 * PAGE_SIZE))).toBe(0);
    gmemStore(o.p, gmem, new Uint8Array([5]), 9 * PAGE_SIZE);
  });

  it('the sparse format keeps its checksum current while folios come, go and change after preserve', () => {
    const o = start({});
    const vm = kvmCreateVm(o.p, o.kvm, 0);
    const gmem = kvmCreateGuestMemfdFd(o.p, vm, 4 * MiB, MMAP | SHARED);
    gmemStore(o.p, gmem, new Uint8Array([1]), 0);
    const s = createSession(o.p, o.dev, 'vm0');
    preserveFd(o.p, s, vm, 1);
    preserveFd(o.p, s, gmem, 2);
    o.p.fallocate(gmem, FALLOC_FL_KEEP_SIZE, PAGE_SIZE, 8 * PAGE_SIZE); // added, not up to date
    gmemStore(o.p, gmem, new Uint8Array([2]), 3 * PAGE_SIZE); // changed: now up to date
    o.p.fallocate(gmem, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, 5 * PAGE_SIZE, 2 * PAGE_SIZE); // removed
    gmemStore(o.p, gmem, new Uint8Array([3]), 2 * MiB + 9);
    gmemCollapse(o.p, gmem, 2 * MiB); // 1 removed, a 2 MiB folio added
    const i = jump(o);
    const s2 = retrieveSession(i.p2, i.dev2, 'vm0');
    const fd = retrieveFd(i.p2, s2, 2);
    expect([gmemLoad(i.p2, fd, 1, 0)[0], gmemLoad(i.p2, fd, 1, 3 * PAGE_SIZE)[0], gmemLoad(i.p2, fd, 1, 2 * MiB + 9)[0]]).toEqual([1, 2, 3]);
    expect(gmemResident(i.p2, fd)).toEqual({ folios: 8, largeFolios: 1 });
    finishSession(i.p2, s2);
    expect(i.k2.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
  });

  it('sparse: a folio poisoned after preserve fails the freeze with EHWPOISON (counted, not searched for)', () => {
    const { o, vm, gmem, preserve } = setup({});
    gmemStore(o.p, gmem, new Uint8Array([1]), 0);
    expect(preserve(vm, 1)).toBe(0);
    expect(preserve(gmem, 2)).toBe(0);
    gmemMemoryFailure(o.p, gmem, 0);
    expect(errnoOf(() => o.k1.kexecJump(o.cfg))).toBe('EHWPOISON');
  });

  it('a large folio is preserved by the sparse format', () => {
    const { o, gmem, preserve } = setup({});
    gmemStore(o.p, gmem, new Uint8Array([7]), 2 * MiB + 5);
    gmemCollapse(o.p, gmem, 2 * MiB);
    expect(preserve(gmem, 1)).toBe(0);
  });
});

describe('the VM link at freeze', () => {
  it('a guest_memfd preserved without its VM is accepted, but the freeze fails with ENOENT and so does the kexec', () => {
    const { o, gmem, preserve } = setup();
    expect(preserve(gmem, 1)).toBe(0);
    expect(errnoOf(() => o.k1.kexecJump(o.cfg))).toBe('ENOENT');
    expect(o.k1.isDead).toBe(false);
    // Kernel A keeps running with the guest_memfd still preserved (and frozen).
    expect(errnoOf(() => o.p.fallocate(gmem, FALLOC_FL_KEEP_SIZE, 0, PAGE_SIZE))).toBe('EPERM');
  });

  it('a VM preserved in another session does not count', () => {
    const { o, vm, gmem, preserve } = setup();
    const other = createSession(o.p, o.dev, 'other');
    preserveFd(o.p, other, vm, 1);
    expect(preserve(gmem, 2)).toBe(0);
    expect(errnoOf(() => o.k1.kexecJump(o.cfg))).toBe('ENOENT');
  });

  it('after the failed reboot the VMM may add the VM and update', () => {
    const { o, vm, gmem, preserve } = setup();
    expect(preserve(gmem, 1)).toBe(0);
    expect(errnoOf(() => o.k1.kexecJump(o.cfg))).toBe('ENOENT');
    expect(preserve(vm, 2)).toBe(0);
    expect(() => jump(o)).not.toThrow();
  });

  it('freeze to a kernel that reads only guest_memfd_luo_v1 refuses a large folio (EOPNOTSUPP) and rolls back', () => {
    const o = start({ plugins: plugins(), next: plugins({ writes: ['1.0.0'], reads: '^1.0.0' }) });
    const guest = createGuest(o.p, o.kvm, { vcpus: 1, pagesPerVcpu: 1100 });
    gmemCollapse(o.p, guest.gmemFd, 2 * MiB);
    const s = createSession(o.p, o.dev, 'vm0');
    preserveFd(o.p, s, guest.vmFd, 1);
    preserveFd(o.p, s, guest.gmemFd, 2);
    expect(errnoOf(() => o.k1.kexecJump(o.cfg))).toBe('EOPNOTSUPP');
    expect(errnoOf(() => o.p.fallocate(guest.gmemFd, FALLOC_FL_KEEP_SIZE, 0, 8 * PAGE_SIZE))).toBe(0);
  });
});
