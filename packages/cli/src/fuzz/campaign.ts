/**
 * The fuzz campaign's engine: kernel A runs the scenario's pre-kexec part once; right after the
 * jump the handover is decoded (core structures by the CLI's decoder, plugin pages by the
 * plugins' decoders only), memory is snapshotted (copy on write), and each run applies one
 * mutation to a copy of one page, boots kernel B from those bytes, restores and checks every
 * object, then puts memory back. A run costs kernel B's boot and checks, not kernel A's work.
 *
 * Every page of the handover is a target: the kexec-metadata blob, the scratch array, the root
 * FDT, tracker nodes, the LUO blob, session and file blocks, the FLB page, subtrees, and each
 * page a plugin's decoder owns (headers, xarray nodes, vmalloc chunks, folio arrays, FLB data).
 *
 * Scenarios with devices fork too: the whole machine is snapshotted (Machine.snapshot: memory
 * copy on write, plus the clock, PCI config spaces, DMA engines and their logs, VT-d registers,
 * the hypervisor), so kernel B meets the same running devices on every run.
 */
import { PAGE_SIZE, type Machine, type MachineSnapshot } from '@liveupdate/hw';
import type { Scenario } from '@liveupdate/sdk';
import { runScenario as runGeneric, type ScenarioRunResult } from '@liveupdate/sdk/testing';
import { decodeHandover, type HandoverView } from '../handover/decode.js';
import { resolvePlugins } from '../plugins.js';
import { builtinScenario } from '../scenario/load.js';
import { classify, FUZZ_CLASSES, type FuzzClass, type MutatedRun } from './classify.js';
import { chooseMutation, inferWords, mutatedPage, MUTATIONS, rng, type Mutation, type MutationKind, type MutationTarget, type Word } from './mutate.js';
import { CORE_STRUCTURES } from './targets.js';
import { judgeViolations } from './violations.js';

/** Every page of the handover, with the words its decoder names (or the ones inferred from its bytes). */
export function mutationTargets(memory: Machine['memory'], view: HandoverView): MutationTarget[] {
  const words = new Map<number, readonly Word[]>();
  const owned = new Map<number, boolean>();
  for (const o of view.owned) {
    if (o.words && o.words.length > 0) words.set(o.pfn, o.words);
    for (let i = 0; i < (o.count ?? 1); i++) owned.set(o.pfn + i, o.upstream === true);
  }
  const out: MutationTarget[] = [];
  for (const [pfn, role] of [...view.pages].sort((a, b) => a[0] - b[0])) {
    const bytes = memory.read(pfn * PAGE_SIZE, PAGE_SIZE);
    // The core's own pages (KHO, LUO: kho-v4 and luo-v5 carry no check value) are upstream's.
    const upstream = owned.get(pfn) ?? true;
    out.push({ structure: view.structures.get(pfn) ?? role, role, pfn, bytes, words: words.get(pfn) ?? inferWords(bytes, memory.size), upstream });
  }
  return out;
}

/** Structures present, the core's first (in the order the summary lists them), then plugins', sorted. */
export function structureList(targets: readonly MutationTarget[]): string[] {
  const present = new Set(targets.map((t) => t.structure));
  const core = [...CORE_STRUCTURES, 'scratch array', 'kexec-metadata', 'subtree'].filter((s) => present.has(s));
  return [...core, ...[...present].filter((s) => !core.includes(s)).sort()];
}

export interface CampaignRun extends MutatedRun {
  readonly mutation: MutationKind;
  readonly pfn: number;
  /** The corrupted page is in an upstream layout without integrity check (MutationTarget.upstream). */
  readonly upstream: boolean;
}

export interface CampaignOptions {
  readonly scenario?: Scenario;
  /** The scenario's name in reports ('<package>:<name>'); default: the scenario's own name. */
  readonly label?: string;
  readonly seed: number;
  readonly runs: number;
  /** Stop starting runs after this wall time (ms, from the call, setup included)... */
  readonly deadlineMs?: number;
  /** ...but not before this many runs (every scenario of a campaign gets some). Default 0. */
  readonly minRuns?: number;
  /** Seeds to run instead of seed..seed+runs-1 (a shard of a campaign). */
  readonly seeds?: (i: number) => number;
  /** Called before each run (a watchdog in another thread learns which seed is running). */
  readonly onStart?: (seed: number) => void;
  readonly onRun?: (run: CampaignRun, ms: number) => void;
  /** Keep every run in the result (`liveupdate fuzz` lists them; the campaign counts only). */
  readonly keepRuns?: boolean;
  /** Once, after kernel A's part and the handover's decode: pages per structure. */
  readonly onSetup?: (targets: Readonly<Record<string, number>>, structures: readonly string[], ms: number) => void;
  /** Only this mutation kind (for tests). */
  readonly only?: MutationKind;
}

