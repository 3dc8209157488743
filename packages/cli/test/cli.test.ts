/**
 * The built `liveupdate` command as users run it: the default live update and its summary,
 * the --json object, a bad scenario file, a refused update, and `inspect` of a dump it wrote.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, removeDir, tempDir, type CliRun } from './support/cli.js';

const PAGE = 4096;
const MiB = 1 << 20;

const MEMFD = '"@liveupdate/plugin-memfd"';
const scenarioText = (sessions: string, to = `{ ${MEMFD}: "4.0.0" }`): string => `{
  "name": "small",
  "machine": { "memory": "8GiB", "numaNodes": 2 },
  "from": { "release": "7.1.0", "plugins": { ${MEMFD}: "4.0.0" } },
  "to": { "release": "7.2.0", "plugins": ${to} },
  "sessions": ${sessions}
}
`;

describe('liveupdate run (default scenario)', () => {
  const dir = tempDir('cli');
  afterAll(() => removeDir(dir));
  const dump = path.join(dir, 'handover.json');
  let text: CliRun;
  let json: CliRun;

  beforeAll(() => {
    text = cli(['run', '--dump', dump]);
    json = cli(['run', '--json', '--no-progress']);
  }, 60_000);

  it('exits 0 and prints a summary with no leaks and a passed data check', () => {
    expect(text.stderr).not.toMatch(/error/i);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/^result\s+ok: kernel 7\.2\.0/m);
    expect(text.stdout).toMatch(/^leaks\s+0$/m);
    expect(text.stdout).toMatch(/^data check\s+passed: 6 objects; 8,192 pattern pages compared byte for byte, 532,480 synthetic pages checked by seed, 276,480 hole pages absent \(read zero\)$/m);
    expect(text.stdout).toMatch(/^liveupdate_num\s+1 -> 2$/m);
    expect(text.stdout).toMatch(/^preserved\s+3 sessions, 6 objects/m);
    expect(text.stdout).toContain(`handover dump written to ${dump}`);
  });

  it('prints plain progress lines for the long phases when stderr is not a terminal', () => {
    for (const phase of ['preserve', 'kexec', 'restore']) {
      expect(text.stderr).toMatch(new RegExp(`^\\[${phase}\\] done: `, 'm'));
    }
  });

  it('--json prints one object with exact counts', () => {
    expect(json.code).toBe(0);
    expect(json.stderr).toBe('');
    const s = JSON.parse(json.stdout);
    expect(s).toMatchObject({
      command: 'run', ok: true, exitCode: 0, outcome: 'updated', error: null,
      scenario: { name: 'three-vms', machine: { memoryBytes: 64 * 1024 * MiB, numaNodes: 2 }, broker: 'luod' },
      preserved: { sessions: 3, objects: 6, pages: 540_672, bytes: 540_672 * PAGE },
      restored: { sessions: 3, objects: 6, pages: 540_672, finishedSessions: 3 },
      leaks: { blocks: 0, pages: 0, poisonReads: 0 },
      dataCheck: {
        passed: true, objectsChecked: 6, problems: [],
        counts: {
          'pattern pages compared byte for byte': (32 * MiB) / PAGE,
          'synthetic pages checked by seed': 8192 + 524_288,
          // The sparse 1 GiB file's 260,096 holes and the never-written 64 MiB file's 16,384 pages.
          'hole pages absent (read zero)': 260_096 + 16_384,
        },
      },
      liveupdateNum: { before: 1, after: 2 },
      violations: [],
    });
    expect(s.formats.kho).toBe('kho-v4');
    expect(s.formats.luo).toBe('luo-v5');
    expect(s.formats.flbs).toEqual(['hugetlb-v1']);
    expect(s.formats.files).toEqual([
      { family: 'memfd', version: '4.1.0', compatible: 'memfd@4.1.0', files: 5 },
      { family: 'hugetlb-memfd', version: '2.0.0', compatible: 'hugetlb-memfd@2.0.0', files: 1 },
    ]);
    expect(s.phases.map((p: { phase: string }) => p.phase)).toEqual(['boot A', 'before', 'freeze + serialize + jump', 'boot B', 'after']);
    // The sparse file keeps its holes: 1 page in 128 of 1 GiB comes back, not 262,144.
    const sparse = s.objects.find((f: { session: string; token: number }) => f.session === 'vm-batch' && f.token === 1);
    expect(sparse).toMatchObject({ preservedPages: 2048, restoredPages: 2048, check: 'passed' });
    expect(s.handover.metadataPages).toBeGreaterThan(0);
    // Metadata: every handover page but the files' data, i.e. every preserved page, the tracker's
    // nodes and the scratch array page, less the 540,672 data pages; exactly the pages by structure.
    expect(s.handover.metadataPages).toBe(s.handover.preservedPages + s.handover.trackerNodes + 1 - 540_672);
    expect(s.handover.metadataPages).toBe(Object.values(s.handover.structures as Record<string, number>).reduce((a, b) => a + b, 0));
    // Every handover page by structure: the core's and the ones plugin-memfd's decoders own.
    expect(s.handover.structures).toMatchObject({ 'root FDT': 1, 'LUO blob': 1, 'memfd header': 6, 'hugetlb FLB': 1 });
    // memfd@4.1.0 (and hugetlb-memfd@2.0.0, the same layout): one kho_vmalloc chunk per file with
    // folios (5 of the 6), one extent-stream page each but the 1 GiB file's two (2,048 one-folio
    // extents, 6,146 bytes); no KHO xarray is handed over.
    expect(s.handover.structures).toMatchObject({ 'memfd vmalloc chunk': 5, 'memfd extent stream': 6 });
    expect(s.handover.structures['memfd xarray node']).toBeUndefined();
  });

  it('inspect decodes the dump without the kernel: root FDT, tracker, LUO sessions and files', () => {
    const r = cli(['inspect', dump]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('compatible = "kho-v4";');
    expect(r.stdout).toMatch(/LUO at 0x[0-9a-f]+: compatible "luo-v5", liveupdate_num 1, 3 sessions/);
    expect(r.stdout).toMatch(/token 1: compatible "memfd@4\.1\.0" \(memfd 4\.1\.0\)/);
    expect(r.stdout).toMatch(/nr_folios 2048, nr_extents 2048, stream_bytes 6146, .*crc32 0x[0-9a-f]+\n {6}pages: memfd header 1, memfd vmalloc chunk 1, memfd extent stream 2; 2,048 data pages/);
    expect(r.stdout).toMatch(/compatible "hugetlb-memfd@2\.0\.0" \(hugetlb-memfd 2\.0\.0\)/);
    expect(r.stdout).toMatch(/order 9 \(2 MiB blocks\): 1,024 blocks/);
    expect(r.stdout).toContain('problems: none');
  });

  it('inspect --json gives the same decode as data', () => {
    const r = cli(['inspect', '--json', dump]);
    expect(r.code).toBe(0);
    const x = JSON.parse(r.stdout);
    expect(x.fdt.compatible).toBe('kho-v4');
    expect(x.luo.compatible).toBe('luo-v5');
    expect(x.luo.sessions.map((s: { name: string }) => s.name)).toEqual(['vm-web', 'vm-db', 'vm-batch']);
    const files = x.luo.sessions.flatMap((s: { files: Array<{ compatible: string }> }) => s.files.map((f) => f.compatible));
    expect(files.filter((c: string) => c === 'memfd@4.1.0')).toHaveLength(5);
    const order9 = x.tracker.orders.find((o: { order: number }) => o.order === 9);
    expect(order9).toMatchObject({ blocks: 1024, pages: 524_288 });
    expect(x.kexecMetadata).toEqual({ previousRelease: '7.1.0', kexecCount: 0 });
    expect(x.problems).toEqual([]);
  });

  it('inspect reports a corrupted handover as a problem (exit 1), decoded from bytes alone', () => {
    const d = JSON.parse(readFileSync(dump, 'utf8'));
    const fdtPage = d.pages.find((p: { role: string }) => p.role === 'kho root fdt');
    const bytes = Buffer.from(fdtPage.data, 'base64');
    bytes[0] = 0; // the FDT magic
    fdtPage.data = bytes.toString('base64');
    const bad = path.join(dir, 'corrupt.json');
    writeFileSync(bad, JSON.stringify(d));
    const r = cli(['inspect', bad]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/root FDT at 0x[0-9a-f]+ is invalid: FDT_ERR_BADMAGIC/);
  });
});

describe('liveupdate usage and bad input', () => {
  const dir = tempDir('cli-bad');
  afterAll(() => removeDir(dir));

  it('--help documents the commands and the exit codes', () => {
    const r = cli(['--help']);
    expect(r.code).toBe(0);
    for (const cmd of ['run', 'inspect', 'report']) expect(r.stdout).toMatch(new RegExp(`^  ${cmd} `, 'm'));
    expect(r.stdout).toMatch(/Exit codes:\n\s+0 +ok.*\n\s+1 .*\n\s+2 +bad usage.*\n\s+3 +internal error/);
  });

  it('an unknown option is a usage error (exit 2)', () => {
    const r = cli(['run', '--frobnicate']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("unknown option '--frobnicate'");
  });

  it('a scenario file that fails the schema exits 2 naming the field and the line', () => {
    const file = path.join(dir, 'bad-size.json');
    writeFileSync(file, scenarioText(`[
    {
      "name": "vm",
      "files": [
        { "token": 1, "type": "memfd", "size": "lots", "fill": "pattern" }
      ]
    }
  ]`));
    const r = cli(['run', file]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain(`${file}:10: /sessions/0/files/0/size: must match format "size"`);
  });

  it('invalid JSON exits 2 with the line of the syntax error', () => {
    const file = path.join(dir, 'bad-json.json');
    writeFileSync(file, scenarioText('[\n    { "name": "vm", "files": [] },\n  ]'));
    const r = cli(['run', '--json', file]);
    expect(r.code).toBe(2);
    expect(JSON.parse(r.stdout)).toMatchObject({ ok: false, exitCode: 2 });
    expect(r.stderr).toMatch(new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:8: /: is not valid JSON`));
  });

  it('a size that is not whole pages is caught before anything runs (exit 2, field and line)', () => {
    const file = path.join(dir, 'odd-size.json');
    writeFileSync(file, scenarioText('[\n    { "name": "vm", "files": [\n      { "token": 1, "type": "memfd", "size": "6000", "fill": "zero" }\n    ] }\n  ]'));
    const r = cli(['run', file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/odd-size\.json:8: \/sessions\/0\/files\/0\/size: size 6000 is not a multiple of the 4 KiB page/);
  });

  it('a target kernel that cannot read the memfd format refuses the update before the jump (exit 1)', () => {
    const file = path.join(dir, 'refused.json');
    writeFileSync(file, scenarioText('[{ "name": "vm", "files": [{ "token": 1, "type": "memfd", "size": "4MiB", "fill": "pattern" }] }]', '{}'));
    const r = cli(['run', '--json', '--no-progress', file]);
    expect(r.code).toBe(1);
    const s = JSON.parse(r.stdout);
    expect(s).toMatchObject({ ok: false, exitCode: 1, outcome: 'rolled-back', leaks: { blocks: 0 } });
    expect(s.error).toMatch(/@liveupdate\/plugin-memfd: format 'memfd' \(writes 1\.0\.0, 2\.0\.0, 3\.0\.0, 3\.1\.0, 3\.2\.0, 4\.0\.0, 4\.1\.0\) is not read by kernel 7\.2\.0/);
  });

  it('runs an upgrade from released plugin-memfd 2.0.0 (installed beside 4.0.0 under an npm alias) in the negotiated memfd-v2', () => {
    const file = path.join(dir, 'upgrade.json');
    writeFileSync(file, scenarioText(
      '[{ "name": "vm", "files": [{ "token": 1, "type": "memfd", "size": "8MiB", "fill": "pattern", "touched": 0.5, "seals": ["grow"] }] }]',
    ).replace(`"from": { "release": "7.1.0", "plugins": { ${MEMFD}: "4.0.0" } }`, `"from": { "release": "7.1.0", "plugins": { ${MEMFD}: "2.0.0" } }`));
    const r = cli(['run', '--json', '--no-progress', file]);
    const s = JSON.parse(r.stdout);
    expect(s).toMatchObject({ ok: true, outcome: 'updated', leaks: { blocks: 0 }, dataCheck: { passed: true } });
    // memfd-v2 materializes every hole at preserve: all 2,048 pages travel, the 1,024 never written read zero.
    expect(s.dataCheck.counts).toEqual({ 'pattern pages compared byte for byte': 1024, 'unwritten resident pages read zero': 1024 });
    expect(s.formats.files).toEqual([{ family: 'memfd', version: '2.0.0', compatible: 'memfd-v2', files: 1 }]);
    expect(s.objects[0]).toMatchObject({ preservedPages: 2048, restoredPages: 2048, check: 'passed', createdBy: '@liveupdate/plugin-memfd@2.0.0', restoredBy: '@liveupdate/plugin-memfd@4.0.0' });
    expect(r.code).toBe(0);
  });

  it('a plugin version that is not installed is a bad scenario (exit 2, field and line, the installed versions)', () => {
    const file = path.join(dir, 'unknown-version.json');
    writeFileSync(file, scenarioText('[]', `{ ${MEMFD}: "9.9.9" }`));
    const r = cli(['run', file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('unknown-version.json:5: /to/plugins/@liveupdate~1plugin-memfd: @liveupdate/plugin-memfd@9.9.9 is not installed (installed: 1.0.0, 2.0.0, 3.0.0, 3.1.0, 4.0.0)');
  });

  it('a plugin that is not installed at all is named, with how to install it', () => {
    const file = path.join(dir, 'no-plugin.json');
    writeFileSync(file, scenarioText('[]', '{ "@example/counter": "1.0.0" }'));
    const r = cli(['run', file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('no-plugin.json:5: /to/plugins/@example~1counter: plugin @example/counter is not installed (npm i @example/counter');
  });

  it('an object type no loaded plugin declares is a bad field (exit 2), naming the types the plugins declare', () => {
    const file = path.join(dir, 'unknown-type.json');
    writeFileSync(file, scenarioText('[\n    { "name": "vm", "objects": [\n      { "token": 1, "type": "kvm-vm", "vcpus": 2 }\n    ] }\n  ]'));
    const r = cli(['run', file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`${file}:8: /sessions/0/objects/0/type: must be one of "memfd", "hugetlb-memfd"`);
  });

  it('inspect of a file that is not a dump exits 2', () => {
    const file = path.join(dir, 'not-a-dump.json');
    writeFileSync(file, '{"format": "something-else"}');
    const r = cli(['inspect', file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('/format must be "liveupdate-handover-dump"');
  });
});
