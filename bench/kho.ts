/**
 * KHO at scale: does the cost of preserving and restoring follow the preserved state, or the
 * size of the machine? Each configuration runs the same keys on a 64 GiB and on a 64 TiB
 * machine (2 NUMA nodes, allocations alternating between them, so on 64 TiB half the pfns
 * are above 2^33), each run in its own child process; runs are paired (64 GiB then 64 TiB)
 * and the 64 TiB / 64 GiB time ratio is the median over the pairs.
 *
 * - order0: 10 M order-0 pages (38 GiB: fits 64 GiB), one round.
 * - order9: 25,000 order-9 folios (49 GiB: 64 GiB holds ~30,000) per round, 40 rounds on fresh
 *   machines (1 M keys in all); every phase is summed over the rounds.
 *
 * A round: alloc_pages each key, kho_preserve_folio each, kexecJump (survivor walk + scrub),
 * Kernel.boot (the tracker walk reserves every block), kho_restore_folio each. "restore" is
 * boot + restoreFolio. Targets: every ratio within 1.1x; >= 5 M keys/s each way.
 *
 *   npm run bench -- kho                        # 5 pairs per configuration (median)
 *   npm run bench -- kho --runs 3               # 3 pairs
 *   npm run bench -- kho --quick                # 1/10 of the keys (order9: 4 rounds)
 *   npm run bench -- kho --one order9 64TiB     # one configuration, prints JSON
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { loadavg } from 'node:os';
import { PAGE_SIZE, createMachine, formatSize } from '@liveupdate/hw';
import { Kernel, boot, type KhoIn, type KhoOut } from '@liveupdate/runtime';

interface Scenario {
  readonly name: string;
  readonly order: number;
  /** Keys per round. */
  readonly count: number;
  readonly rounds: number;
}

const PHASES = ['alloc', 'preserve', 'jump', 'boot', 'restoreFolio'] as const;
type PhaseName = (typeof PHASES)[number];

interface Result {
  scenario: string;
  memory: string;
  keys: number;
  /** Wall milliseconds per phase, summed over the rounds. */
  ms: Record<PhaseName, number>;
  trackerPages: number;
  restored: number;
  maxRssKiB: number;
}

const quick = process.argv.includes('--quick');
const SMALL = '64GiB';
const BIG = '64TiB';
const SCENARIOS: readonly Scenario[] = [
  { name: 'order0', order: 0, count: quick ? 1_000_000 : 10_000_000, rounds: 1 },
  { name: 'order9', order: 9, count: 25_000, rounds: quick ? 4 : 40 },
];

/** Each phase starts from a collected heap (children run with --expose-gc), so one phase's garbage is not billed to the next. */
const collect = (globalThis as { gc?: () => void }).gc ?? ((): void => undefined);
function timed(fn: () => void): number {
  collect();
  const t = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t) / 1e6;
}

function runOne(s: Scenario, memory: string): Result {
  const ms: Record<PhaseName, number> = { alloc: 0, preserve: 0, jump: 0, boot: 0, restoreFolio: 0 };
  const pfns = new Float64Array(s.count);
  let trackerPages = 0;
  let restored = 0;
  for (let round = 0; round < s.rounds; round++) {
    const machine = createMachine({ memory, numaNodes: 2 });
    const k1 = boot(machine, { cmdline: 'kho=on' });
    const out = k1.khoOut as KhoOut;
    ms.alloc += timed(() => {
      for (let i = 0; i < s.count; i++) {
        const pfn = k1.mm.allocPages(s.order, i & 1);
        if (pfn === null) throw new Error(`${memory}: out of memory after ${i} order-${s.order} allocations`);
        pfns[i] = pfn;
      }
    });
    ms.preserve += timed(() => { for (let i = 0; i < s.count; i++) out.preserveFolio(pfns[i] as number, s.order); });
    trackerPages += out.survivors().nodes; // untimed: the same walk kexecJump does, for the count
    ms.jump += timed(() => k1.kexecJump('kho=on'));
    let k2: Kernel | undefined;
    ms.boot += timed(() => { k2 = Kernel.boot(machine); });
    const kin = k2?.khoIn as KhoIn | undefined;
    if (!kin) throw new Error(`${memory}: the next kernel is not a KHO boot`);
    ms.restoreFolio += timed(() => {
      for (let i = 0; i < s.count; i++) if (kin.restoreFolio((pfns[i] as number) * PAGE_SIZE) !== null) restored++;
    });
  }
  return {
    scenario: s.name, memory, keys: s.count * s.rounds, ms, trackerPages, restored,
    maxRssKiB: process.resourceUsage().maxRSS,
  };
}

