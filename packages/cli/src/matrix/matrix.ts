/**
 * `liveupdate matrix`: the same scenario live updated from kernel A running plugin-memfd
 * release X to kernel B running release Y, for every (X, Y) of the chosen releases, through
 * the scenario runner. Each cell is the outcome of one update: the compatible strings the
 * files were handed over in and 'ok' (every invariant kept, every byte checked), 'refused'
 * (format negotiation refused the kexec before anything froze and kernel A still runs: a
 * correct outcome), or FAILED with why.
 */
import { parseSize } from '@liveupdate/hw';
import type { Scenario } from '@liveupdate/sdk';
import type { Command } from 'commander';
import { EXIT, EXIT_CODES_HELP, UsageError } from '../exit.js';
import { count, ms, plural, table } from '../output/format.js';
import { noProgress } from '../output/progress.js';
import { summarize, type RunSummary } from '../output/summary.js';
import { MEMFD_PLUGIN, resolvePlugin } from '../plugins.js';
import type { CliIo } from '../program.js';
import { loadScenario, checkScenario } from '../scenario/load.js';
import { runScenario, type RunResult } from '../scenario/runner.js';
import { SMALL_SCENARIO } from '../scenario/small-scenario.js';

export type MatrixOutcome = 'ok' | 'refused' | 'failed';

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
}

export interface MatrixReport {
  readonly command: 'matrix';
  readonly ok: boolean;
  readonly exitCode: number;
  readonly scenario: { readonly name: string; readonly from: string; readonly to: string; readonly files: number; readonly fileBytes: number };
  readonly plugin: string;
  readonly versions: readonly string[];
  /** One row per release in kernel A; its cells are the releases in kernel B, in `versions` order. */
  readonly rows: ReadonlyArray<{ readonly from: string; readonly cells: readonly MatrixCell[] }>;
  readonly counts: Readonly<Record<MatrixOutcome, number>>;
}

/** The releases the CLI can load (from @liveupdate/compat), oldest first. */
async function availableReleases(): Promise<string[]> {
  try {
    const compat = await import('@liveupdate/compat');
    return [...compat.MEMFD_RELEASES];
  } catch (e) {
    throw new UsageError(`the release list needs @liveupdate/compat, which does not load (${e instanceof Error ? e.message : String(e)}); name the releases with --versions`);
  }
}

/** `--versions 1.0.0,2.0.0`: each one loadable (a UsageError names what is available otherwise). */
export async function parseVersions(list: string | undefined): Promise<string[]> {
  const versions = list === undefined ? await availableReleases() : [...new Set(list.split(',').map((v) => v.trim()).filter((v) => v !== ''))];
  if (versions.length === 0) throw new UsageError('--versions needs at least one release, e.g. --versions 2.0.0,3.0.0');
  for (const v of versions) await resolvePlugin(MEMFD_PLUGIN, v);
  return versions;
}

/** The scenario with plugin-memfd release `a` in kernel A and `b` in kernel B (the only plugin the CLI knows). */
export function withMemfdReleases(s: Scenario, a: string, b: string): Scenario {
  return { ...s, from: { ...s.from, plugins: { [MEMFD_PLUGIN]: a } }, to: { ...s.to, plugins: { [MEMFD_PLUGIN]: b } } };
}

