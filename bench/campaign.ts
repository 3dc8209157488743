/**
 * `npm run campaign -- [--runs N] [--minutes M] [--seed S] [--workers W] [--hang-ms H]`: the
 * handover fuzz campaign. Each worker thread runs kernel A's part of the default fuzz scenario
 * once, snapshots memory after the jump and boots kernel B once per mutated copy of the
 * handover (see packages/cli/src/fuzz/campaign.ts). Run i (over all workers) uses seed S+i;
 * worker w takes i = w, w+W, ... A worker that reports nothing for --hang-ms is a hang: it is
 * terminated, the seed it was running is recorded, and a fresh worker continues after it.
 *
 * Prints outcomes per structure and mutation, runs per second, the projected time for 10^6
 * runs, and the first failing seed of each kind (reproduce one with --seed S --runs 1 --workers 1).
 * Bounded: stops at --runs or --minutes, whichever comes first. Not part of the test suite.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { chainedUpdates } from './campaign-chain.js';
import { FUZZ_CLASSES, MUTATIONS, sweepFaults, type FuzzClass, type SweepRun } from '@liveupdate/cli';

interface RunMsg { type: 'run'; i: number; seed: number; structure: string; mutation: string; outcome: FuzzClass; detail: string | null; what: string }
interface StartMsg { type: 'start'; i: number; seed: number }
interface SetupMsg { type: 'setup'; ms: number; targets: Record<string, number>; structures: string[] }
interface DoneMsg { type: 'done' }
interface ErrorMsg { type: 'error'; message: string }
type Msg = RunMsg | StartMsg | SetupMsg | DoneMsg | ErrorMsg;

function arg(name: string, def: number): number {
  const i = process.argv.indexOf(name);
  if (i < 0) return def;
  const v = Number(process.argv[i + 1]);
  if (!Number.isFinite(v) || v < 0) { console.error(`${name} must be a number`); process.exit(2); }
  return v;
}
const runs = arg('--runs', 1_000_000);
const minutes = arg('--minutes', 60);
const seed = arg('--seed', 1);
const faults = !process.argv.includes('--no-faults');
const chain = arg('--chain', 100);
const workers = Math.max(1, Math.min(arg('--workers', availableParallelism()), 16));
const hangMs = arg('--hang-ms', 10_000);
const deadline = performance.now() + minutes * 60_000;

const ACCEPTED = new Set<FuzzClass>(['updated', 'file-error', 'refused-incoming']);
const table = new Map<string, Map<string, Record<FuzzClass | 'hang', number>>>();
const outcomes: Record<FuzzClass | 'hang', number> = { ...Object.fromEntries(FUZZ_CLASSES.map((k) => [k, 0])) as Record<FuzzClass, number>, hang: 0 };
const first = new Map<string, { seed: number; line: string }>();
let done = 0;
let setup = null as SetupMsg | null;
const t0 = performance.now();
let setupEnd = 0;

function count(structure: string, mutation: string, outcome: FuzzClass | 'hang'): void {
  const row = table.get(structure) ?? new Map();
  table.set(structure, row);
  const cell = row.get(mutation) ?? { ...Object.fromEntries(FUZZ_CLASSES.map((k) => [k, 0])) as Record<FuzzClass, number>, hang: 0 };
  row.set(mutation, cell);
  cell[outcome]++;
  outcomes[outcome]++;
  done++;
}
function fail(kind: string, s: number, line: string): void {
  const have = first.get(kind);
  if (!have || s < have.seed) first.set(kind, { seed: s, line });
}

/** Worker w runs indices start, start+W, ... below `runs`. */
function spawn(w: number, start: number): Promise<void> {
  return new Promise((resolve) => {
    const worker = new Worker(new URL('./campaign-worker.mjs', import.meta.url), {
      workerData: { seed, start, step: workers, runs, deadlineMs: Math.max(0, deadline - performance.now()) },
    });
    let current: StartMsg | null = null;
    let last = performance.now();
    let settled = false;
    const finish = (): void => { if (!settled) { settled = true; clearInterval(watch); resolve(); } };
    const watch = setInterval(() => {
      // Setup (kernel A) is once per worker; a run is what the budget bounds.
      if (current === null || performance.now() - last < hangMs) return;
      const hung = current;
      count('(hang)', '(hang)', 'hang');
      fail('hang', hung.seed, `seed ${hung.seed}: no answer in ${hangMs} ms`);
      void worker.terminate();
      clearInterval(watch);
      settled = true;
      void spawn(w, hung.i + workers).then(resolve);
    }, 250);
    worker.on('message', (m: Msg) => {
      last = performance.now();
      if (m.type === 'start') current = m;
      else if (m.type === 'setup') { setup ??= m; setupEnd = Math.max(setupEnd, performance.now()); }
      else if (m.type === 'run') {
        current = null;
        count(m.structure, m.mutation, m.outcome);
        if (!ACCEPTED.has(m.outcome)) fail(`${m.outcome} (${m.structure} ${m.mutation})`, m.seed, `seed ${m.seed}: ${m.structure} ${m.mutation} ${m.what}: ${m.detail ?? ''}`);
      } else if (m.type === 'error') { console.error(`worker ${w}: ${m.message}`); finish(); }
      else finish();
    });
    worker.on('error', (e) => { console.error(`worker ${w}: ${e.message}`); finish(); });
    worker.on('exit', finish);
  });
}

