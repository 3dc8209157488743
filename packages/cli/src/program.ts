/**
 * The `liveupdate` command line: parse arguments (commander), run one command, map every
 * outcome to a documented exit code. The work itself lives in the scenario runner (over the
 * SDK harness), the handover decoder and the report renderer, and each command imports its
 * work only when it runs: `liveupdate --help`, `--version` and a usage error load commander
 * and nothing else (no kernel, no plugin, no ajv), and a command loads what it uses.
 */
import { createRequire } from 'node:module';
import { Command, CommanderError, Help, Option } from 'commander';
import type { RunFlags } from './commands.js';
import { EXIT, EXIT_CODES_HELP, UsageError } from './exit.js';
import { addMatrixCommand } from './matrix/command.js';

const VERSION = (createRequire(import.meta.url)('../package.json') as { version: string }).version;
const CREATED_BY = `liveupdate ${VERSION}`;

export interface CliIo {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream & { isTTY?: boolean };
}

/** Commands listed under a term of their own (lazy ones: see addLazyCommand). */
const lazyTerms = new WeakMap<Command, string>();
const LAZY_COMMANDS = new Set(['fuzz']);

/** The root command: its output, exit and help handling (shared with the lazily built ones). */
function rootCommand(io: CliIo): Command {
  return new Command('liveupdate')
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) })
    .showHelpAfterError('(run liveupdate --help for usage)')
    .configureHelp({
      subcommandTerm(this: Help, cmd: Command): string { return lazyTerms.get(cmd) ?? Help.prototype.subcommandTerm.call(this, cmd); },
    });
}

type AddCommand = (program: Command, io: CliIo, exit: { code: number }) => void;

/**
 * A command defined in a module that pulls in the whole tool: the program lists it by its
 * term and summary, and builds the real definition (options, help, action) only when the
 * command is named, then hands it every word after the command's name.
 */
function addLazyCommand(program: Command, io: CliIo, exit: { code: number }, spec: { name: string; term: string; summary: string; load: () => Promise<AddCommand> }): void {
  const stub = program.command(spec.name)
    .description(spec.summary)
    .helpOption(false)
    .allowUnknownOption()
    .allowExcessArguments()
    .argument('[words...]')
    .action(async (_words: string[], _flags: unknown, cmd: Command) => {
      const real = rootCommand(io);
      (await spec.load())(real, io, exit);
      await real.parseAsync([spec.name, ...cmd.args], { from: 'user' });
    });
  lazyTerms.set(stub, spec.term);
}

/** How `liveupdate --help` lists `fuzz` (fuzz/fuzz.ts defines the command; a test keeps the two equal). */
export const FUZZ_LISTING = {
  term: 'fuzz [options] [scenario]',
  summary: 'corrupt random bytes of the handover between the jump and the new kernel\'s boot, seeded and bounded, and check every run ends in a defined outcome',
} as const;

export function buildProgram(io: CliIo, exit: { code: number }): Command {
  const program = rootCommand(io);
  program
    .description('Run, inspect, report, fuzz and qualify Linux live updates (KHO + LUO) on an emulated machine.\nPlugins are the npm packages a scenario names (installed, or side by side under npm aliases).\nWithout a scenario file, `run` and `report` use the default plugin\'s scenario (three VMs on memfds).')
    .version(VERSION)
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
    .action(async (file: string | undefined, flags: RunFlags) => {
      const { runAndSummarize } = await import('./commands.js');
      exit.code = await runAndSummarize(io, file, flags, 'run', CREATED_BY);
    });

  program.command('inspect')
    .description('decode a handover dump without the kernel that wrote it: root FDT, preserved memory, LUO sessions and files')
    .argument('<dump>', 'a dump written by `liveupdate run --dump`')
    .option('--json', 'print one machine-readable JSON object')
    .addHelpText('after', `\n${EXIT_CODES_HELP}\n`)
    .action(async (file: string, flags: { json?: boolean }) => {
      const { inspectCommand } = await import('./commands.js');
      exit.code = await inspectCommand(io, file, flags);
    });

  program.command('report')
    .description('run a scenario and write a self-contained HTML report (timeline, memory map, summary)')
    .argument('[scenario]', 'scenario JSON file (default: the default plugin\'s scenario, three VMs on memfds)')
    .option('--scenario <name>', 'a scenario a plugin ships: <name> (the default plugin\'s) or <package>:<name> (instead of a file)')
    .addOption(new Option('--out <file>', 'where to write the HTML').default('liveupdate-report.html'))
    .option('--json', 'print one machine-readable JSON object instead of the text summary')
    .option('--no-progress', 'no progress output on stderr')
    .addHelpText('after', `\n${EXIT_CODES_HELP}\n`)
    .action(async (file: string | undefined, flags: { out: string; scenario?: string; json?: boolean; progress?: boolean }) => {
      const { runAndSummarize } = await import('./commands.js');
      exit.code = await runAndSummarize(io, file, { ...flags, reportTo: flags.out }, 'report', CREATED_BY);
    });
  addMatrixCommand(program, io, exit);
  addLazyCommand(program, io, exit, { name: 'fuzz', ...FUZZ_LISTING, load: async () => (await import('./fuzz/fuzz.js')).addFuzzCommand });
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
  // `help <command>` prints a stub's help synchronously; a lazy command's real help needs its module.
  const words = argv[2] === 'help' && LAZY_COMMANDS.has(argv[3] ?? '') ? [...argv.slice(0, 2), argv[3] ?? '', '--help'] : [...argv];
  try {
    await buildProgram(io, exit).parseAsync(words);
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
