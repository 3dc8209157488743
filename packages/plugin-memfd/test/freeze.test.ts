/**
 * The reboot path: freeze writes the header in the negotiated format, converting a sparse
 * (format 3) file for a kernel that reads only memfd-v2; a failed reboot unfreezes it back to a
 * growable sparse file whose next handover is exact again.
 */
import { describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '@liveupdate/hw';
import { ErrnoError, createSession, finishSession, preserveFd, type KexecConfig } from '@liveupdate/sdk';
import memfd, { memfdCreate, memfdResidentPages } from '@liveupdate/plugin-memfd';
import {
  SEEK_CUR, SEEK_END, SEEK_SET, bootNext, errnoOf, handedOver, pattern, readV2, retrieveOne, start, type Outgoing,
} from './support.js';

/** A kernel with the same plugin code that reads memfd-v1/v2 only (as mainline). */
const V2_ONLY = [memfd({ writes: ['1.0.0', '2.0.0'], reads: '>=1.0.0 <3.0.0' })];

/** A default build with a sparse memfd (64 pages, pages 0 and 40 written, pos 100) as vm/1 and a second memfd as vm/2. */
function sparseAndAnother(next = V2_ONLY, build = [memfd()]): { o: Outgoing; fd: number } {
  const o = start(build, { next });
  const fd = memfdCreate(o.p, 'ram', 0);
  o.p.ftruncate(fd, 64 * PAGE_SIZE);
  o.p.pwrite(fd, pattern(PAGE_SIZE, 1), 0);
  o.p.pwrite(fd, pattern(PAGE_SIZE, 2), 40 * PAGE_SIZE);
  o.p.lseek(fd, 100, SEEK_SET);
  const other = memfdCreate(o.p, 'other', 0);
  o.p.pwrite(other, pattern(16, 3), 0);
  const s = createSession(o.p, o.dev, 'vm');
  preserveFd(o.p, s, fd, 1);
  preserveFd(o.p, s, other, 2);
  return { o, fd };
}

describe('a format-3 memfd handed over to a memfd-v2-only kernel', () => {
  it('is written as memfd-v2 with every page below i_size in the folio array', () => {
    const { o } = sparseAndAnother();
    o.k1.kexecJump(o.cfg);
    const f = handedOver(o, 'vm', 1);
    expect(f.compatible).toBe('memfd-v2');
    const h = readV2(o.machine, Number(f.data));
    expect({ pos: h.pos, size: h.size, nr_folios: h.nr_folios }).toEqual({ pos: 100n, size: BigInt(64 * PAGE_SIZE), nr_folios: 64n });
  });

  it('hands over no xarray pages: after FINISH nothing stays reserved in the next kernel', () => {
    const { o } = sparseAndAnother();
    const next = (o.k1.kexecJump(o.cfg), bootNext(o));
    const { sfd, fd } = retrieveOne(next, 'vm', 1);
    expect(memfdResidentPages(next.p2, fd)).toBe(64);
    expect(next.p2.pread(fd, PAGE_SIZE, 40 * PAGE_SIZE)).toEqual(pattern(PAGE_SIZE, 2));
    finishSession(next.p2, sfd);
    expect(next.k2.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
  });
});

describe('a reboot that fails after the conversion (a later file fails its freeze)', () => {
  /** Fails the freeze of vm/2 while `failing.now` is true. */
  function failSecondFreeze(o: Outgoing): { now: boolean } {
    const failing = { now: true };
    o.k1.luo.hooks.fileOp.tap('fail-second-freeze', (ev) => {
      if (failing.now && ev.op === 'freeze' && ev.token === 2n) throw new ErrnoError('EIO', 'freeze', 'injected');
    });
    return failing;
  }

  it('fails the kexec with that errno and keeps kernel A running', () => {
    const { o } = sparseAndAnother();
    failSecondFreeze(o);
    expect(errnoOf(() => o.k1.kexecJump(o.cfg))).toBe('EIO');
    expect(o.k1.isDead).toBe(false);
  });

  it('unfreezes the memfd: growable again, its materialized holes kept', () => {
    const { o, fd } = sparseAndAnother();
    failSecondFreeze(o);
    errnoOf(() => o.k1.kexecJump(o.cfg));
    expect(errnoOf(() => o.p.ftruncate(fd, 80 * PAGE_SIZE))).toBe(0);
    expect(memfdResidentPages(o.p, fd)).toBe(64);
  });

  it.each([
    ['memfd@3.1.0', 'a rebuilt xarray', ['1.0.0', '2.0.0', '3.0.0', '3.1.0']],
    ['memfd@3.2.0', 'a rebuilt xarray', ['1.0.0', '2.0.0', '3.0.0', '3.1.0', '3.2.0']],
    ['memfd@4.0.0', 'its extents', ['1.0.0', '2.0.0', '3.0.0', '3.1.0', '3.2.0', '4.0.0']],
  ])('a retry to a kernel that reads %s hands over the current file through %s', (compatible, _how, writes) => {
    const build = [memfd({ writes })];
    const { o, fd } = sparseAndAnother(build, build);
    const failing = failSecondFreeze(o);
    const v2Target: KexecConfig = { ...o.cfg, plugins: V2_ONLY };
    errnoOf(() => o.k1.kexecJump(v2Target));
    o.p.ftruncate(fd, 80 * PAGE_SIZE);
    o.p.pwrite(fd, pattern(PAGE_SIZE, 4), 70 * PAGE_SIZE);
    failing.now = false;
    o.k1.kexecJump(o.cfg);
    expect(handedOver(o, 'vm', 1).compatible).toBe(compatible);
    const next = bootNext(o);
    const { sfd, fd: got } = retrieveOne(next, 'vm', 1);
    expect(next.p2.lseek(got, 0, SEEK_END)).toBe(80 * PAGE_SIZE);
    expect(memfdResidentPages(next.p2, got)).toBe(65);
    expect(next.p2.pread(got, PAGE_SIZE, 70 * PAGE_SIZE)).toEqual(pattern(PAGE_SIZE, 4));
    expect(next.p2.pread(got, PAGE_SIZE, 0)).toEqual(pattern(PAGE_SIZE, 1));
    finishSession(next.p2, sfd);
    expect(next.k2.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
  });

  it('closing the session after the failed reboot unpreserves everything the conversion preserved', () => {
    const { o } = sparseAndAnother();
    const before = start([memfd()]).k1.khoOut?.survivors().blocks;
    failSecondFreeze(o);
    errnoOf(() => o.k1.kexecJump(o.cfg));
    for (const fd of o.p.openFds) if (fd !== o.dev) o.p.close(fd);
    expect(o.k1.khoOut?.survivors().blocks).toBe(before);
  });
});

describe('freeze of the upstream formats', () => {
  it('refreshes only the position: a lseek after PRESERVE_FD is handed over', () => {
    const o = start([memfd({ writes: ['2.0.0'] })]);
    const fd = memfdCreate(o.p, 'ram', 0);
    o.p.ftruncate(fd, PAGE_SIZE);
    preserveFd(o.p, createSession(o.p, o.dev, 'vm'), fd, 1);
    o.p.lseek(fd, 77, SEEK_SET);
    const next = (o.k1.kexecJump(o.cfg), bootNext(o));
    expect(next.p2.lseek(retrieveOne(next, 'vm', 1).fd, 0, SEEK_CUR)).toBe(77);
  });
});

describe('a file preserved for memfd 4.x (no xarray while it runs)', () => {
  /** A kernel with this code that reads up to 3.x only. */
  const V3_ONLY = [memfd({ writes: ['1.0.0', '2.0.0', '3.0.0', '3.1.0', '3.2.0'], reads: '>=1.0.0 <4.0.0' })];

  it('goes to a 3.x-only kernel as memfd@3.2.0 through an xarray built at freeze, with nothing left behind', () => {
    const { o } = sparseAndAnother(V3_ONLY);
    o.k1.kexecJump(o.cfg);
    expect(handedOver(o, 'vm', 1).compatible).toBe('memfd@3.2.0');
    const next = bootNext(o);
    const { sfd, fd } = retrieveOne(next, 'vm', 1);
    expect(memfdResidentPages(next.p2, fd)).toBe(2);
    expect(next.p2.pread(fd, PAGE_SIZE, 40 * PAGE_SIZE)).toEqual(pattern(PAGE_SIZE, 2));
    finishSession(next.p2, sfd);
    expect(next.k2.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
  });

  it('after a failed reboot to a 3.x kernel, a retry to a 4.x kernel drops that xarray and hands over the current file as extents', () => {
    const { o, fd } = sparseAndAnother([memfd()]);
    const failing = { now: true };
    o.k1.luo.hooks.fileOp.tap('fail-second-freeze', (ev) => {
      if (failing.now && ev.op === 'freeze' && ev.token === 2n) throw new ErrnoError('EIO', 'freeze', 'injected');
    });
    errnoOf(() => o.k1.kexecJump({ ...o.cfg, plugins: V3_ONLY }));
    o.p.pwrite(fd, pattern(PAGE_SIZE, 4), 50 * PAGE_SIZE);
    failing.now = false;
    o.k1.kexecJump(o.cfg);
    expect(handedOver(o, 'vm', 1).compatible).toBe('memfd@4.1.0');
    const next = bootNext(o);
    const { sfd, fd: got } = retrieveOne(next, 'vm', 1);
    expect(memfdResidentPages(next.p2, got)).toBe(3);
    expect(next.p2.pread(got, PAGE_SIZE, 50 * PAGE_SIZE)).toEqual(pattern(PAGE_SIZE, 4));
    finishSession(next.p2, sfd);
    expect(next.k2.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
  });

  it('closing the session after a failed reboot leaves nothing preserved', () => {
    const { o } = sparseAndAnother([memfd()]);
    const before = start([memfd()]).k1.khoOut?.survivors().blocks;
    o.k1.luo.hooks.fileOp.tap('fail-second-freeze', (ev) => {
      if (ev.op === 'freeze' && ev.token === 2n) throw new ErrnoError('EIO', 'freeze', 'injected');
    });
    errnoOf(() => o.k1.kexecJump(o.cfg));
    for (const f of o.p.openFds) if (f !== o.dev) o.p.close(f);
    expect(o.k1.khoOut?.survivors().blocks).toBe(before);
  });
});
