/**
 * The built-in scenario through the real CLI (packages/cli/dist/bin.js, as users run it): run
 * with --json, --dump and --report, inspect of the dump and of a dump with one corrupted byte,
 * a short fuzz, and a matrix of three releases side by side (pci_ser v6-patch02, v6, v7).
 * Everything the CLI knows about PCI comes from plugin-pci's `tools`.
 */
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pci from '../src/index.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const BIN = path.join(ROOT, 'packages/cli/dist/bin.js');
const PKG = path.join(ROOT, 'packages/plugin-pci');

function cli(args: readonly string[], cwd = ROOT): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', cwd, env: { ...process.env, FORCE_COLOR: '0' }, maxBuffer: 64 << 20 });
  if (r.error) throw r.error;
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

interface DumpFile { token: string; compatible: string; data: string; problems: string[] }

describe('pci-continuous-dma through the CLI', { timeout: 180_000 }, () => {
  let dir = '';
  let dump = '';
  let scenarioFile = '';
  beforeAll(() => {
    mkdirSync(path.join(ROOT, '.scratch'), { recursive: true });
    dir = mkdtempSync(path.join(ROOT, '.scratch', 'plugin-pci-cli-'));
    dump = path.join(dir, 'handover.json');
    scenarioFile = path.join(dir, 'pci-continuous-dma.json');
    const builtin = pci().tools?.scenarios?.find((s) => s.name === 'pci-continuous-dma');
    writeFileSync(scenarioFile, JSON.stringify(builtin?.scenario));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('run ends ok and prints the pci section: gap-free DMA in surviving guest RAM, the DMA gap and the blackout', () => {
    const r = cli(['run', '--scenario', '@liveupdate/plugin-pci:pci-continuous-dma', '--dump', dump, '--report', path.join(dir, 'report.html')]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^result {10}ok: kernel 7\.2\.0 runs every object from bytes alone$/m);
    expect(r.stdout).toMatch(/^section pci: passed: dsa0: \d+ DMA writes, \d+ after the kexec, gap-free, all in surviving guest RAM; longest DMA gap 10\.0 us \(10\.0 us across the kexec\)$/m);
    expect(r.stdout).toMatch(/^section pci: passed: dsa2: .*gap-free, all in surviving guest RAM/m);
    expect(r.stdout).toMatch(/^section pci: passed: vm0: blackout [0-9.]+ ms \(machine clock/m);
    expect(r.stdout).toMatch(/vm0 +1 +memfd +size 1MiB, fill zero, contents device-written +256 +256 +memfd@4\.1\.0 +passed/);
    expect(readFileSync(path.join(dir, 'report.html'), 'utf8')).toContain('pci-continuous-dma');
  });

  it('run --json gives the outcome and the section checks as data', () => {
    const r = cli(['run', '--scenario', '@liveupdate/plugin-pci:pci-continuous-dma', '--json']);
    expect(r.code).toBe(0);
    const x = JSON.parse(r.stdout) as { ok: boolean };
    expect(x.ok).toBe(true);
    const x2 = JSON.parse(r.stdout) as { sectionChecks: Array<{ section: string; ok: boolean; summary: string }> };
    expect(x2.sectionChecks.map((c) => [c.section, c.ok, c.summary.split(':')[0]])).toEqual([['pci', true, 'dsa0'], ['pci', true, 'dsa2'], ['pci', true, 'vm0']]);
  });

  it('run --json carries each section check\'s counters: DMA writes and gaps per engine, the blackout per VM', () => {
    const r = cli(['run', '--scenario', '@liveupdate/plugin-pci:pci-continuous-dma', '--json']);
    const x = JSON.parse(r.stdout) as { sectionChecks: Array<{ counts: Record<string, number> }> };
    const [dsa0, dsa2, vm0] = x.sectionChecks.map((c) => c.counts);
    for (const c of [dsa0, dsa2]) {
      expect(Object.keys(c ?? {})).toEqual(['dmaWrites', 'dmaWritesAfterKexec', 'dmaMaxGapNs', 'dmaGapAcrossKexecNs']);
      expect([c?.dmaMaxGapNs, c?.dmaGapAcrossKexecNs]).toEqual([10_000, 10_000]);
    }
    expect(Object.keys(vm0 ?? {})).toEqual(['blackoutNs']);
    expect(vm0?.blackoutNs).toBeGreaterThan(0);
  });

  it('inspect decodes the pci_ser FLB and every vfio-pci record with no problem', () => {
    const r = cli(['inspect', '--json', dump]);
    const x = JSON.parse(r.stdout) as { luo: { sessions: Array<{ files: DumpFile[] }>; flbs: Array<{ name: string; owner: string; fields: Record<string, string> }> }; problems: string[] };
    const files = x.luo.sessions.flatMap((s) => s.files).filter((f) => f.compatible.startsWith('vfio-pci'));
    expect(files.map((f) => [f.token, f.compatible, f.problems])).toEqual([['10', 'vfio-pci@2.1.0', []], ['11', 'vfio-pci@2.1.0', []], ['12', 'vfio-pci@2.1.0', []]]);
    const flb = x.luo.flbs.find((f) => f.name === 'pci-v2');
    expect(flb?.owner).toBe('@liveupdate/plugin-pci');
    expect(flb?.fields).toMatchObject({ layout: 'v7', nr_devices: '7', devices: '7' });
    // Only problems outside plugin-pci may remain (plugin-memfd's own decoders are another package's).
    expect(x.problems.filter((p) => !/memfd/.test(p))).toEqual([]);
  });

  it('inspect reports one corrupted byte of a vfio-pci record as a problem (exit 1)', () => {
    const d = JSON.parse(readFileSync(dump, 'utf8')) as { pages: Array<{ phys: string; data: string }> };
    const x = JSON.parse(cli(['inspect', '--json', dump]).stdout) as { luo: { sessions: Array<{ files: DumpFile[] }> } };
    const rec = x.luo.sessions.flatMap((s) => s.files).find((f) => f.token === '10') as DumpFile;
    const at = Number(rec.data);
    const page = d.pages.find((p) => Number(p.phys) === at - (at % 4096)) as { data: string };
    const bytes = Buffer.from(page.data, 'base64');
    bytes[(at % 4096) + 7] = (bytes[(at % 4096) + 7] as number) | 0x80; // flags bit 15: unknown to vfio-pci 2.0.0
    page.data = bytes.toString('base64');
    const bad = path.join(dir, 'corrupt.json');
    writeFileSync(bad, JSON.stringify(d));
    const r = cli(['inspect', bad]);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('  - session vm0 token 10: unknown flags 0x8000');
  });

  it('a short fuzz of the handover ends with 0 wrong answers', () => {
    const r = cli(['fuzz', scenarioFile, '--runs', '6', '--json', '--no-progress']);
    const x = JSON.parse(r.stdout) as { ok: boolean; outcomes: Record<string, number> };
    expect(r.code).toBe(0);
    expect(x.ok).toBe(true);
    expect(x.outcomes['wrong-answer']).toBe(0);
    expect(x.outcomes.uncaught).toBe(0);
    expect(x.outcomes.unexpected).toBe(0);
    expect(Object.values(x.outcomes).reduce((a, b) => a + b, 0)).toBe(6);
  });

  it('matrix of three releases: same-layout pairs update, a reader without the writer\'s pci_ser major refuses before freeze', () => {
    // Two older releases installed side by side (as `npm i pci-v6@...` would): copies of this
    // package whose version and default pci_ser layout (DEFAULT_PCI_ABI) are those of a v6-era build.
    const project = path.join(dir, 'project');
    for (const [alias, version, abi] of [['pci-v6', '0.0.6', 'v6'], ['pci-p02', '0.0.2', 'v6-patch02']] as const) {
      const to = path.join(project, 'node_modules', alias);
      mkdirSync(to, { recursive: true });
      cpSync(path.join(PKG, 'dist'), path.join(to, 'dist'), { recursive: true });
      const pkg = JSON.parse(readFileSync(path.join(PKG, 'package.json'), 'utf8')) as Record<string, unknown>;
      writeFileSync(path.join(to, 'package.json'), JSON.stringify({ ...pkg, version }));
      // dist/index.js is the package's bundle (scripts/bundle.mjs): one declaration to rewrite.
      const v = path.join(to, 'dist/index.js');
      const src = readFileSync(v, 'utf8');
      const patched = src.replace('DEFAULT_PCI_ABI = "v7"', `DEFAULT_PCI_ABI = "${abi}"`);
      expect(patched).not.toBe(src);
      writeFileSync(v, patched);
    }
    const r = cli(['matrix', scenarioFile, '--plugin', '@liveupdate/plugin-pci', '--versions', '0.0.2,0.0.6,0.1.0', '--json', '--no-progress'], project);
    expect(r.code).toBe(0);
    const x = JSON.parse(r.stdout) as { rows: Array<{ from: string; cells: Array<{ to: string; outcome: string; reason?: string }> }> };
    const table = x.rows.map((row) => [row.from, ...row.cells.map((c) => c.outcome)]);
    expect(table).toEqual([
      ['0.0.2', 'ok', 'refused', 'refused'],
      ['0.0.6', 'refused', 'ok', 'ok'],
      ['0.1.0', 'refused', 'refused', 'ok'],
    ]);
    expect(JSON.stringify(x)).toContain("format 'pci' writes 4.0.0 but kernel 7.2.0 reads '^2.0.0'");
  });
});
