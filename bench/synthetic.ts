/**
 * Synthetic memory fill: does the cost of giving pages synthetic content follow the number
 * of runs linearly, whatever order the runs arrive in?
 *
 * 1. PhysMemory.fillSynthetic of n one-page runs (a gap after each, so none merge), n = 1k,
 *    4k, 16k, 64k, in ascending, descending and random order: ms, ns per run, and the growth
 *    from the previous n (4x the runs: 4.0 is linear, 16 quadratic).
 * 2. A guest-RAM scenario at 1x, 4x and 16x: a machine of 64 GiB x k whose free pages are
 *    fragmented (2N pages allocated, every other one freed in ascending order, so the
 *    allocator hands them back descending), then a memfd of N = 8192 x k pages (the demo's
 *    32 MiB synthetic file x k) filled synthetic in one call: every folio is a run of its
 *    own, inserted below the previous one. Target: fill(16x) <= 4 x fill(4x).
 *
 *   npm run bench -- synthetic
 *   npm run bench -- synthetic --runs 9     # median of 9 (default 5)
 *
 * Times are CPU time (user + system), the median of the runs; the scenario's three scales run
 * interleaved; the 16x / 4x ratio is printed three ways (ratio of the medians, median of the
 * per-round ratios, ratio of the fastest runs): a 4x fill takes a few ms, so one preempted run
 * moves a paired ratio a lot on a shared machine.
 */
import { PAGE_SIZE, PhysMemory, createMachine } from '@liveupdate/hw';
import { boot } from '@liveupdate/sdk';
import memfd, { memfdCreate, memfdFillSynthetic } from '@liveupdate/plugin-memfd';

const runsAt = process.argv.indexOf('--runs');
const RUNS = runsAt >= 0 ? Number(process.argv[runsAt + 1]) : 5;

/** CPU milliseconds (user + system) of fn: on a shared machine, time preempted is not the data structure's. */
function cpuMs(fn: () => void): number {
  const c = process.cpuUsage();
  fn();
  const d = process.cpuUsage(c);
  return (d.user + d.system) / 1e3;
}

const median = (xs: readonly number[]): number => {
  const a = [...xs].sort((x, y) => x - y);
  const m = a.length >> 1;
  return a.length % 2 === 1 ? (a[m] as number) : ((a[m - 1] as number) + (a[m] as number)) / 2;
};

/** Deterministic shuffle (xorshift32), so every run inserts the same random order. */
function shuffled(n: number): Int32Array {
  const a = Int32Array.from({ length: n }, (_, i) => i);
  let x = 0x9e3779b9;
  for (let i = n - 1; i > 0; i--) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    const j = (x >>> 0) % (i + 1);
    const t = a[i] as number;
    a[i] = a[j] as number;
    a[j] = t;
  }
  return a;
}

type Order = 'ascending' | 'descending' | 'random';

function fillRuns(n: number, order: Order): number {
  const mem = new PhysMemory(2 ** 40);
  const perm = order === 'random' ? shuffled(n) : undefined;
  const ms = cpuMs(() => {
    for (let k = 0; k < n; k++) {
      const i = order === 'ascending' ? k : order === 'descending' ? n - 1 - k : (perm?.[k] as number);
      mem.fillSynthetic(2 * i * PAGE_SIZE, PAGE_SIZE, i);
    }
  });
  if (mem.exportState().synthetic.length !== 3 * n) throw new Error(`${order} ${n}: expected ${n} runs`);
  return ms;
}

const DEMO_SYNTHETIC_PAGES = (32 << 20) / PAGE_SIZE;

