/**
 * A matrix cell does not decode the handover view (only run, report and inspect show it): the
 * cells are the same as when every run decodes it, for every pair of the installed releases.
 * Run on the built CLI in a child process (the released plugin tarballs load only from dist).
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { BIN } from './support/cli.js';

const INDEX = pathToFileURL(path.join(path.dirname(BIN), 'index.js')).href;

const SCRIPT = `
const cli = await import(${JSON.stringify(INDEX)});
const versions = cli.installedVersions(cli.DEFAULT_PLUGIN);
const newest = versions.at(-1);
const { scenario } = await cli.builtinScenario('matrix', undefined, await cli.resolvePlugin(cli.DEFAULT_PLUGIN, newest));
const report = await cli.runMatrix(scenario, cli.DEFAULT_PLUGIN, versions);
const out = [];
for (const row of report.rows) for (const cell of row.cells) {
  const r = await cli.runScenario(cli.withReleases(scenario, cli.DEFAULT_PLUGIN, cell.from, cell.to), { progress: cli.noProgress, decode: true });
  out.push({ cell, decoded: cli.classifyCell(cell.from, cell.to, r), jumped: r.jumped, view: r.handover !== null });
}
process.stdout.write(JSON.stringify({ versions, out }));
`;

describe('matrix cells without the handover view', () => {
  it('every cell equals the cell of a run that decoded the handover; that run has a view exactly when it jumped', () => {
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', SCRIPT], { encoding: 'utf8', maxBuffer: 64 << 20 });
    expect(r.stderr).toBe('');
    const { versions, out } = JSON.parse(r.stdout) as { versions: string[]; out: Array<{ cell: unknown; decoded: unknown; jumped: boolean; view: boolean }> };
    expect(versions.length).toBeGreaterThanOrEqual(2);
    expect(out).toHaveLength(versions.length ** 2);
    for (const o of out) {
      expect(o.decoded).toEqual(o.cell);
      expect(o.view).toBe(o.jumped);
    }
    expect(out.filter((o) => o.jumped).length).toBeGreaterThan(0);
  }, 120_000);
});
