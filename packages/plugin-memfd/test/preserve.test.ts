/**
 * PRESERVE_FD of a memfd: the double-preservation rule (get_id is the inode), the frozen inode
 * of the upstream formats against the growable one of format 3, the seals as recorded by each
 * format, and the EFBIG limit of memfd-v2's u32 page count.
 */
import { describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '@liveupdate/hw';
import { createSession, finishSession, preserveFd } from '@liveupdate/sdk';
import memfd, {
  F_ADD_SEALS, F_GET_SEALS, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, MFD_ALLOW_SEALING, memfdAbi, memfdCreate,
  memfdFillSynthetic, memfdResidentPages,
} from '@liveupdate/plugin-memfd';
import {
  MiB, SEEK_END, TiB, errnoOf, handedOver, liveUpdate, pattern, readV3, retrieveOne, start,
} from './support.js';

const { F_SEAL_GROW, F_SEAL_SHRINK, F_SEAL_WRITE } = memfdAbi;

describe('double preservation (get_id = the inode)', () => {
  it('a second PRESERVE_FD of the same memfd through another fd fails EBUSY', () => {
    const o = start([memfd()]);
    const fd = memfdCreate(o.p, 'ram', 0);
    const dup = o.p.fdInstall(o.p.fget(fd), false);
    const s = createSession(o.p, o.dev, 'a');
    preserveFd(o.p, s, fd, 1);
    expect(errnoOf(() => preserveFd(o.p, s, dup, 2))).toBe('EBUSY');
  });

  it('a second PRESERVE_FD of the same memfd into another session fails EBUSY', () => {
    const o = start([memfd()]);
    const fd = memfdCreate(o.p, 'ram', 0);
    preserveFd(o.p, createSession(o.p, o.dev, 'a'), fd, 1);
    expect(errnoOf(() => preserveFd(o.p, createSession(o.p, o.dev, 'b'), fd, 1))).toBe('EBUSY');
  });

  it('closing the first session unpreserves the memfd, so it can be preserved again', () => {
    const o = start([memfd()]);
    const fd = memfdCreate(o.p, 'ram', 0);
    const a = createSession(o.p, o.dev, 'a');
    preserveFd(o.p, a, fd, 1);
    o.p.close(a);
    expect(errnoOf(() => preserveFd(o.p, createSession(o.p, o.dev, 'b'), fd, 1))).toBe(0);
  });

  it('a retrieved memfd cannot be preserved again before its session is finished (EBUSY), and can after', () => {
    const o = start([memfd()]);
    preserveFd(o.p, createSession(o.p, o.dev, 'vm'), memfdCreate(o.p, 'ram', 0), 1);
    const next = liveUpdate(o);
    const { sfd, fd } = retrieveOne(next, 'vm', 1);
    const out = createSession(next.p2, next.dev2, 'vm-next');
    expect(errnoOf(() => preserveFd(next.p2, out, fd, 1))).toBe('EBUSY');
    finishSession(next.p2, sfd);
    expect(errnoOf(() => preserveFd(next.p2, out, fd, 1))).toBe(0);
  });
});

describe.each([
  { label: 'format 1 (memfd-v1)', writes: ['1.0.0'] },
  { label: 'format 2 (memfd-v2)', writes: ['2.0.0'] },
])('$label freezes the inode while preserved', ({ writes }) => {
  function preserved() {
    const o = start([memfd({ writes })]);
    const fd = memfdCreate(o.p, 'ram', 0);
    o.p.pwrite(fd, pattern(2 * PAGE_SIZE, 21), 0);
    const s = createSession(o.p, o.dev, 'vm');
    preserveFd(o.p, s, fd, 1);
    return { o, fd, s };
  }

  it('ftruncate fails EPERM, growing or shrinking', () => {
    const { o, fd } = preserved();
    expect(errnoOf(() => o.p.ftruncate(fd, 4 * PAGE_SIZE))).toBe('EPERM');
    expect(errnoOf(() => o.p.ftruncate(fd, PAGE_SIZE))).toBe('EPERM');
    expect(o.p.lseek(fd, 0, SEEK_END)).toBe(2 * PAGE_SIZE);
  });

  it('a pwrite past the end and a hole punch fail EPERM', () => {
    const { o, fd } = preserved();
    expect(errnoOf(() => o.p.pwrite(fd, pattern(8, 1), 2 * PAGE_SIZE))).toBe('EPERM');
    expect(errnoOf(() => o.p.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, PAGE_SIZE))).toBe('EPERM');
  });

  it('a write inside the file still lands in the pinned pages and is handed over', () => {
    const { o, fd } = preserved();
    o.p.pwrite(fd, pattern(100, 22), PAGE_SIZE + 50);
    const next = liveUpdate(o);
    const { fd: got } = retrieveOne(next, 'vm', 1);
    const want = pattern(2 * PAGE_SIZE, 21);
    want.set(pattern(100, 22), PAGE_SIZE + 50);
    expect(next.p2.pread(got, 2 * PAGE_SIZE, 0)).toEqual(want);
  });

  it('closing the session unfreezes the inode: ftruncate works again', () => {
    const { o, fd, s } = preserved();
    o.p.close(s);
    expect(errnoOf(() => o.p.ftruncate(fd, 4 * PAGE_SIZE))).toBe(0);
  });

  it('a seal added after PRESERVE_FD is not handed over (upstream records the seals at preserve)', () => {
    const o = start([memfd({ writes })]);
    const fd = memfdCreate(o.p, 'ram', MFD_ALLOW_SEALING);
    o.p.fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK);
    preserveFd(o.p, createSession(o.p, o.dev, 'vm'), fd, 1);
    o.p.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE);
    const next = liveUpdate(o);
    const { fd: got } = retrieveOne(next, 'vm', 1);
    expect(next.p2.fcntl(got, F_GET_SEALS)).toBe(writes[0] === '1.0.0' ? 0 : F_SEAL_SHRINK);
  });
});

