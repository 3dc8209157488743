/**
 * The built `liveupdate matrix` and `liveupdate fuzz` as users and CI run them: the 5x5 table
 * of negotiated formats between the released plugin-memfd versions (the same table as
 * packages/compat/test/mixing.test.ts), a refusal before freeze counted as a correct outcome,
 * and a seeded handover fuzzer whose runs all end in a defined outcome class and whose output
 * is the same for the same seed.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, removeDir, tempDir, type CliRun } from './support/cli.js';

const RELEASES = ['1.0.0', '2.0.0', '3.0.0', '3.1.0', '4.0.0'];

//                 to 1.0.0     to 2.0.0     to 3.0.0       to 3.1.0       to 4.0.0
const NEGOTIATED = [
  ['memfd-v1', 'memfd-v1', 'memfd-v1', 'memfd-v1', 'memfd-v1'], // from 1.0.0
  ['memfd-v1', 'memfd-v2', 'memfd-v2', 'memfd-v2', 'memfd-v2'], // from 2.0.0
  ['memfd-v1', 'memfd-v2', 'memfd@3.0.0', 'memfd@3.0.0', 'memfd@3.0.0'], // from 3.0.0
  ['memfd-v1', 'memfd-v2', 'memfd@3.1.0', 'memfd@3.1.0', 'memfd@3.1.0'], // from 3.1.0: 3.0.0 reads the minor 3.1 header, skipping its checksum
  // from 4.0.0: releases before 4.0.0 cannot read the new major, they get the minor 3.2 (3.0 skips
  // both checksums, 3.1 checks the header's and skips meta_crc32); 4.0.0 itself gets the extents
  // bound to their session and token (memfd@4.1.0).
  ['memfd-v1', 'memfd-v2', 'memfd@3.2.0', 'memfd@3.2.0', 'memfd@4.1.0'],
];

interface Cell { from: string; to: string; outcome: string; compatible: string[]; reason: string | null; leaks: { blocks: number; poisonReads: number }; dataCheck: string; refusals: unknown[] }
interface Matrix { ok: boolean; exitCode: number; versions: string[]; rows: Array<{ from: string; cells: Cell[] }>; counts: Record<string, number> }

describe('liveupdate matrix', () => {
  let json: CliRun;
  let text: CliRun;
  beforeAll(() => {
    json = cli(['matrix', '--json']);
    text = cli(['matrix']);
  }, 30_000);

  it('--json gives the exact 5x5 table of negotiated compatible strings, every cell ok, exit 0', () => {
    expect(json.code).toBe(0);
    expect(json.stderr).toBe('');
    const m = JSON.parse(json.stdout) as Matrix;
    expect(m).toMatchObject({ command: 'matrix', ok: true, exitCode: 0, versions: RELEASES, counts: { ok: 25, refused: 0, 'not-supported': 0, failed: 0 } });
    expect(m.rows.map((r) => r.from)).toEqual(RELEASES);
    expect(m.rows.map((r) => r.cells.map((c) => c.to))).toEqual([RELEASES, RELEASES, RELEASES, RELEASES, RELEASES]);
    expect(m.rows.map((r) => r.cells.map((c) => c.compatible))).toEqual(NEGOTIATED.map((row) => row.map((c) => [c])));
    for (const c of m.rows.flatMap((r) => r.cells)) {
      expect(c, `${c.from} -> ${c.to}`).toMatchObject({ outcome: 'ok', reason: null, dataCheck: 'passed', leaks: { blocks: 0, poisonReads: 0 } });
    }
  });

  it('prints the table: rows = from, columns = to, each cell the compatible string and ok', () => {
    expect(text.code).toBe(0);
    const row = (from: string): string[] => (text.stdout.split('\n').find((l) => l.trimStart().startsWith(`${from} `)) ?? '').trim().split(/\s{2,}/);
    expect(text.stdout).toMatch(/^\s*from \\ to\s+1\.0\.0\s+2\.0\.0\s+3\.0\.0\s+3\.1\.0\s+4\.0\.0$/m);
    RELEASES.forEach((from, i) => expect(row(from)).toEqual([from, ...(NEGOTIATED[i] ?? []).map((c) => `${c} ok`)]));
    expect(text.stdout).toMatch(/^result: ok: 25 updates kept every invariant/m);
    // One progress line per cell on stderr (not a terminal).
    expect(text.stderr.match(/^\[matrix\] /gm)).toHaveLength(25);
  });
});

describe('liveupdate matrix with a scenario file and --versions', () => {
  const dir = tempDir('matrix');
  afterAll(() => removeDir(dir));

  it('a refusal before freeze with kernel A still running is its own outcome, not a failure', () => {
    // 2.0.0 has no hugeTLB handler: 3.0.0 -> 2.0.0 must be refused by negotiation before anything froze.
    const file = path.join(dir, 'hugetlb.json');
    writeFileSync(file, JSON.stringify({
      name: 'hugetlb', machine: { memory: '4GiB', numaNodes: 1 },
      from: { release: '7.1.0', plugins: { '@liveupdate/plugin-memfd': '3.0.0' } }, to: { release: '7.2.0', plugins: { '@liveupdate/plugin-memfd': '3.0.0' } },
      sessions: [{ name: 'vm', files: [{ token: 1, type: 'hugetlb-memfd', size: '4MiB', fill: 'synthetic' }] }],
    }, null, 2));
    const r = cli(['matrix', file, '--versions', '3.0.0,2.0.0', '--json']);
    const m = JSON.parse(r.stdout) as Matrix;
    const [row3] = m.rows;
    expect(row3?.cells.map((c) => [c.to, c.outcome, c.compatible])).toEqual([['3.0.0', 'ok', ['hugetlb-memfd@1.0.0']], ['2.0.0', 'refused', []]]);
    expect(row3?.cells[1]).toMatchObject({
      reason: expect.stringMatching(/format 'hugetlb-memfd' \(writes 1\.0\.0\) is not read by kernel 7\.2\.0/),
      refusals: [{ family: 'hugetlb-memfd', owner: '@liveupdate/plugin-memfd', offered: ['1.0.0'], accepted: null }],
      leaks: { blocks: 0 }, dataCheck: 'not run',
    });
    // Release 2.0.0 in kernel A cannot preserve a hugeTLB memfd at all: "not supported by A", nothing ran, not a failure.
    expect(m.rows[1]?.cells.map((c) => [c.outcome, c.dataCheck])).toEqual([['not-supported', 'not run'], ['not-supported', 'not run']]);
    expect(m.counts).toEqual({ ok: 1, refused: 1, 'not-supported': 2, failed: 0 });
    expect(m.rows[1]?.cells[0]?.reason).toBe('not supported by A: session vm token 1: @liveupdate/plugin-memfd@2.0.0: this release does not preserve hugeTLB memfds');
    expect(r.code).toBe(0);
    const t = cli(['matrix', file, '--versions', '3.0.0,2.0.0']);
    expect(t.stdout).toMatch(/^\s*2\.0\.0\s+not supported by A \[\d\]\s+not supported by A \[\d\]$/m);
  }, 30_000);

  it('a release that is not installed is a usage error (exit 2) naming the installed ones', () => {
    const r = cli(['matrix', '--versions', '2.0.0,9.9.9']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('@liveupdate/plugin-memfd@9.9.9 is not installed (installed: 1.0.0, 2.0.0, 3.0.0, 3.1.0, 4.0.0)');
  });
});

interface FuzzRun { seed: number; structure: string; page: string; mutation: string; what: string; bytes: Array<{ offset: number; xor: number }>; outcome: string; detail: string | null }
interface Fuzz {
  ok: boolean; exitCode: number; engine: string; seed: number; runs: number; targets: Record<string, number>;
  byMutation: Record<string, Record<string, Record<string, number>>>; reproduce: string | null;
  outcomes: Record<string, number>; byStructure: Record<string, Record<string, number>>;
  firstFailingSeed: number | null; results: FuzzRun[];
}

describe('liveupdate fuzz', () => {
  let first: CliRun;
  let second: CliRun;
  let one: CliRun;
  beforeAll(() => {
    first = cli(['fuzz', '--runs', '30', '--seed', '1', '--json']);
    second = cli(['fuzz', '--runs', '30', '--seed', '1', '--json']);
    one = cli(['fuzz', '--runs', '1', '--seed', '17', '--json']);
  }, 60_000);

  it('--runs 30 --seed 1 exits 0 with 30 classified runs, counts summing to 30, no wrong answer', () => {
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    const f = JSON.parse(first.stdout) as Fuzz;
    expect(f).toMatchObject({ command: 'fuzz', ok: true, exitCode: 0, seed: 1, runs: 30, firstFailingSeed: null });
    expect(f.results).toHaveLength(30);
    expect(f.results.map((r) => r.seed)).toEqual(Array.from({ length: 30 }, (_, i) => 1 + i));
    for (const r of f.results) expect(['updated', 'file-error', 'refused-incoming'], `seed ${r.seed}: ${r.detail}`).toContain(r.outcome);
    expect(Object.values(f.outcomes).reduce((a, b) => a + b, 0)).toBe(30);
    expect(f.outcomes).toMatchObject({ 'wrong-answer': 0, uncaught: 0, unexpected: 0 });
    expect(Object.values(f.byStructure).reduce((n, s) => n + (s.runs ?? 0), 0)).toBe(30);
  });

  it('by default mutates one page of a handover structure per run with the structure-aware engine (every mutation named)', () => {
    const f = JSON.parse(first.stdout) as Fuzz;
    expect(f.engine).toBe('structure');
    // The small scenario in memfd@4.1.0: the core's pages, and each file's header, kho_vmalloc chunk and extent stream.
    expect(Object.keys(f.targets)).toEqual([
      'root FDT', 'tracker node', 'LUO blob', 'session block', 'file block', 'FLB page', 'scratch array', 'kexec-metadata',
      'memfd extent stream', 'memfd header', 'memfd vmalloc chunk',
    ]);
    const kinds = ['xor', 'retarget-page', 'retarget-folio', 'duplicate', 'count+1', 'count-1', 'count-0', 'count-max', 'cycle-self', 'cycle-earlier', 'swap'];
    for (const r of f.results) {
      expect(Object.keys(f.targets)).toContain(r.structure);
      expect(kinds).toContain(r.mutation);
      expect(r.page).toMatch(/^0x[0-9a-f]+000$/);
      expect(r.bytes.length).toBeGreaterThanOrEqual(1);
      for (const b of r.bytes) {
        expect(b.offset).toBeGreaterThanOrEqual(0);
        expect(b.offset).toBeLessThan(4096);
        expect(b.xor).toBeGreaterThan(0);
        expect(b.xor).toBeLessThan(256);
      }
    }
    // Per structure x mutation counts add up to the runs.
    const cells = Object.values(f.byMutation).flatMap((row) => Object.values(row));
    expect(cells.reduce((n, c) => n + (c.runs ?? 0), 0)).toBe(30);
    // Thirty runs reach more than one outcome class (a fuzzer that always lands in one is not fuzzing).
    expect(Object.values(f.outcomes).filter((n) => n > 0).length).toBeGreaterThan(1);
  });

  it('--mutations xor corrupts 1..4 bytes of a page per run, the scenario replayed each time', () => {
    const r = cli(['fuzz', '--mutations', 'xor', '--runs', '10', '--seed', '1', '--json']);
    expect(r.code).toBe(0);
    const f = JSON.parse(r.stdout) as Fuzz;
    expect(f).toMatchObject({ engine: 'xor', runs: 10, firstFailingSeed: null, reproduce: null });
    for (const x of f.results) {
      expect(x.mutation).toBe('xor');
      expect(x.bytes.length).toBeGreaterThanOrEqual(1);
      expect(x.bytes.length).toBeLessThanOrEqual(4);
      expect(new Set(x.bytes.map((b) => b.offset)).size).toBe(x.bytes.length);
    }
    // The xor engine leaves boot-time pages alone: no scratch array, no kexec-metadata.
    expect(Object.keys(f.targets)).not.toContain('scratch array');
  }, 30_000);

  it('is deterministic: the same seed gives identical JSON', () => {
    expect(second.code).toBe(0);
    expect(second.stdout).toBe(first.stdout);
  });

  it('--seed S --runs 1 reproduces run S exactly', () => {
    expect(one.code).toBe(0);
    const f = JSON.parse(one.stdout) as Fuzz;
    const all = JSON.parse(first.stdout) as Fuzz;
    expect(f.results).toEqual([all.results.find((r) => r.seed === 17)]);
  });

  it('prints a summary: runs, the engine, counts per outcome, per corrupted structure and per structure x mutation', () => {
    const r = cli(['fuzz', '--runs', '5', '--seed', '100']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^liveupdate fuzz: 5 runs from seed 100/);
    expect(r.stdout).toMatch(/^ {2}engine: structure-aware mutations \(retarget, duplicate, count, cycle, swap, xor\) of one handover page per run,$/m);
    expect(r.stdout).toMatch(/^by corrupted structure and mutation\n {2}structure\s+mutation\s+runs\s+updated\s+file-error\s+refused-incoming$/m);
    expect(r.stdout).toMatch(/^outcomes\n {2}updated\s+\d+\n {2}file-error\s+\d+\n {2}refused-incoming\s+\d+\n {2}wrong-answer\s+0\n/m);
    expect(r.stdout).toMatch(/^by corrupted structure\n {2}structure\s+runs\s+updated\s+file-error\s+refused-incoming$/m);
    expect(r.stdout).toMatch(/^result: ok: every run ended updated \(data check passed\), file-error or refused-incoming/m);
    expect(r.stderr.match(/^\[fuzz\] seed \d+: /gm)).toHaveLength(5);
  }, 30_000);

  it('--mutations xor --runs 600 --seed 1 ends with 0 wrong answers: an in-range corruption of a memfd@4.1.0 header fails its identity check', () => {
    const r = cli(['fuzz', '--mutations', 'xor', '--runs', '600', '--seed', '1', '--json']);
    expect(r.code).toBe(0);
    const f = JSON.parse(r.stdout) as Fuzz;
    expect(f).toMatchObject({ ok: true, exitCode: 0, runs: 600, firstFailingSeed: null });
    expect(f.outcomes).toMatchObject({ 'wrong-answer': 0, uncaught: 0, unexpected: 0 });
    expect(Object.values(f.outcomes).reduce((a, b) => a + b, 0)).toBe(600);
    // Seeds that were wrong answers with memfd@3.0.0 (a corrupted size restored as real) and
    // header-checksum refusals with memfd@3.1.0 land on a memfd@4.1.0 header now: its id_crc32,
    // over the header (whose crc32 covers the extent stream), the token and the session name,
    // refuses them before anything is claimed.
    for (const seed of [247, 264, 283, 344]) {
      const run = f.results.find((x) => x.seed === seed);
      expect(run, `seed ${seed}`).toMatchObject({ structure: 'memfd header', outcome: 'file-error' });
      expect(run?.detail).toMatch(/EINVAL .*fails its identity check for session vm-[ab] token 1 \(id_crc32 0x[0-9a-f]+, computed 0x[0-9a-f]+\)/);
    }
    // The 4.x pages are targets too, and none of their corruptions served data.
    for (const s of ['memfd vmalloc chunk', 'memfd extent stream']) {
      expect(f.byStructure[s]?.runs, s).toBeGreaterThan(0);
      expect(f.byStructure[s]?.['wrong-answer'] ?? 0, s).toBe(0);
    }
  }, 60_000);

  it('a bad --runs is a usage error (exit 2)', () => {
    const r = cli(['fuzz', '--runs', '0']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--runs must be an integer from 1 to 100000');
  });
});
