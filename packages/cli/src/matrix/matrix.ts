/**
 * `liveupdate matrix`: the same scenario live updated from kernel A running release X of a
 * plugin to kernel B running release Y, for every (X, Y) of the chosen releases, through the
 * scenario runner. Any plugin: `--plugin @example/kv --versions 1.0.0,1.1.0` qualifies a
 * user's own releases installed side by side (npm aliases, tarballs). Each cell is the outcome
 * of one update: the compatible strings the objects were handed over in and 'ok' (every
 * invariant kept, every byte checked), 'refused' (format negotiation refused the kexec before
 * anything froze and kernel A still runs: a correct outcome), 'not supported by A/B' (that
 * release cannot handle the scenario's objects at all, e.g. an old release without hugeTLB:
 * nothing ran), or FAILED with why.
 */
import { sessionObjects, type Scenario } from '@liveupdate/sdk';
import { EXIT, UsageError } from '../exit.js';
import { count, ms, plural, table } from '../output/format.js';
import { noProgress } from '../output/progress.js';
import { verdictOf, type RunSummary, type RunVerdict } from '../output/summary.js';
import { DEFAULT_PLUGIN, installedVersions, resolvePlugin } from '../plugins.js';
import type { CliIo } from '../program.js';
import { builtinScenario, loadScenarioFile } from '../scenario/load.js';
import { runScenario, type RunResult } from '../scenario/runner.js';

export type MatrixOutcome = 'ok' | 'refused' | 'not-supported' | 'failed';

export interface MatrixCell {
  readonly from: string;
  readonly to: string;
  readonly outcome: MatrixOutcome;
  /** The compatible strings the files were handed over in, in scenario order, each once. */
  readonly compatible: readonly string[];
  /** Why the update was refused or failed; null when ok. */
  readonly reason: string | null;
  /** Negotiation refusals (outcome 'refused', or a refusal that did not keep its promises). */
  readonly refusals: ReadonlyArray<{ family: string; owner: string; offered: readonly string[]; accepted: string | null }>;
  readonly leaks: RunSummary['leaks'];
  readonly dataCheck: 'passed' | 'failed' | 'not run';
  readonly violations: readonly string[];
  /** For 'not-supported': which kernel's release cannot handle the objects. */
  readonly unsupportedBy: 'A' | 'B' | null;
}

export interface MatrixReport {
  readonly command: 'matrix';
  readonly ok: boolean;
  readonly exitCode: number;
  readonly scenario: { readonly name: string; readonly source: string; readonly from: string; readonly to: string; readonly objects: number };
  readonly plugin: string;
  readonly versions: readonly string[];
  /** One row per release in kernel A; its cells are the releases in kernel B, in `versions` order. */
  readonly rows: ReadonlyArray<{ readonly from: string; readonly cells: readonly MatrixCell[] }>;
  readonly counts: Readonly<Record<MatrixOutcome, number>>;
}

/** `--versions 1.0.0,2.0.0` (default: every installed version of the plugin): each one installed, or a UsageError. */
export async function parseVersions(plugin: string, list: string | undefined): Promise<string[]> {
  const versions = list === undefined ? installedVersions(plugin) : [...new Set(list.split(',').map((v) => v.trim()).filter((v) => v !== ''))];
  if (versions.length === 0) throw new UsageError(list === undefined ? `plugin ${plugin} is not installed` : '--versions needs at least one release, e.g. --versions 2.0.0,3.0.0');
  for (const v of versions) await resolvePlugin(plugin, v);
  return versions;
}

/** The scenario with release `a` of `plugin` in kernel A and `b` in kernel B (its other plugins unchanged). */
export function withReleases(s: Scenario, plugin: string, a: string, b: string): Scenario {
  return { ...s, from: { ...s.from, plugins: { ...s.from.plugins, [plugin]: a } }, to: { ...s.to, plugins: { ...s.to.plugins, [plugin]: b } } };
}

