/**
 * A plugin that lives outside this repository's packages (fixtures/plugins/kv, plain JavaScript
 * written against @liveupdate/sdk only), packed as 1.0.0 and 1.1.0 and installed side by side in
 * a project of its own under npm aliases (`npm i kv-1.0@file:example-kv-1.0.0.tgz ...`), is run,
 * inspected, fuzzed and qualified with `liveupdate matrix` by the unmodified CLI: everything the
 * CLI knows about kv stores comes from the plugin's `tools`.
 *
 * The project sits in .scratch/ inside the repository so that the plugin's import of
 * @liveupdate/sdk resolves to the workspace's SDK (the peer dependency a real project installs).
 */
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli } from './support/cli.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const KV = path.join(ROOT, 'fixtures/plugins/kv');

const scenario = (from: string, to: string): string => `{
  "name": "kv-pair",
  "machine": { "memory": "1GiB" },
  "from": { "release": "7.1.0", "plugins": { "@example/kv": "${from}" } },
  "to": { "release": "7.2.0", "plugins": { "@example/kv": "${to}" } },
  "sessions": [
    { "name": "vm-a", "objects": [{ "type": "kv", "token": 1, "entries": 40 }] },
    { "name": "vm-b", "objects": [{ "type": "kv", "token": 7, "entries": 3 }] }
  ]
}
`;