export interface CampaignResult {
  readonly scenario: string;
  readonly runs: number;
  readonly structures: readonly string[];
  readonly targets: Readonly<Record<string, number>>;
  /** structure -> mutation -> outcome -> count. */
  readonly table: Record<string, Record<string, Record<FuzzClass, number>>>;
  readonly outcomes: Record<FuzzClass, number>;
  /** The first seed of each failing class, with its run. */
  readonly firstFailing: Partial<Record<FuzzClass, CampaignRun>>;
  /** 'updated' runs that broke an invariant upstream keeps (findings), and the first of them. */
  readonly updatedWithViolations: number;
  readonly firstViolation: CampaignRun | null;
  /** 'updated' runs whose only broken invariants are upstream-defined for their corruption. */
  readonly updatedAccepted: number;
  /** Every run, in order, when `keepRuns` was asked for. */
  readonly results: readonly CampaignRun[];
  readonly ms: number;
  /** Time kernel A and the handover decode took (once). */
  readonly setupMs: number;
}

const ACCEPTED: ReadonlySet<FuzzClass> = new Set<FuzzClass>(['updated', 'file-error', 'refused-incoming']);
export const zeroOutcomes = (): Record<FuzzClass, number> => Object.fromEntries(FUZZ_CLASSES.map((k) => [k, 0])) as Record<FuzzClass, number>;
const messageOf = (e: unknown): string => (e instanceof Error ? `${e.name}: ${e.message}` : String(e));

/**
 * Data pages when no decoder listed any (a format whose decoder is not loaded): the pages the
 * KHO tracker preserves that are not handover metadata, as [startPfn, endPfn) runs.
 */
export function preservedDataRuns(view: HandoverView): Array<readonly [number, number]> {
  const out: Array<readonly [number, number]> = [];
  for (const o of view.tracker?.orders ?? []) {
    for (const [s, e] of o.runs) {
      let start = -1;
      for (let p = s; p <= e; p++) {
        const data = p < e && !view.pages.has(p);
        if (data && start < 0) start = p;
        if (!data && start >= 0) { out.push([start, p]); start = -1; }
      }
    }
  }
  return out;
}

function countOf(targets: readonly MutationTarget[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const t of targets) counts[t.structure] = (counts[t.structure] ?? 0) + 1;
  return counts;
}

/**
 * Which of `n` scenarios seed `seed` fuzzes: a pure function of the seed (mixed, so neighbouring
 * seeds and any worker stride spread over every scenario).
 */
export function scenarioOfSeed(seed: number, n: number): number {
  return n <= 1 ? 0 : rng((seed ^ 0x2545f491) >>> 0).int(n);
}

/** One run's mutation applied, kernel B booted, classified; the machine is put back afterwards. */
function forkRun(machine: Machine, snap: MachineSnapshot, bootB: () => ScenarioRunResult, m: Mutation, t: MutationTarget): { outcome: FuzzClass; detail: string | null; violations: readonly string[]; accepted: readonly string[] } {
  machine.memory.write(m.pfn * PAGE_SIZE, mutatedPage(t, m));
  let outcome: FuzzClass;
  let detail: string | null;
  let violations: readonly string[] = [];
  let accepted: readonly string[] = [];
  try {
    const r: ScenarioRunResult = bootB();
    ({ outcome, detail } = classify(r));
    if (outcome === 'updated') ({ findings: violations, accepted } = judgeViolations(m.structure, r.violations));
  } catch (e) {
    outcome = 'uncaught';
    detail = messageOf(e);
  } finally {
    machine.restore(snap);
  }
  return { outcome, detail, violations, accepted };
}

