/**
 * KHO at scale: does the cost of preserving and restoring follow the preserved state, or the
 * size of the machine? Each configuration runs the same keys on a 64 GiB and on a 64 TiB
 * machine (2 NUMA nodes, allocations alternating between them, so on 64 TiB half the pfns
 * are above 2^33), each run in its own child process; runs are paired (64 GiB then 64 TiB)
 * and the 64 TiB / 64 GiB time ratio is the median over the pairs of each pair's ratio.
 * Ratios and keys/s use CPU time (user + system): on a shared machine wall time mostly
 * measures the neighbours; wall-time ratios are printed beside them.
 *
 * - order0: 10 M order-0 pages (38 GiB: fits 64 GiB) per round, 3 rounds.
 * - order9: 25,000 order-9 folios (49 GiB: 64 GiB holds ~30,000) per round, 40 rounds, after
 *   3 untimed ones.
 * Every round starts from a fresh machine. A run's time for a phase is its fastest round (on a
 * shared machine, the least disturbed one); keys/s is keys per round over that time.
 *
 * A round: alloc_pages each key, kho_preserve_folio each, kexecJump (survivor walk + scrub),
 * Kernel.boot (the tracker walk reserves every block), kho_restore_folio each. "restore" is
 * boot + restoreFolio. Targets: every ratio within 1.1x; >= 5 M keys/s each way.
 *
 *   npm run bench -- kho                        # 5 pairs per configuration (median)
 *   npm run bench -- kho --runs 3               # 3 pairs
 *   npm run bench -- kho --quick                # order0: 1 M keys; order9: 4 rounds
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
  /** Untimed rounds first, so short rounds measure optimized code, not the JIT warming up. */
  readonly warmup: number;
  /**
   * Collect the heap before every phase (one big round), or only once before the timed rounds
   * (short rounds): a forced full GC leaves sweeping behind that the next phase pays, a few ms
   * that would swamp a 25,000-key phase.
   */
  readonly collectEachPhase: boolean;
}

/** 'restore' is boot + restoreFolio of the same round. */
const PHASES = ['alloc', 'preserve', 'jump', 'boot', 'restoreFolio', 'restore'] as const;
type PhaseName = (typeof PHASES)[number];

interface Result {
  scenario: string;
  memory: string;
  keys: number;
  /** Milliseconds per phase in the fastest timed round: wall, and CPU (user + system, all threads). */
  ms: Record<PhaseName, number>;
  cpu: Record<PhaseName, number>;
  trackerPages: number;
  restored: number;
  maxRssKiB: number;
}

const quick = process.argv.includes('--quick');
const SMALL = '64GiB';
const BIG = '64TiB';
const SCENARIOS: readonly Scenario[] = [
  { name: 'order0', order: 0, count: quick ? 1_000_000 : 10_000_000, rounds: 3, warmup: 0, collectEachPhase: true },
  { name: 'order9', order: 9, count: 25_000, rounds: quick ? 4 : 40, warmup: 3, collectEachPhase: false },
];

/** A full collection (children run with --expose-gc), so one phase's garbage is not billed to the next (see collectEachPhase). */
const collect = (globalThis as { gc?: () => void }).gc ?? ((): void => undefined);
/** Wall and CPU milliseconds of fn. On a shared machine CPU time is the steadier one: it does not count time preempted. */
function timed(fn: () => void, gc = true): [wall: number, cpu: number] {
  if (gc) collect();
  const c = process.cpuUsage();
  const t = process.hrtime.bigint();
  fn();
  const wall = Number(process.hrtime.bigint() - t) / 1e6;
  const cpu = process.cpuUsage(c);
  return [wall, (cpu.user + cpu.system) / 1e3];
}

/*
 * The per-key loops are plain functions, not closures made per round: their optimized code is
 * reused from one round to the next, so 25,000-key rounds time the loop, not the JIT.
 */
