/**
 * MSHV deposited-page tracking: metadata per deposited page and the time to hand the tracking
 * over (preserve) and to take it back from bytes (restore), for the RFC 00/20 radix tree
 * (raw-PFN keys, 32768-bit leaves, the mshv_prsv_pt subtree) and our KHO xarray of 64-page
 * bitmaps (the mshv 3.x tracking file, CRC over all metadata).
 *
 *   npm run bench -- mshv [--sizes 1GiB,64GiB,1TiB]
 *
 * For each deposit size, dense (one run) and scattered (runs and gaps of 1..64 pages, seeded):
 *   - radix: build (addRun per run), preserve = freeze + the walk over every node and run
 *     (what preserve_tree() does before its per-page kho_preserve_pages), restore = the
 *     hostile-checked walk the next kernel's memblock phase does, reserving runs;
 *   - xarray: preserve = writeTracking (bitmaps, node pages, CRC; the data pages' own KHO
 *     preservation excluded, as for the radix tree), restore = readTracking (bounds, cycles,
 *     CRC, runs).
 * Then the same 1 GiB scattered deposit on an 8 GiB and on a 64 TiB machine: the ratio of
 * their costs shows the cost follows the deposited set, not the machine.
 */
import { createMachine, PAGE_SIZE, parseSize } from '@liveupdate/hw';
import { Kernel } from '@liveupdate/sdk';
import { MshvRadixTree, readTracking, walkRadix, writeTracking } from '@liveupdate/plugin-mshv';

const argv = process.argv;
const sizesArg = argv.indexOf('--sizes') >= 0 ? (argv[argv.indexOf('--sizes') + 1] as string) : '1GiB,64GiB,1TiB';
const SIZES = sizesArg.split(',');
const BASE_PFN = (4 << 30) / PAGE_SIZE;

const time = (fn: () => void): number => { const t = performance.now(); fn(); return performance.now() - t; };
const best = (n: number, fn: () => void): number => { let b = Infinity; for (let i = 0; i < n; i++) b = Math.min(b, time(fn)); return b; };

function pattern(pages: number, scattered: boolean, seed = 1): Array<[number, number]> {
  if (!scattered) return [[BASE_PFN, BASE_PFN + pages]];
  const runs: Array<[number, number]> = [];
  let s = seed >>> 0 || 1;
  const rnd = (): number => { s ^= s << 13; s ^= s >>> 17; s ^= s << 5; return ((s >>> 0) & 63) + 1; };
  let at = BASE_PFN;
  let left = pages;
  while (left > 0) {
    const len = Math.min(rnd(), left);
    runs.push([at, at + len]);
    left -= len;
    at += len + rnd();
  }
  return runs;
}

interface Row { radixMeta: number; xaMeta: number; radixPre: number; radixRes: number; xaPre: number; xaRes: number }

function measure(machineSize: string, pages: number, scattered: boolean): Row {
  const machine = createMachine({ memory: machineSize });
  const k = Kernel.boot(machine, { cmdline: 'kho=on liveupdate=on', release: '7.1.0' });
  const runs = pattern(pages, scattered);
  const mm = k.mm;
  const tree = MshvRadixTree.create(mm.memory, { alloc: () => mm.allocZeroedPages(0), free: (p) => mm.freePages(p, 0) }) as MshvRadixTree;
  for (const [s, e] of runs) tree.addRun(s, e);
  let nodes = 0;
  const radixPre = time(() => {
    tree.freeze();
    const r = tree.walk({ node: () => { nodes++; return undefined; }, run: () => undefined });
    if (!r.ok || r.keys !== pages) throw new Error(`radix walk: ${r.ok ? r.keys : r.reason}`);
  });
  const radixRes = best(2, () => {
    let n = 0;
    const r = walkRadix(mm.memory, tree.rootPhys, { run: (s, e) => { n += e - s; return undefined; } });
    if (!r.ok || n !== pages) throw new Error('radix restore walk');
  });
  let headerPhys = 0;
  let xaNodes = 0;
  const xaPre = time(() => {
    const w = writeTracking(k, runs, [], 1, { preserveData: false });
    headerPhys = w.headerPhys;
    xaNodes = w.nodes;
  });
  const xaRes = best(2, () => {
    const t = readTracking(mm.memory, headerPhys);
    if (typeof t === 'string' || t.nrPages !== pages) throw new Error(`xarray restore: ${typeof t === 'string' ? t : t.nrPages}`);
  });
  return { radixMeta: (nodes * PAGE_SIZE + PAGE_SIZE) / pages, xaMeta: ((xaNodes + 1) * PAGE_SIZE) / pages, radixPre, radixRes, xaPre, xaRes };
}