function child(s: Scenario, memory: string): Result {
  const script = fileURLToPath(import.meta.url);
  const args = [...process.execArgv, '--expose-gc', script, '--one', s.name, memory, ...(quick ? ['--quick'] : [])];
  const r = spawnSync(process.execPath, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 20 });
  if (r.status !== 0) throw new Error(`bench child ${s.name} ${memory} failed (status ${r.status})`);
  return JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as Result;
}

const median = (xs: readonly number[]): number => {
  const a = [...xs].sort((x, y) => x - y);
  const m = a.length >> 1;
  return a.length % 2 === 1 ? (a[m] as number) : ((a[m - 1] as number) + (a[m] as number)) / 2;
};
const restoreMs = (r: Result): number => r.ms.boot + r.ms.restoreFolio;
const mkeys = (keys: number, ms: number): string => `${(keys / ms / 1000).toFixed(2)} M keys/s`;

const oneAt = process.argv.indexOf('--one');
const runsAt = process.argv.indexOf('--runs');
const RUNS = runsAt >= 0 ? Number(process.argv[runsAt + 1]) : 5;

if (oneAt >= 0) {
  const s = SCENARIOS.find((x) => x.name === process.argv[oneAt + 1]);
  const memory = process.argv[oneAt + 2];
  if (!s || !memory) throw new Error('usage: kho.ts --one <order0|order9> <memory>');
  console.log(JSON.stringify(runOne(s, memory)));
} else {
  console.log(`KHO benchmark${quick ? ' (--quick)' : ''}; node ${process.version}; ${RUNS} paired runs (${SMALL} then ${BIG}) per configuration, each run its own process; ratios are ${BIG} / ${SMALL} wall time, median of the ${RUNS} pairs`);
  const summary: string[] = [];
  let slowest = Infinity;
  for (const s of SCENARIOS) {
    const keys = s.count * s.rounds;
    console.log(`\n${s.name}: ${keys.toLocaleString('en')} order-${s.order} keys (${formatSize(s.count * 2 ** s.order * PAGE_SIZE)} preserved per round, ${s.rounds} round${s.rounds > 1 ? 's' : ''})`);
    console.log(`  ${'phase'.padEnd(28)} ${SMALL.padStart(11)} | ${BIG.padStart(8)}${' '.repeat(23)}${SMALL.padStart(17)} | ${BIG.padStart(17)}`);
    const pairs: Array<[Result, Result]> = [];
    for (let i = 0; i < RUNS; i++) pairs.push([child(s, SMALL), child(s, BIG)]);
    const ratio = (f: (r: Result) => number): number => median(pairs.map(([a, b]) => f(b) / f(a)));
    for (const [label, f] of [
      ['alloc_pages', (r: Result) => r.ms.alloc],
      ['preserve', (r: Result) => r.ms.preserve],
      ['kexecJump', (r: Result) => r.ms.jump],
      ['boot walk+reserve', (r: Result) => r.ms.boot],
      ['restoreFolio', (r: Result) => r.ms.restoreFolio],
      ['restore (boot+restoreFolio)', restoreMs],
    ] as const) {
      const small = median(pairs.map(([a]) => f(a)));
      const big = median(pairs.map(([, b]) => f(b)));
      const perKey = label === 'kexecJump' ? '' : `   ${mkeys(keys, small).padStart(17)} | ${mkeys(keys, big).padStart(17)}`;
      console.log(`  ${label.padEnd(28)} ${small.toFixed(1).padStart(8)} ms | ${big.toFixed(1).padStart(8)} ms   ratio ${ratio(f).toFixed(3)}x${perKey}`);
    }
    const [a, b] = pairs[0] as [Result, Result];
    console.log(`  tracker pages per round ${a.trackerPages / s.rounds} | ${b.trackerPages / s.rounds}; restored ${a.restored} | ${b.restored}; peak RSS ${formatSize(a.maxRssKiB * 1024)} | ${formatSize(b.maxRssKiB * 1024)}`);
    for (const [a2, b2] of pairs) for (const r of [a2, b2]) slowest = Math.min(slowest, keys / r.ms.preserve / 1000, keys / restoreMs(r) / 1000);
    summary.push(`  order-${s.order} preserve ${ratio((r) => r.ms.preserve).toFixed(3)}x, restore ${ratio(restoreMs).toFixed(3)}x` +
      `   (pairs: preserve ${pairs.map(([x, y]) => (y.ms.preserve / x.ms.preserve).toFixed(2)).join(' ')}; restore ${pairs.map(([x, y]) => (restoreMs(y) / restoreMs(x)).toFixed(2)).join(' ')})`);
  }
  console.log(`\n${BIG} / ${SMALL}, median of ${RUNS} pairs (target <= 1.1x each):`);
  for (const line of summary) console.log(line);
  console.log(`slowest direction in any run: ${slowest.toFixed(2)} M keys/s (target >= 5); load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}`);
}
