/** Property tests of the two tracking codecs against a plain model. */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { createMachine } from '@liveupdate/hw';
import { Kernel } from '@liveupdate/sdk';
import { MshvRadixTree, readTracking, writeTracking } from '@liveupdate/plugin-mshv';

const normalize = (pfns: Iterable<number>): Array<[number, number]> => {
  const sorted = [...new Set(pfns)].sort((a, b) => a - b);
  const runs: Array<[number, number]> = [];
  for (const p of sorted) { const last = runs[runs.length - 1]; if (last && last[1] === p) last[1] = p + 1; else runs.push([p, p + 1]); }
  return runs;
};
const pfnSets = fc.array(fc.tuple(fc.integer({ min: 300_000, max: 1_200_000 }), fc.integer({ min: 1, max: 200 })), { maxLength: 40 })
  .map((xs) => { const s = new Set<number>(); for (const [a, n] of xs) for (let i = 0; i < n; i++) s.add(a + i); return s; });

describe('codecs', () => {
  const k = Kernel.boot(createMachine({ memory: '8GiB' }), { cmdline: 'kho=on liveupdate=on' });

  it('the KHO xarray tracking round-trips any set of pages and partition ids', () => {
    fc.assert(fc.property(pfnSets, fc.array(fc.bigInt({ min: 1n, max: (1n << 64n) - 1n }), { maxLength: 5 }), (set, ids) => {
      const runs = normalize(set);
      const w = writeTracking(k, runs, ids, 1, { preserveData: false });
      try {
        const t = readTracking(k.mm.memory, w.headerPhys);
        return typeof t === 'object' && JSON.stringify(t.runs) === JSON.stringify(runs) && t.ids.join() === ids.join() && t.nrPages === set.size;
      } finally { w.release(); }
    }), { numRuns: 60, seed: 5 });
  });

  it('the radix tree agrees with a set under add, addRun and del, and walks it back as runs', () => {
    fc.assert(fc.property(pfnSets, pfnSets, (adds, dels) => {
      const mm = k.mm;
      const tree = MshvRadixTree.create(mm.memory, { alloc: () => mm.allocZeroedPages(0), free: (p) => mm.freePages(p, 0) }) as MshvRadixTree;
      const model = new Set<number>();
      const runs = normalize(adds);
      runs.forEach(([s, e], i) => { if (i % 2) tree.addRun(s, e); else for (let p = s; p < e; p++) tree.add(p); for (let p = s; p < e; p++) model.add(p); });
      for (const p of dels) { if (model.has(p) || tree.has(p)) { tree.del(p); model.delete(p); } }
      const got: Array<[number, number]> = [];
      const r = tree.walk({ run: (s, e) => { got.push([s, e]); return undefined; } });
      tree.destroy();
      return r.ok && tree.size === 0 && JSON.stringify(got) === JSON.stringify(normalize(model));
    }), { numRuns: 60, seed: 6 });
  });

  it('a frozen tree refuses add and del with EBUSY; del on a missing path is ENOENT', () => {
    const mm = k.mm;
    const tree = MshvRadixTree.create(mm.memory, { alloc: () => mm.allocZeroedPages(0), free: (p) => mm.freePages(p, 0) }) as MshvRadixTree;
    expect(tree.del(123)).toBe('ENOENT');
    expect(tree.add(123)).toBe(0);
    expect(tree.freeze()).toBe(0);
    expect(tree.freeze()).toBe('EBUSY');
    expect([tree.add(5), tree.del(123), tree.addRun(1, 3)]).toEqual(['EBUSY', 'EBUSY', 'EBUSY']);
    expect(tree.has(123)).toBe(true);
  });
});