const fmt = (ms: number): string => ms.toFixed(ms < 10 ? 2 : 0).padStart(8);
const per = (ms: number, pages: number): string => ((ms * 1e6) / pages).toFixed(2).padStart(6);
// Warm the JIT on the code paths first, so the first row is not the compiler's.
measure('8GiB', (1 << 30) / PAGE_SIZE, false);
measure('8GiB', (1 << 30) / PAGE_SIZE, true);
console.log('deposit   pattern    | radix B/page  pre ms (ns/pg)  res ms (ns/pg) | xarray B/page  pre ms (ns/pg)  res ms (ns/pg)');
for (const size of SIZES) {
  const pages = parseSize(size) / PAGE_SIZE;
  const machineSize = `${Math.max(8, Math.ceil((parseSize(size) * 3 + (8 << 30)) / 2 ** 30))}GiB`;
  for (const scattered of [false, true]) {
    const r = measure(machineSize, pages, scattered);
    console.log(`${size.padEnd(9)} ${(scattered ? 'scattered' : 'dense').padEnd(10)} | ${r.radixMeta.toFixed(3).padStart(12)} ${fmt(r.radixPre)} (${per(r.radixPre, pages)}) ${fmt(r.radixRes)} (${per(r.radixRes, pages)}) | ${r.xaMeta.toFixed(3).padStart(13)} ${fmt(r.xaPre)} (${per(r.xaPre, pages)}) ${fmt(r.xaRes)} (${per(r.xaRes, pages)})`);
  }
}

// Same deposit, small vs huge machine.
const pages = (1 << 30) / PAGE_SIZE;
console.log('\n1GiB scattered on an 8GiB and on a 64TiB machine (ratios are 64TiB / 8GiB):');
/** Best of three runs, field by field: the comparison is of costs, not of the collector's timing. */
const bestOf = (machineSize: string): Row => {
  const r = measure(machineSize, pages, true);
  for (let i = 0; i < 2; i++) { const x = measure(machineSize, pages, true); for (const key of Object.keys(r) as Array<keyof Row>) r[key] = Math.min(r[key], x[key]); }
  return r;
};
const small = bestOf('8GiB');
const huge = bestOf('64TiB');
console.log(`  8GiB:  radix pre ${small.radixPre.toFixed(1)} ms, res ${small.radixRes.toFixed(1)} ms; xarray pre ${small.xaPre.toFixed(1)} ms, res ${small.xaRes.toFixed(1)} ms`);
console.log(`  64TiB: radix pre ${huge.radixPre.toFixed(1)} ms, res ${huge.radixRes.toFixed(1)} ms; xarray pre ${huge.xaPre.toFixed(1)} ms, res ${huge.xaRes.toFixed(1)} ms`);

console.log(`  radix  metadata ${(huge.radixMeta / small.radixMeta).toFixed(2)}x  preserve ${(huge.radixPre / small.radixPre).toFixed(2)}x  restore ${(huge.radixRes / small.radixRes).toFixed(2)}x`);
console.log(`  xarray metadata ${(huge.xaMeta / small.xaMeta).toFixed(2)}x  preserve ${(huge.xaPre / small.xaPre).toFixed(2)}x  restore ${(huge.xaRes / small.xaRes).toFixed(2)}x`);
