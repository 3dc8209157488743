/**
 * SyntheticRuns against a page-by-page model: whatever order runs arrive in (ascending,
 * descending, random, overlapping, adjacent), every page's seed, the run list and the
 * serialized triples are what a plain array of page seeds says.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { PfnRanges } from '../src/ranges.js';
import { SyntheticRuns } from '../src/synthetic.js';

const PAGES = 200;

/** The model: one seed per page, -1 where the page is not synthetic. */
class PageModel {
  readonly seeds = new Array<number>(PAGES).fill(-1);
  set(start: number, end: number, seed: number): void { for (let p = start; p < end; p++) this.seeds[p] = (seed + p - start) >>> 0; }
  clear(start: number, end: number): void { for (let p = start; p < end; p++) this.seeds[p] = -1; }
  intersect(keep: ReadonlyArray<[number, number]>): void {
    for (let p = 0; p < PAGES; p++) if (!keep.some(([s, e]) => p >= s && p < e)) this.seeds[p] = -1;
  }
}

function expectSame(runs: SyntheticRuns, model: PageModel): void {
  expect(Array.from({ length: PAGES }, (_, p) => runs.seedOf(p))).toEqual(model.seeds);
  const list = [...runs.runs()];
  expect(list.length).toBe(runs.runCount);
  // Sorted, non-empty, non-overlapping.
  const bad = list.findIndex(([s, e], i) => e <= s || (i > 0 && s < (list[i - 1] as [number, number, number])[1]));
  expect(bad).toBe(-1);
  expect(Array.from(runs.serialize())).toEqual(list.flat());
}

type Op =
  | { readonly kind: 'set'; readonly start: number; readonly pages: number; readonly seed: number }
  | { readonly kind: 'clear'; readonly start: number; readonly pages: number };

const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('set' as const), start: fc.integer({ min: 0, max: PAGES - 1 }), pages: fc.integer({ min: 1, max: 30 }), seed: fc.nat({ max: 2 ** 32 - 1 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('clear' as const), start: fc.integer({ min: 0, max: PAGES - 1 }), pages: fc.integer({ min: 1, max: 40 }) }) },
);

function apply(runs: SyntheticRuns, model: PageModel, o: Op): void {
  const end = Math.min(PAGES, o.start + o.pages);
  if (o.kind === 'set') { runs.set(o.start, end, o.seed); model.set(o.start, end, o.seed); }
  else { runs.clear(o.start, end); model.clear(o.start, end); }
}

