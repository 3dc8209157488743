/**
 * hugeTLB memfds (hugetlb series RFC): folios preserved with their order, the 'hugetlb-v1'
 * FLB carrying only per-hstate counts of preserved pages, and the next kernel sizing its
 * pool as configured minus preserved. Upstream memfd-v1/v2 do not handle them at all.
 */
import { describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '@liveupdate/hw';
import { FormatNegotiationError, abi, createSession, finishSession, preserveFd, retrieveFd, retrieveSession } from '@liveupdate/sdk';
import memfd, {
  MFD_HUGETLB, MFD_HUGE_1GB, MFD_HUGE_2MB, hugetlbPools, memfdAbi, memfdCheckSynthetic, memfdCreate, memfdFillSynthetic,
  memfdResidentPages, memfdStore,
} from '@liveupdate/plugin-memfd';
import {
  CMDLINE, GiB, MiB, SEEK_END, bootNext, errnoOf, handedOver, handedOverFlbs, pattern, readV3, retrieveOne, start, type Outgoing,
} from './support.js';

const ORDER_2M = 9;
const readV4 = (m: Outgoing['machine'], phys: number) => memfdAbi.memfdLuoSerV4.decode(m.memory.read(phys, memfdAbi.memfdLuoSerV4.size));
const ORDER_1G = 18;

/** The per-hstate records of the hugetlb FLB, read from its page. */
function hstates(o: Outgoing): Array<{ nr_pages: bigint; order: number }> {
  const flb = handedOverFlbs(o).find((f) => f.name === memfdAbi.HUGETLB_FLB_COMPATIBLE);
  if (!flb) return [];
  const { hugetlbHstateSer, HUGETLB_MAX_HSTATES } = memfdAbi;
  const raw = o.machine.memory.read(Number(flb.data), HUGETLB_MAX_HSTATES * hugetlbHstateSer.size);
  const out: Array<{ nr_pages: bigint; order: number }> = [];
  for (let i = 0; i < HUGETLB_MAX_HSTATES; i++) {
    const h = hugetlbHstateSer.decode(raw, i * hugetlbHstateSer.size);
    if (h.nr_pages !== 0n) out.push(h);
  }
  return out;
}

describe('2 MiB hugeTLB memfd (hugepagesz=2M hugepages=64)', () => {
  const HUGE = 2 * MiB;

  /** 16 huge pages of file, 5 present: folios 0..3 synthetic, folio 10 a pattern. Preserved as vm/1, then the jump. */
  function handOver(next = [memfd()]) {
    const o = start([memfd()], { cmdline: `${CMDLINE} hugepagesz=2M hugepages=64`, next });
    const fd = memfdCreate(o.p, 'guest-ram', MFD_HUGETLB | MFD_HUGE_2MB);
    o.p.ftruncate(fd, 16 * HUGE);
    memfdFillSynthetic(o.p, fd, 0, 4 * HUGE, 0x2000);
    memfdStore(o.p, fd, pattern(PAGE_SIZE, 61), 10 * HUGE + 3 * PAGE_SIZE);
    preserveFd(o.p, createSession(o.p, o.dev, 'vm'), fd, 1);
    return o;
  }

  it('the first kernel reserves the configured pool: 64 pages, all free', () => {
    const o = start([memfd()], { cmdline: `${CMDLINE} hugepagesz=2M hugepages=64` });
    const pool = hugetlbPools(o.k1).get(ORDER_2M);
    expect({ total: pool?.total, free: pool?.free.length, preserved: pool?.preserved, configured: pool?.configured })
      .toEqual({ total: 64, free: 64, preserved: 0, configured: 64 });
  });

  it("is handed over as 'hugetlb-memfd@2.0.0' (the memfd@4.1.0 layout) with folio order 9 and the 5 present folios", () => {
    const o = handOver();
    o.k1.kexecJump(o.cfg);
    const f = handedOver(o, 'vm', 1);
    expect(f.compatible).toBe('hugetlb-memfd@2.0.0');
    const h = readV4(o.machine, Number(f.data));
    expect({ size: h.size, nr_folios: h.nr_folios, order: h.order }).toEqual({ size: BigInt(16 * HUGE), nr_folios: 5n, order: ORDER_2M });
  });

  it("goes to a kernel that reads hugetlb-memfd 1.x only as 'hugetlb-memfd@1.0.0' (the memfd@3.0.0 xarray layout), content intact", () => {
    const o = handOver([memfd({ hugetlbWrites: ['1.0.0'], hugetlbReads: '^1.0.0' })]);
    o.k1.kexecJump(o.cfg);
    const f = handedOver(o, 'vm', 1);
    expect(f.compatible).toBe('hugetlb-memfd@1.0.0');
    const h = readV3(o.machine, Number(f.data));
    expect({ size: h.size, nr_folios: h.nr_folios, order: h.order }).toEqual({ size: BigInt(16 * HUGE), nr_folios: 5n, order: ORDER_2M });
    const n = bootNext(o);
    const { fd } = retrieveOne(n, 'vm', 1);
    expect(n.p2.pread(fd, PAGE_SIZE, 10 * HUGE + 3 * PAGE_SIZE)).toEqual(pattern(PAGE_SIZE, 61));
  });

  it('two hugeTLB memfds: a file entry aimed at the other file\'s header is EINVAL, and the other file keeps its folios', () => {
    const o = start([memfd()], { cmdline: `${CMDLINE} hugepagesz=2M hugepages=64` });
    const s = createSession(o.p, o.dev, 'vm');
    for (const token of [1, 2]) {
      const fd = memfdCreate(o.p, `ram${token}`, MFD_HUGETLB | MFD_HUGE_2MB);
      o.p.ftruncate(fd, 2 * HUGE);
      memfdStore(o.p, fd, pattern(PAGE_SIZE, 70 + token), 0);
      preserveFd(o.p, s, fd, token);
    }
    o.k1.kexecJump(o.cfg);
    o.machine.memory.writeU64(handedOver(o, 'vm', 2).entryPhys + abi.luo.luoFileSer.offsets.data, handedOver(o, 'vm', 1).data);
    const n = bootNext(o);
    const sfd = retrieveSession(n.p2, n.dev2, 'vm');
    expect(errnoOf(() => retrieveFd(n.p2, sfd, 2))).toBe('EINVAL');
    expect(n.p2.pread(retrieveFd(n.p2, sfd, 1), PAGE_SIZE, 0)).toEqual(pattern(PAGE_SIZE, 71));
  });

  it("the 'hugetlb-v1' FLB carries the count per huge page size: 5 pages of order 9", () => {
    const o = handOver();
    o.k1.kexecJump(o.cfg);
    expect(handedOverFlbs(o).map((f) => [f.name, f.count])).toEqual([['hugetlb-v1', 1n]]);
    expect(hstates(o)).toEqual([{ nr_pages: 5n, order: ORDER_2M }]);
  });

  it('the next kernel counts the 5 as preserved and allocates only 59 new pages for its pool', () => {
    const o = handOver();
    o.k1.kexecJump(o.cfg);
    const { k2 } = bootNext(o);
    const pool = hugetlbPools(k2).get(ORDER_2M);
    expect({ total: pool?.total, free: pool?.free.length, preserved: pool?.preserved, configured: pool?.configured })
      .toEqual({ total: 64, free: 59, preserved: 5, configured: 64 });
  });

  it('the retrieved memfd has its size, its 5 huge folios (2560 pages) and their content', () => {
    const o = handOver();
    o.k1.kexecJump(o.cfg);
    const next = bootNext(o);
    const { fd } = retrieveOne(next, 'vm', 1);
    expect(next.p2.lseek(fd, 0, SEEK_END)).toBe(16 * HUGE);
    expect(memfdResidentPages(next.p2, fd)).toBe(5 * 512);
    expect(memfdCheckSynthetic(next.p2, fd, 0, 4 * HUGE, 0x2000)).toBe(true);
    expect(next.p2.pread(fd, PAGE_SIZE, 10 * HUGE + 3 * PAGE_SIZE)).toEqual(pattern(PAGE_SIZE, 61));
    expect(next.p2.pread(fd, PAGE_SIZE, 11 * HUGE)).toEqual(new Uint8Array(PAGE_SIZE));
  });

  it('FINISH of an unretrieved hugeTLB memfd gives its 5 folios back to the pool: 64 free', () => {
    const o = handOver();
    o.k1.kexecJump(o.cfg);
    const next = bootNext(o);
    finishSession(next.p2, retrieveSession(next.p2, next.dev2, 'vm'));
    expect(hugetlbPools(next.k2).get(ORDER_2M)?.free.length).toBe(64);
    expect(next.k2.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
  });

  it('closing the session before the kexec drops the FLB: the next kernel allocates all 64', () => {
    const o = start([memfd()], { cmdline: `${CMDLINE} hugepagesz=2M hugepages=64` });
    const fd = memfdCreate(o.p, 'guest-ram', MFD_HUGETLB | MFD_HUGE_2MB);
    o.p.ftruncate(fd, HUGE);
    memfdStore(o.p, fd, pattern(8, 1), 0);
    const s = createSession(o.p, o.dev, 'vm');
    preserveFd(o.p, s, fd, 1);
    o.p.close(s);
    o.k1.kexecJump(o.cfg);
    expect(handedOverFlbs(o)).toEqual([]);
    const pool = hugetlbPools(bootNext(o).k2).get(ORDER_2M);
    expect({ free: pool?.free.length, preserved: pool?.preserved }).toEqual({ free: 64, preserved: 0 });
  });

  it('a kernel whose plugin does not handle hugeTLB memfds refuses the kexec before freeze', () => {
    const o = handOver([memfd({ hugetlb: false })]);
    let err: unknown;
    try { o.k1.kexecJump(o.cfg); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(FormatNegotiationError);
    expect((err as FormatNegotiationError).refusals).toEqual([
      { family: 'hugetlb-memfd', owner: '@liveupdate/plugin-memfd', offered: ['1.0.0', '2.0.0'], accepted: null },
    ]);
    expect(o.k1.isDead).toBe(false);
  });
});

describe('1 GiB hugeTLB memfd (hugepagesz=1G hugepages=4)', () => {
  function handOver() {
    const o = start([memfd()], { memory: '16GiB', cmdline: `${CMDLINE} hugepagesz=1G hugepages=4` });
    const fd = memfdCreate(o.p, 'guest-ram', MFD_HUGETLB | MFD_HUGE_1GB);
    o.p.ftruncate(fd, 3 * GiB);
    memfdFillSynthetic(o.p, fd, 0, GiB, 0x1000);
    memfdStore(o.p, fd, pattern(PAGE_SIZE, 62), 2 * GiB + 5 * PAGE_SIZE);
    preserveFd(o.p, createSession(o.p, o.dev, 'vm'), fd, 1);
    o.k1.kexecJump(o.cfg);
    return o;
  }

  it('preserves its 2 folios with order 18 and the FLB says 2 pages of order 18', () => {
    const o = handOver();
    expect(readV4(o.machine, Number(handedOver(o, 'vm', 1).data)).order).toBe(ORDER_1G);
    expect(hstates(o)).toEqual([{ nr_pages: 2n, order: ORDER_1G }]);
  });

  it('the next kernel keeps 2 preserved and allocates 2 new 1 GiB pages; content and size come back', () => {
    const o = handOver();
    const next = bootNext(o);
    const pool = hugetlbPools(next.k2).get(ORDER_1G);
    expect({ total: pool?.total, free: pool?.free.length, preserved: pool?.preserved }).toEqual({ total: 4, free: 2, preserved: 2 });
    const { fd } = retrieveOne(next, 'vm', 1);
    expect(next.p2.lseek(fd, 0, SEEK_END)).toBe(3 * GiB);
    expect(memfdResidentPages(next.p2, fd)).toBe(2 * 262_144);
    expect(memfdCheckSynthetic(next.p2, fd, 0, GiB, 0x1000)).toBe(true);
    expect(next.p2.pread(fd, PAGE_SIZE, 2 * GiB + 5 * PAGE_SIZE)).toEqual(pattern(PAGE_SIZE, 62));
  });
});

describe('both huge page sizes in one kernel', () => {
  it('the FLB carries one record per hstate, by order: 3 × order 9 and 1 × order 18', () => {
    const o = start([memfd()], { memory: '16GiB', cmdline: `${CMDLINE} hugepagesz=2M hugepages=16 hugepagesz=1G hugepages=2` });
    const small = memfdCreate(o.p, 'small', MFD_HUGETLB | MFD_HUGE_2MB);
    o.p.ftruncate(small, 6 * MiB);
    memfdFillSynthetic(o.p, small, 0, 6 * MiB, 1);
    const big = memfdCreate(o.p, 'big', MFD_HUGETLB | MFD_HUGE_1GB);
    o.p.ftruncate(big, GiB);
    memfdStore(o.p, big, pattern(8, 2), 0);
    const s = createSession(o.p, o.dev, 'vm');
    preserveFd(o.p, s, small, 1);
    preserveFd(o.p, s, big, 2);
    o.k1.kexecJump(o.cfg);
    expect(handedOverFlbs(o).map((f) => [f.name, f.count])).toEqual([['hugetlb-v1', 2n]]);
    expect(hstates(o)).toEqual([{ nr_pages: 3n, order: ORDER_2M }, { nr_pages: 1n, order: ORDER_1G }]);
  });
});

describe('which handler claims MFD_HUGETLB', () => {
  const hugeMemfd = (o: Outgoing): number => {
    const fd = memfdCreate(o.p, 'huge', MFD_HUGETLB | MFD_HUGE_2MB);
    o.p.ftruncate(fd, 2 * MiB);
    memfdStore(o.p, fd, pattern(8, 3), 0);
    return fd;
  };

  it('a v2-only build without the hugetlb handler (hugetlb: false) fails PRESERVE_FD with ENOENT, as mainline', () => {
    const o = start([memfd({ writes: ['2.0.0'], hugetlb: false })], { cmdline: `${CMDLINE} hugepagesz=2M hugepages=4` });
    expect(errnoOf(() => preserveFd(o.p, createSession(o.p, o.dev, 'vm'), hugeMemfd(o), 1))).toBe('ENOENT');
  });

  it("a v2-only build keeps the separate hugetlb handler: 'writes' governs the shmem format only", () => {
    const o = start([memfd({ writes: ['2.0.0'] })], { cmdline: `${CMDLINE} hugepagesz=2M hugepages=4` });
    preserveFd(o.p, createSession(o.p, o.dev, 'vm'), hugeMemfd(o), 1);
    o.k1.kexecJump(o.cfg);
    expect(handedOver(o, 'vm', 1).compatible).toBe('hugetlb-memfd@2.0.0');
  });
});