const progress = setInterval(() => {
  const s = (performance.now() - t0) / 1000;
  process.stderr.write(`[campaign] ${done} runs in ${s.toFixed(0)} s; ${FUZZ_CLASSES.filter((k) => !ACCEPTED.has(k)).map((k) => `${k} ${outcomes[k]}`).join(', ')}, hang ${outcomes.hang}\n`);
}, 30_000);
await Promise.all(Array.from({ length: workers }, (_, w) => spawn(w, w)));
clearInterval(progress);

const elapsed = (performance.now() - t0) / 1000;
const fuzzing = (performance.now() - (setupEnd || t0)) / 1000;
const rate = done / Math.max(fuzzing, 1e-9);
const cols: Array<FuzzClass | 'hang'> = [...FUZZ_CLASSES, 'hang'];
const pad = (s: string, n: number): string => s.padEnd(n);
const lines: string[] = [];
lines.push(`fuzz campaign: ${done} mutated handovers from seed ${seed}, ${workers} worker thread(s), ${elapsed.toFixed(1)} s`);
if (setup) lines.push(`  handover pages: ${Object.entries(setup.targets).map(([s, n]) => `${s} ${n}`).join(', ')}; kernel A + decode ${setup.ms.toFixed(0)} ms per worker`);
lines.push('', `${pad('structure', 16)} ${pad('mutation', 15)} ${cols.map((c) => c.padStart(10)).join(' ')}`);
const order = (setup?.structures ?? []).concat([...table.keys()].filter((s) => !(setup?.structures ?? []).includes(s)));
for (const s of order) {
  const row = table.get(s);
  if (!row) continue;
  for (const k of [...MUTATIONS, '(hang)']) {
    const cell = row.get(k);
    if (cell) lines.push(`${pad(s, 16)} ${pad(k, 15)} ${cols.map((c) => String(cell[c]).padStart(10)).join(' ')}`);
  }
}
lines.push(`${pad('total', 16)} ${pad('', 15)} ${cols.map((c) => String(outcomes[c]).padStart(10)).join(' ')}`);
lines.push('', `runs/s: ${rate.toFixed(1)} (${workers} threads, after setup); 10^6 runs would take ${(1e6 / rate / 60).toFixed(1)} min`);
lines.push(`wrong answers ${outcomes['wrong-answer']}, uncaught ${outcomes.uncaught}, unexpected ${outcomes.unexpected}, hangs ${outcomes.hang}`);

if (faults) {
  // Fault injection at every file-handler and FLB op x call index of every plugin (full replays).
  const f0 = performance.now();
  const sweep: SweepRun[] = await sweepFaults();
  const byOp = new Map<string, Map<string, number>>();
  for (const r of sweep) {
    const op = r.fault.replace(/ call \d+$/, '');
    const row = byOp.get(op) ?? new Map<string, number>();
    byOp.set(op, row);
    row.set(r.outcome, (row.get(r.outcome) ?? 0) + 1);
    if (!['updated', 'rolled-back', 'preserve-failed', 'file-error', 'refused-incoming'].includes(r.outcome)) fail(`${r.outcome} (fault)`, 0, `${r.fault}: ${r.detail ?? ''}`);
  }
  lines.push('', `fault injection: ${sweep.length} runs (every op x call index until the fault no longer fires), ${((performance.now() - f0) / 1000).toFixed(1)} s`);
  for (const [op, row] of byOp) lines.push(`  ${pad(op, 40)} ${[...row].map(([k, n]) => `${k} ${n}`).join(', ')}`);
}
if (chain > 0) {
  const c = chainedUpdates(chain);
  lines.push('', `chained live updates: ${c.updates} of ${chain} on one machine, ${c.problems.length} problem(s), ${(c.ms / 1000).toFixed(1)} s`);
  for (const p of c.problems.slice(0, 10)) lines.push(`  ${p}`);
  if (c.problems.length > 0) fail('chained update', 0, c.problems[0] as string);
}
if (first.size > 0) {
  lines.push('', 'first failing seed of each kind (per structure and mutation)');
  for (const [k, v] of [...first].sort((a, b) => a[1].seed - b[1].seed)) lines.push(`  ${k}: ${v.line.slice(0, 300)}`);
}
console.log(lines.join('\n'));
process.exit(first.size > 0 ? 1 : 0);
