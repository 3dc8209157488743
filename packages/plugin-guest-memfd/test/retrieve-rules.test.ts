import { crc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '@liveupdate/hw';
import { createSession, errnoOf, finishSession, preserveFd, retrieveFd, retrieveSession } from '@liveupdate/sdk';
import { memfdCreate } from '@liveupdate/plugin-memfd';
import {
  FALLOC_FL_KEEP_SIZE, gmemLoad, gmemStore, kvmAbi, kvmCreateGuestMemfdFd, kvmCreateVm, kvmSetMemoryRegion2,
} from '../src/index.js';
import { gmemOf } from '../src/gmem.js';
import { vmOf } from '../src/kvm.js';
import { bootNext, jumpOnly, recordsPhys, setU64, u64, xaLeaf } from './handover.js';
import { plugins, start } from './support.js';

const { GUEST_MEMFD_FLAG_MMAP: MMAP, GUEST_MEMFD_FLAG_INIT_SHARED: SHARED } = kvmAbi;
const V1 = { plugins: plugins({ writes: ['1.0.0'] }), next: plugins({ writes: ['1.0.0'] }) };
const V2 = { plugins: plugins(), next: plugins() };
const UPTODATE = 1n << 52n;

/** A 16 KiB guest_memfd: pages 0 and 2 written, page 3 fallocated (never touched, not up to date), page 1 a hole. */
function scene(opts = V1) {
  const o = start(opts);
  const vm = kvmCreateVm(o.p, o.kvm, 0);
  const gmem = kvmCreateGuestMemfdFd(o.p, vm, 4 * PAGE_SIZE, MMAP | SHARED);
  gmemStore(o.p, gmem, new Uint8Array([0x11, 0x22]), 0);
  gmemStore(o.p, gmem, new Uint8Array([0x33]), 2 * PAGE_SIZE + 7);
  o.p.fallocate(gmem, FALLOC_FL_KEEP_SIZE, 3 * PAGE_SIZE, PAGE_SIZE);
  const g = gmemOf(o.p.file(gmem, 'test'));
  const pfns = [0, 2, 3].map((i) => g.folios.pfnOfPage(i));
  // Stale bytes in the fallocated page: the next kernel must clear it before first use.
  o.machine.memory.fill((pfns[2] as number) * PAGE_SIZE, PAGE_SIZE, 0xee);
  const memfd = memfdCreate(o.p, 'state', 0);
  const s = createSession(o.p, o.dev, 'vm0');
  preserveFd(o.p, s, vm, 1);
  preserveFd(o.p, s, gmem, 2);
  preserveFd(o.p, s, memfd, 3);
  return { o, vm, gmem, pfns: pfns as [number, number, number] };
}

function retrieveAll(o: ReturnType<typeof start>) {
  const i = bootNext(o);
  const s = retrieveSession(i.p2, i.dev2, 'vm0');
  return { i, s, gmem: () => retrieveFd(i.p2, s, 2), errno: () => errnoOf(() => retrieveFd(i.p2, s, 2)) };
}

describe('record bytes, checked against hand-computed bytes', () => {
  it('guest_memfd_luo_v1: the 48-byte header and one 16-byte record per present folio in index order', () => {
    const { o, pfns } = scene();
    const data = jumpOnly(o);
    const m = o.machine;
    const ser = data(2);
    const first = u64(m, ser + 32);
    const expectHeader = new Uint8Array(48);
    const hv = new DataView(expectHeader.buffer);
    hv.setBigUint64(0, 0x4000n, true); // size
    hv.setBigUint64(8, 3n, true); // flags MMAP | INIT_SHARED
    hv.setBigUint64(16, 3n, true); // nr_folios
    hv.setBigUint64(24, 1n, true); // vm_token: the VM's token in this session
    hv.setBigUint64(32, first, true); // kho_vmalloc.first
    hv.setUint32(40, 1, true); // total_pages
    hv.setUint16(44, 1, true); // KHO_VMALLOC_ALLOC
    hv.setUint16(46, 0, true); // order
    expect([...m.memory.read(ser, 48)]).toEqual([...expectHeader]);
    expect(first).not.toBe(0n);
    const rec = new Uint8Array(48);
    const rv = new DataView(rec.buffer);
    rv.setBigUint64(0, BigInt(pfns[0]) | UPTODATE, true); rv.setBigUint64(8, 0n, true);
    rv.setBigUint64(16, BigInt(pfns[1]) | UPTODATE, true); rv.setBigUint64(24, 2n, true);
    rv.setBigUint64(32, BigInt(pfns[2]), true); rv.setBigUint64(40, 3n, true); // fallocated: not up to date
    expect([...m.memory.read(recordsPhys(m, ser), 48)]).toEqual([...rec]);
    // kvm_luo_ser { type 0 (KVM_X86_DEFAULT_VM), kho_folios NULL: no page tables without OrphanVM }
    expect([...m.memory.read(data(1), 16)]).toEqual(new Array(16).fill(0));
  });

  it('the next kernel restores the folios at their indices; a folio not up to date reads zero', () => {
    const { o } = scene();
    jumpOnly(o);
    const { i, s, gmem } = retrieveAll(o);
    const fd = gmem();
    expect([...gmemLoad(i.p2, fd, 2, 0)]).toEqual([0x11, 0x22]);
    expect(gmemLoad(i.p2, fd, 1, 2 * PAGE_SIZE + 7)[0]).toBe(0x33);
    expect(gmemLoad(i.p2, fd, PAGE_SIZE, 3 * PAGE_SIZE).every((b) => b === 0)).toBe(true);
    finishSession(i.p2, s);
    expect(i.k2.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
  });

  it('sparse 2.x: header { size, flags, nr_folios, vm_token, folios_xa, entries_sum, header_crc32 } and xarray entries pfn | flags << 52', () => {
    const { o, pfns } = scene(V2);
    const data = jumpOnly(o);
    const m = o.machine;
    const ser = data(2);
    const root = u64(m, ser + 32);
    const entries = [[0n, BigInt(pfns[0]) | UPTODATE], [2n, BigInt(pfns[1]) | UPTODATE], [3n, BigInt(pfns[2])]] as const;
    const pairs = new Uint8Array(48);
    entries.forEach(([k, v], n) => { new DataView(pairs.buffer).setBigUint64(16 * n, k, true); new DataView(pairs.buffer).setBigUint64(16 * n + 8, v, true); });
    const head = new Uint8Array(48);
    const hv = new DataView(head.buffer);
    hv.setBigUint64(0, 0x4000n, true);
    hv.setBigUint64(8, 3n, true);
    hv.setBigUint64(16, 3n, true);
    hv.setBigUint64(24, 1n, true);
    hv.setBigUint64(32, root, true);
    // entries_sum: the CRC-32 of each (index, entry) pair, added mod 2^32.
    hv.setUint32(40, (crc32(pairs.subarray(0, 16)) + crc32(pairs.subarray(16, 32)) + crc32(pairs.subarray(32, 48))) >>> 0, true);
    hv.setUint32(44, crc32(head.subarray(0, 44)), true);
    expect([...m.memory.read(ser, 48)]).toEqual([...head]);
    const leaf = xaLeaf(m, Number(root));
    expect([0, 2, 3].map((k) => u64(m, leaf + 8 * k))).toEqual(entries.map(([, v]) => v));
    expect(u64(m, leaf + 8)).toBe(0n);
  });
});

describe('retrieve rules', () => {
  it('flags outside MMAP|INIT_SHARED are EOPNOTSUPP at retrieve (and the error is sticky)', () => {
    const { o } = scene();
    const data = jumpOnly(o);
    setU64(o.machine, data(2) + 8, 3n | 4n);
    const { errno } = retrieveAll(o);
    expect(errno()).toBe('EOPNOTSUPP');
    expect(errno()).toBe('EOPNOTSUPP');
  });

  it('a vm_token that names a file that is not a KVM VM is EINVAL; one that names nothing is ENOENT', () => {
    const a = scene();
    setU64(a.o.machine, jumpOnly(a.o)(2) + 24, 3n);
    expect(retrieveAll(a.o).errno()).toBe('EINVAL');
    const b = scene();
    setU64(b.o.machine, jumpOnly(b.o)(2) + 24, 99n);
    expect(retrieveAll(b.o).errno()).toBe('ENOENT');
  });

  it('a record whose pfn names handover metadata (its own header page) cannot be restored: EIO, nothing leaked', () => {
    const { o } = scene();
    const data = jumpOnly(o);
    const ser = data(2);
    setU64(o.machine, recordsPhys(o.machine, ser) + 16, BigInt(ser / PAGE_SIZE) | UPTODATE);
    const { i, s, errno } = retrieveAll(o);
    expect(errno()).toBe('EIO');
    retrieveFd(i.p2, s, 1);
    finishSession(i.p2, s);
  });

  it('a duplicate index is EEXIST (filemap_add_folio), every folio released; records out of order are accepted, as upstream', () => {
    const a = scene();
    const serA = jumpOnly(a.o)(2);
    setU64(a.o.machine, recordsPhys(a.o.machine, serA) + 24, 0n); // record 1 index 2 -> 0 (duplicate)
    const ra = retrieveAll(a.o);
    expect(ra.errno()).toBe('EEXIST');
    retrieveFd(ra.i.p2, ra.s, 1);
    finishSession(ra.i.p2, ra.s);
    expect(ra.i.k2.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
    const b = scene();
    const m = b.o.machine;
    const rec = recordsPhys(m, jumpOnly(b.o)(2));
    // Swap records 0 (index 0) and 1 (index 2).
    const [p0, i0, p1, i1] = [u64(m, rec), u64(m, rec + 8), u64(m, rec + 16), u64(m, rec + 24)];
    setU64(m, rec, p1); setU64(m, rec + 8, i1); setU64(m, rec + 16, p0); setU64(m, rec + 24, i0);
    const rb = retrieveAll(b.o);
    const fd = rb.gmem();
    expect([...gmemLoad(rb.i.p2, fd, 2, 0)]).toEqual([0x11, 0x22]);
    expect(gmemLoad(rb.i.p2, fd, 1, 2 * PAGE_SIZE + 7)[0]).toBe(0x33);
  });

  it('a record with pfn 0 is skipped, as upstream does (that page reads as a hole)', () => {
    const { o } = scene();
    const ser = jumpOnly(o)(2);
    const rec = recordsPhys(o.machine, ser);
    const lost = Number(u64(o.machine, rec + 16) & ((1n << 52n) - 1n));
    setU64(o.machine, rec + 16, 0n);
    const { i, s, gmem } = retrieveAll(o);
    const fd = gmem();
    expect(gmemLoad(i.p2, fd, 1, 2 * PAGE_SIZE + 7)[0]).toBe(0);
    finishSession(i.p2, s);
    // The folio the record no longer names stays reserved: a leak, not a wrong answer.
    expect(i.k2.khoIn?.leaked()).toEqual({ blocks: 1, pages: 1 });
    expect(lost).toBeGreaterThan(0);
  });

  it('a shared guest_memfd whose VM comes back with private memory is EINVAL (kvm_gmem_get_supported_flags)', () => {
    const { o } = scene();
    const data = jumpOnly(o);
    setU64(o.machine, data(1), BigInt(kvmAbi.KVM_X86_SW_PROTECTED_VM));
    const { i, s, errno } = retrieveAll(o);
    expect(errno()).toBe('EINVAL');
    finishSession(i.p2, s);
    expect(i.k2.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
  });

  it('size is checked before flags: a zero size is EINVAL even with unknown flags', () => {
    const { o } = scene();
    const ser = jumpOnly(o)(2);
    setU64(o.machine, ser, 0n);
    setU64(o.machine, ser + 8, 0xffn);
    expect(retrieveAll(o).errno()).toBe('EINVAL');
  });

  it('an index beyond the file or an nr_folios beyond the array is EINVAL', () => {
    const a = scene();
    setU64(a.o.machine, recordsPhys(a.o.machine, jumpOnly(a.o)(2)) + 40, 4n);
    expect(retrieveAll(a.o).errno()).toBe('EINVAL');
    const b = scene();
    setU64(b.o.machine, jumpOnly(b.o)(2) + 16, 300n);
    expect(retrieveAll(b.o).errno()).toBe('EINVAL');
  });

  it('sparse: a changed header byte or xarray entry fails its checksum with EINVAL', () => {
    const a = scene(V2);
    const serA = jumpOnly(a.o)(2);
    setU64(a.o.machine, serA, 0x8000n);
    expect(retrieveAll(a.o).errno()).toBe('EINVAL');
    const b = scene(V2);
    const leaf = xaLeaf(b.o.machine, Number(u64(b.o.machine, jumpOnly(b.o)(2) + 32)));
    setU64(b.o.machine, leaf + 24, u64(b.o.machine, leaf + 24) | UPTODATE);
    expect(retrieveAll(b.o).errno()).toBe('EINVAL');
  });

  it('FINISH with nothing retrieved releases every folio and record', () => {
    for (const opts of [V1, V2]) {
      const { o } = scene(opts);
      jumpOnly(o);
      const { i, s } = retrieveAll(o);
      finishSession(i.p2, s);
      expect(i.k2.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
    }
  });

  it('a guest_memfd retrieved without its VM, then FINISH: the VM file is lost and the guest_memfd dangles', () => {
    const { o } = scene();
    jumpOnly(o);
    const { i, s, gmem } = retrieveAll(o);
    const fd = gmem();
    const g = gmemOf(i.p2.file(fd, 'test'));
    const vm = g.kvm as ReturnType<typeof vmOf>;
    expect(vm.fileReleased).toBe(false);
    finishSession(i.p2, s);
    // LUO dropped the only reference to the VM file: nobody can reach the VM any more.
    expect(vm.fileReleased).toBe(true);
    expect(vm.file?.isReleased).toBe(true);
    expect(errnoOf(() => retrieveFd(i.p2, s, 1))).toBe('ENOENT');
    // The guest_memfd still works, but it cannot be bound to any VM the VMM can create.
    expect([...gmemLoad(i.p2, fd, 2, 0)]).toEqual([0x11, 0x22]);
    const vm2 = kvmCreateVm(i.p2, i.kvm2, 0);
    expect(errnoOf(() => kvmSetMemoryRegion2(i.p2, vm2, { slot: 0, gpa: 0, size: PAGE_SIZE, guestMemfd: fd, guestMemfdOffset: 0 }))).toBe('EINVAL');
    i.p2.close(fd);
    expect(vm.destroyed).toBe(true);
  });
});
