/**
 * Drive the built `liveupdate` command (packages/cli/dist/bin.js) as users do: a subprocess, a
 * built-in scenario written out as a file where a command takes only files (fuzz, matrix), and a
 * pinned build of a plugin (another version, formats fixed through the factory's options)
 * found through LIVEUPDATE_PLUGIN_PATH, the way a release installed beside the others is.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Plugin } from '@liveupdate/sdk';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
export const BIN = path.join(ROOT, 'packages/cli/dist/bin.js');

export interface CliRun { readonly code: number | null; readonly stdout: string; readonly stderr: string }

/** Run the built CLI; `dist` is the plugin build the test needs (checked so a missing build says so). */
export function runCli(dist: string, args: readonly string[], env: Record<string, string> = {}): CliRun {
  if (!existsSync(BIN) || !existsSync(dist)) throw new Error('build first (npx tsc -b): the CLI and this plugin run from dist/');
  const r = spawnSync(process.execPath, [BIN, ...args, ...(args[0] === 'inspect' ? [] : ['--no-progress'])], {
    encoding: 'utf8', cwd: ROOT, env: { ...process.env, FORCE_COLOR: '0', ...env }, maxBuffer: 256 << 20,
  });
  if (r.error) throw r.error;
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

export const json = <T = Record<string, unknown>>(r: CliRun): T => JSON.parse(r.stdout) as T;
export const tempDirFor = (label: string): string => mkdtempSync(path.join(tmpdir(), `liveupdate-${label}-cli-`));
export const removeDir = (dir: string): void => rmSync(dir, { recursive: true, force: true });

/** A built-in scenario of `plugin` as a scenario file, optionally with other plugin versions. */
export function scenarioFile(dir: string, plugin: Plugin, name: string, versions?: { from: string; to: string }): string {
  const s = structuredClone(plugin.tools?.scenarios?.find((x) => x.name === name)?.scenario) as Record<string, { plugins: Record<string, string> }> | undefined;
  if (!s) throw new Error(`no built-in scenario ${name}`);
  if (versions) {
    (s.from as { plugins: Record<string, string> }).plugins[plugin.name] = versions.from;
    (s.to as { plugins: Record<string, string> }).plugins[plugin.name] = versions.to;
  }
  const file = path.join(dir, `${name}${versions ? `-${versions.from}-${versions.to}` : ''}.json`);
  writeFileSync(file, JSON.stringify(s, null, 2));
  return file;
}

/**
 * A package folder `packageName` at `version` whose factory is the build at `dist` called with
 * `options` (the formats an older release wrote). Returns the folder for LIVEUPDATE_PLUGIN_PATH.
 */
export function pinnedBuildOf(dist: string, packageName: string, dir: string, version: string, options: Record<string, unknown>): string {
  const pkg = path.join(dir, `${packageName.replace(/^@[^/]+\//, '')}-${version}`);
  mkdirSync(pkg, { recursive: true });
  writeFileSync(path.join(pkg, 'package.json'), JSON.stringify({ name: packageName, version, type: 'module', exports: { '.': './index.js' } }, null, 2));
  writeFileSync(path.join(pkg, 'index.js'), [
    `import factory from ${JSON.stringify(pathToFileURL(dist).href)};`,
    `export default () => factory(${JSON.stringify({ ...options, version })});`,
    '',
  ].join('\n'));
  return pkg;
}

/** The helpers bound to one plugin package (`packages/<dir>`), for its CLI tests. */
export function pluginCli(dir: string, packageName: string) {
  const dist = path.join(ROOT, 'packages', dir, 'dist/index.js');
  return {
    cli: (args: readonly string[], env: Record<string, string> = {}): CliRun => runCli(dist, args, env),
    tempDir: (): string => tempDirFor(dir),
    pinnedBuild: (into: string, version: string, options: Record<string, unknown>): string => pinnedBuildOf(dist, packageName, into, version, options),
  };
}

/** Flip `mask` in one byte of the dumped page at `phys` (a dump is JSON: phys + base64 per page). */
export function corruptDump(src: string, dst: string, phys: string, offset: number, mask = 0x01): void {
  const d = JSON.parse(readFileSync(src, 'utf8')) as { pages: Array<{ phys: string; data: string }> };
  const page = d.pages.find((p) => p.phys === phys);
  if (!page) throw new Error(`page ${phys} is not in the dump`);
  const b = Buffer.from(page.data, 'base64');
  b[offset] = (b[offset] as number) ^ mask;
  page.data = b.toString('base64');
  writeFileSync(dst, JSON.stringify(d));
}