function allocAll(k: Kernel, memory: string, order: number, pfns: Float64Array): void {
  for (let i = 0; i < pfns.length; i++) {
    const pfn = k.mm.allocPages(order, i & 1);
    if (pfn === null) throw new Error(`${memory}: out of memory after ${i} order-${order} allocations`);
    pfns[i] = pfn;
  }
}

function preserveAll(out: KhoOut, order: number, pfns: Float64Array): void {
  for (let i = 0; i < pfns.length; i++) out.preserveFolio(pfns[i] as number, order);
}

function restoreAll(kin: KhoIn, pfns: Float64Array): number {
  let restored = 0;
  for (let i = 0; i < pfns.length; i++) if (kin.restoreFolio((pfns[i] as number) * PAGE_SIZE) !== null) restored++;
  return restored;
}

function runOne(s: Scenario, memory: string): Result {
  const ms: Record<PhaseName, number> = { alloc: Infinity, preserve: Infinity, jump: Infinity, boot: Infinity, restoreFolio: Infinity, restore: Infinity };
  const cpu: Record<PhaseName, number> = { ...ms };
  const pfns = new Float64Array(s.count);
  let trackerPages = 0;
  let restored = 0;
  const alive: unknown[] = [];
  for (let round = -s.warmup; round < s.rounds; round++) {
    const thisRound: Record<PhaseName, [number, number]> = { alloc: [0, 0], preserve: [0, 0], jump: [0, 0], boot: [0, 0], restoreFolio: [0, 0], restore: [0, 0] };
    const add = (phase: PhaseName, t: [number, number]): void => { thisRound[phase] = t; };
    const each = s.collectEachPhase;
    if (!each && round === 0) collect();
    const machine = createMachine({ memory, numaNodes: 2 });
    const k1 = boot(machine, { cmdline: 'kho=on' });
    const out = k1.khoOut as KhoOut;
    add('alloc', timed(() => allocAll(k1, memory, s.order, pfns), each));
    add('preserve', timed(() => preserveAll(out, s.order, pfns), each));
    if (round >= 0) trackerPages += out.survivors().nodes; // untimed: the same walk kexecJump does, for the count
    add('jump', timed(() => k1.kexecJump('kho=on'), each));
    let k2: Kernel | undefined;
    add('boot', timed(() => { k2 = Kernel.boot(machine); }, each));
    const kin = k2?.khoIn as KhoIn | undefined;
    if (!kin) throw new Error(`${memory}: the next kernel is not a KHO boot`);
    let n = 0;
    add('restoreFolio', timed(() => { n = restoreAll(kin, pfns); }, each));
    if (round >= 0) {
      restored += n;
      thisRound.restore = [thisRound.boot[0] + thisRound.restoreFolio[0], thisRound.boot[1] + thisRound.restoreFolio[1]];
      for (const phase of PHASES) {
        ms[phase] = Math.min(ms[phase], thisRound[phase][0]);
        cpu[phase] = Math.min(cpu[phase], thisRound[phase][1]);
      }
    }
    // Short rounds keep every round's kernels alive: optimized code holds weak references to
    // objects it saw, and their death would throw that code away, so each round would time the JIT.
    if (!each) alive.push(k1, k2);
  }
  return {
    scenario: s.name, memory, keys: s.count, ms, cpu, trackerPages, restored,
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
type Clock = 'ms' | 'cpu';
const phaseMs = (r: Result, clock: Clock, phase: PhaseName): number => r[clock][phase];
const mkeys = (keys: number, ms: number): string => `${(keys / ms / 1000).toFixed(2)} M keys/s`;
const LABELS: ReadonlyArray<readonly [PhaseName, string]> = [
  ['alloc', 'alloc_pages'], ['preserve', 'preserve'], ['jump', 'kexecJump'], ['boot', 'boot walk+reserve'],
  ['restoreFolio', 'restoreFolio'], ['restore', 'restore (boot+restoreFolio)'],
];

const oneAt = process.argv.indexOf('--one');
const runsAt = process.argv.indexOf('--runs');
const RUNS = runsAt >= 0 ? Number(process.argv[runsAt + 1]) : 5;

if (oneAt >= 0) {
  const s = SCENARIOS.find((x) => x.name === process.argv[oneAt + 1]);
  const memory = process.argv[oneAt + 2];
  if (!s || !memory) throw new Error('usage: kho.ts --one <order0|order9> <memory>');
  console.log(JSON.stringify(runOne(s, memory)));
} else {
  console.log(`KHO benchmark${quick ? ' (--quick)' : ''}; node ${process.version}; ${RUNS} paired runs (${SMALL} then ${BIG}) per configuration, each run its own process`);
  console.log(`a run's time for a phase is its fastest round; ratios are ${BIG} / ${SMALL}, the median over the pairs of each pair's ratio;`);
  console.log('CPU time (user + system) first, wall time in brackets; keys/s by CPU time, keys of one round');
  const summary: string[] = [];
  let slowest = Infinity;
  for (const s of SCENARIOS) {
    const keys = s.count;
    console.log(`\n${s.name}: ${keys.toLocaleString('en')} order-${s.order} keys a round (${formatSize(s.count * 2 ** s.order * PAGE_SIZE)} preserved), fastest of ${s.rounds} round${s.rounds > 1 ? 's' : ''}${s.warmup ? ` after ${s.warmup} untimed` : ''}`);
    console.log(`  ${'phase (CPU ms, median)'.padEnd(28)} ${SMALL.padStart(8)} | ${BIG.padStart(8)}   ${'ratio (wall)'.padEnd(18)}  ${SMALL.padStart(17)} | ${BIG.padStart(17)}`);
    const pairs: Array<[Result, Result]> = [];
    for (let i = 0; i < RUNS; i++) pairs.push([child(s, SMALL), child(s, BIG)]);
    const ratio = (clock: Clock, phase: PhaseName): number =>
      median(pairs.map(([a, b]) => phaseMs(b, clock, phase) / phaseMs(a, clock, phase)));
    for (const [phase, label] of LABELS) {
      const small = median(pairs.map(([a]) => phaseMs(a, 'cpu', phase)));
      const big = median(pairs.map(([, b]) => phaseMs(b, 'cpu', phase)));
      const perKey = phase === 'jump' ? '' : `  ${mkeys(keys, small).padStart(17)} | ${mkeys(keys, big).padStart(17)}`;
      const r = `${ratio('cpu', phase).toFixed(3)}x (${ratio('ms', phase).toFixed(3)}x)`;
      const msText = (x: number): string => x.toFixed(x < 10 ? 2 : 1).padStart(8);
      console.log(`  ${label.padEnd(28)} ${msText(small)} | ${msText(big)}   ${r.padEnd(18)}${perKey}`);
    }
    const [a, b] = pairs[0] as [Result, Result];
    console.log(`  tracker pages per round ${a.trackerPages / s.rounds} | ${b.trackerPages / s.rounds}; restored ${a.restored / s.rounds} | ${b.restored / s.rounds} a round; peak RSS ${formatSize(a.maxRssKiB * 1024)} | ${formatSize(b.maxRssKiB * 1024)}`);
    for (const pair of pairs) for (const r of pair) slowest = Math.min(slowest, keys / phaseMs(r, 'cpu', 'preserve') / 1000, keys / phaseMs(r, 'cpu', 'restore') / 1000);
    const each = (phase: PhaseName): string => pairs.map(([x, y]) => (phaseMs(y, 'cpu', phase) / phaseMs(x, 'cpu', phase)).toFixed(2)).join(' ');
    for (const phase of ['preserve', 'restore'] as const) {
      summary.push(`  order-${s.order} ${phase.padEnd(8)} ${ratio('cpu', phase).toFixed(3)}x (wall ${ratio('ms', phase).toFixed(3)}x)   pairs: ${each(phase)}`);
    }
  }
  console.log(`\n${BIG} / ${SMALL}, median of ${RUNS} pairs, CPU time (target <= 1.1x each):`);
  for (const line of summary) console.log(line);
  console.log(`slowest direction in any run (CPU time): ${slowest.toFixed(2)} M keys/s (target >= 5); load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}`);
}
