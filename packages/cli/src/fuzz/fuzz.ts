/**
 * `liveupdate fuzz`: a bounded, deterministic fuzzer of the handover, with two engines.
 *
 *   structure (default)  kernel A runs the scenario's pre-kexec part once; right after the jump
 *                        the whole machine is snapshotted (memory copy on write, devices, clock);
 *                        each run applies one structure-aware mutation (mutate.ts: a pointer
 *                        retargeted to another handover page or another file's folio, an entry
 *                        duplicated or swapped, a count off by one or at an extreme, a cycle, or an
 *                        XOR of 1..4 bytes) to one handover page, boots kernel B, checks every
 *                        object and puts the machine back: the campaign's engine (campaign.ts).
 *   xor (--mutations xor) each run replays the whole scenario and XORs 1..4 random bytes of one
 *                        handover page after the jump (the SDK harness's 'corrupt' fault).
 *
 * Every run is classified (classify.ts): updated, file-error or refused-incoming are defined
 * outcomes; a wrong answer, an uncaught exception or an unexpected outcome is a finding and fails
 * the command (exit 1). Run i uses seed `--seed + i`; its mutation is a pure function of that seed
 * and the scenario, so `--seed S --runs 1` (with the same scenario and engine) reproduces it.
 */
import { PAGE_SIZE } from '@liveupdate/hw';
import type { FaultSpec } from '@liveupdate/sdk/testing';
import { InvalidArgumentError, type Command } from 'commander';
import { EXIT, EXIT_CODES_HELP } from '../exit.js';
import { hex, ms, plural, table } from '../output/format.js';
import { noProgress } from '../output/progress.js';
import { summarize } from '../output/summary.js';
import type { CliIo } from '../program.js';
import type { Scenario } from '@liveupdate/sdk';
import { builtinScenario, loadScenario } from '../scenario/load.js';
import { runScenario } from '../scenario/runner.js';
import { runCampaign } from './campaign.js';
import { ACCEPTED, classify, FUZZ_CLASSES, type FuzzClass, type MutatedRun } from './classify.js';
import { MUTATIONS, rng as seededRng } from './mutate.js';
import { fuzzTargets, structuresOf, type FuzzTarget } from './targets.js';
import { judgeViolations } from './violations.js';

export { classify, FUZZ_CLASSES, type FuzzClass };

/** The engines: structure-aware mutations on a forked machine (default), or XOR flips with a full replay. */
export const FUZZ_ENGINES = ['structure', 'xor'] as const;
export type FuzzEngine = (typeof FUZZ_ENGINES)[number];

type Structure = string;

export const DEFAULT_RUNS = 50;
export const DEFAULT_SEED = 1;
const MAX_RUNS = 100_000;


export interface Corruption {
  readonly structure: Structure;
  readonly role: string;
  readonly page: number;
  readonly bytes: ReadonlyArray<{ readonly offset: number; readonly xor: number }>;
}

/**
 * Run `seed`'s corruption: a structure (uniform over those present), a page of it, 1..4
 * distinct offsets (biased to the start of the page, where headers and the first entries live:
 * 40% in the first 64 bytes, 30% in the first 512, 30% anywhere), and for each a non-zero XOR
 * mask (half of them single-bit flips).
 */
export function chooseCorruption(seed: number, targets: readonly FuzzTarget[]): Corruption {
  const rng = seededRng(seed);
  const present = structuresOf(targets);
  const structure = present[rng.int(present.length)] as Structure;
  const pages = targets.filter((t) => t.structure === structure);
  const target = pages[rng.int(pages.length)] as FuzzTarget;
  const k = 1 + rng.int(4);
  const offsets = new Set<number>();
  while (offsets.size < k) {
    const r = rng.next();
    offsets.add(rng.int(r < 0.4 ? 64 : r < 0.7 ? 512 : PAGE_SIZE));
  }
  const bytes = [...offsets].map((offset) => ({ offset, xor: rng.next() < 0.5 ? 1 << rng.int(8) : 1 + rng.int(255) }));
  return { structure, role: target.role, page: target.pfn * PAGE_SIZE, bytes };
}

export interface FuzzRun extends MutatedRun {
  readonly page: string;
  /** The mutation kind (MUTATIONS; 'xor' for the xor engine). */
  readonly mutation: string;
}

