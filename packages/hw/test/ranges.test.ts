import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import {
  PAGE_SIZE, PAGE_SHIFT, parseSize, formatSize, SizeError, pfnToPhys, physToPfn, isPageAligned,
  PfnRanges, unionRanges, subtractRanges,
} from '../src/index.js';

describe('units', () => {
  it('pages are 4 KiB (PAGE_SHIFT 12)', () => {
    expect(PAGE_SHIFT).toBe(12);
    expect(PAGE_SIZE).toBe(4096);
  });

  it('pfnToPhys / physToPfn / isPageAligned convert between frames and addresses', () => {
    expect(pfnToPhys(3)).toBe(12288);
    expect(physToPfn(12288)).toBe(3);
    expect(physToPfn(12287)).toBe(2);
    expect(pfnToPhys(2 ** 34 - 1)).toBe(2 ** 46 - 4096);
    expect(isPageAligned(8192)).toBe(true);
    expect(isPageAligned(8193)).toBe(false);
  });
});

describe('parseSize', () => {
  it("'64GiB' is 68719476736 bytes", () => {
    expect(parseSize('64GiB')).toBe(68719476736);
  });

  it("'64T' is 64 * 2^40 bytes", () => {
    expect(parseSize('64T')).toBe(70368744177664);
  });

  it("'512M' is 512 * 2^20 bytes", () => {
    expect(parseSize('512M')).toBe(536870912);
  });

  it("a bare number string '4096' is bytes", () => {
    expect(parseSize('4096')).toBe(4096);
  });

  it.each([
    ['1k', 1024], ['1KB', 1024], ['1KiB', 1024], ['2 kib', 2048],
    ['3m', 3145728], ['1MB', 1048576], ['1g', 1073741824], ['1GB', 1073741824],
    ['1tb', 1099511627776], ['1TiB', 1099511627776], ['7B', 7], ['7b', 7],
    ['  16 MiB  ', 16777216], ['1.5K', 1536], ['0.5GiB', 536870912], ['0', 0],
  ] as const)('%j is %d bytes (binary units, any case, surrounding spaces allowed)', (text, bytes) => {
    expect(parseSize(text)).toBe(bytes);
  });

  it('a non-negative safe integer number is returned as is', () => {
    expect(parseSize(0)).toBe(0);
    expect(parseSize(4096)).toBe(4096);
    expect(parseSize(Number.MAX_SAFE_INTEGER)).toBe(Number.MAX_SAFE_INTEGER);
  });

  it('a bigint is converted to bytes', () => {
    expect(parseSize(4096n)).toBe(4096);
    expect(parseSize(2n ** 46n)).toBe(70368744177664);
  });

  it.each([
    '', '   ', 'abc', 'G', '64XiB', '64 Gigs', '-1G', '+1G', '1.5', '0.1K', '1e3', '0x1000',
    '1 G B', '1..5G', '1constructor', '1toString', '99999999999999999999',
  ])('the string %j throws SizeError', (text) => {
    expect(() => parseSize(text)).toThrow(SizeError);
  });

  it.each([-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53, -1n, 2n ** 53n])(
    'the value %s throws SizeError', (value) => {
      expect(() => parseSize(value)).toThrow(SizeError);
    },
  );

  it('SizeError is an Error named SizeError', () => {
    let caught: unknown;
    try { parseSize('lots'); } catch (e) { caught = e; }
    expect(caught).toBeInstanceOf(Error);
    expect(caught).toBeInstanceOf(SizeError);
    expect((caught as SizeError).name).toBe('SizeError');
  });
});

describe('formatSize', () => {
  it('prints exact binary multiples with their unit', () => {
    expect(formatSize(0)).toBe('0 B');
    expect(formatSize(4096)).toBe('4 KiB');
    expect(formatSize(68719476736)).toBe('64 GiB');
    expect(formatSize(70368744177664)).toBe('64 TiB');
  });

  it('prints inexact sizes with one decimal', () => {
    expect(formatSize(1536)).toBe('1.5 KiB');
    expect(formatSize(1000)).toBe('1000 B');
  });
});

// ---- PfnRanges against a naive model -------------------------------------------------------

const UNIVERSE = 200;

type Op = { readonly kind: 'add' | 'remove'; readonly start: number; readonly end: number };

const opArb: fc.Arbitrary<Op> = fc.record({
  kind: fc.constantFrom('add' as const, 'remove' as const),
  start: fc.integer({ min: 0, max: UNIVERSE }),
  end: fc.integer({ min: 0, max: UNIVERSE }),
});
const opsArb = fc.array(opArb, { maxLength: 40 });
const rangeArb = fc.tuple(fc.integer({ min: 0, max: UNIVERSE + 1 }), fc.integer({ min: 0, max: UNIVERSE + 1 }));

