/** Run the built `liveupdate` (dist/bin.js) as a subprocess, the way users and CI run it. */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const BIN = fileURLToPath(new URL('../../dist/bin.js', import.meta.url));

export interface CliRun {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

export function cli(args: readonly string[], cwd?: string): CliRun {
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: build first (npx tsc -b; npm test does)`);
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', cwd, env: { ...process.env, FORCE_COLOR: '0' }, maxBuffer: 64 << 20 });
  if (r.error) throw r.error;
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

export const tempDir = (prefix: string): string => mkdtempSync(path.join(tmpdir(), `liveupdate-${prefix}-`));

export const removeDir = (dir: string): void => rmSync(dir, { recursive: true, force: true });