describe('SyntheticRuns', () => {
  it('property: any sequence of sets and clears matches the page model', () => {
    fc.assert(fc.property(fc.array(op, { maxLength: 80 }), (ops) => {
      const runs = new SyntheticRuns();
      const model = new PageModel();
      for (const o of ops) apply(runs, model, o);
      expectSame(runs, model);
    }), { numRuns: 300 });
  });

  it('property: runs inserted in descending or random order give the same pages as ascending', () => {
    const disjoint = fc.uniqueArray(fc.integer({ min: 0, max: PAGES / 4 - 1 }), { minLength: 1, maxLength: 50 });
    fc.assert(fc.property(disjoint, fc.nat(), (slots, seed) => {
      const asc = new SyntheticRuns();
      const shuffled = new SyntheticRuns();
      const desc = new SyntheticRuns();
      const model = new PageModel();
      const sorted = [...slots].sort((a, b) => a - b);
      for (const s of sorted) { asc.set(4 * s, 4 * s + 3, seed + s); model.set(4 * s, 4 * s + 3, seed + s); }
      for (const s of slots) shuffled.set(4 * s, 4 * s + 3, seed + s);
      for (const s of [...sorted].reverse()) desc.set(4 * s, 4 * s + 3, seed + s);
      for (const r of [asc, shuffled, desc]) expectSame(r, model);
      expect(shuffled.serialize()).toEqual(asc.serialize());
      expect(desc.serialize()).toEqual(asc.serialize());
    }), { numRuns: 100 });
  });

  it('property: intersect keeps exactly the pages of the kept runs, with their seeds', () => {
    const keepRuns = fc.uniqueArray(fc.integer({ min: 0, max: PAGES - 1 }), { maxLength: 30 }).map((cuts) => {
      const c = [...cuts].sort((a, b) => a - b);
      const out: Array<[number, number]> = [];
      for (let i = 0; i + 1 < c.length; i += 2) out.push([c[i] as number, c[i + 1] as number]);
      return out;
    });
    fc.assert(fc.property(fc.array(op, { maxLength: 40 }), keepRuns, (ops, keep) => {
      const runs = new SyntheticRuns();
      const model = new PageModel();
      for (const o of ops) apply(runs, model, o);
      runs.intersect(keep);
      model.intersect(keep);
      expectSame(runs, model);
    }), { numRuns: 200 });
  });

  it('property: intersect with a PfnRanges keeps the same pages as with the pairs it holds', () => {
    const cutsArb = fc.uniqueArray(fc.integer({ min: 0, max: PAGES - 1 }), { maxLength: 30 });
    fc.assert(fc.property(fc.array(op, { maxLength: 40 }), cutsArb, (ops, cuts) => {
      const c = [...cuts].sort((a, b) => a - b);
      const keep: Array<[number, number]> = [];
      for (let i = 0; i + 1 < c.length; i += 2) keep.push([c[i] as number, c[i + 1] as number]);
      const runs = new SyntheticRuns();
      const model = new PageModel();
      for (const o of ops) apply(runs, model, o);
      runs.intersect(PfnRanges.of(...keep));
      model.intersect(keep);
      expectSame(runs, model);
    }), { numRuns: 200 });
  });

  it('property: overlaps(start, end) is true exactly when some page of the range is synthetic', () => {
    const range = fc.tuple(fc.integer({ min: 0, max: PAGES }), fc.integer({ min: 0, max: PAGES }));
    fc.assert(fc.property(fc.array(op, { maxLength: 40 }), fc.array(range, { minLength: 1, maxLength: 20 }), (ops, ranges) => {
      const runs = new SyntheticRuns();
      const model = new PageModel();
      for (const o of ops) apply(runs, model, o);
      for (const [start, end] of ranges) {
        expect(runs.overlaps(start, end)).toBe(model.seeds.slice(start, Math.max(start, end)).some((x) => x >= 0));
      }
    }), { numRuns: 300 });
  });

  it('replaces the middle of a run: the head keeps its seeds, the tail continues them', () => {
    const r = new SyntheticRuns();
    r.set(10, 20, 100);
    r.set(13, 15, 7);
    expect([...r.runs()]).toEqual([[10, 13, 100], [13, 15, 7], [15, 20, 105]]);
  });

  it('an out-of-order run overlapping two neighbours trims both and keeps them', () => {
    const r = new SyntheticRuns();
    r.set(0, 10, 0);
    r.set(20, 30, 1000);
    r.set(5, 25, 50);
    expect([...r.runs()]).toEqual([[0, 5, 0], [5, 25, 50], [25, 30, 1005]]);
  });

  it('an out-of-order run covering several runs removes them', () => {
    const r = new SyntheticRuns();
    for (let i = 0; i < 10; i++) r.set(10 * i, 10 * i + 5, i);
    r.set(12, 78, 9);
    expect([...r.runs()]).toEqual([[0, 5, 0], [10, 12, 1], [12, 78, 9], [80, 85, 8], [90, 95, 9]]);
    expect(r.runCount).toBe(5);
  });

  it('an in-order run adjacent to the last one and continuing its seeds extends it', () => {
    const r = new SyntheticRuns();
    r.set(0, 10, 5);
    r.set(10, 20, 15);
    r.set(20, 30, 0);
    expect([...r.runs()]).toEqual([[0, 20, 5], [20, 30, 0]]);
  });

  it('adjacent runs inserted out of order stay separate runs with their own seeds', () => {
    const r = new SyntheticRuns();
    r.set(10, 20, 10);
    r.set(0, 10, 0);
    expect([...r.runs()]).toEqual([[0, 10, 0], [10, 20, 10]]);
    expect(r.seedOf(9)).toBe(9);
    expect(r.seedOf(10)).toBe(10);
    expect(r.matches(0, 20, 0)).toBe(true);
    expect(r.matches(0, 20, 1)).toBe(false);
  });

  it('runs filled back to front go in before the first run; lookups, a middle run and a clear see them', () => {
    const r = new SyntheticRuns();
    for (let i = 99; i >= 0; i--) r.set(4 * i, 4 * i + 2, 1000 + i);
    expect(r.runCount).toBe(100);
    expect([...r.runs()].slice(0, 3)).toEqual([[0, 2, 1000], [4, 6, 1001], [8, 10, 1002]]);
    expect([r.seedOf(1), r.seedOf(2), r.seedOf(397), r.seedOf(398)]).toEqual([1001, -1, 1100, -1]);
    r.set(2, 4, 7);
    r.clear(5, 9);
    expect([...r.runs()].slice(0, 4)).toEqual([[0, 2, 1000], [2, 4, 7], [4, 5, 1001], [9, 10, 1003]]);
    expect(r.runCount).toBe(101);
  });

  it('matches() is false across a gap and true inside one run', () => {
    const r = new SyntheticRuns();
    r.set(0, 10, 3);
    r.set(11, 20, 14);
    expect(r.matches(2, 8, 5)).toBe(true);
    expect(r.matches(0, 20, 3)).toBe(false);
    expect(r.matches(11, 20, 14)).toBe(true);
  });

  it('round-trips through serialize (the worker handover) with 10,000 runs inserted in descending order', () => {
    const r = new SyntheticRuns();
    for (let i = 9999; i >= 0; i--) r.set(3 * i, 3 * i + 2, i);
    expect(r.runCount).toBe(10_000);
    const copy = new SyntheticRuns(r.serialize());
    expect(copy.serialize()).toEqual(r.serialize());
    expect(copy.seedOf(3 * 5000 + 1)).toBe(5001);
    expect(copy.seedOf(3 * 5000 + 2)).toBe(-1);
  });
});