function build(ops: readonly Op[]): { ranges: PfnRanges; model: Set<number> } {
  const ranges = new PfnRanges(1); // small capacity: exercise growth
  const model = new Set<number>();
  for (const { kind, start, end } of ops) {
    if (kind === 'add') {
      ranges.add(start, end);
      for (let p = start; p < end; p++) model.add(p);
    } else {
      ranges.remove(start, end);
      for (let p = start; p < end; p++) model.delete(p);
    }
  }
  return { ranges, model };
}

function pagesOf(r: PfnRanges): number[] {
  const out: number[] = [];
  for (const [s, e] of r.runs()) for (let p = s; p < e; p++) out.push(p);
  return out;
}

const sorted = (s: Iterable<number>): number[] => [...s].sort((a, b) => a - b);

describe('PfnRanges (property: behaves as a Set<number> of page frames)', () => {
  it('has(pfn) agrees with the model for every pfn of the universe', () => {
    fc.assert(fc.property(opsArb, (ops) => {
      const { ranges, model } = build(ops);
      for (let p = -1; p <= UNIVERSE + 1; p++) expect(ranges.has(p)).toBe(model.has(p));
    }));
  });

  it('pageCount equals the model size', () => {
    fc.assert(fc.property(opsArb, (ops) => {
      const { ranges, model } = build(ops);
      expect(ranges.pageCount).toBe(model.size);
    }));
  });

  it('runs are non-empty, sorted and merged: each run starts strictly after the previous ends', () => {
    fc.assert(fc.property(opsArb, (ops) => {
      const { ranges } = build(ops);
      const runs = [...ranges.runs()];
      expect(runs.length).toBe(ranges.runCount);
      for (let i = 0; i < runs.length; i++) {
        const [s, e] = runs[i] as [number, number];
        expect(e).toBeGreaterThan(s);
        expect(ranges.start(i)).toBe(s);
        expect(ranges.end(i)).toBe(e);
        if (i > 0) expect(s).toBeGreaterThan((runs[i - 1] as [number, number])[1]);
      }
    }));
  });

  it('the runs enumerate exactly the model pages', () => {
    fc.assert(fc.property(opsArb, (ops) => {
      const { ranges, model } = build(ops);
      expect(pagesOf(ranges)).toEqual(sorted(model));
    }));
  });

  it('covers(s, e) is true exactly when every page of [s, e) is in the model (vacuously for empty ranges)', () => {
    fc.assert(fc.property(opsArb, fc.array(rangeArb, { maxLength: 20 }), (ops, queries) => {
      const { ranges, model } = build(ops);
      for (const [s, e] of queries) {
        let all = true;
        for (let p = s; p < e; p++) if (!model.has(p)) all = false;
        expect(ranges.covers(s, e)).toBe(all);
      }
    }));
  });

  it('overlaps(s, e) is true exactly when some page of [s, e) is in the model (never for empty ranges)', () => {
    fc.assert(fc.property(opsArb, fc.array(rangeArb, { maxLength: 20 }), (ops, queries) => {
      const { ranges, model } = build(ops);
      for (const [s, e] of queries) {
        let any = false;
        for (let p = s; p < e; p++) if (model.has(p)) any = true;
        expect(ranges.overlaps(s, e)).toBe(any);
      }
    }));
  });

  it('intersect equals the set intersection and leaves both operands unchanged', () => {
    fc.assert(fc.property(opsArb, opsArb, (opsA, opsB) => {
      const a = build(opsA);
      const b = build(opsB);
      const beforeA = pagesOf(a.ranges);
      const beforeB = pagesOf(b.ranges);
      const i = a.ranges.intersect(b.ranges);
      expect(pagesOf(i)).toEqual(sorted([...a.model].filter((p) => b.model.has(p))));
      const runs = [...i.runs()];
      for (let k = 1; k < runs.length; k++) expect((runs[k] as [number, number])[0]).toBeGreaterThan((runs[k - 1] as [number, number])[1]);
      expect(pagesOf(a.ranges)).toEqual(beforeA);
      expect(pagesOf(b.ranges)).toEqual(beforeB);
    }));
  });

  it('unionRanges equals the set union, merged', () => {
    fc.assert(fc.property(opsArb, opsArb, (opsA, opsB) => {
      const a = build(opsA);
      const b = build(opsB);
      const u = unionRanges(a.ranges, b.ranges);
      expect(pagesOf(u)).toEqual(sorted(new Set([...a.model, ...b.model])));
      const runs = [...u.runs()];
      for (let k = 1; k < runs.length; k++) expect((runs[k] as [number, number])[0]).toBeGreaterThan((runs[k - 1] as [number, number])[1]);
    }));
  });

  it('subtractRanges equals the set difference, merged', () => {
    fc.assert(fc.property(opsArb, opsArb, (opsA, opsB) => {
      const a = build(opsA);
      const b = build(opsB);
      const d = subtractRanges(a.ranges, b.ranges);
      expect(pagesOf(d)).toEqual(sorted([...a.model].filter((p) => !b.model.has(p))));
      const runs = [...d.runs()];
      for (let k = 1; k < runs.length; k++) expect((runs[k] as [number, number])[0]).toBeGreaterThan((runs[k - 1] as [number, number])[1]);
    }));
  });

  it('clone is an equal, independent copy', () => {
    fc.assert(fc.property(opsArb, opArb, (ops, extra) => {
      const { ranges } = build(ops);
      const before = pagesOf(ranges);
      const c = ranges.clone();
      expect(pagesOf(c)).toEqual(before);
      if (extra.kind === 'add') c.add(extra.start, extra.end); else c.remove(extra.start, extra.end);
      expect(pagesOf(ranges)).toEqual(before);
    }));
  });
});

