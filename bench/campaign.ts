/**
 * `npm run campaign -- [--runs N] [--minutes M] [--seed S] [--workers W] [--hang-ms H] [--min-runs R]`: the
 * handover fuzz campaign over every built-in scenario of every installed plugin (devices
 * included: the whole machine is forked, see Machine.snapshot). Run i (over all workers) uses
 * seed S+i; the seed alone picks its scenario (scenarioOfSeed), then its structure and mutation,
 * so `liveupdate fuzz --scenario <package>:<name> --seed S --runs 1` reproduces it. Worker w
 * takes i = w, w+W, ...; each worker runs kernel A once per scenario, then boots kernel B once per
 * mutated copy of the handover (packages/cli/src/fuzz/campaign.ts). A worker that reports
 * nothing for --hang-ms is a hang: it is terminated, the seed it was running is recorded, and a
 * fresh worker continues after it. With --minutes, each scenario gets an equal share of the time
 * left when a worker starts it (loading the scenarios, ~10 s per worker, comes first), and at
 * least --min-runs (20) runs per worker.
 *
 * Prints, per scenario, outcomes per structure and mutation, 'updated' runs that broke an
 * invariant (viol), runs per second, and the first failing seed of each kind. Bounded: stops at
 * --runs or --minutes, whichever comes first. Not part of the test suite.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { chainedUpdates } from './campaign-chain.js';
import { FUZZ_CLASSES, MUTATIONS, pluginScenarios, sweepFaults, type FuzzClass, type SweepRun } from '@liveupdate/cli';
import type { Scenario } from '@liveupdate/sdk';

interface RunMsg { type: 'run'; scenario: string; i: number; seed: number; structure: string; mutation: string; outcome: FuzzClass; detail: string | null; what: string; violation: string | null; accepted: boolean; upstream: boolean }
interface StartMsg { type: 'start'; j: number; i: number; seed: number }
interface SetupMsg { type: 'setup'; scenario: string; ms: number; targets: Record<string, number>; structures: string[] }
interface ScenarioDoneMsg { type: 'scenario-done'; scenario: string; runs: number; fuzzMs: number }
interface ScenariosMsg { type: 'scenarios'; labels: string[] }
interface DoneMsg { type: 'done' }
interface ErrorMsg { type: 'error'; message: string }
type Msg = ScenariosMsg | RunMsg | StartMsg | SetupMsg | ScenarioDoneMsg | DoneMsg | ErrorMsg;

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
/** Runs every scenario gets per worker even past its share of the time. */
const minRuns = arg('--min-runs', 20);

/** The scenarios' labels, in the workers' order (every worker finds the same installed plugins). */
let scenarios: string[] = [];
const t0 = performance.now();
const deadline = Date.now() + minutes * 60_000;

/** wrong-up: a wrong answer after corrupting a page in an upstream layout without check value (OwnedPages.upstream; the core's KHO/LUO pages). */
type Col = FuzzClass | 'wrong-up' | 'hang' | 'viol' | 'viol-ok';
const COLS: Col[] = [...FUZZ_CLASSES.flatMap((c): Col[] => (c === 'wrong-answer' ? [c, 'wrong-up'] : [c])), 'hang', 'viol', 'viol-ok'];
const zero = (): Record<Col, number> => Object.fromEntries(COLS.map((k) => [k, 0])) as Record<Col, number>;
const ACCEPTED = new Set<FuzzClass>(['updated', 'file-error', 'refused-incoming']);
/** scenario -> structure -> mutation -> counts. */
const table = new Map<string, Map<string, Map<string, Record<Col, number>>>>();
const outcomes = zero();
const perScenario = new Map<string, { runs: number; rate: number; setupMs: number; outcomes: Record<Col, number>; structures: string[]; targets: Record<string, number> }>();
const first = new Map<string, { seed: number; line: string }>();
/** 'updated' runs that broke an invariant: the first seed per scenario, structure and mutation. */
const firstViolation = new Map<string, { seed: number; line: string }>();
const firstUpstream = new Map<string, { seed: number; line: string }>();
let done = 0;

const scenarioRow = (label: string): NonNullable<ReturnType<typeof perScenario.get>> => {
  let r = perScenario.get(label);
  if (!r) { r = { runs: 0, rate: 0, setupMs: 0, outcomes: zero(), structures: [], targets: {} }; perScenario.set(label, r); }
  return r;
};
function count(scenario: string, structure: string, mutation: string, outcome: Col, violation = false, accepted = false): void {
  const byStructure = table.get(scenario) ?? new Map<string, Map<string, Record<Col, number>>>();
  table.set(scenario, byStructure);
  const row = byStructure.get(structure) ?? new Map<string, Record<Col, number>>();
  byStructure.set(structure, row);
  const cell = row.get(mutation) ?? zero();
  row.set(mutation, cell);
  const sc = scenarioRow(scenario).outcomes;
  cell[outcome]++; outcomes[outcome]++; sc[outcome]++;
  if (violation) { cell.viol++; outcomes.viol++; sc.viol++; } else if (accepted) { cell['viol-ok']++; outcomes['viol-ok']++; sc['viol-ok']++; }
  done++;
}
function fail(kind: string, s: number, line: string, into = first): void {
  const have = into.get(kind);
  if (!have || s < have.seed) into.set(kind, { seed: s, line });
}
const reproduce = (scenario: string, s: number): string => `liveupdate fuzz --scenario ${scenario} --seed ${s} --runs 1`;

