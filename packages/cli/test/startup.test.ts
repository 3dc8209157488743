/**
 * The CLI starts lazily: `--help`, `--version` and a usage error load commander and the
 * program's few own modules, never a kernel, a plugin or ajv; each command imports its work
 * when it runs. Shown from the module graph of the built bin (an ESM loader hook records every
 * file the process loads; each file of the CLI's bundle names the source modules it holds in its
 * source map), not from timings.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Command } from 'commander';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addFuzzCommand } from '../src/fuzz/fuzz.js';
import { buildProgram, FUZZ_LISTING, type CliIo } from '../src/program.js';
import { BIN, removeDir, tempDir } from './support/cli.js';

const CLI_DIST = path.dirname(BIN);
const CLI_SRC = path.join(path.dirname(CLI_DIST), 'src');
let dir = '';
let hook = '';

beforeAll(() => {
  dir = tempDir('startup');
  hook = path.join(dir, 'record-loads.mjs');
  writeFileSync(hook, [
    "export async function load(url, context, next) {",
    "  if (url.startsWith('file:')) process.stderr.write(`LOADED ${url}\\n`);",
    "  return next(url, context);",
    "}",
  ].join('\n'));
});
afterAll(() => removeDir(dir));

/**
 * Every source module the bin loads for these arguments: the CLI's own as paths under src/ (as
 * `x.js` for src/x.ts), from the source maps of the bundle files loaded; anything else as
 * `pkg:<name>` (a package the bundle carries, or one loaded from outside it).
 */
function loaded(args: readonly string[]): { code: number | null; modules: string[] } {
  const r = spawnSync(process.execPath, ['--no-warnings', '--experimental-loader', pathToFileURL(hook).href, BIN, ...args], { encoding: 'utf8', env: { ...process.env, FORCE_COLOR: '0' } });
  if (r.error) throw r.error;
  const pkgOf = (file: string): string => {
    const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(file) ?? /\/packages\/([^/]+)\//.exec(file);
    return `pkg:${pkg?.[1] ?? file}`;
  };
  const modules = r.stderr.split('\n').filter((l) => l.startsWith('LOADED ')).flatMap((l) => {
    const file = new URL(l.slice('LOADED '.length)).pathname;
    if (!file.startsWith(`${CLI_DIST}/`)) return [pkgOf(file)];
    const map = JSON.parse(readFileSync(`${file}.map`, 'utf8')) as { sources: string[] };
    return map.sources.map((s) => {
      const source = path.resolve(path.dirname(file), s);
      return source.startsWith(`${CLI_SRC}/`) ? path.relative(CLI_SRC, source).replace(/\.ts$/, '.js') : pkgOf(source);
    });
  });
  return { code: r.status, modules: [...new Set(modules)].sort() };
}

const PROGRAM_ONLY = ['bin.js', 'defaults.js', 'exit.js', 'matrix/command.js', 'pkg:commander', 'program.js'];

describe('start-up loads only the program', () => {
  it('--help loads commander and the program\'s own five modules: no SDK, runtime, hardware, plugin or ajv', () => {
    const r = loaded(['--help']);
    expect(r.code).toBe(0);
    expect(r.modules).toEqual(PROGRAM_ONLY);
  });

  it('--version loads the same modules as --help', () => {
    expect(loaded(['--version'])).toEqual({ code: 0, modules: PROGRAM_ONLY });
  });

  it('an unknown command is a usage error (exit 2) found without loading any command\'s work', () => {
    expect(loaded(['no-such-command'])).toEqual({ code: 2, modules: PROGRAM_ONLY });
  });

  it('matrix --help and run --help load no command work either', () => {
    expect(loaded(['matrix', '--help'])).toEqual({ code: 0, modules: PROGRAM_ONLY });
    expect(loaded(['run', '--help'])).toEqual({ code: 0, modules: PROGRAM_ONLY });
  });

  it('a command loads its work when it runs: inspect of a missing dump loads the handover decoder, and is a usage error', () => {
    const r = loaded(['inspect', path.join(dir, 'missing.json')]);
    expect(r.code).toBe(2);
    expect(r.modules).toEqual(expect.arrayContaining(['commands.js', 'handover/inspect.js', 'pkg:sdk']));
  });

  it('fuzz --help loads the module that defines the fuzz command', () => {
    const r = loaded(['fuzz', '--help']);
    expect(r.code).toBe(0);
    expect(r.modules).toContain('fuzz/fuzz.js');
  });
});

describe('the program lists the lazily loaded fuzz command as its module defines it', () => {
  const io: CliIo = { stdout: process.stdout, stderr: process.stderr };

  it('same term and description in `liveupdate --help` as in fuzz/fuzz.ts', () => {
    const real = new Command('liveupdate');
    addFuzzCommand(real, io, { code: 0 });
    const fuzz = real.commands.find((c) => c.name() === 'fuzz');
    expect(fuzz).toBeDefined();
    const help = (fuzz as Command).createHelp();
    expect(FUZZ_LISTING).toEqual({ term: help.subcommandTerm(fuzz as Command), summary: (fuzz as Command).description() });
    const listed = buildProgram(io, { code: 0 }).helpInformation({ error: false });
    expect(listed.replace(/\s+/g, ' ')).toContain(`${FUZZ_LISTING.term} ${FUZZ_LISTING.summary}`);
  });
});