describe('PfnRanges (examples)', () => {
  it('an empty set has no runs and no pages', () => {
    const r = new PfnRanges();
    expect(r.runCount).toBe(0);
    expect(r.pageCount).toBe(0);
    expect(r.has(0)).toBe(false);
    expect([...r.runs()]).toEqual([]);
  });

  it('touching runs merge into one: [0,5) + [5,10) is [0,10)', () => {
    expect([...PfnRanges.of([5, 10], [0, 5]).runs()]).toEqual([[0, 10]]);
  });

  it('a run added between two others bridges them', () => {
    const r = PfnRanges.of([0, 2], [8, 10], [20, 30]);
    r.add(2, 8);
    expect([...r.runs()]).toEqual([[0, 10], [20, 30]]);
  });

  it('empty or inverted ranges are ignored by add and remove', () => {
    const r = PfnRanges.of([0, 10]);
    r.add(20, 20);
    r.add(30, 25);
    r.remove(5, 5);
    r.remove(8, 2);
    expect([...r.runs()]).toEqual([[0, 10]]);
  });

  it('removing the middle of a run splits it in two', () => {
    const r = PfnRanges.of([0, 10]);
    r.remove(3, 6);
    expect([...r.runs()]).toEqual([[0, 3], [6, 10]]);
    expect(r.pageCount).toBe(7);
  });

  it('covers is true only when one run contains the whole range', () => {
    const r = PfnRanges.of([0, 4], [5, 9]);
    expect(r.covers(0, 4)).toBe(true);
    expect(r.covers(5, 9)).toBe(true);
    expect(r.covers(3, 6)).toBe(false);
    expect(r.covers(0, 9)).toBe(false);
  });

  it('an empty range is covered by any set and overlaps none', () => {
    const r = PfnRanges.of([0, 10]);
    expect(r.covers(5, 5)).toBe(true);
    expect(r.covers(50, 50)).toBe(true);
    expect(new PfnRanges().covers(3, 3)).toBe(true);
    expect(r.overlaps(5, 5)).toBe(false);
    expect(r.overlaps(0, 0)).toBe(false);
  });

  it('overlaps is true for one shared page and false for a range that only touches a run', () => {
    const r = PfnRanges.of([10, 20]);
    expect(r.overlaps(19, 30)).toBe(true);
    expect(r.overlaps(0, 11)).toBe(true);
    expect(r.overlaps(20, 30)).toBe(false);
    expect(r.overlaps(0, 10)).toBe(false);
  });

  it('frame numbers of a 64 TiB machine (2^34 pages) are exact and cost one run', () => {
    const top = 2 ** 34;
    const r = PfnRanges.of([0, top]);
    r.remove(top - 1, top);
    r.remove(0, 1);
    expect([...r.runs()]).toEqual([[1, top - 1]]);
    expect(r.pageCount).toBe(top - 2);
    expect(r.has(top - 2)).toBe(true);
    expect(r.has(top - 1)).toBe(false);
  });

  it('many ascending appends grow the buffer and keep every run', () => {
    const r = new PfnRanges(1);
    for (let i = 0; i < 1000; i++) r.add(3 * i, 3 * i + 2);
    expect(r.runCount).toBe(1000);
    expect(r.pageCount).toBe(2000);
    expect(r.start(999)).toBe(2997);
    expect(r.end(999)).toBe(2999);
  });
});