describe('a third-party plugin at two versions, installed under npm aliases', () => {
  let work = '';
  let project = '';
  beforeAll(() => {
    mkdirSync(path.join(ROOT, '.scratch'), { recursive: true });
    work = mkdtempSync(path.join(ROOT, '.scratch', 'external-plugin-'));
    for (const version of ['1.0.0', '1.1.0']) {
      const src = path.join(work, `kv-src-${version}`);
      cpSync(KV, src, { recursive: true });
      const pkg = JSON.parse(readFileSync(path.join(src, 'package.json'), 'utf8')) as Record<string, unknown>;
      writeFileSync(path.join(src, 'package.json'), JSON.stringify({ ...pkg, version }, null, 2));
      execFileSync('npm', ['pack', '--silent', '--pack-destination', work], { cwd: src, stdio: 'ignore' });
    }
    project = path.join(work, 'qualify');
    mkdirSync(project);
    writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'kv-qualify', private: true, type: 'module' }, null, 2));
    // The user's two releases side by side; @liveupdate/sdk (their peer) is the workspace's here.
    execFileSync('npm', [
      'install', '--no-audit', '--no-fund', '--legacy-peer-deps', '--offline',
      'kv-1.0@file:../example-kv-1.0.0.tgz', 'kv-1.1@file:../example-kv-1.1.0.tgz',
    ], { cwd: project, stdio: 'ignore' });
    writeFileSync(path.join(project, 'kv-upgrade.json'), scenario('1.0.0', '1.1.0'));
    writeFileSync(path.join(project, 'kv-1.1.json'), scenario('1.1.0', '1.1.0'));
  }, 120_000);
  afterAll(() => { if (work) rmSync(work, { recursive: true, force: true }); });

  it('npm installed both releases under their aliases, each with its own version', () => {
    for (const [alias, version] of [['kv-1.0', '1.0.0'], ['kv-1.1', '1.1.0']]) {
      expect(JSON.parse(readFileSync(path.join(project, 'node_modules', alias as string, 'package.json'), 'utf8'))).toMatchObject({ name: '@example/kv', version });
    }
  });

  it('run: a kv upgrade 1.0.0 -> 1.1.0 with every entry compared, and a dump', () => {
    const r = cli(['run', 'kv-upgrade.json', '--json', '--no-progress', '--dump', 'kv-dump.json'], project);
    expect(r.stderr).toBe('');
    const s = JSON.parse(r.stdout);
    expect(s).toMatchObject({
      ok: true, outcome: 'updated', leaks: { blocks: 0, pages: 0, poisonReads: 0 },
      dataCheck: { passed: true, objectsChecked: 2, counts: { 'kv entries compared': 43 } },
    });
    expect(s.formats.files).toEqual([{ family: 'kv', version: '1.0.0', compatible: 'kv@1.0.0', files: 2 }]);
    expect(s.objects.map((o: { createdBy: string; restoredBy: string }) => [o.createdBy, o.restoredBy])).toEqual([
      ['@example/kv@1.0.0', '@example/kv@1.1.0'], ['@example/kv@1.0.0', '@example/kv@1.1.0'],
    ]);
    expect(s.handover.structures).toMatchObject({ 'kv store page': 2 });
    expect(r.code).toBe(0);
  });

  it('inspect: the dump decoded by the plugin\'s own decoder, found through the versions the dump records', () => {
    const r = cli(['inspect', 'kv-dump.json', '--json'], project);
    expect(r.code).toBe(0);
    const x = JSON.parse(r.stdout);
    expect(x.decoders).toEqual(['@example/kv@1.0.0']);
    const files = x.luo.sessions.flatMap((s: { files: unknown[] }) => s.files);
    expect(files).toMatchObject([
      { token: '1', compatible: 'kv@1.0.0', family: 'kv', version: '1.0.0', owner: '@example/kv', header: { magic: '0x3130564b', count: '40', crc32: '0x0' }, pages: { 'kv store page': 1 }, problems: [] },
      { token: '7', compatible: 'kv@1.0.0', family: 'kv', version: '1.0.0', owner: '@example/kv', header: { magic: '0x3130564b', count: '3', crc32: '0x0' }, pages: { 'kv store page': 1 }, problems: [] },
    ]);
    expect(x.problems).toEqual([]);
  });

  it('matrix --plugin @example/kv --versions 1.0.0,1.1.0: every cell ok, in the negotiated format', () => {
    const r = cli(['matrix', 'kv-upgrade.json', '--plugin', '@example/kv', '--versions', '1.0.0,1.1.0', '--json'], project);
    expect(r.code).toBe(0);
    const m = JSON.parse(r.stdout);
    expect(m).toMatchObject({ plugin: '@example/kv', versions: ['1.0.0', '1.1.0'], counts: { ok: 4, refused: 0, 'not-supported': 0, failed: 0 } });
    expect(m.rows.map((row: { cells: Array<{ compatible: string[] }> }) => row.cells.map((c) => c.compatible))).toEqual([
      [['kv@1.0.0'], ['kv@1.0.0']],
      // A 1.0.0 reader reads ^1.0.0: it takes the 1.1 page and skips its checksum word.
      [['kv@1.1.0'], ['kv@1.1.0']],
    ]);
    // Without --versions: every installed release of the plugin.
    const all = JSON.parse(cli(['matrix', 'kv-upgrade.json', '--json'], project).stdout);
    expect(all.versions).toEqual(['1.0.0', '1.1.0']);
  });

  it('fuzz: the plugin\'s store pages are targets; with the 1.1 checksum every run ends in a defined outcome', () => {
    const r = cli(['fuzz', 'kv-1.1.json', '--runs', '40', '--seed', '1', '--json'], project);
    const f = JSON.parse(r.stdout);
    expect(f.targets['kv store page']).toBe(2);
    expect(f.outcomes['wrong-answer']).toBe(0);
    expect(f.byStructure['kv store page'].runs).toBeGreaterThan(0);
    expect(r.code).toBe(0);
  });

  it('a release that bundles its own copy of @liveupdate/sdk is refused by name when it loads (exit 2)', () => {
    // A third release installed as a folder, with a nested second copy of the SDK (a plugin
    // that listed the SDK in dependencies instead of peerDependencies).
    const dup = path.join(project, 'node_modules', 'kv-1.2');
    cpSync(KV, dup, { recursive: true });
    writeFileSync(path.join(dup, 'package.json'), JSON.stringify({ ...JSON.parse(readFileSync(path.join(KV, 'package.json'), 'utf8')), version: '1.2.0' }, null, 2));
    const nested = path.join(dup, 'node_modules', '@liveupdate', 'sdk');
    cpSync(path.join(ROOT, 'packages/sdk/dist'), path.join(nested, 'dist'), { recursive: true });
    cpSync(path.join(ROOT, 'packages/sdk/package.json'), path.join(nested, 'package.json'));
    writeFileSync(path.join(project, 'kv-dup.json'), scenario('1.2.0', '1.1.0'));
    const r = cli(['run', 'kv-dup.json'], project);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('/from/plugins/@example~1kv: @example/kv@1.2.0 (kv-1.2) was made by a second copy of @liveupdate/sdk (file://');
    expect(r.stderr).toContain('Install @liveupdate/sdk once: plugins list it as a peerDependency, not a dependency');
    rmSync(dup, { recursive: true, force: true });
  });

  it('fuzz finds the wrong answers of format 1.0 (no checksum): a flipped value byte comes back as data', () => {
    const r = cli(['fuzz', 'kv-upgrade.json', '--runs', '40', '--seed', '1', '--json'], project);
    const f = JSON.parse(r.stdout);
    expect(f.outcomes['wrong-answer']).toBeGreaterThan(0);
    const wrong = f.results.find((x: { outcome: string }) => x.outcome === 'wrong-answer');
    expect(wrong).toMatchObject({ structure: 'kv store page', detail: expect.stringMatching(/entries differ from the \d+ stored/) });
    expect(f.reproduce).toBe(`liveupdate fuzz kv-upgrade.json --seed ${f.firstFailingSeed} --runs 1`);
    expect(r.code).toBe(1);
  });
});
