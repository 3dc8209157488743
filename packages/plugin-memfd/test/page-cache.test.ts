/**
 * The page cache's index → pfn map against a plain Map model: chunks that start as sorted lists
 * and turn dense at 32 entries, indices arriving in any order, deletes, and the ordered walks
 * (forEach, nextPresent) the handlers serialize from.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PageCache } from '../src/page-cache.js';

type Op = { readonly op: 'set'; readonly index: number; readonly pfn: number } | { readonly op: 'delete'; readonly index: number };

/** Indices clustered in a few chunks (so chunks go dense) and scattered over a 1 TiB file. */
const index = fc.oneof(fc.integer({ min: 0, max: 3 * 512 - 1 }), fc.integer({ min: 0, max: 2 ** 28 - 1 }));
const ops = fc.array(fc.oneof(
  fc.record({ op: fc.constant('set' as const), index, pfn: fc.integer({ min: 0, max: 2 ** 40 }) }),
  fc.record({ op: fc.constant('delete' as const), index }),
), { maxLength: 400 });

function apply(list: readonly Op[]): { cache: PageCache; model: Map<number, number>; deleted: number[] } {
  const cache = new PageCache();
  const model = new Map<number, number>();
  const deleted: number[] = [];
  for (const o of list) {
    if (o.op === 'set') { cache.set(o.index, o.pfn); model.set(o.index, o.pfn); continue; }
    expect(cache.delete(o.index)).toBe(model.get(o.index) ?? -1);
    model.delete(o.index);
    deleted.push(o.index);
  }
  return { cache, model, deleted };
}

describe('PageCache', () => {
  it('holds exactly what a Map holds, under any sequence of sets and deletes (property)', () => {
    fc.assert(fc.property(ops, (list) => {
      const { cache, model, deleted } = apply(list);
      expect(cache.count).toBe(model.size);
      for (const [i, pfn] of model) expect(cache.get(i)).toBe(pfn);
      for (const i of deleted) if (!model.has(i)) expect(cache.get(i)).toBe(-1);
    }));
  });

  it('walks its entries in ascending index order, whatever order they arrived in (property)', () => {
    fc.assert(fc.property(ops, (list) => {
      const { cache, model } = apply(list);
      const seen: Array<[number, number]> = [];
      cache.forEach((i, pfn) => { seen.push([i, pfn]); });
      expect(seen).toEqual([...model].sort((a, b) => a[0] - b[0]));
    }));
  });

  it('nextPresent finds the first entry at or after an index, in sparse and dense chunks (property)', () => {
    fc.assert(fc.property(ops, index, fc.integer({ min: 1, max: 4096 }), (list, from, span) => {
      const { cache, model } = apply(list);
      const inRange = [...model.keys()].filter((i) => i >= from && i < from + span);
      expect(cache.nextPresent(from, from + span)).toBe(inRange.length ? Math.min(...inRange) : -1);
    }));
  });

  it('a chunk turns dense at its 33rd entry and keeps every entry', () => {
    const c = new PageCache();
    for (let i = 64; i >= 0; i -= 2) c.set(i, 1000 + i); // 33 entries, descending
    expect(c.count).toBe(33);
    expect(c.get(0)).toBe(1000);
    expect(c.get(64)).toBe(1064);
    expect(c.get(1)).toBe(-1);
    expect(c.nextPresent(1, 512)).toBe(2);
  });

  it('stops a walk when the callback returns true', () => {
    const c = new PageCache();
    for (const i of [5, 700_000, 3]) c.set(i, i);
    const seen: number[] = [];
    c.forEach((i) => { seen.push(i); return i === 5; });
    expect(seen).toEqual([3, 5]);
  });
});