export interface FuzzReport {
  readonly command: 'fuzz';
  readonly ok: boolean;
  readonly exitCode: number;
  readonly engine: FuzzEngine;
  readonly scenario: { readonly name: string; readonly from: string; readonly to: string; readonly plugins: string };
  readonly seed: number;
  readonly runs: number;
  /** Pages per structure in the handover the runs chose from. */
  readonly targets: Readonly<Record<string, number>>;
  readonly outcomes: Readonly<Record<FuzzClass, number>>;
  readonly byStructure: Readonly<Record<string, Readonly<Record<FuzzClass | 'runs', number>>>>;
  /** structure -> mutation -> outcomes (mutations that ran only). */
  readonly byMutation: Readonly<Record<string, Readonly<Record<string, Readonly<Record<FuzzClass | 'runs', number>>>>>>;
  /** 'updated' runs (data check passed) that broke another invariant where upstream would not. */
  readonly updatedWithViolations: number;
  /** 'updated' runs whose broken invariants upstream shares for their corruption. */
  readonly updatedAccepted: number;
  readonly firstFailingSeed: number | null;
  readonly reproduce: string | null;
  readonly results: readonly FuzzRun[];
}

const messageOf = (e: unknown): string => (e instanceof Error ? `${e.name}: ${e.message}` : String(e));

export interface FuzzOptions {
  /** The scenario (default: the default plugin's scenario for fuzzing). */
  readonly scenario?: Scenario;
  /** The scenario's file, for the reproduce line. */
  readonly scenarioFile?: string;
  /** The built-in scenario ('<package>:<name>' or '<name>'), for the reproduce line. */
  readonly scenarioName?: string;
  /** Default 'structure'. */
  readonly engine?: FuzzEngine;
  readonly seed: number;
  readonly runs: number;
  readonly onRun?: ((run: FuzzRun, ms: number) => void) | undefined;
}

type Counts = Record<FuzzClass | 'runs', number>;
const zero = (): Record<FuzzClass, number> => Object.fromEntries(FUZZ_CLASSES.map((k) => [k, 0])) as Record<FuzzClass, number>;

/** The xor engine: the whole scenario replayed per run, 1..4 bytes XORed after the jump. */
async function xorRuns(scenario: Scenario, opts: FuzzOptions): Promise<{ results: FuzzRun[]; targets: Record<string, number>; slowestMs: number }> {
  // The uncorrupted run: it must keep every invariant, and it shows where each structure lives.
  let targets: FuzzTarget[] = [];
  const probe = await runScenario(scenario, { progress: noProgress, onHandover: (m, view) => { targets = fuzzTargets(m.memory, view); } });
  const probeSummary = summarize(probe);
  if (!probeSummary.ok) throw new Error(`fuzz: the uncorrupted scenario ${scenario.name} does not pass (${probeSummary.outcome}: ${probe.error ?? probe.violations.join('; ')})`);
  if (targets.length === 0) throw new Error('fuzz: the uncorrupted handover has no pages to corrupt');

  const results: FuzzRun[] = [];
  let slowestMs = 0;
  for (let i = 0; i < opts.runs; i++) {
    const seed = (opts.seed + i) >>> 0;
    const c = chooseCorruption(seed, targets);
    const faults: FaultSpec[] = c.bytes.map((b) => ({ kind: 'corrupt', target: { phys: c.page }, offset: b.offset, xor: b.xor }));
    const original = targets.find((t) => t.pfn * PAGE_SIZE === c.page) as FuzzTarget;
    let layoutProblem: string | null = null;
    const t0 = performance.now();
    let outcome: FuzzClass;
    let detail: string | null;
    let violations: readonly string[] = [];
    let accepted: readonly string[] = [];
    try {
      const r = await runScenario(scenario, {
        progress: noProgress, faults,
        onHandover: (m) => {
          // The page must be the probe's page with exactly these bytes flipped: the same layout.
          const now = m.memory.read(c.page, PAGE_SIZE);
          const want = new Uint8Array(original.bytes);
          for (const b of c.bytes) want[b.offset] = (want[b.offset] as number) ^ b.xor;
          if (!Buffer.from(now).equals(Buffer.from(want))) layoutProblem = `page ${hex(c.page)} (${c.role}) is not where the uncorrupted run had it`;
        },
      });
      ({ outcome, detail } = classify(r));
      if (outcome === 'updated') ({ findings: violations, accepted } = judgeViolations(c.structure, r.violations));
    } catch (e) {
      outcome = 'uncaught';
      detail = messageOf(e);
    }
    if (layoutProblem !== null) throw new Error(`fuzz: seed ${seed}: ${String(layoutProblem)}; the handover layout is not deterministic`);
    const elapsed = performance.now() - t0;
    slowestMs = Math.max(slowestMs, elapsed);
    const what = c.bytes.map((b) => `+0x${b.offset.toString(16)}^0x${b.xor.toString(16).padStart(2, '0')}`).join(' ');
    const run: FuzzRun = { seed, structure: c.structure, role: c.role, page: hex(c.page), mutation: 'xor', what, bytes: c.bytes, outcome, detail, violations, accepted };
    results.push(run);
    opts.onRun?.(run, elapsed);
  }
  const counts: Record<string, number> = {};
  for (const s of structuresOf(targets)) counts[s] = targets.filter((t) => t.structure === s).length;
  return { results, targets: counts, slowestMs };
}