/** Why a run that is not ok failed, in one line (the summary's reasons, most telling first). */
function failureReason(r: RunResult, s: RunSummary): string {
  if (r.refusal) {
    const broken = [
      r.refusal.freezes > 0 ? `${plural(r.refusal.freezes, 'file')} had been frozen` : '',
      r.refusal.fromAlive ? '' : 'kernel A is dead',
      ...s.violations,
    ].filter(Boolean);
    return `refused, but ${broken.join('; ')}: ${r.error ?? ''}`;
  }
  if (s.outcome !== 'updated') {
    const where = r.handover === null ? `kernel A (${r.scenario.from.release}), before the jump` : `kernel B (${r.scenario.to.release})`;
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
  const s = summarize(r);
  const compatible = [...new Set(r.files.map((f) => f.compatible).filter((c): c is string => c !== null))];
  const refusals = (r.refusal?.refusals ?? []).map((x) => ({ family: x.family, owner: x.owner, offered: [...x.offered], accepted: x.accepted }));
  // A refusal is a correct outcome only when it came before any freeze, kernel A still runs and nothing leaked in it.
  const refusedCleanly = r.refusal !== null && r.refusal.freezes === 0 && r.refusal.fromAlive && r.violations.length === 0;
  const outcome: MatrixOutcome = s.ok ? 'ok' : refusedCleanly ? 'refused' : 'failed';
  const dataCheck = s.dataCheck.filesChecked === 0 && s.outcome !== 'updated' ? 'not run' : s.dataCheck.passed ? 'passed' : 'failed';
  return {
    from, to, outcome, compatible, refusals,
    reason: outcome === 'ok' ? null : outcome === 'refused' ? r.error : failureReason(r, s),
    leaks: s.leaks, dataCheck, violations: s.violations,
  };
}

export interface MatrixOptions {
  /** One line per finished cell (progress on stderr). */
  readonly onCell?: ((cell: MatrixCell, ms: number) => void) | undefined;
}

export async function runMatrix(scenario: Scenario, versions: readonly string[], opts: MatrixOptions = {}): Promise<MatrixReport> {
  const rows: Array<{ from: string; cells: MatrixCell[] }> = [];
  const counts: Record<MatrixOutcome, number> = { ok: 0, refused: 0, failed: 0 };
  for (const a of versions) {
    const cells: MatrixCell[] = [];
    for (const b of versions) {
      const t0 = performance.now();
      let cell: MatrixCell;
      try {
        cell = classify(a, b, await runScenario(withMemfdReleases(scenario, a, b), { progress: noProgress }));
      } catch (e) {
        // An exception the runner does not classify is a failed cell (with its message), not the end of the table.
        cell = {
          from: a, to: b, outcome: 'failed', compatible: [], refusals: [], dataCheck: 'not run', violations: [],
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
  const files = scenario.sessions.flatMap((s) => s.files);
  const ok = counts.failed === 0;
  return {
    command: 'matrix', ok, exitCode: ok ? EXIT.ok : EXIT.failed,
    scenario: {
      name: scenario.name, from: scenario.from.release, to: scenario.to.release, files: files.length,
      fileBytes: files.reduce((n, f) => n + parseSize(f.size), 0),
    },
    plugin: MEMFD_PLUGIN, versions: [...versions], rows, counts,
  };
}

export const cellText = (c: MatrixCell): string =>
  c.outcome === 'ok' ? `${c.compatible.join(', ') || '(no files)'} ok` : c.outcome === 'refused' ? 'refused' : 'FAILED';

/** The text table: rows = release in kernel A, columns = release in kernel B; reasons as numbered notes. */
export function formatMatrix(x: MatrixReport, elapsedMs?: number): string {
  const notes: string[] = [];
  const mark = (c: MatrixCell): string => {
    if (c.outcome === 'ok') return cellText(c);
    notes.push(`[${notes.length + 1}] ${c.from} -> ${c.to}: ${c.outcome === 'refused' ? 'refused before freeze, kernel A still runs' : 'FAILED'}: ${c.reason ?? ''}`);
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
    ? `result: ok: ${plural(x.counts.ok, 'update')} kept every invariant, ${plural(x.counts.refused, 'refusal')} before freeze${when}`
    : `result: FAILED: ${x.counts.failed} of ${n} updates broke an invariant or lost data${when}`);
  return `${lines.join('\n')}\n`;
}

export interface MatrixFlags {
  readonly versions?: string;
  readonly json?: boolean;
  readonly progress?: boolean;
}

export async function matrixCommand(io: CliIo, file: string | undefined, flags: MatrixFlags): Promise<number> {
  const scenario = file === undefined ? checkScenario(SMALL_SCENARIO, 'small scenario') : await loadScenario(file);
  const versions = await parseVersions(flags.versions);
  const lines = !flags.json && flags.progress !== false;
  const t0 = performance.now();
  const report = await runMatrix(scenario, versions, {
    onCell: lines ? (c, t) => { io.stderr.write(`[matrix] ${c.from} -> ${c.to}: ${cellText(c)} (${ms(t)})\n`); } : undefined,
  });
  io.stdout.write(flags.json ? `${JSON.stringify(report, null, 2)}\n` : formatMatrix(report, performance.now() - t0));
  return report.exitCode;
}

/** `program.command('matrix')`, so it inherits the program's output and exit handling. */
export function addMatrixCommand(program: Command, io: CliIo, exit: { code: number }): void {
  program.command('matrix')
    .description('run a scenario from every plugin-memfd release to every other (kernel A release X -> kernel B release Y) and print the outcome table')
    .argument('[scenario]', 'scenario JSON file (default: a small built-in one, two memfds of a few MiB); its plugin versions are replaced per cell')
    .option('--versions <list>', 'comma-separated @liveupdate/plugin-memfd releases (default: every release @liveupdate/compat has)')
    .option('--json', 'print the matrix as one JSON object')
    .option('--no-progress', 'no per-cell lines on stderr')
    .addHelpText('after', `\nA refusal by format negotiation before freeze, with kernel A still running, is a correct outcome (exit 0).\n\n${EXIT_CODES_HELP}\n`)
    .action(async (file: string | undefined, flags: MatrixFlags) => { exit.code = await matrixCommand(io, file, flags); });
}