/** Why a run that is not ok failed, in one line (the summary's reasons, most telling first). */
function failureReason(r: RunResult, s: RunVerdict): string {
  if (r.refusal) {
    const broken = [
      r.refusal.freezes > 0 ? `${plural(r.refusal.freezes, 'file')} had been frozen` : '',
      r.refusal.fromAlive ? '' : 'kernel A is dead',
      ...s.violations,
    ].filter(Boolean);
    return `refused, but ${broken.join('; ')}: ${r.error ?? ''}`;
  }
  if (s.outcome !== 'updated') {
    const where = !r.jumped ? `kernel A (${r.scenario.from.release}), before the jump` : `kernel B (${r.scenario.to.release})`;
    return `${s.outcome} in ${where}${s.error ? `: ${s.error}` : ''}`;
  }
  const why: string[] = [];
  if (s.leaks.blocks > 0) why.push(`${plural(s.leaks.blocks, 'preserved block')} (${count(s.leaks.pages)} pages) leaked`);
  if (s.leaks.poisonReads > 0) why.push(`${plural(s.leaks.poisonReads, 'read')} of poisoned memory`);
  if (!s.dataCheck.passed) why.push(`data check failed${s.dataCheck.problems[0] ? ` (${s.dataCheck.problems[0]})` : ''}`);
  if (s.restored.finishedSessions < s.restored.sessions) why.push('a session was not finished');
  why.push(...s.violations);
  return why.join('; ') || 'not ok';
}

export function classify(from: string, to: string, r: RunResult): MatrixCell {
  // The verdict only: a cell shows no summary text, so none is formatted.
  const s = verdictOf(r);
  const compatible = [...new Set(r.objects.map((f) => f.compatible).filter((c): c is string => c !== null))];
  if (r.outcome === 'not-supported') {
    return {
      from, to, outcome: 'not-supported', compatible: [], refusals: [], reason: r.error, leaks: s.leaks, dataCheck: 'not run', violations: [],
      unsupportedBy: r.unsupported?.side ?? null,
    };
  }
  const refusals = (r.refusal?.refusals ?? []).map((x) => ({ family: x.family, owner: x.owner, offered: [...x.offered], accepted: x.accepted }));
  // A refusal is a correct outcome only when it came before any freeze, kernel A still runs and nothing leaked in it.
  const refusedCleanly = r.refusal !== null && r.refusal.freezes === 0 && r.refusal.fromAlive && r.violations.length === 0;
  const outcome: MatrixOutcome = s.ok ? 'ok' : refusedCleanly ? 'refused' : 'failed';
  const dataCheck = s.dataCheck.objectsChecked === 0 && s.outcome !== 'updated' ? 'not run' : s.dataCheck.passed ? 'passed' : 'failed';
  return {
    from, to, outcome, compatible, refusals, unsupportedBy: null,
    reason: outcome === 'ok' ? null : outcome === 'refused' ? r.error : failureReason(r, s),
    leaks: s.leaks, dataCheck, violations: s.violations,
  };
}

export interface MatrixOptions {
  /** One line per finished cell (progress on stderr). */
  readonly onCell?: ((cell: MatrixCell, ms: number) => void) | undefined;
}

export async function runMatrix(scenario: Scenario, plugin: string, versions: readonly string[], opts: MatrixOptions & { source?: string } = {}): Promise<MatrixReport> {
  const rows: Array<{ from: string; cells: MatrixCell[] }> = [];
  const counts: Record<MatrixOutcome, number> = { ok: 0, refused: 0, 'not-supported': 0, failed: 0 };
  for (const a of versions) {
    const cells: MatrixCell[] = [];
    for (const b of versions) {
      const t0 = performance.now();
      let cell: MatrixCell;
      try {
        // A cell is its outcome: the handover view (for run, report and inspect) is not decoded.
        cell = classify(a, b, await runScenario(withReleases(scenario, plugin, a, b), { progress: noProgress, decode: false }));
      } catch (e) {
        // An exception the runner does not classify is a failed cell (with its message), not the end of the table.
        cell = {
          from: a, to: b, outcome: 'failed', compatible: [], refusals: [], dataCheck: 'not run', violations: [], unsupportedBy: null,
          reason: `uncaught ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`,
          leaks: { blocks: 0, pages: 0, poisonReads: 0 },
        };
      }
      counts[cell.outcome]++;
      cells.push(cell);
      opts.onCell?.(cell, performance.now() - t0);
    }
    rows.push({ from: a, cells });
  }
  const objects = scenario.sessions.flatMap((s, i) => sessionObjects(s, i));
  const ok = counts.failed === 0;
  return {
    command: 'matrix', ok, exitCode: ok ? EXIT.ok : EXIT.failed,
    scenario: { name: scenario.name, source: opts.source ?? scenario.name, from: scenario.from.release, to: scenario.to.release, objects: objects.length },
    plugin, versions: [...versions], rows, counts,
  };
}

