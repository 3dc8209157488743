/**
 * How `liveupdate matrix` is called (its options and help); the work (matrix.ts: plugins,
 * kernels, the runner) is imported only when the command runs.
 */
import type { Command } from 'commander';
import { DEFAULT_PLUGIN } from '../defaults.js';
import { EXIT_CODES_HELP } from '../exit.js';
import type { CliIo } from '../program.js';
import type { MatrixFlags } from './matrix.js';

/** `program.command('matrix')`, so it inherits the program's output and exit handling. */
export function addMatrixCommand(program: Command, io: CliIo, exit: { code: number }): void {
  program.command('matrix')
    .description('run a scenario from every release of a plugin to every other (kernel A release X -> kernel B release Y) and print the outcome table')
    .argument('[scenario]', 'scenario JSON file (default: the plugin\'s own matrix scenario); the plugin\'s version is replaced per cell')
    .option('--plugin <name>', `the plugin whose releases are mixed (default: the scenario's first plugin, or ${DEFAULT_PLUGIN})`)
    .option('--versions <list>', 'comma-separated releases, each installed (e.g. npm i kv-1.0@npm:@example/kv@1.0.0); default: every installed release')
    .option('--json', 'print the matrix as one JSON object')
    .option('--no-progress', 'no per-cell lines on stderr')
    .addHelpText('after', `\nA refusal by format negotiation before freeze, with kernel A still running, is a correct outcome;\nso is a release that cannot handle the scenario's objects at all ("not supported by A/B": nothing ran).\nOnly FAILED cells fail the command (exit 1).\n\n${EXIT_CODES_HELP}\n`)
    .action(async (file: string | undefined, flags: MatrixFlags) => {
      const { matrixCommand } = await import('./matrix.js');
      exit.code = await matrixCommand(io, file, flags);
    });
}
