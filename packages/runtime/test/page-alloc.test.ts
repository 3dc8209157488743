/**
 * The page allocator: naturally aligned blocks from a per-node frontier, freed blocks reused
 * first, gaps and freed higher orders handed to smaller requests; the same answers whether
 * pfns are small integers or lie above 2^33 (node 1 of a 64 TiB machine).
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { PfnRanges, type NumaNode } from '@liveupdate/hw';
import { PageAllocator } from '../src/mm/page-alloc.js';

const nodes = (...bounds: Array<[number, number]>): NumaNode[] => bounds.map(([startPfn, endPfn], id) => ({ id, startPfn, endPfn }));

describe('PageAllocator', () => {
  it('hands out naturally aligned blocks in ascending order on the asked node, counting pages', () => {
    const a = new PageAllocator(nodes([0, 4096], [4096, 8192]), PfnRanges.of([3, 8192]));
    expect(a.freePages).toBe(8189);
    expect(a.alloc(0, 1)).toBe(4096);
    expect(a.alloc(9, 0)).toBe(512);
    expect(a.alloc(0, 0)).toBe(3);
    expect(a.allocatedPages).toBe(514);
    expect(a.freePages).toBe(8189 - 514);
  });

  it('gives the gap skipped for an aligned block to later smaller requests', () => {
    const a = new PageAllocator(nodes([0, 4096]), PfnRanges.of([1, 4096]));
    expect(a.alloc(2, 0)).toBe(4); // pfns 1..3 become free blocks of order 0 and 1
    expect([a.alloc(1, 0), a.alloc(0, 0), a.alloc(0, 0)]).toEqual([2, 1, 8]);
  });

  it('reuses the last freed block of the same order before the frontier', () => {
    const a = new PageAllocator(nodes([0, 4096]), PfnRanges.of([0, 4096]));
    const x = a.alloc(3, 0);
    const y = a.alloc(3, 0);
    expect([x, y]).toEqual([0, 8]);
    a.free(0, 3);
    a.free(8, 3);
    expect([a.alloc(3, 0), a.alloc(3, 0), a.alloc(3, 0)]).toEqual([8, 0, 16]);
    expect(a.allocatedPages).toBe(24);
  });

  it('falls back to the next node when the asked one is spent, and returns null when all are', () => {
    const a = new PageAllocator(nodes([0, 16], [16, 32]), PfnRanges.of([0, 32]));
    expect(a.alloc(4, 0)).toBe(0);
    expect(a.alloc(4, 0)).toBe(16);
    expect(a.alloc(0, 0)).toBeNull();
    expect(a.freePages).toBe(0);
  });

  it('skips a run tail too small for the order and keeps it for smaller requests', () => {
    const a = new PageAllocator(nodes([0, 4096]), PfnRanges.of([0, 6], [64, 128]));
    expect(a.alloc(3, 0)).toBe(64);
    // The 0..6 run was released whole, as order 2 at 0 and order 1 at 4, and freed blocks go first.
    expect([a.alloc(2, 0), a.alloc(1, 0), a.alloc(1, 0), a.alloc(0, 0)]).toEqual([0, 4, 72, 74]);
    expect(a.allocatedPages).toBe(17);
  });

  it('splits a freed higher-order block once the frontier is spent', () => {
    const a = new PageAllocator(nodes([0, 8]), PfnRanges.of([0, 8]));
    expect(a.alloc(3, 0)).toBe(0);
    a.free(0, 3);
    expect([a.alloc(0, 0), a.alloc(0, 0), a.alloc(1, 0), a.alloc(2, 0), a.alloc(0, 0)]).toEqual([0, 1, 2, 4, null]);
  });

  it('refuses an order above the largest block any machine has, without touching the stacks', () => {
    const a = new PageAllocator(nodes([0, 64], [64, 128]), PfnRanges.of([0, 128]));
    a.free(a.alloc(0, 1) as number, 0);
    expect(a.alloc(41, 0)).toBeNull();
    expect(a.alloc(-1, 0)).toBeNull();
    expect(a.alloc(0, 1)).toBe(64);
  });

  it('answers the same on node 1 of a 64 TiB machine (pfns above 2^33) as on a small one', () => {
    const big = 2 ** 33;
    const small = new PageAllocator(nodes([0, 2 ** 20], [2 ** 20, 2 ** 21]), PfnRanges.of([5, 2 ** 21]));
    const huge = new PageAllocator(nodes([0, big], [big, 2 * big]), PfnRanges.of([5, 2 ** 20], [big, big + 2 ** 20]));
    const orders = [0, 9, 3, 0, 9, 1, 18, 0];
    for (const order of orders) {
      expect((huge.alloc(order, 1) as number) - big).toBe((small.alloc(order, 1) as number) - 2 ** 20);
      expect(huge.alloc(order, 0)).toBe(small.alloc(order, 0));
    }
  });

  it('never hands out overlapping blocks or pages outside the free runs, under any alloc/free mix', () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ free: fc.boolean(), order: fc.integer({ min: 0, max: 5 }), nid: fc.integer({ min: 0, max: 1 }), pick: fc.nat() }), { maxLength: 200 }),
        (ops) => {
          const freeRuns = PfnRanges.of([3, 100], [130, 256]);
          const a = new PageAllocator(nodes([0, 128], [128, 256]), freeRuns);
          const owned = new Map<number, number>(); // pfn -> order
          const used = new Uint8Array(256);
          for (const op of ops) {
            if (op.free && owned.size > 0) {
              const [pfn, order] = [...owned][op.pick % owned.size] as [number, number];
              owned.delete(pfn);
              for (let p = pfn; p < pfn + 2 ** order; p++) used[p] = 0;
              a.free(pfn, order);
              continue;
            }
            const pfn = a.alloc(op.order, op.nid);
            if (pfn === null) continue;
            expect(pfn % 2 ** op.order).toBe(0);
            expect(freeRuns.covers(pfn, pfn + 2 ** op.order)).toBe(true);
            for (let p = pfn; p < pfn + 2 ** op.order; p++) { expect(used[p]).toBe(0); used[p] = 1; }
            owned.set(pfn, op.order);
          }
          const held = [...owned.values()].reduce((s, o) => s + 2 ** o, 0);
          expect(a.allocatedPages).toBe(held);
          expect(a.freePages).toBe(freeRuns.pageCount - held);
        },
      ),
      { numRuns: 200 },
    );
  });
});