/** The structure engine: kernel A once, one mutation per run on a fork of the machine (campaign.ts). */
async function structureRuns(scenario: Scenario, opts: FuzzOptions): Promise<{ results: FuzzRun[]; targets: Record<string, number>; slowestMs: number }> {
  let slowestMs = 0;
  const results: FuzzRun[] = [];
  const res = await runCampaign({
    scenario, seed: opts.seed, runs: opts.runs,
    onRun: (r, t) => {
      slowestMs = Math.max(slowestMs, t);
      const run: FuzzRun = {
        seed: r.seed, structure: r.structure, role: r.role, page: hex(r.pfn * PAGE_SIZE), mutation: r.mutation, what: r.what, bytes: r.bytes,
        outcome: r.outcome, detail: r.detail, violations: r.violations, accepted: r.accepted,
      };
      results.push(run);
      opts.onRun?.(run, t);
    },
  });
  const targets: Record<string, number> = {};
  for (const s of res.structures) targets[s] = res.targets[s] ?? 0;
  return { results, targets, slowestMs };
}

/** The options `--seed S --runs 1` needs besides them to run the same mutation again. */
function reproduceArgs(opts: FuzzOptions, engine: FuzzEngine): string {
  const file = opts.scenarioFile ? ` ${opts.scenarioFile}` : '';
  const name = opts.scenarioName ? ` --scenario ${opts.scenarioName}` : '';
  return `${file}${name}${engine === 'xor' ? ' --mutations xor' : ''}`;
}

export async function runFuzz(opts: FuzzOptions): Promise<FuzzReport & { readonly slowestMs: number }> {
  const scenario = opts.scenario ?? (await builtinScenario('fuzz')).scenario;
  const engine = opts.engine ?? 'structure';
  const { results, targets, slowestMs } = engine === 'xor' ? await xorRuns(scenario, opts) : await structureRuns(scenario, opts);

  const outcomes = zero();
  const byStructure: Record<string, Counts> = {};
  const byMutation: Record<string, Record<string, Counts>> = {};
  for (const s of Object.keys(targets)) byStructure[s] = { runs: 0, ...zero() };
  for (const r of results) {
    outcomes[r.outcome]++;
    const row = (byStructure[r.structure] ??= { runs: 0, ...zero() });
    row.runs++;
    row[r.outcome]++;
    const cell = ((byMutation[r.structure] ??= {})[r.mutation] ??= { runs: 0, ...zero() });
    cell.runs++;
    cell[r.outcome]++;
  }
  // Mutations in MUTATIONS order within each structure, structures in the summary's order.
  const orderedByMutation: Record<string, Record<string, Counts>> = {};
  for (const s of Object.keys(byStructure)) {
    const row = byMutation[s];
    if (!row) continue;
    orderedByMutation[s] = Object.fromEntries(MUTATIONS.filter((k) => row[k]).map((k) => [k, row[k] as Counts]));
  }
  const firstFailing = results.find((r) => !ACCEPTED.has(r.outcome));
  const ok = firstFailing === undefined;
  const from = scenario.from.plugins;
  const to = scenario.to.plugins;
  return {
    command: 'fuzz', ok, exitCode: ok ? EXIT.ok : EXIT.failed, engine,
    scenario: {
      name: scenario.name, from: scenario.from.release, to: scenario.to.release,
      plugins: `${Object.entries(from).map(([n, v]) => `${n}@${v}`).join(', ')} -> ${Object.entries(to).map(([n, v]) => `${n}@${v}`).join(', ')}`,
    },
    seed: opts.seed, runs: results.length, targets, outcomes, byStructure, byMutation: orderedByMutation,
    updatedWithViolations: results.filter((r) => r.violations.length > 0).length,
    updatedAccepted: results.filter((r) => r.violations.length === 0 && r.accepted.length > 0).length,
    firstFailingSeed: firstFailing?.seed ?? null,
    reproduce: firstFailing ? `liveupdate fuzz${reproduceArgs(opts, engine)} --seed ${firstFailing.seed} --runs 1` : null,
    results, slowestMs,
  };
}

