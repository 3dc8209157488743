/**
 * The work behind `run`, `report` and `inspect`, loaded only when one of them runs (program.ts
 * imports this module on demand, so `liveupdate --help` loads no kernel, plugin or schema).
 */
import { constants } from 'node:fs';
import { access, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { UsageError } from './exit.js';
import { serializeDump, parseDump } from './handover/dump.js';
import { formatInspect, inspectDump } from './handover/inspect.js';
import { createProgress, type ProgressMode } from './output/progress.js';
import { formatSummary, summarize } from './output/summary.js';
import type { CliIo } from './program.js';
import { renderReport } from './report/html.js';
import { loadScenario } from './scenario/load.js';
import { runScenario } from './scenario/runner.js';

export interface RunFlags {
  readonly scenario?: string;
  readonly json?: boolean;
  readonly dump?: string;
  readonly report?: string;
  readonly progress?: boolean;
}

function progressMode(io: CliIo, flags: { json?: boolean; progress?: boolean }): ProgressMode {
  if (flags.json || flags.progress === false) return 'off';
  return io.stderr.isTTY ? 'bar' : 'lines';
}

/** An output file we can write, checked before the run (a bad path is a usage error, not a failure after minutes of work). */
async function checkWritable(option: string, file: string): Promise<void> {
  const dir = path.dirname(path.resolve(file));
  const st = await stat(file).catch(() => null);
  if (st?.isDirectory()) throw new UsageError(`${option} ${file}: is a directory`);
  try {
    await access(st ? file : dir, constants.W_OK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'EACCES';
    throw new UsageError(`${option} ${file}: cannot write there (${code === 'ENOENT' ? `no directory ${dir}` : code})`);
  }
}

export async function runAndSummarize(io: CliIo, file: string | undefined, flags: RunFlags & { reportTo?: string }, command: 'run' | 'report', createdBy: string): Promise<number> {
  if (flags.dump !== undefined) await checkWritable('--dump', flags.dump);
  const reportTo = flags.reportTo ?? flags.report;
  if (reportTo !== undefined) await checkWritable(command === 'report' ? '--out' : '--report', reportTo);
  const { scenario } = await loadScenario(file, flags.scenario);
  const progress = createProgress(progressMode(io, flags), io.stderr);
  const result = await runScenario(scenario, { progress, capture: flags.dump !== undefined, createdBy });
  let dumpPath: string | null = null;
  if (flags.dump !== undefined && result.dump) {
    await writeFile(flags.dump, serializeDump(result.dump));
    dumpPath = flags.dump;
  }
  const reportPath = flags.reportTo ?? flags.report;
  const summary = { ...summarize(result, { dump: dumpPath, report: reportPath ?? null }), command };
  if (reportPath !== undefined) await writeFile(reportPath, renderReport(summary, result.machine.numaNodes, result.handover));
  io.stdout.write(flags.json ? `${JSON.stringify(summary, null, 2)}\n` : formatSummary(summary));
  if (flags.dump !== undefined && !result.dump && !flags.json) io.stderr.write('liveupdate: no handover was made, so no dump was written\n');
  return summary.exitCode;
}

export async function inspectCommand(io: CliIo, file: string, flags: { json?: boolean }): Promise<number> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new UsageError(`cannot read dump ${file}: ${e instanceof Error ? e.message : String(e)}`);
  }
  const report = await inspectDump(parseDump(text, file), file);
  io.stdout.write(flags.json ? `${JSON.stringify(report, null, 2)}\n` : formatInspect(report));
  return report.exitCode;
}