/** The scaled scenario; returns the fill time and the number of synthetic runs it made. */
function scenario(scale: number): { ms: number; runs: number } {
  const machine = createMachine({ memory: 64 * 2 ** 30 * scale, numaNodes: 2 });
  const k = boot(machine, { cmdline: 'kho=on liveupdate=on', plugins: [memfd()], release: '7.1.0' });
  const n = DEMO_SYNTHETIC_PAGES * scale;
  const taken: number[] = [];
  for (let i = 0; i < 2 * n; i++) {
    const pfn = k.mm.allocPages(0);
    if (pfn === null) throw new Error('out of memory while fragmenting');
    taken.push(pfn);
  }
  for (let i = 0; i < 2 * n; i += 2) k.mm.freePages(taken[i] as number, 0);
  const p = k.spawn('vmm');
  const fd = memfdCreate(p, 'guest-ram', 0);
  p.ftruncate(fd, n * PAGE_SIZE);
  const ms = cpuMs(() => memfdFillSynthetic(p, fd, 0, n * PAGE_SIZE, 0x5eed));
  return { ms, runs: machine.memory.exportState().synthetic.length / 3 };
}

// Warm up: the first runs would otherwise time the JIT, not the data structure.
for (const order of ['ascending', 'descending', 'random'] as const) fillRuns(4096, order);
scenario(1);

console.log(`synthetic fill benchmark; node ${process.version}; median of ${RUNS} runs, after a warm-up`);
console.log('\n1. PhysMemory.fillSynthetic, n one-page runs; CPU ms (ns per run) [growth from n/4: 4.0 is linear]');
const SIZES = [1024, 4096, 16384, 65536];
console.log(`  ${'runs'.padStart(6)}  ${(['ascending', 'descending', 'random'] as const).map((o) => o.padStart(28)).join('')}`);
const prev: Partial<Record<Order, number>> = {};
for (const n of SIZES) {
  const cells: string[] = [];
  for (const order of ['ascending', 'descending', 'random'] as const) {
    const ms = median(Array.from({ length: RUNS }, () => fillRuns(n, order)));
    const growth = prev[order] !== undefined ? `[${(ms / (prev[order] as number)).toFixed(2)}x]` : '';
    prev[order] = ms;
    cells.push(`${ms.toFixed(2)} ms (${((ms * 1e6) / n).toFixed(0)} ns) ${growth}`.padStart(28));
  }
  console.log(`  ${String(n).padStart(6)}  ${cells.join('')}`);
}

console.log(`\n2. guest RAM on fragmented free memory: a memfd of ${DEMO_SYNTHETIC_PAGES} x k pages filled synthetic, one run per folio, descending`);
// Interleaved rounds (1x, 4x, 16x, then again): a change of load on the shared machine hits the
// three scales alike, and the ratio is also taken per round (paired), its median printed.
const SCALES = [1, 4, 16] as const;
const rounds = Array.from({ length: RUNS }, () => SCALES.map((scale) => scenario(scale)));
const fills: Record<number, number> = {};
SCALES.forEach((scale, i) => {
  const results = rounds.map((r) => r[i] as { ms: number; runs: number });
  const ms = median(results.map((r) => r.ms));
  fills[scale] = ms;
  const runs = (results[0] as { runs: number }).runs;
  console.log(`  ${String(scale).padStart(2)}x: machine ${64 * scale} GiB, ${runs} runs, fill ${ms.toFixed(1)} ms (${((ms * 1e3) / runs).toFixed(2)} us per run), median of ${RUNS}`);
});
const msAt = (i: number) => rounds.map((r) => (r[i] as { ms: number }).ms);
const paired = median(rounds.map((r) => (r[2] as { ms: number }).ms / (r[1] as { ms: number }).ms));
const ratio = (fills[16] as number) / (fills[4] as number);
const fastest = Math.min(...msAt(2)) / Math.min(...msAt(1));
console.log(`  fill(16x) / fill(4x) = ${ratio.toFixed(2)} (ratio of the medians), ${paired.toFixed(2)} (median of ${RUNS} paired rounds), ${fastest.toFixed(2)} (fastest runs); linear: 4.00, target <= 4, quadratic would be 16`);
