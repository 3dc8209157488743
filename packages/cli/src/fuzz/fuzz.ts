/**
 * `liveupdate fuzz`: a bounded, deterministic fuzzer of the handover. Each run does the small
 * scenario's pre-kexec part in kernel A, kexecs, XORs 1..4 random bytes of one random handover
 * page (the SDK harness's 'corrupt' fault: applied after the jump, before kernel B boots), boots
 * kernel B, runs the post-kexec part and classifies the run with the harness's outcome classes:
 *
 *   updated            B restored everything; the data check passed
 *   file-error         B runs, but a file operation failed (a sticky retrieve error, ENOENT, EIO)
 *   refused-incoming   B refused the handover (KHO revival disabled, LUO refused, /dev/liveupdate EIO)
 *
 * Anything else is a finding and fails the command (exit 1): 'wrong-answer' (updated, but a
 * byte, the size or the seals differ from what was written), 'uncaught' (an exception the
 * harness does not classify escaped) or 'unexpected' (an outcome a corruption after the jump
 * cannot cause, such as a rollback). Run i uses seed `--seed + i`; its corruption is a pure
 * function of that seed, so `--seed S --runs 1` reproduces it exactly.
 */
import { PAGE_SIZE } from '@liveupdate/hw';
import type { FaultSpec, ScenarioRunResult } from '@liveupdate/sdk/testing';
import { InvalidArgumentError, type Command } from 'commander';
import { EXIT, EXIT_CODES_HELP } from '../exit.js';
import { hex, ms, plural, table } from '../output/format.js';
import { noProgress } from '../output/progress.js';
import { summarize } from '../output/summary.js';
import type { CliIo } from '../program.js';
import type { Scenario } from '@liveupdate/sdk';
import { builtinScenario, loadScenarioFile } from '../scenario/load.js';
import { rng as seededRng } from './mutate.js';
import { runScenario } from '../scenario/runner.js';
import { fuzzTargets, structuresOf, type FuzzTarget } from './targets.js';

type Structure = string;

export const FUZZ_CLASSES = ['updated', 'file-error', 'refused-incoming', 'wrong-answer', 'uncaught', 'unexpected'] as const;
export type FuzzClass = (typeof FUZZ_CLASSES)[number];
/** The outcome classes a corrupted handover may end in. */
const ACCEPTED: ReadonlySet<FuzzClass> = new Set<FuzzClass>(['updated', 'file-error', 'refused-incoming']);

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

export interface FuzzRun {
  readonly seed: number;
  readonly structure: Structure;
  readonly role: string;
  readonly page: string;
  readonly bytes: ReadonlyArray<{ readonly offset: number; readonly xor: number }>;
  readonly outcome: FuzzClass;
  /** Why (the refusal, the errno, the data check problem, the exception); null for a clean update. */
  readonly detail: string | null;
  /** Invariants an 'updated' run broke without losing data (e.g. a tracker bit that preserved one page more). */
  readonly violations: readonly string[];
}

export interface FuzzReport {
  readonly command: 'fuzz';
  readonly ok: boolean;
  readonly exitCode: number;
  readonly scenario: { readonly name: string; readonly from: string; readonly to: string; readonly plugins: string };
  readonly seed: number;
  readonly runs: number;
  /** Pages per structure in the handover the runs chose from. */
  readonly targets: Readonly<Record<string, number>>;
  readonly outcomes: Readonly<Record<FuzzClass, number>>;
  readonly byStructure: Readonly<Record<string, Readonly<Record<FuzzClass | 'runs', number>>>>;
  /** 'updated' runs (data check passed) that broke another invariant, listed per run. */
  readonly updatedWithViolations: number;
  readonly firstFailingSeed: number | null;
  readonly reproduce: string | null;
  readonly results: readonly FuzzRun[];
}

const messageOf = (e: unknown): string => (e instanceof Error ? `${e.name}: ${e.message}` : String(e));

/**
 * The harness's outcome class, plus the checks only the scenario can make. A wrong byte in any
 * object (or a failed section check) is a wrong answer whatever else happened in the run: a
 * file error on one file does not excuse another file that came back with another's page.
 */
