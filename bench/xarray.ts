/**
 * KHO xarray: cost of set, of metadata, and of restoring after a kexec.
 *
 *   npm run bench -- xarray            (tsc -b, then this file through bench/run.mjs)
 *   node --import tsx bench/xarray.ts [--dense N] [--sparse N]
 *
 * For each key pattern, on a '64GiB' machine:
 *   - set, cold: N inserts into a new map; node pages come from never-touched memory, so the
 *     host's first-touch page faults are part of the cost (printed separately, per page);
 *   - set, warm: the same N inserts into a new map whose node pages are recycled (already
 *     touched) pages: the cost of the data structure itself (best of 3);
 *   - set, overwrite: N sets of keys that are present, no allocation at all (best of 3);
 *   - node pages and metadata bytes per entry;
 *   - restore: kexec, then KhoXarray.restore + forEach in the new kernel, per entry.
 * Dense keys are 0..N-1; sparse keys are uniformly random 54-bit keys (bigints where they are
 * 2^53 or more). 10^7 sparse keys would need ~3·10^7 node pages (~120 GiB: more than the
 * machine and the host have), so the sparse run uses fewer keys and says how many.
 */
import { createMachine, PAGE_SIZE } from '@liveupdate/hw';
import { Kernel, KhoXarray, type XarrayKey } from '@liveupdate/sdk';

const arg = (name: string, dflt: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
};
const DENSE = arg('dense', 1e7);
const SPARSE = arg('sparse', 2 ** 17);
const CMDLINE = 'kho=on';