const corruptionText = (r: FuzzRun): string => `${r.structure} page ${r.page}: ${r.mutation === 'xor' ? '' : `${r.mutation} `}${r.what}`;

/** Failing runs listed in the text summary (--json has every run). */
const FAILURES_SHOWN = 10;

const ENGINE_LINE: Record<FuzzEngine, string> = {
  structure: '  engine: structure-aware mutations (retarget, duplicate, count, cycle, swap, xor) of one handover page per run,\n  applied to a fork of the machine right after the jump (kernel A ran once); the new kernel boots and every byte is checked',
  xor: '  engine: xor (--mutations xor): each run replays the scenario, XORs 1..4 bytes of one handover page after the jump,\n  boots the new kernel and checks every byte',
};

export function formatFuzz(x: FuzzReport, elapsedMs?: number, slowestMs?: number): string {
  const lines: string[] = [];
  lines.push(`liveupdate fuzz: ${plural(x.runs, 'run')} from seed ${x.seed}; scenario ${x.scenario.name}, kernel ${x.scenario.from} -> ${x.scenario.to} (${x.scenario.plugins})`);
  lines.push(ENGINE_LINE[x.engine]);
  lines.push(`  handover pages: ${Object.entries(x.targets).map(([s, n]) => `${s} ${n}`).join(', ')}`);
  lines.push('', 'outcomes');
  lines.push(table(FUZZ_CLASSES.map((k) => [k, String(x.outcomes[k]).padStart(5), ACCEPTED.has(k) ? '' : x.outcomes[k] > 0 ? '<- FAILED' : ''])));
  const cols: FuzzClass[] = FUZZ_CLASSES.filter((k) => ACCEPTED.has(k) || x.outcomes[k] > 0);
  lines.push('', 'by corrupted structure');
  lines.push(table([
    ['structure', 'runs', ...cols],
    ...Object.entries(x.byStructure).map(([s, row]) => [s, String(row.runs), ...cols.map((k) => String(row[k]))]),
  ]));
  if (x.engine === 'structure') {
    lines.push('', 'by corrupted structure and mutation');
    const rows: string[][] = [['structure', 'mutation', 'runs', ...cols]];
    for (const [s, row] of Object.entries(x.byMutation)) {
      for (const [k, c] of Object.entries(row)) rows.push([s, k, String(c.runs), ...cols.map((o) => String(c[o]))]);
    }
    lines.push(table(rows));
  }
  if (x.updatedWithViolations > 0) {
    lines.push('', `${plural(x.updatedWithViolations, 'updated run')} kept every byte but broke another invariant upstream keeps (see --json):`);
    for (const r of x.results.filter((y) => y.violations.length > 0).slice(0, FAILURES_SHOWN)) lines.push(`  seed ${r.seed}: ${corruptionText(r)}: ${r.violations[0] ?? ''}`);
  }
  if (x.updatedAccepted > 0) {
    lines.push('', `${plural(x.updatedAccepted, 'updated run')} broke an invariant as upstream does for that corruption (a page whose only reference was corrupted stays preserved; liveupdate_num taken as handed over)`);
  }
  const failing = x.results.filter((r) => !ACCEPTED.has(r.outcome));
  if (failing.length > 0) {
    lines.push('', 'failing runs');
    for (const r of failing.slice(0, FAILURES_SHOWN)) lines.push(`  seed ${r.seed}: ${r.outcome}: ${corruptionText(r)}: ${r.detail ?? ''}`);
    if (failing.length > FAILURES_SHOWN) lines.push(`  ... ${failing.length - FAILURES_SHOWN} more (--json lists them all)`);
  }
  lines.push('');
  const when = elapsedMs === undefined ? '' : ` in ${ms(elapsedMs)}${slowestMs === undefined ? '' : ` (slowest run ${ms(slowestMs)})`}`;
  lines.push(x.ok
    ? `result: ok: every run ended updated (data check passed), file-error or refused-incoming${when}`
    : `result: FAILED: ${plural(failing.length, 'run')} ended ${[...new Set(failing.map((r) => r.outcome))].join(', ')}${when}; first failing seed ${x.firstFailingSeed}, reproduce with: ${x.reproduce}`);
  return `${lines.join('\n')}\n`;
}

