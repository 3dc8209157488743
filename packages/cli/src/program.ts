/**
 * The `liveupdate` command line: parse arguments (commander), run one command, map every
 * outcome to a documented exit code. The work itself lives in the scenario runner (over the
 * SDK harness), the handover decoder and the report renderer.
 */
import { constants } from 'node:fs';
import { access, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { createRequire } from 'node:module';
import { Command, CommanderError, Option } from 'commander';
import { EXIT, EXIT_CODES_HELP, UsageError } from './exit.js';
import { serializeDump, parseDump } from './handover/dump.js';
import { formatInspect, inspectDump } from './handover/inspect.js';
import { addFuzzCommand } from './fuzz/fuzz.js';
import { addMatrixCommand } from './matrix/matrix.js';
import { createProgress, type ProgressMode } from './output/progress.js';
import { formatSummary, summarize } from './output/summary.js';
import { renderReport } from './report/html.js';
import { loadScenario } from './scenario/load.js';
import { runScenario } from './scenario/runner.js';

const VERSION = (createRequire(import.meta.url)('../package.json') as { version: string }).version;

export interface CliIo {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream & { isTTY?: boolean };
}

interface RunFlags {
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

async function runAndSummarize(io: CliIo, file: string | undefined, flags: RunFlags & { reportTo?: string }, command: 'run' | 'report'): Promise<number> {
  if (flags.dump !== undefined) await checkWritable('--dump', flags.dump);
  const reportTo = flags.reportTo ?? flags.report;
  if (reportTo !== undefined) await checkWritable(command === 'report' ? '--out' : '--report', reportTo);
  const { scenario } = await loadScenario(file, flags.scenario);
  const progress = createProgress(progressMode(io, flags), io.stderr);
  const result = await runScenario(scenario, { progress, capture: flags.dump !== undefined, createdBy: `liveupdate ${VERSION}` });
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

async function inspectCommand(io: CliIo, file: string, flags: { json?: boolean }): Promise<number> {
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

export function buildProgram(io: CliIo, exit: { code: number }): Command {
  const program = new Command('liveupdate');
  program
    .description('Run, inspect, report, fuzz and qualify Linux live updates (KHO + LUO) on an emulated machine.\nPlugins are the npm packages a scenario names (installed, or side by side under npm aliases).\nWithout a scenario file, `run` and `report` use the default plugin\'s scenario (three VMs on memfds).')
    .version(VERSION)
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) })
    .showHelpAfterError('(run liveupdate --help for usage)')
    .addHelpText('after', `\n${EXIT_CODES_HELP}\n`);

  program.command('run')
    .description('run a live update scenario and print what was preserved, restored and checked')
    .argument('[scenario]', 'scenario JSON file (default: the default plugin\'s scenario, three VMs on memfds)')
    .option('--scenario <name>', 'a scenario a plugin ships: <name> (the default plugin\'s) or <package>:<name> (instead of a file)')
    .option('--json', 'print one machine-readable JSON object instead of the text summary')
    .option('--dump <file>', 'write the handover (raw pages + boot params) right after the kexec jump')
    .option('--report <file>', 'also write the HTML report')
    .option('--no-progress', 'no progress output on stderr')
    .addHelpText('after', `\n${EXIT_CODES_HELP}\n`)
    .action(async (file: string | undefined, flags: RunFlags) => { exit.code = await runAndSummarize(io, file, flags, 'run'); });

  program.command('inspect')
    .description('decode a handover dump without the kernel that wrote it: root FDT, preserved memory, LUO sessions and files')
    .argument('<dump>', 'a dump written by `liveupdate run --dump`')
    .option('--json', 'print one machine-readable JSON object')
    .addHelpText('after', `\n${EXIT_CODES_HELP}\n`)
    .action(async (file: string, flags: { json?: boolean }) => { exit.code = await inspectCommand(io, file, flags); });

  program.command('report')
    .description('run a scenario and write a self-contained HTML report (timeline, memory map, summary)')
    .argument('[scenario]', 'scenario JSON file (default: the default plugin\'s scenario, three VMs on memfds)')
    .option('--scenario <name>', 'a scenario a plugin ships: <name> (the default plugin\'s) or <package>:<name> (instead of a file)')
    .addOption(new Option('--out <file>', 'where to write the HTML').default('liveupdate-report.html'))
    .option('--json', 'print one machine-readable JSON object instead of the text summary')
    .option('--no-progress', 'no progress output on stderr')
    .addHelpText('after', `\n${EXIT_CODES_HELP}\n`)
    .action(async (file: string | undefined, flags: { out: string; scenario?: string; json?: boolean; progress?: boolean }) => {
      exit.code = await runAndSummarize(io, file, { ...flags, reportTo: flags.out }, 'report');
    });
  addMatrixCommand(program, io, exit);
  addFuzzCommand(program, io, exit);
  return program;
}

function reportError(io: CliIo, json: boolean, code: number, message: string, details: readonly string[] = []): void {
  if (json) {
    io.stdout.write(`${JSON.stringify({ ok: false, exitCode: code, error: message, details }, null, 2)}\n`);
  }
  const more = details.length > 1 ? `\n${details.slice(1).map((d) => `  ${d}`).join('\n')}` : '';
  io.stderr.write(`liveupdate: ${code === EXIT.internal ? 'internal error: ' : ''}${message}${more}\n`);
}

/** Run the command line; resolves to the exit code (never rejects). */
export async function main(argv: readonly string[], io: CliIo = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  const exit = { code: EXIT.ok as number };
  const json = argv.includes('--json');
  try {
    await buildProgram(io, exit).parseAsync([...argv]);
    return exit.code;
  } catch (e) {
    if (e instanceof CommanderError) {
      // Help and --version end in a CommanderError with exit code 0; everything else is usage.
      return e.exitCode === 0 ? EXIT.ok : EXIT.usage;
    }
    if (e instanceof UsageError) {
      reportError(io, json, EXIT.usage, e.message, e.details);
      return EXIT.usage;
    }
    reportError(io, json, EXIT.internal, e instanceof Error ? (e.stack ?? e.message) : String(e));
    return EXIT.internal;
  }
}