const ns = (ms: number, n: number): string => (n === 0 ? '-' : ((ms * 1e6) / n).toFixed(1));
const mib = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(0)} MiB`;
const peakRss = (): number => process.resourceUsage().maxRSS * 1024;
const time = (fn: () => void): number => { const t = performance.now(); fn(); return performance.now() - t; };

/** xoshiro-free, allocation-free PRNG (splitmix32) for reproducible sparse keys. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

function sparseKeys(n: number): XarrayKey[] {
  const next = rng(0x5eed);
  const keys = new Set<bigint>();
  while (keys.size < n) keys.add((BigInt(next() & 0x3fffff) << 32n) | BigInt(next()));
  return [...keys].map((k) => (k <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(k) : k));
}

/** The host's first-touch cost of one 4 KiB page (what every never-used node page pays). */
function firstTouchUsPerPage(): number {
  const pages = 4096;
  const b = new Uint8Array(pages * PAGE_SIZE);
  const ms = time(() => { for (let i = 0; i < b.length; i += PAGE_SIZE) b[i] = 1; });
  return (ms * 1000) / pages;
}

interface Row {
  readonly pattern: string;
  readonly keys: number;
  readonly cold: number;
  readonly warm: number;
  readonly overwrite: number;
  readonly nodePages: number;
  readonly kexecMs: number;
  readonly restorePerEntry: number;
  readonly restoreMs: number;
  readonly forEachMs: number;
}

function run(pattern: string, n: number, keyAt: (i: number) => XarrayKey): Row {
  const machine = createMachine({ memory: '64GiB' });
  const k1 = Kernel.boot(machine, { cmdline: CMDLINE });
  const out = k1.khoOut;
  if (!out) throw new Error('KHO did not come up');

  // Warm-up map: touches as many pages as the real one will need, then gives them back.
  const warmup = KhoXarray.create(k1);
  const coldMs = time(() => { for (let i = 0; i < n; i++) warmup.set(keyAt(i), i + 1); });
  const nodePages = warmup.nodePages;
  warmup.destroy();

  // Best of three (the host may be busy): each into a new map over recycled pages.
  let warmMs = Infinity;
  let xa = KhoXarray.create(k1);
  for (let r = 0; r < 3; r++) {
    if (r > 0) { xa.destroy(); xa = KhoXarray.create(k1); }
    const map = xa;
    warmMs = Math.min(warmMs, time(() => { for (let i = 0; i < n; i++) map.set(keyAt(i), i + 1); }));
  }
  let overwriteMs = Infinity;
  for (let r = 0; r < 3; r++) overwriteMs = Math.min(overwriteMs, time(() => { for (let i = 0; i < n; i++) xa.set(keyAt(i), i + 2); }));
  if (xa.size !== n || xa.nodePages !== nodePages) throw new Error(`size ${xa.size} nodes ${xa.nodePages}`);

  const blob = out.allocPreserve(8);
  machine.memory.writeU64(blob, xa.rootPhys);
  out.addSubtree('xarray-bench', blob, 8);
  let k2: Kernel | undefined;
  const kexecMs = time(() => { k2 = k1.kexec({ cmdline: CMDLINE }); });
  const kernel2 = k2 as Kernel;
  const kin = kernel2.khoIn;
  if (!kin) throw new Error('KHO revival failed');
  const { phys } = kin.retrieveSubtree('xarray-bench');
  const root = machine.memory.readU64Number(phys);
  kin.restoreFree(phys);

  let back: KhoXarray | undefined;
  const restoreMs = time(() => { back = KhoXarray.restore(kernel2, root); });
  let count = 0;
  let sum = 0;
  const forEachMs = time(() => { (back as KhoXarray).forEach((_k, v) => { count++; sum += v; }); });
  const expected = (n * (n + 1)) / 2 + n;
  if (count !== n || (n < 2 ** 26 && sum !== expected)) throw new Error(`restored ${count} entries, checksum ${sum} != ${expected}`);
  (back as KhoXarray).destroy();
  return {
    pattern, keys: n, cold: coldMs, warm: warmMs, overwrite: overwriteMs, nodePages, kexecMs,
    restorePerEntry: ((restoreMs + forEachMs) * 1e6) / n, restoreMs, forEachMs,
  };
}

/** Expected node pages for n uniformly random 54-bit keys: root + distinct prefixes at each level. */
function expectedSparseNodes(n: number): number {
  let nodes = 1;
  for (const bits of [9, 18, 27, 36, 45]) { const space = 2 ** bits; nodes += space * -Math.expm1(n * Math.log1p(-1 / space)); }
  return nodes;
}

const touch = firstTouchUsPerPage();
console.log(`KHO xarray (54-bit keys, 6 levels of 4 KiB nodes) on a 64GiB machine; node ${process.version}`);
console.log(`host first touch of a never-used page: ${touch.toFixed(1)} µs (paid once per node page by a cold map)\n`);

const rows: Row[] = [];
rows.push(run('dense', DENSE, (i) => i));
const keys = sparseKeys(SPARSE);
rows.push(run('sparse', SPARSE, (i) => keys[i] as XarrayKey));

const header = ['pattern', 'keys', 'set cold ns', 'set warm ns', 'overwrite ns', 'node pages', 'meta B/entry', 'kexec ms', 'restore+forEach ns/entry'];
const table = rows.map((r) => [
  r.pattern, r.keys.toLocaleString('en'), ns(r.cold, r.keys), ns(r.warm, r.keys), ns(r.overwrite, r.keys),
  r.nodePages.toLocaleString('en'), ((r.nodePages * PAGE_SIZE) / r.keys).toFixed(1), r.kexecMs.toFixed(0),
  `${r.restorePerEntry.toFixed(1)} (restore ${r.restoreMs.toFixed(0)} ms + forEach ${r.forEachMs.toFixed(0)} ms)`,
]);
const widths = header.map((h, i) => Math.max(h.length, ...table.map((row) => (row[i] as string).length)));
const line = (cells: string[]): string => cells.map((c, i) => c.padStart(widths[i] as number)).join('  ');
console.log(line(header));
for (const row of table) console.log(line(row));
if (SPARSE < 1e7) {
  const projected = expectedSparseNodes(1e7);
  console.log(`\nsparse ran ${SPARSE.toLocaleString('en')} keys, not 10^7 (model for ${SPARSE.toLocaleString('en')}: ${Math.round(expectedSparseNodes(SPARSE)).toLocaleString('en')} node pages, measured ${(rows[1] as Row).nodePages.toLocaleString('en')}):`
    + ` 10^7 random 54-bit keys need ~${(projected / 1e6).toFixed(1)}M node pages = ${mib(projected * PAGE_SIZE)} of node memory, more than this host has.`);
}
console.log(`cold vs warm: ${rows.map((r) => `${r.pattern} ${((r.cold - r.warm) * 1e3 / r.nodePages).toFixed(1)} µs more per node page`).join(', ')} (host first touch)`);
console.log(`peak RSS ${mib(peakRss())}`);
