/**
 * The tracker's leaf cache is invisible: whatever order keys arrive in, and however their
 * leaves collide in the cache, the bytes in memory and every answer equal a plain set of keys.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { PhysMemory } from '@liveupdate/hw';
import { KhoRadixTree, encodeKey, walkTracker } from '../src/kho/radix.js';

/** A 64 TiB memory (sparse: only node pages cost) and a bump allocator for node pages. */
function tracker(): { tree: KhoRadixTree; memory: PhysMemory; nodes: () => number } {
  const memory = new PhysMemory(2 ** 46); // 64 TiB: pfns up to 2^34
  let next = 1;
  const tree = new KhoRadixTree(memory, { allocZeroedPage: () => next++, freePage: () => undefined }, 0);
  return { tree, memory, nodes: () => next - 1 };
}

/** Every (pfn, order) the walk finds, as "pfn/order" strings, ascending by key. */
function walked(memory: PhysMemory): string[] {
  const out: string[] = [];
  const r = walkTracker(memory, 0, { key: (pfn, order) => { out.push(`${pfn}/${order}`); return undefined; } });
  expect(r.ok).toBe(true);
  return out;
}

/** Leaf ids 512 * k apart: with a direct-mapped 64-slot cache all of them map to one slot. */
const NODE_STRIDE_PFNS = 2 ** 33; // node 1 of a 64 TiB 2-node machine
const sortedByKey = (xs: Iterable<string>): string[] =>
  [...xs].sort((a, b) => {
    const [pa, oa] = a.split('/').map(Number) as [number, number];
    const [pb, ob] = b.split('/').map(Number) as [number, number];
    return encodeKey(pa, oa) - encodeKey(pb, ob);
  });

describe('KhoRadixTree leaf cache', () => {
  it('keeps order-9 preserves alternating between two NUMA nodes of 64 TiB in their own leaves', () => {
    const { tree, memory, nodes } = tracker();
    const want: string[] = [];
    for (let i = 0; i < 2000; i++) {
      const pfn = (i & 1 ? NODE_STRIDE_PFNS : 0) + (i >> 1) * 512;
      expect(tree.add(pfn, 9)).toBe(true);
      want.push(`${pfn}/9`);
    }
    expect(walked(memory)).toEqual(sortedByKey(want));
    // Root, one path of 4 tables shared down to L2, then two L1 tables and two leaves.
    expect(nodes()).toBe(7);
  });

  it('answers has() for three leaves that share a cache set, interleaved', () => {
    const { tree } = tracker();
    const bases = [0, NODE_STRIDE_PFNS, 2 * NODE_STRIDE_PFNS - 2 ** 24];
    for (let i = 0; i < 300; i++) for (const b of bases) tree.add(b + i * 512, 9);
    for (let i = 0; i < 300; i++) {
      for (const b of bases) {
        expect(tree.has(b + i * 512, 9)).toBe(true);
        expect(tree.has(b + i * 512 + 512 * 300, 9)).toBe(false);
      }
    }
  });

  it('matches a set of keys for any sequence of add/del over leaves that collide', () => {
    // Keys drawn from 6 leaf clusters: two orders, three bases a power of two apart.
    const cluster = fc.record({
      base: fc.constantFrom(0, NODE_STRIDE_PFNS, NODE_STRIDE_PFNS / 2, 2 ** 24),
      order: fc.constantFrom(0, 9),
      index: fc.integer({ min: 0, max: 40_000 }),
    });
    const op = fc.record({ del: fc.boolean(), at: cluster });
    fc.assert(
      fc.property(fc.array(op, { maxLength: 300 }), (ops) => {
        const { tree, memory } = tracker();
        const model = new Set<string>();
        const leavesCreated = new Set<number>();
        for (const { del, at } of ops) {
          const pfn = at.base + at.index * 2 ** at.order;
          const k = `${pfn}/${at.order}`;
          const leafId = Math.floor(encodeKey(pfn, at.order) / 32768);
          if (del) {
            // A path never created is the kernel's WARN: false, and nothing changes.
            expect(tree.del(pfn, at.order)).toBe(leavesCreated.has(leafId));
            model.delete(k);
          } else {
            leavesCreated.add(leafId);
            expect(tree.add(pfn, at.order)).toBe(true);
            model.add(k);
          }
        }
        for (const { at } of ops) {
          const pfn = at.base + at.index * 2 ** at.order;
          expect(tree.has(pfn, at.order)).toBe(model.has(`${pfn}/${at.order}`));
        }
        expect(walked(memory)).toEqual(sortedByKey(model));
      }),
      { numRuns: 60 },
    );
  });
});