export function classify(r: ScenarioRunResult): { outcome: FuzzClass; detail: string | null } {
  const firstLine = (s: string | null): string | null => s?.split('\n')[0] ?? null;
  if (r.harnessOutcome === 'updated' || r.harnessOutcome === 'file-error') {
    const wrong = r.objects.find((o) => o.check !== null && !o.check.ok);
    if (wrong) return { outcome: 'wrong-answer', detail: (wrong.check?.problems ?? []).join('; ') || `session ${wrong.session} token ${wrong.token}: check failed` };
    const section = r.sectionChecks.find((c) => !c.ok);
    if (section) return { outcome: 'wrong-answer', detail: `section ${section.section}: ${section.problems.join('; ')}` };
  }
  switch (r.harnessOutcome) {
    case 'refused-incoming': return { outcome: 'refused-incoming', detail: firstLine(r.error) };
    case 'file-error': return { outcome: 'file-error', detail: firstLine(r.error) };
    case 'rolled-back': return { outcome: 'unexpected', detail: `rolled back: ${r.error ?? ''}` };
    case null: return { outcome: r.outcome === 'not-supported' ? 'unexpected' : 'uncaught', detail: firstLine(r.error) ?? 'the harness threw' };
    case 'updated': {
      // The runner keeps going past an object whose RETRIEVE_FD failed: that is the file-error class.
      const failed = r.objects.find((o) => o.error !== null);
      if (failed) return { outcome: 'file-error', detail: failed.error };
      const unchecked = r.objects.find((o) => o.check === null);
      if (unchecked) return { outcome: 'wrong-answer', detail: `session ${unchecked.session} token ${unchecked.token}: not checked` };
      return { outcome: 'updated', detail: null };
    }
  }
}

export interface FuzzOptions {
  /** The scenario (default: the default plugin's scenario for fuzzing). */
  readonly scenario?: Scenario;
  /** The scenario's file, for the reproduce line. */
  readonly scenarioFile?: string;
  readonly seed: number;
  readonly runs: number;
  readonly onRun?: ((run: FuzzRun, ms: number) => void) | undefined;
}

export async function runFuzz(opts: FuzzOptions): Promise<FuzzReport & { readonly slowestMs: number }> {
  const scenario = opts.scenario ?? (await builtinScenario('fuzz')).scenario;
  // The uncorrupted run: it must keep every invariant, and it shows where each structure lives.
  let targets: FuzzTarget[] = [];
  const probe = await runScenario(scenario, { progress: noProgress, onHandover: (m, view) => { targets = fuzzTargets(m.memory, view); } });
  const probeSummary = summarize(probe);
  if (!probeSummary.ok) throw new Error(`fuzz: the uncorrupted small scenario does not pass (${probeSummary.outcome}: ${probe.error ?? probe.violations.join('; ')})`);
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
      if (outcome === 'updated') violations = r.violations;
    } catch (e) {
      outcome = 'uncaught';
      detail = messageOf(e);
    }
    if (layoutProblem !== null) throw new Error(`fuzz: seed ${seed}: ${String(layoutProblem)}; the handover layout is not deterministic`);
    const elapsed = performance.now() - t0;
    slowestMs = Math.max(slowestMs, elapsed);
    const run: FuzzRun = { seed, structure: c.structure, role: c.role, page: hex(c.page), bytes: c.bytes, outcome, detail, violations };
    results.push(run);
    opts.onRun?.(run, elapsed);
  }

  const zero = (): Record<FuzzClass, number> => Object.fromEntries(FUZZ_CLASSES.map((k) => [k, 0])) as Record<FuzzClass, number>;
  const outcomes = zero();
  const byStructure: Record<string, Record<FuzzClass | 'runs', number>> = {};
  const targetCounts: Record<string, number> = {};
  for (const s of structuresOf(targets)) {
    const n = targets.filter((t) => t.structure === s).length;
    if (n > 0) { targetCounts[s] = n; byStructure[s] = { runs: 0, ...zero() }; }
  }
  for (const r of results) {
    outcomes[r.outcome]++;
    const row = byStructure[r.structure] as Record<FuzzClass | 'runs', number>;
    row.runs++;
    row[r.outcome]++;
  }
  const firstFailing = results.find((r) => !ACCEPTED.has(r.outcome));
  const fileArg = opts.scenarioFile ? ` ${opts.scenarioFile}` : '';
  const ok = firstFailing === undefined;
  const from = scenario.from.plugins;
  const to = scenario.to.plugins;
  return {
    command: 'fuzz', ok, exitCode: ok ? EXIT.ok : EXIT.failed,
    scenario: {
      name: scenario.name, from: scenario.from.release, to: scenario.to.release,
      plugins: `${Object.entries(from).map(([n, v]) => `${n}@${v}`).join(', ')} -> ${Object.entries(to).map(([n, v]) => `${n}@${v}`).join(', ')}`,
    },
    seed: opts.seed, runs: results.length, targets: targetCounts, outcomes, byStructure,
    updatedWithViolations: results.filter((r) => r.violations.length > 0).length,
    firstFailingSeed: firstFailing?.seed ?? null,
    reproduce: firstFailing ? `liveupdate fuzz${fileArg} --seed ${firstFailing.seed} --runs 1` : null,
    results, slowestMs,
  };
}