/** Worker w runs indices start, start+W, ... below `runs`, scenario after scenario (from `resume` after a hang). */
function spawn(w: number, resume: { scenario: number; after: number } | null): Promise<void> {
  return new Promise((resolve) => {
    const worker = new Worker(new URL('./campaign-worker.mjs', import.meta.url), {
      workerData: { seed, start: w, step: workers, runs, deadline, resume, minRuns },
    });
    let current: StartMsg | null = null;
    let last = performance.now();
    let settled = false;
    const finish = (): void => { if (!settled) { settled = true; clearInterval(watch); resolve(); } };
    const watch = setInterval(() => {
      // Setup (kernel A) is once per worker and scenario; a run is what the budget bounds.
      if (current === null || performance.now() - last < hangMs) return;
      const hung = current;
      const label = scenarios[hung.j] as string;
      count(label, '(hang)', '(hang)', 'hang');
      fail(`hang (${label})`, hung.seed, `seed ${hung.seed}: no answer in ${hangMs} ms; ${reproduce(label, hung.seed)}`);
      void worker.terminate();
      clearInterval(watch);
      settled = true;
      void spawn(w, { scenario: hung.j, after: hung.i }).then(resolve);
    }, 250);
    worker.on('message', (m: Msg) => {
      last = performance.now();
      if (m.type === 'start') current = m;
      else if (m.type === 'scenarios') scenarios = m.labels;
      else if (m.type === 'setup') {
        const r = scenarioRow(m.scenario);
        r.setupMs = Math.max(r.setupMs, m.ms);
        r.structures = m.structures;
        r.targets = m.targets;
      } else if (m.type === 'run') {
        current = null;
        const upstreamWrong = m.outcome === 'wrong-answer' && m.upstream;
        count(m.scenario, m.structure, m.mutation, upstreamWrong ? 'wrong-up' : m.outcome, m.violation !== null, m.accepted);
        if (upstreamWrong) fail(`${m.scenario} ${m.structure} ${m.mutation}`, m.seed, `seed ${m.seed}: ${m.what}: ${m.detail ?? ''}; ${reproduce(m.scenario, m.seed)}`, firstUpstream);
        else if (!ACCEPTED.has(m.outcome)) fail(`${m.outcome} (${m.scenario} ${m.structure} ${m.mutation})`, m.seed, `seed ${m.seed}: ${m.what}: ${m.detail ?? ''}; ${reproduce(m.scenario, m.seed)}`);
        if (m.violation !== null) fail(`${m.scenario} ${m.structure} ${m.mutation}`, m.seed, `seed ${m.seed}: ${m.what}: ${m.violation}; ${reproduce(m.scenario, m.seed)}`, firstViolation);
      } else if (m.type === 'scenario-done') {
        current = null;
        const r = scenarioRow(m.scenario);
        if (m.fuzzMs > 0) r.rate += m.runs / (m.fuzzMs / 1000);
        r.runs += m.runs;
      } else if (m.type === 'error') { console.error(`worker ${w}: ${m.message}`); finish(); }
      else finish();
    });
    worker.on('error', (e) => { console.error(`worker ${w}: ${e.message}`); finish(); });
    worker.on('exit', finish);
  });
}

const progress = setInterval(() => {
  const s = (performance.now() - t0) / 1000;
  process.stderr.write(`[campaign] ${done} runs in ${s.toFixed(0)} s; ${FUZZ_CLASSES.filter((k) => !ACCEPTED.has(k)).map((k) => `${k} ${outcomes[k]}`).join(', ')}, hang ${outcomes.hang}, updated with violations ${outcomes.viol}\n`);
}, 30_000);
await Promise.all(Array.from({ length: workers }, (_, w) => spawn(w, null)));
clearInterval(progress);