describe('format 3 keeps the inode growable until freeze', () => {
  function preserved() {
    const o = start([memfd()]);
    const fd = memfdCreate(o.p, 'ram', MFD_ALLOW_SEALING);
    o.p.pwrite(fd, pattern(PAGE_SIZE, 31), 0);
    preserveFd(o.p, createSession(o.p, o.dev, 'vm'), fd, 1);
    return { o, fd };
  }

  it('ftruncate and a write past the old end after PRESERVE_FD are captured at freeze', () => {
    const { o, fd } = preserved();
    o.p.ftruncate(fd, 8 * PAGE_SIZE);
    o.p.pwrite(fd, pattern(PAGE_SIZE, 32), 6 * PAGE_SIZE);
    o.p.pwrite(fd, pattern(10, 33), 9 * PAGE_SIZE);
    const next = liveUpdate(o);
    const { fd: got } = retrieveOne(next, 'vm', 1);
    expect(next.p2.lseek(got, 0, SEEK_END)).toBe(9 * PAGE_SIZE + 10);
    expect(memfdResidentPages(next.p2, got)).toBe(3);
    expect(next.p2.pread(got, PAGE_SIZE, 0)).toEqual(pattern(PAGE_SIZE, 31));
    expect(next.p2.pread(got, PAGE_SIZE, 6 * PAGE_SIZE)).toEqual(pattern(PAGE_SIZE, 32));
    expect(next.p2.pread(got, 10, 9 * PAGE_SIZE)).toEqual(pattern(10, 33));
  });

  it('a page punched out after PRESERVE_FD is no longer handed over', () => {
    const { o, fd } = preserved();
    o.p.pwrite(fd, pattern(PAGE_SIZE, 34), PAGE_SIZE);
    o.p.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, PAGE_SIZE);
    const next = liveUpdate(o);
    const { fd: got } = retrieveOne(next, 'vm', 1);
    expect(memfdResidentPages(next.p2, got)).toBe(1);
    expect(next.p2.pread(got, 2 * PAGE_SIZE, 0)).toEqual(new Uint8Array([...new Uint8Array(PAGE_SIZE), ...pattern(PAGE_SIZE, 34)]));
  });

  it('seals added after PRESERVE_FD are captured at freeze', () => {
    const { o, fd } = preserved();
    o.p.fcntl(fd, F_ADD_SEALS, F_SEAL_GROW);
    o.k1.kexecJump(o.cfg);
    expect(readV3(o.machine, Number(handedOver(o, 'vm', 1).data)).seals).toBe(F_SEAL_GROW);
  });
});

describe('EFBIG: memfd-v2 counts pages in a u32', () => {
  const SIZE = 16 * TiB; // 2^32 pages: one more than UINT_MAX

  it.each([
    ['16 TiB (2^32 pages, one more than UINT_MAX)', 16 * TiB],
    ['17 TiB', 17 * TiB],
  ])('a v2-only build refuses a %s sparse memfd with EFBIG, undoing everything', { timeout: 30_000 }, (_what, size) => {
    const o = start([memfd({ writes: ['2.0.0'] })], { memory: '64TiB' });
    const fd = memfdCreate(o.p, 'ram', 0);
    o.p.ftruncate(fd, size);
    const s = createSession(o.p, o.dev, 'vm');
    const before = o.k1.khoOut?.survivors().blocks;
    expect(errnoOf(() => preserveFd(o.p, s, fd, 1))).toBe('EFBIG');
    expect(o.k1.khoOut?.survivors().blocks).toBe(before);
  });

  it('after EFBIG the memfd is not frozen and keeps its one resident page', { timeout: 30_000 }, () => {
    const o = start([memfd({ writes: ['2.0.0'] })], { memory: '64TiB' });
    const fd = memfdCreate(o.p, 'ram', 0);
    o.p.ftruncate(fd, SIZE);
    o.p.pwrite(fd, pattern(16, 41), SIZE - 16);
    expect(errnoOf(() => preserveFd(o.p, createSession(o.p, o.dev, 'vm'), fd, 1))).toBe('EFBIG');
    expect(memfdResidentPages(o.p, fd)).toBe(1);
    expect(errnoOf(() => o.p.ftruncate(fd, SIZE + PAGE_SIZE))).toBe(0);
  });

  it('format 3 hands the same 16 TiB sparse memfd over with its one resident page', { timeout: 30_000 }, () => {
    const o = start([memfd()], { memory: '64TiB' });
    const fd = memfdCreate(o.p, 'ram', 0);
    o.p.ftruncate(fd, SIZE);
    memfdFillSynthetic(o.p, fd, SIZE - 2 * MiB, 2 * MiB, 7);
    preserveFd(o.p, createSession(o.p, o.dev, 'vm'), fd, 1);
    const next = liveUpdate(o);
    const { fd: got } = retrieveOne(next, 'vm', 1);
    expect(next.p2.lseek(got, 0, SEEK_END)).toBe(SIZE);
    expect(memfdResidentPages(next.p2, got)).toBe(512);
  });
});
