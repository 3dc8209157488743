/**
 * iommufd 2.x retrieve under memory pressure: when the page allocator cannot give the rebuild
 * its working tables (alloc_pages returns NULL), RETRIEVE_FD fails ENOMEM, the error is sticky,
 * nothing this retrieve allocated stays allocated and the session cannot FINISH.
 */
import { describe, it, expect } from 'vitest';
import { finishSession, retrieveFd, retrieveSession, type Kernel } from '@liveupdate/sdk';
import { bind, bootNext, errnoOf, passthrough, preserveAll, world } from './support.js';

/** After the jump, with the memfd (token 1) retrieved: the iommufd (token 2) is next. */
function ready(opts: Parameters<typeof world>[0] = {}): ReturnType<typeof bootNext> & { s: number } {
  const w = world(opts);
  preserveAll(w, passthrough(w));
  w.k1.kexecJump(w.next);
  const b = bootNext(w);
  const s = retrieveSession(b.p2, b.dev2, 'vm0');
  retrieveFd(b.p2, s, 1);
  return { ...b, s };
}

/** alloc_pages returns NULL from its `failAt`-th call on; the calls seen and an undo. */
function dryAfter(k: Kernel, failAt: number): { calls: () => number; restore: () => void } {
  const alloc = k.mm.allocPages.bind(k.mm);
  let calls = 0;
  k.mm.allocPages = (order, nid) => (++calls >= failAt ? null : alloc(order, nid));
  return { calls: () => calls, restore: () => { k.mm.allocPages = alloc; } };
}

const freePages = (k: Kernel): number => k.mm.allocator?.freePages ?? NaN;

describe('iommufd 2.x: an allocation failure in retrieve is ENOMEM, sticky, and FINISH fails', () => {
  for (const failAt of [1, 2]) {
    it(`alloc_pages NULL at call ${failAt} (${failAt === 1 ? 'the HWPT table' : 'the area table, after the HWPT table was allocated'})`, () => {
      const { k2, p2, s } = ready();
      const free0 = freePages(k2);
      const dry = dryAfter(k2, failAt);
      let err: unknown;
      try { retrieveFd(p2, s, 2); } catch (e) { err = e; }
      expect(err).toMatchObject({ code: 'ENOMEM' });
      expect(String((err as Error).message)).toMatch(failAt === 1 ? /the HWPT table/ : /the area table/);
      expect(dry.calls()).toBe(failAt);
      dry.restore();
      // Nothing leaked: the table allocated before the failure went back to the allocator.
      expect(freePages(k2)).toBe(free0);
      // Sticky: memory is back, yet a second RETRIEVE_FD answers the saved error without retrying.
      const again = dryAfter(k2, Infinity);
      expect(errnoOf(() => retrieveFd(p2, s, 2))).toBe('ENOMEM');
      expect(again.calls()).toBe(0);
      again.restore();
      expect(freePages(k2)).toBe(free0);
      // can_finish is false after a failed retrieve: FINISH fails.
      let fin: unknown;
      try { finishSession(p2, s); } catch (e) { fin = e; }
      expect(fin).toMatchObject({ code: 'EBUSY' });
      expect(String((fin as Error).message)).toMatch(/LIVEUPDATE_SESSION_FINISH: iommufd@[\d.]+ token 2 cannot finish yet/);
    });
  }

  it('with memory available the same retrieve allocates both tables, frees them, and FINISH succeeds', () => {
    const { k2, p2, s } = ready();
    const count = dryAfter(k2, Infinity);
    const ifd = retrieveFd(p2, s, 2);
    expect(count.calls()).toBe(2);
    count.restore();
    bind(p2, retrieveFd(p2, s, 3), ifd);
    finishSession(p2, s);
    expect(k2.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
  });

  it('1.x as posted stays EOPNOTSUPP: it asks the allocator for nothing', () => {
    const { k2, p2, s } = ready({ iommu: { writes: ['1.0.0'] }, nextIommu: { writes: ['1.0.0'] } });
    const dry = dryAfter(k2, 1);
    expect(errnoOf(() => retrieveFd(p2, s, 2))).toBe('EOPNOTSUPP');
    expect(dry.calls()).toBe(0);
    dry.restore();
  });
});
