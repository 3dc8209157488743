import { describe, expect, it } from 'vitest';
import type { HandoverView } from '../src/handover/decode.js';
import { memmapSvg, nodeRegions } from '../src/report/memmap.js';

/** A handover view whose only content is `runs` data runs (what a scattered MSHV deposit looks like). */
function viewWith(runs: ReadonlyArray<readonly [number, number]>): HandoverView {
  return {
    memorySize: 64 * 2 ** 30, khoData: null, scratch: [], fdt: null, tracker: null, subtrees: [], luo: null, metadata: null,
    pages: new Map([[16, 'root fdt']]), structures: new Map(), owned: [], dataRuns: runs, problems: [],
  };
}
const node = { id: 0, startPfn: 0, endPfn: (64 * 2 ** 30) / 4096 };

describe('the report memory map', () => {
  it('draws one rect per region while regions are few', () => {
    const runs: Array<readonly [number, number]> = [[1000, 2000], [5000, 5001], [9000, 12000]];
    const svg = memmapSvg([node], viewWith(runs));
    // 3 data runs + 1 metadata page: 4 kept regions in the linear band, 4 + the free gaps in the log band.
    expect(nodeRegions(node, viewWith(runs)).filter((r) => r.kind !== 'free')).toHaveLength(4);
    expect((svg.match(/data-band="linear"/g) ?? []).length).toBe(4);
  });

  it('coalesces 100,000 scattered runs per pixel: at most one rect per pixel column and band', () => {
    const runs: Array<readonly [number, number]> = [];
    for (let i = 0; i < 100_000; i++) runs.push([100 + i * 97, 100 + i * 97 + 3]);
    const svg = memmapSvg([node], viewWith(runs));
    const linear = (svg.match(/data-band="linear"/g) ?? []).length;
    const log = (svg.match(/data-band="log"/g) ?? []).length;
    expect(linear).toBeLessThanOrEqual(960);
    expect(log).toBeLessThanOrEqual(960);
    expect(svg.length).toBeLessThan(2_000_000);
    // Every region is still accounted for in the titles.
    const counted = [...svg.matchAll(/data-band="linear"[^>]*data-regions="(\d+)"/g)].reduce((n, m) => n + Number(m[1]), 0);
    expect(counted).toBe(100_001);
  });
});