export const cellText = (c: MatrixCell): string =>
  c.outcome === 'ok' ? `${c.compatible.join(', ') || '(no files)'} ok`
    : c.outcome === 'refused' ? 'refused'
      : c.outcome === 'not-supported' ? `not supported by ${c.unsupportedBy ?? '?'}` : 'FAILED';

/** The text table: rows = release in kernel A, columns = release in kernel B; reasons as numbered notes. */
export function formatMatrix(x: MatrixReport, elapsedMs?: number): string {
  const notes: string[] = [];
  const mark = (c: MatrixCell): string => {
    if (c.outcome === 'ok') return cellText(c);
    const what = c.outcome === 'refused' ? 'refused before freeze, kernel A still runs' : c.outcome === 'not-supported' ? 'nothing ran' : 'FAILED';
    notes.push(`[${notes.length + 1}] ${c.from} -> ${c.to}: ${what}: ${c.reason ?? ''}`);
    return `${cellText(c)} [${notes.length}]`;
  };
  const lines: string[] = [];
  const sc = x.scenario;
  lines.push(`liveupdate matrix: ${sc.name}, kernel ${sc.from} -> ${sc.to}, ${x.plugin} releases ${x.versions.join(', ')}`);
  lines.push(`  rows: release in kernel A (from); columns: release in kernel B (to); a cell: the compatible string(s) handed over`);
  lines.push('');
  lines.push(table([['from \\ to', ...x.versions], ...x.rows.map((r) => [r.from, ...r.cells.map(mark)])]));
  if (notes.length > 0) lines.push('', ...notes);
  lines.push('');
  const n = x.versions.length ** 2;
  const when = elapsedMs === undefined ? '' : ` in ${ms(elapsedMs)}`;
  lines.push(x.ok
    ? `result: ok: ${plural(x.counts.ok, 'update')} kept every invariant, ${plural(x.counts.refused, 'refusal')} before freeze, ${plural(x.counts['not-supported'], 'cell')} not supported${when}`
    : `result: FAILED: ${x.counts.failed} of ${n} updates broke an invariant or lost data${when}`);
  return `${lines.join('\n')}\n`;
}

export interface MatrixFlags {
  readonly plugin?: string;
  readonly versions?: string;
  readonly json?: boolean;
  readonly progress?: boolean;
}

export async function matrixCommand(io: CliIo, file: string | undefined, flags: MatrixFlags): Promise<number> {
  let loaded: { scenario: Scenario; source: string };
  let plugin: string;
  if (file !== undefined) {
    loaded = await loadScenarioFile(file);
    plugin = flags.plugin ?? Object.keys(loaded.scenario.from.plugins)[0] ?? DEFAULT_PLUGIN;
  } else {
    plugin = flags.plugin ?? DEFAULT_PLUGIN;
    const newest = installedVersions(plugin).at(-1);
    if (newest === undefined) throw new UsageError(`plugin ${plugin} is not installed`);
    loaded = await builtinScenario('matrix', undefined, await resolvePlugin(plugin, newest));
  }
  const named = [...Object.keys(loaded.scenario.from.plugins), ...Object.keys(loaded.scenario.to.plugins)];
  if (!named.includes(plugin)) throw new UsageError(`--plugin ${plugin}: scenario ${loaded.source} does not use it (it uses ${[...new Set(named)].join(', ') || 'no plugin'})`);
  const versions = await parseVersions(plugin, flags.versions);
  const lines = !flags.json && flags.progress !== false;
  const t0 = performance.now();
  const report = await runMatrix(loaded.scenario, plugin, versions, {
    source: loaded.source,
    onCell: lines ? (c, t) => { io.stderr.write(`[matrix] ${c.from} -> ${c.to}: ${cellText(c)} (${ms(t)})\n`); } : undefined,
  });
  io.stdout.write(flags.json ? `${JSON.stringify(report, null, 2)}\n` : formatMatrix(report, performance.now() - t0));
  return report.exitCode;
}