const corruptionText = (r: FuzzRun): string => `${r.structure} page ${r.page}: ${r.bytes.map((b) => `+0x${b.offset.toString(16)}^0x${b.xor.toString(16).padStart(2, '0')}`).join(' ')}`;

/** Failing runs listed in the text summary (--json has every run). */
const FAILURES_SHOWN = 10;

export function formatFuzz(x: FuzzReport, elapsedMs?: number, slowestMs?: number): string {
  const lines: string[] = [];
  lines.push(`liveupdate fuzz: ${plural(x.runs, 'run')} from seed ${x.seed}; scenario ${x.scenario.name}, kernel ${x.scenario.from} -> ${x.scenario.to} (${x.scenario.plugins})`);
  lines.push('  each run XORs 1..4 bytes of one handover page after the jump, boots the new kernel and checks every byte');
  lines.push(`  handover pages: ${Object.entries(x.targets).map(([s, n]) => `${s} ${n}`).join(', ')}`);
  lines.push('', 'outcomes');
  lines.push(table(FUZZ_CLASSES.map((k) => [k, String(x.outcomes[k]).padStart(5), ACCEPTED.has(k) ? '' : x.outcomes[k] > 0 ? '<- FAILED' : ''])));
  const cols: FuzzClass[] = FUZZ_CLASSES.filter((k) => ACCEPTED.has(k) || x.outcomes[k] > 0);
  lines.push('', 'by corrupted structure');
  lines.push(table([
    ['structure', 'runs', ...cols],
    ...Object.entries(x.byStructure).map(([s, row]) => [s, String(row.runs), ...cols.map((k) => String(row[k]))]),
  ]));
  if (x.updatedWithViolations > 0) {
    lines.push('', `${plural(x.updatedWithViolations, 'updated run')} kept every byte but broke another invariant (see --json):`);
    for (const r of x.results.filter((y) => y.violations.length > 0).slice(0, FAILURES_SHOWN)) lines.push(`  seed ${r.seed}: ${corruptionText(r)}: ${r.violations[0] ?? ''}`);
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

export interface FuzzFlags {
  readonly seed: number;
  readonly runs: number;
  readonly json?: boolean;
  readonly progress?: boolean;
}

export async function fuzzCommand(io: CliIo, file: string | undefined, flags: FuzzFlags): Promise<number> {
  const lines = !flags.json && flags.progress !== false;
  const scenario = file === undefined ? undefined : (await loadScenarioFile(file)).scenario;
  const t0 = performance.now();
  const report = await runFuzz({
    ...(scenario && file ? { scenario, scenarioFile: file } : {}), seed: flags.seed, runs: flags.runs,
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
    .option('--seed <n>', 'seed of the first run; run i uses seed n+i (--seed S --runs 1 reproduces run S)', intOption('--seed', 0, 0xffff_ffff), DEFAULT_SEED)
    .option('--runs <n>', 'number of runs', intOption('--runs', 1, MAX_RUNS), DEFAULT_RUNS)
    .option('--json', 'print one JSON object (every run, no timings: the same seed gives the same bytes)')
    .option('--no-progress', 'no per-run lines on stderr')
    .addHelpText('after', `\nEvery run must end updated (with the data check passed), file-error or refused-incoming;\na wrong answer, an uncaught exception or an unexpected outcome fails the command (exit 1).\n\n${EXIT_CODES_HELP}\n`)
    .action(async (file: string | undefined, flags: FuzzFlags) => { exit.code = await fuzzCommand(io, file, flags); });
}