function intOption(name: string, min: number, max: number): (value: string) => number {
  return (value) => {
    const n = /^\d+$/.test(value.trim()) ? Number(value.trim()) : NaN;
    if (!Number.isSafeInteger(n) || n < min || n > max) throw new InvalidArgumentError(`${name} must be an integer from ${min} to ${max}`);
    return n;
  };
}

function engineOption(value: string): FuzzEngine {
  const v = value.trim();
  if (!(FUZZ_ENGINES as readonly string[]).includes(v)) throw new InvalidArgumentError(`--mutations must be one of ${FUZZ_ENGINES.join(', ')}`);
  return v as FuzzEngine;
}

export interface FuzzFlags {
  readonly seed: number;
  readonly runs: number;
  readonly mutations: FuzzEngine;
  readonly scenario?: string;
  readonly json?: boolean;
  readonly progress?: boolean;
}

export async function fuzzCommand(io: CliIo, file: string | undefined, flags: FuzzFlags): Promise<number> {
  const lines = !flags.json && flags.progress !== false;
  const loaded = file !== undefined || flags.scenario !== undefined ? await loadScenario(file, flags.scenario) : undefined;
  const t0 = performance.now();
  const report = await runFuzz({
    ...(loaded ? { scenario: loaded.scenario } : {}),
    ...(file !== undefined ? { scenarioFile: file } : {}),
    ...(flags.scenario !== undefined ? { scenarioName: flags.scenario } : {}),
    engine: flags.mutations, seed: flags.seed, runs: flags.runs,
    onRun: lines ? (r, t) => { io.stderr.write(`[fuzz] seed ${r.seed}: ${corruptionText(r)} -> ${r.outcome} (${ms(t)})\n`); } : undefined,
  });
  const { slowestMs, ...data } = report;
  io.stdout.write(flags.json ? `${JSON.stringify(data, null, 2)}\n` : formatFuzz(data, performance.now() - t0, slowestMs));
  return report.exitCode;
}

/** `program.command('fuzz')`, so it inherits the program's output and exit handling. */
export function addFuzzCommand(program: Command, io: CliIo, exit: { code: number }): void {
  program.command('fuzz')
    .description('corrupt random bytes of the handover between the jump and the new kernel\'s boot, seeded and bounded, and check every run ends in a defined outcome')
    .argument('[scenario]', 'scenario JSON file (default: the default plugin\'s small scenario); every page its plugins\' decoders own is a target')
    .option('--scenario <name>', 'a scenario a plugin ships: <name> (the default plugin\'s) or <package>:<name> (instead of a file)')
    .option('--mutations <engine>', 'structure: structure-aware mutations on a fork of the machine, kernel A once; xor: 1..4 bytes XORed, the scenario replayed per run', engineOption, 'structure' as FuzzEngine)
    .option('--seed <n>', 'seed of the first run; run i uses seed n+i (--seed S --runs 1 reproduces run S)', intOption('--seed', 0, 0xffff_ffff), DEFAULT_SEED)
    .option('--runs <n>', 'number of runs', intOption('--runs', 1, MAX_RUNS), DEFAULT_RUNS)
    .option('--json', 'print one JSON object (every run, no timings: the same seed gives the same bytes)')
    .option('--no-progress', 'no per-run lines on stderr')
    .addHelpText('after', `\nEvery run must end updated (with the data check passed), file-error or refused-incoming;\na wrong answer, an uncaught exception or an unexpected outcome fails the command (exit 1).\n\n${EXIT_CODES_HELP}\n`)
    .action(async (file: string | undefined, flags: FuzzFlags) => { exit.code = await fuzzCommand(io, file, flags); });
}