const elapsed = (performance.now() - t0) / 1000;
const pad = (s: string, n: number): string => s.padEnd(n);
const num = (c: Col): number => (c === 'viol' ? 5 : c === 'viol-ok' || c === 'wrong-up' ? 8 : c.length > 8 ? c.length : 8);
const header = (first: string, width: number): string => `${pad(first, width)} ${COLS.map((c) => c.padStart(num(c))).join(' ')}`;
const cells = (x: Record<Col, number>): string => COLS.map((c) => String(x[c]).padStart(num(c))).join(' ');
const lines: string[] = [];
lines.push(`fuzz campaign: ${done} mutated handovers from seed ${seed} over ${scenarios.length} scenarios, ${workers} worker thread(s), ${elapsed.toFixed(1)} s`);
lines.push('  wrong-answer: a wrong byte (or a failed section check) after corrupting a page of a plugin\'s own format: a finding');
lines.push('  wrong-up: the same after corrupting a page whose layout is upstream\'s (KHO, LUO, posted series, hardware tables) and has no check value there either');
lines.push('  viol: runs that ended updated (every byte right) but broke an invariant the harness checks, where upstream would not (a finding)');
lines.push('  viol-ok: updated runs whose broken invariants upstream shares for that corruption (packages/cli/src/fuzz/violations.ts)');
for (const label of scenarios) {
  const sc = perScenario.get(label);
  const byStructure = table.get(label);
  if (!sc || !byStructure) continue;
  lines.push('', `scenario ${label}: ${sc.runs} runs, ${sc.rate.toFixed(1)} runs/s (${workers} threads, after setup); kernel A + decode ${sc.setupMs.toFixed(0)} ms`);
  lines.push(`  handover pages: ${Object.entries(sc.targets).map(([s, n]) => `${s} ${n}`).join(', ')}`);
  lines.push(header('  structure / mutation', 40));
  const order = sc.structures.concat([...byStructure.keys()].filter((s) => !sc.structures.includes(s)));
  for (const s of order) {
    const row = byStructure.get(s);
    if (!row) continue;
    for (const k of [...MUTATIONS, '(hang)']) {
      const cell = row.get(k);
      if (cell) lines.push(`  ${pad(`${s} / ${k}`, 38)} ${cells(cell)}`);
    }
  }
}
const labelWidth = Math.max(8, ...scenarios.map((l) => l.length));
lines.push('', 'per scenario');
lines.push(`${header('scenario', labelWidth)} ${'runs/s'.padStart(8)}`);
for (const label of scenarios) {
  const sc = perScenario.get(label);
  if (sc) lines.push(`${pad(label, labelWidth)} ${cells(sc.outcomes)} ${sc.rate.toFixed(1).padStart(8)}`);
}
const rate = [...perScenario.values()].reduce((a, s) => a + s.runs, 0) / Math.max(1e-9, [...perScenario.values()].reduce((a, s) => a + (s.rate > 0 ? s.runs / s.rate : 0), 0));
lines.push(`${pad('total', labelWidth)} ${cells(outcomes)} ${rate.toFixed(1).padStart(8)}`);
// Seeds spread evenly over the scenarios: 10^6 runs cost 10^6/n runs of each, at each one's own rate.
const measured = [...perScenario.values()].filter((s) => s.rate > 0);
const perMillionS = measured.reduce((a, s) => a + 1e6 / Math.max(1, scenarios.length) / s.rate, 0);
const slowest = [...perScenario].filter(([, s]) => s.rate > 0).sort((a, b) => a[1].rate - b[1].rate)[0];
lines.push('', `runs/s over this run's mix: ${rate.toFixed(1)} (${workers} threads, after setup, each scenario an equal share of the time)`);
lines.push(`10^6 runs spread evenly over the ${scenarios.length} scenarios by seed would take ${(perMillionS / 60).toFixed(1)} min at these rates (slowest: ${slowest ? `${slowest[0]} ${slowest[1].rate.toFixed(1)} runs/s` : 'none'})`);
lines.push(`wrong answers ${outcomes['wrong-answer']} in this project's formats, ${outcomes['wrong-up']} after corrupting upstream layouts without check value; uncaught ${outcomes.uncaught}, unexpected ${outcomes.unexpected}, hangs ${outcomes.hang}, updated with violations ${outcomes.viol} (upstream-defined: ${outcomes['viol-ok']})`);

if (faults) {
  // Fault injection at every file-handler and FLB op x call index of every plugin (full replays).
  const f0 = performance.now();
  // One scenario per plugin package (its first built-in one): every plugin's handler and FLB ops.
  const byPackage = new Map<string, { label: string; scenario: Scenario }>();
  for (const x of await pluginScenarios()) {
    const pkg = x.label.slice(0, x.label.lastIndexOf(':'));
    if (!byPackage.has(pkg)) byPackage.set(pkg, x);
  }
  const sweep: SweepRun[] = [];
  for (const { label, scenario } of byPackage.values()) {
    for (const r of await sweepFaults({ scenario })) sweep.push({ ...r, fault: `${label}: ${r.fault}` });
  }
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
if (firstUpstream.size > 0) {
  lines.push('', 'first wrong answer after corrupting an upstream layout (per scenario, structure and mutation)');
  for (const [k, v] of [...firstUpstream].sort((a, b) => a[1].seed - b[1].seed)) lines.push(`  ${k}: ${v.line.slice(0, 300)}`);
}
if (firstViolation.size > 0) {
  lines.push('', 'first updated run with a violation (per scenario, structure and mutation)');
  for (const [k, v] of [...firstViolation].sort((a, b) => a[1].seed - b[1].seed)) lines.push(`  ${k}: ${v.line.slice(0, 300)}`);
}
if (first.size > 0) {
  lines.push('', 'first failing seed of each kind (per structure and mutation)');
  for (const [k, v] of [...first].sort((a, b) => a[1].seed - b[1].seed)) lines.push(`  ${k}: ${v.line.slice(0, 300)}`);
}
console.log(lines.join('\n'));
process.exit(first.size > 0 ? 1 : 0);
