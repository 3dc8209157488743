/**
 * The real consumer: `liveupdate run`, `inspect`, `fuzz` and `matrix` on the built-in scenario
 * 'mshv-l1vh-1g-scattered', through nothing but this plugin's public surface (the `mshv`
 * section, the 'mshv-tracking' object kind, decoders). The matrix qualifies this release
 * against a step-1-only build (writes mshv 1.0.0 only, called 0.0.1 here) found through
 * LIVEUPDATE_PLUGIN_PATH: the refusal before freeze while partitions run, with its reason.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import mshv from '../src/index.js';
import { cli, corruptDump, json, pinnedBuild, removeDir, scenarioFile, tempDir } from './cli-support.js';

const PKG = '@liveupdate/plugin-mshv';
const SCENARIO = 'mshv-l1vh-1g-scattered';
const VERSION = mshv().version;
/** 1 GiB deposited over three partitions, plus what the hypervisor asked of the root for them. */
const DEPOSITED = 262_256;

describe('liveupdate on plugin-mshv\'s built-in scenario', () => {
  let dir = '';
  let pinned = '';
  let dump = '';
  beforeAll(() => {
    dir = tempDir();
    pinned = pinnedBuild(dir, '0.0.1', { writes: ['1.0.0'] });
    dump = path.join(dir, 'mshv-dump.json');
  });
  afterAll(() => { if (dir) removeDir(dir); });

  it('run: ok, partitions recorded and torn down, the tracked set equal to the deposited set, 0 faults; dump and report written', () => {
    const html = path.join(dir, 'mshv.html');
    const r = cli(['run', '--scenario', `${PKG}:${SCENARIO}`, '--json', '--dump', dump, '--report', html]);
    expect(r.stderr).toBe('');
    const s = json<{
      ok: boolean; outcome: string; leaks: Record<string, number>;
      formats: { files: unknown[] }; sectionChecks: unknown[];
      objects: Array<{ type: string; compatible: string; check: string; counts: Record<string, number> }>;
    }>(r);
    expect(s).toMatchObject({ ok: true, outcome: 'updated', leaks: { blocks: 0, pages: 0, poisonReads: 0 } });
    expect(s.formats.files).toEqual([{ family: 'mshv', version: '3.0.0', compatible: 'mshv@3.0.0', files: 1 }]);
    expect(s.sectionChecks).toEqual([{
      section: 'mshv', ok: true, problems: [], summary: `${DEPOSITED} pages deposited before the jump, 16 after teardown; 0 faults`,
      counts: { depositedBefore: DEPOSITED, depositedAfter: 16, faults: 0 },
    }]);
    expect(s.objects).toMatchObject([{ type: 'mshv-tracking', compatible: 'mshv@3.0.0', check: 'passed', counts: { 'tracked pages compared': 16 } }]);
    expect(readFileSync(html, 'utf8')).toContain(SCENARIO);
    expect(r.code).toBe(0);
  }, 120_000); // the report paints each of the ~91,000 scattered deposited runs

  it('inspect of the dump: the tracking file decoded (pages, partitions), no problems', () => {
    const r = cli(['inspect', dump]);
    expect(r.stdout).toMatch(new RegExp(`token 0: compatible "mshv@3\\.0\\.0" \\(mshv 3\\.0\\.0\\), data 0x[0-9a-f]+ {2}version 3\\.0\\.0, xa_root 0x[0-9a-f]+, nr_pages ${DEPOSITED}, nr_nodes 18, nr_partition_ids 3, partitions 2,3,4, l1vh true`));
    expect(r.stdout).toContain(`pages: mshv tracking header 1, mshv tracking xarray node 18, mshv partition ids 1; ${DEPOSITED.toLocaleString('en-US')} data pages`);
    expect(r.stdout).toContain('token 1: compatible "mshv@3.0.0" (mshv 3.0.0), data 0x0  version 3.0.0, carries nothing (another mshv file carries the tracking)');
    expect(r.stdout).toMatch(/^problems: none$/m);
    expect(r.code).toBe(0);
  }, 60_000);

  it('inspect with one byte of the tracking header flipped: a checksum problem, exit 1', () => {
    const d = JSON.parse(readFileSync(dump, 'utf8')) as { pages: Array<{ phys: string; role: string }> };
    const header = d.pages.find((p) => p.role === 'struct mshv_track_ser');
    if (!header) throw new Error('no tracking header in the dump');
    const bad = path.join(dir, 'mshv-dump-bad.json');
    corruptDump(dump, bad, header.phys, 8); // nr_pages
    const r = cli(['inspect', bad]);
    expect(r.stdout).toMatch(/^ {2}- session mshv_root token 0: checksum mismatch \(header says 0x[0-9a-f]+, bytes give 0x[0-9a-f]+\)$/m);
    expect(r.code).toBe(1);
  }, 60_000);

  it('fuzz (20 runs) over the tracking header, xarray nodes and partition ids: no wrong answer (bad tracking is refused, its pages stay reserved)', () => {
    const file = scenarioFile(dir, mshv(), SCENARIO);
    const r = cli(['fuzz', file, '--runs', '20', '--json']);
    const s = json<{ ok: boolean; runs: number; outcomes: Record<string, number>; byStructure: Record<string, Record<string, number>> }>(r);
    expect(s.runs).toBe(20);
    expect(s.outcomes).toMatchObject({ 'wrong-answer': 0, uncaught: 0, unexpected: 0 });
    expect((s.outcomes.updated ?? 0) + (s.outcomes['file-error'] ?? 0) + (s.outcomes['refused-incoming'] ?? 0)).toBe(20);
    const ours = ['mshv tracking header', 'mshv tracking xarray node', 'mshv partition ids'].map((k) => s.byStructure[k]?.runs ?? 0);
    expect(ours.reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
    expect(s.ok).toBe(true);
    expect(r.code).toBe(0);
  }, 120_000);

  it('fuzz seed 40 (the in-kernel session renamed mshv_roos): no tracking reaches the new kernel, so /dev/mshv is EINVAL and the deposits stay reserved; a file error', () => {
    const r = cli(['fuzz', '--scenario', `${PKG}:${SCENARIO}`, '--seed', '40', '--runs', '1', '--json', '--no-progress']);
    expect(r.code).toBe(0);
    const x = JSON.parse(r.stdout) as { results: Array<{ structure: string; mutation: string; outcome: string; detail: string }> };
    expect(x.results.map((t) => [t.structure, t.mutation, t.outcome])).toEqual([['session block', 'count-1', 'file-error']]);
    expect(x.results[0]?.detail).toMatch(/EINVAL \(mshv: no hypervisor page tracking was handed over with this file\)/);
  });

  it('fuzz seed 1412 (a file pointer aimed at a hypervisor-owned page): kernel B oopses reading it and panics at boot, refused-incoming, not an exception', () => {
    const r = cli(['fuzz', '--scenario', `${PKG}:${SCENARIO}`, '--seed', '1412', '--runs', '1', '--json', '--no-progress']);
    expect(r.code).toBe(0);
    const x = JSON.parse(r.stdout) as { results: Array<{ structure: string; mutation: string; outcome: string; detail: string }> };
    expect(x.results.map((t) => [t.structure, t.mutation, t.outcome, t.detail])).toEqual([['file block', 'retarget-folio', 'refused-incoming', 'kernel 7.2.0 is dead: it panicked (Fatal exception)']]);
  });

  it(`matrix 0.0.1 (step 1 only) x ${VERSION}: the step-1 target refuses before freeze with the reason; a step-1 kernel A cannot hand the tracking over`, () => {
    const file = scenarioFile(dir, mshv(), SCENARIO);
    const r = cli(['matrix', file, '--plugin', PKG, '--versions', `0.0.1,${VERSION}`, '--json'], { LIVEUPDATE_PLUGIN_PATH: pinned });
    const s = json<{ ok: boolean; counts: Record<string, number>; rows: Array<{ from: string; cells: Array<{ to: string; outcome: string; compatible: string[]; reason: string | null; unsupportedBy: string | null }> }> }>(r);
    expect(s.rows.map((row) => [row.from, row.cells.map((c) => [c.to, c.outcome, c.compatible])])).toEqual([
      ['0.0.1', [['0.0.1', 'not-supported', []], [VERSION, 'not-supported', []]]],
      [VERSION, [['0.0.1', 'refused', []], [VERSION, 'ok', ['mshv@3.0.0']]]],
    ]);
    expect(s.rows[1]?.cells[0]?.reason).toBe('mshv: the target kernel reads mshv 1.0.0 only (step 1, mshv-v1), which cannot hand over 3 running VM partition(s); stop them first');
    expect(s.rows[0]?.cells[0]?.reason).toContain('this build writes mshv 1.0.0 only: no tracking file (mshv 3.x) to preserve');
    expect(r.code).toBe(0);
  }, 120_000);
});