/** Run a campaign shard over one scenario in this thread. */
export async function runCampaign(opts: CampaignOptions): Promise<CampaignResult> {
  const t0 = performance.now();
  const scenario = opts.scenario ?? (await builtinScenario('fuzz')).scenario;
  const from = (await resolvePlugins(scenario.from.plugins)).map((b) => b.create());
  const to = (await resolvePlugins(scenario.to.plugins)).map((b) => b.create());
  const table: CampaignResult['table'] = {};
  const outcomes = zeroOutcomes();
  const firstFailing: Partial<Record<FuzzClass, CampaignRun>> = {};
  const results: CampaignRun[] = [];
  let updatedWithViolations = 0;
  let firstViolation: CampaignRun | null = null;
  let updatedAccepted = 0;
  let structures: string[] = [];
  let targets: MutationTarget[] = [];
  let setupMs = 0;
  let done = 0;
  let forked = false;
  runGeneric(scenario, {
    from, to,
    fork: (machine, bootB) => {
      forked = true;
      const view = decodeHandover(machine.memory, machine.bootParams.khoData, from);
      targets = mutationTargets(machine.memory, view);
      structures = structureList(targets);
      const dataRuns = view.dataRuns.length > 0 ? view.dataRuns : preservedDataRuns(view);
      const ctx = { targets, dataRuns, pageCount: machine.memory.pageCount };
      const byPfn = new Map(targets.map((t) => [t.pfn, t]));
      const snap = machine.snapshot();
      // The uncorrupted handover first: it must update cleanly, or no run can be judged.
      const clean = bootB();
      machine.restore(snap);
      const c = classify(clean);
      if (c.outcome !== 'updated' || clean.violations.length > 0) {
        throw new Error(`fuzz: the uncorrupted scenario ${opts.label ?? scenario.name} does not pass (${c.outcome}: ${c.detail ?? clean.violations.join('; ')})`);
      }
      setupMs = performance.now() - t0;
      opts.onSetup?.(countOf(targets), structures, setupMs);
      for (let i = 0; i < opts.runs; i++) {
        if (opts.deadlineMs !== undefined && i >= (opts.minRuns ?? 0) && performance.now() - t0 > opts.deadlineMs) break;
        const seed = (opts.seeds ? opts.seeds(i) : opts.seed + i) >>> 0;
        opts.onStart?.(seed);
        const m = chooseMutation(seed, ctx, structures, opts.only);
        const r0 = performance.now();
        const t = byPfn.get(m.pfn) as MutationTarget;
        const { outcome, detail, violations, accepted } = forkRun(machine, snap, bootB, m, t);
        const bytes = m.writes.map((w) => ({ offset: w.offset, xor: (t.bytes[w.offset] as number) ^ w.value }));
        const run: CampaignRun = { seed, structure: m.structure, role: t.role, mutation: m.kind, pfn: m.pfn, what: m.what, bytes, outcome, detail, violations, accepted, upstream: t.upstream === true };
        const row = (table[m.structure] ??= {});
        (row[m.kind] ??= zeroOutcomes())[outcome]++;
        outcomes[outcome]++;
        if (!ACCEPTED.has(outcome) && firstFailing[outcome] === undefined) firstFailing[outcome] = run;
        if (violations.length > 0) {
          updatedWithViolations++;
          firstViolation ??= run;
        } else if (accepted.length > 0) updatedAccepted++;
        if (opts.keepRuns) results.push(run);
        done++;
        opts.onRun?.(run, performance.now() - r0);
      }
    },
  });
  if (!forked) throw new Error(`fuzz campaign: scenario ${scenario.name} did not reach the jump`);
  return {
    scenario: opts.label ?? scenario.name, runs: done, structures, targets: countOf(targets), table, outcomes, firstFailing,
    updatedWithViolations, firstViolation, updatedAccepted, results, ms: performance.now() - t0, setupMs,
  };
}

/** Add one shard's result into another (the campaign's threads each run a shard). */
export function mergeCampaign(a: CampaignResult | null, b: CampaignResult): CampaignResult {
  if (!a) return b;
  const table: CampaignResult['table'] = structuredClone(a.table);
  for (const [s, row] of Object.entries(b.table)) {
    for (const [k, o] of Object.entries(row)) {
      const dst = ((table[s] ??= {})[k] ??= zeroOutcomes());
      for (const c of FUZZ_CLASSES) dst[c] += o[c];
    }
  }
  const outcomes = zeroOutcomes();
  for (const c of FUZZ_CLASSES) outcomes[c] = a.outcomes[c] + b.outcomes[c];
  const firstFailing = { ...a.firstFailing };
  for (const [c, run] of Object.entries(b.firstFailing) as Array<[FuzzClass, CampaignRun]>) {
    const have = firstFailing[c];
    if (!have || run.seed < have.seed) firstFailing[c] = run;
  }
  const firstViolation = a.firstViolation && b.firstViolation ? (a.firstViolation.seed <= b.firstViolation.seed ? a.firstViolation : b.firstViolation) : a.firstViolation ?? b.firstViolation;
  return {
    ...a, runs: a.runs + b.runs, table, outcomes, firstFailing, updatedWithViolations: a.updatedWithViolations + b.updatedWithViolations, firstViolation,
    updatedAccepted: a.updatedAccepted + b.updatedAccepted,
    results: [...a.results, ...b.results], ms: Math.max(a.ms, b.ms), setupMs: Math.max(a.setupMs, b.setupMs),
  };
}

export { MUTATIONS };
