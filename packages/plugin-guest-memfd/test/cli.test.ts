/**
 * The real consumer: `liveupdate run`, `inspect`, `fuzz` and `matrix` on this plugin's built-in
 * scenarios, through nothing but its public plugin surface (object kind 'kvm-vm', decoders,
 * scenarios). The matrix qualifies this release against a build pinned to what the posted
 * series writes (guest_memfd_luo_v1 only, called 0.9.0 here), found through LIVEUPDATE_PLUGIN_PATH.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import guestMemfd from '../src/index.js';
import { cli, corruptDump, json, pinnedBuild, removeDir, scenarioFile, tempDir } from './cli-support.js';

const PKG = '@liveupdate/plugin-guest-memfd';
const VERSION = guestMemfd().version;

interface RunJson {
  ok: boolean; outcome: string; exitCode: number;
  dataCheck: { passed: boolean; objectsChecked: number; counts: Record<string, number> };
  formats: { files: Array<{ family: string; version: string; compatible: string; files: number }> };
  objects: Array<{ type: string; token: number; compatible: string; check: string; checked: string; counts: Record<string, number>; preservedPages: number }>;
  leaks: { blocks: number; pages: number; poisonReads: number };
}

describe('liveupdate on plugin-guest-memfd\'s built-in scenarios', { timeout: 60_000 }, () => {
  let dir = '';
  let pinned = '';
  beforeAll(() => {
    dir = tempDir();
    pinned = pinnedBuild(dir, '0.9.0', { writes: ['1.0.0'], reads: '^1.0.0' });
  });
  afterAll(() => { if (dir) removeDir(dir); });

  it('run guest-memfd-vm: ok, every guest page checked, the VM\'s blackout read off the machine clock', () => {
    const r = cli(['run', '--scenario', `${PKG}:guest-memfd-vm`, '--json']);
    expect(r.stderr).toBe('');
    const s = json<RunJson>(r);
    expect(s).toMatchObject({ ok: true, outcome: 'updated', exitCode: 0, leaks: { blocks: 0, pages: 0, poisonReads: 0 } });
    expect(s.formats.files).toEqual([{ family: 'guest_memfd', version: '2.1.0', compatible: 'guest_memfd@2.1.0', files: 1 }]);
    const [vm] = s.objects;
    expect(vm).toMatchObject({ type: 'kvm-vm', token: 2, compatible: 'guest_memfd@2.1.0', check: 'passed', preservedPages: 57 });
    expect(vm?.counts).toMatchObject({ guestPages: 129, memoryFaults: 0, vcpus: 2 });
    const blackout = vm?.counts['ns paused (VM vm0/2)'] as number;
    expect(blackout).toBeGreaterThan(0);
    expect(vm?.checked).toBe(`2 vCPUs resumed after ${(blackout / 1e6).toFixed(3)} ms paused (machine clock) and halted; 57 guest pages identical at the pause, 129 at the end`);
    expect(s.dataCheck).toMatchObject({ passed: true, objectsChecked: 1 });
    expect(r.code).toBe(0);
  });

  it('run guest-memfd-vm-with-memfd: the VM file, its guest_memfd and a sealed memfd of VMM state come back in one session', () => {
    const r = cli(['run', '--scenario', `${PKG}:guest-memfd-vm-with-memfd`, '--json']);
    const s = json<RunJson>(r);
    expect(s).toMatchObject({ ok: true, outcome: 'updated', exitCode: 0, leaks: { blocks: 0, pages: 0, poisonReads: 0 } });
    expect(s.objects.map((o) => [o.type, o.token, o.compatible, o.check])).toEqual([
      ['kvm-vm', 2, 'guest_memfd@2.1.0', 'passed'],
      ['memfd', 3, 'memfd@4.1.0', 'passed'],
    ]);
    expect(s.dataCheck).toMatchObject({ passed: true, objectsChecked: 2 });
    expect(s.dataCheck.counts).toMatchObject({ guestPages: 129, 'pattern pages compared byte for byte': 256 });
    expect(r.code).toBe(0);
  });

  it('run guest-memfd-vm prints the summary with the object\'s counts', () => {
    const r = cli(['run', '--scenario', `${PKG}:guest-memfd-vm`]);
    expect(r.stdout).toMatch(/^result {10}ok: kernel 7\.2\.0 runs every object from bytes alone$/m);
    expect(r.stdout).toMatch(/^formats {9}guest_memfd 2\.1\.0 as "guest_memfd@2\.1\.0" \(1 file\)/m);
    expect(r.stdout).toMatch(/^data check {6}passed: 1 object; 129 guestPages, 0 memoryFaults, 2 vcpus, [\d,]+ ns paused \(VM vm0\/2\)$/m);
    expect(r.code).toBe(0);
  });

  it('run guest-memfd-two-vms: each VM\'s paused time is its own count, read off the machine clock', () => {
    const r = cli(['run', '--scenario', `${PKG}:guest-memfd-two-vms`, '--json']);
    const s = json<RunJson>(r);
    expect(s).toMatchObject({ ok: true, outcome: 'updated' });
    expect(s.objects.map((o) => Object.keys(o.counts))).toEqual([
      ['guestPages', 'memoryFaults', 'vcpus', 'ns paused (VM vm0/2)'],
      ['guestPages', 'memoryFaults', 'vcpus', 'ns paused (VM vm1/2)'],
    ]);
    const c = s.dataCheck.counts;
    expect(c).toMatchObject({ guestPages: 129 + 257, memoryFaults: 0, vcpus: 3 });
    // Both VMs are paused through the same jump and boot: more than the kexec's own phases.
    expect(c['ns paused (VM vm0/2)']).toBeGreaterThan(300_000_000);
    expect(c['ns paused (VM vm1/2)']).toBeGreaterThan(300_000_000);
    expect(r.code).toBe(0);
  });

  it('run guest-memfd-relaxed-fault: ok; this release\'s sparse format lets faults allocate until freeze (0 exits)', () => {
    const s = json<RunJson>(cli(['run', '--scenario', `${PKG}:guest-memfd-relaxed-fault`, '--json']));
    expect(s).toMatchObject({ ok: true, outcome: 'updated' });
    expect(s.objects[0]?.counts).toMatchObject({ guestPages: 129, memoryFaults: 0, vcpus: 2 });
  });

  it('the relaxed-fault flow under guest_memfd_luo_v1 (the pinned 0.9.0 build): both vCPUs exit with a memory fault, then resume after the kexec', () => {
    const file = scenarioFile(dir, guestMemfd(), 'guest-memfd-relaxed-fault', { from: '0.9.0', to: '0.9.0' });
    const r = cli(['run', file, '--json'], { LIVEUPDATE_PLUGIN_PATH: pinned });
    const s = json<RunJson>(r);
    expect(s).toMatchObject({ ok: true, outcome: 'updated' });
    expect(s.formats.files).toEqual([{ family: 'guest_memfd', version: '1.0.0', compatible: 'guest_memfd_luo_v1', files: 1 }]);
    // Only page 0 (program and counters) existed at preservation: each vCPU's first store faulted.
    expect(s.objects[0]).toMatchObject({ preservedPages: 1, counts: { guestPages: 129, memoryFaults: 2, vcpus: 2 } });
    expect(r.code).toBe(0);
  });

  it('--dump and --report write their files; inspect decodes the dump with no problems', () => {
    const dump = path.join(dir, 'vm-dump.json');
    const html = path.join(dir, 'vm.html');
    expect(cli(['run', '--scenario', `${PKG}:guest-memfd-vm`, '--dump', dump, '--report', html]).code).toBe(0);
    expect(readFileSync(html, 'utf8')).toContain('guest-memfd-vm');
    const r = cli(['inspect', dump]);
    expect(r.stdout).toContain('token 1: compatible "kvm_vm_luo_v1" (kvm_vm 1.0.0), data 0x146000  format 1.0.0, type 0, kho_folios 0x0');
    expect(r.stdout).toMatch(/token 2: compatible "guest_memfd@2\.1\.0" \(guest_memfd 2\.1\.0\), data 0x147000 {2}format 2\.1\.0, size 532480, flags 0x3, nr_folios 58, vm_token 1/);
    expect(r.stdout).toContain('pages: guest_memfd_luo_ser 1, kho xarray node 6; 58 data pages');
    expect(r.stdout).toMatch(/^problems: none$/m);
    expect(r.code).toBe(0);
  });

  it('inspect of the dump with one byte of the guest_memfd header flipped: the checksum problem, exit 1', () => {
    const dump = path.join(dir, 'vm-dump.json');
    if (!existsSync(dump)) expect(cli(['run', '--scenario', `${PKG}:guest-memfd-vm`, '--dump', dump]).code).toBe(0);
    const bad = path.join(dir, 'vm-dump-bad.json');
    corruptDump(dump, bad, '0x147000', 0); // size: 532480 -> 532481
    const r = cli(['inspect', bad]);
    expect(r.stdout).toContain('size 532481');
    expect(r.stdout).toMatch(/^ {2}- session vm0 token 2: header checksum 0x[0-9a-f]+, header 0x[0-9a-f]+$/m);
    expect(r.code).toBe(1);
  });

  it('fuzz (30 runs) corrupts the plugin\'s pages among the core\'s: no wrong answer, nothing uncaught', () => {
    const file = scenarioFile(dir, guestMemfd(), 'guest-memfd-vm');
    const r = cli(['fuzz', file, '--runs', '30', '--json']);
    const s = json<{ ok: boolean; runs: number; targets: Record<string, number>; outcomes: Record<string, number>; byStructure: Record<string, { runs: number }> }>(r);
    expect(s.runs).toBe(30);
    expect(s.targets).toMatchObject({ guest_memfd_luo_ser: 1, 'kho xarray node': 6, kvm_luo_ser: 1 });
    expect(s.outcomes).toMatchObject({ 'wrong-answer': 0, uncaught: 0, unexpected: 0 });
    expect((s.outcomes.updated ?? 0) + (s.outcomes['file-error'] ?? 0) + (s.outcomes['refused-incoming'] ?? 0)).toBe(30);
    expect(s.byStructure.guest_memfd_luo_ser?.runs).toBeGreaterThan(0);
    expect(s.ok).toBe(true);
    expect(r.code).toBe(0);
  });

  it(`matrix 0.9.0 (guest_memfd_luo_v1 only) x ${VERSION}: every pair updates, in the format both read`, () => {
    const file = scenarioFile(dir, guestMemfd(), 'guest-memfd-vm');
    const r = cli(['matrix', file, '--plugin', PKG, '--versions', `0.9.0,${VERSION}`, '--json'], { LIVEUPDATE_PLUGIN_PATH: pinned });
    const s = json<{ ok: boolean; rows: Array<{ from: string; cells: Array<{ to: string; outcome: string; compatible: string[] }> }> }>(r);
    expect(s.rows.map((row) => [row.from, row.cells.map((c) => [c.to, c.outcome, c.compatible])])).toEqual([
      ['0.9.0', [['0.9.0', 'ok', ['guest_memfd_luo_v1']], [VERSION, 'ok', ['guest_memfd_luo_v1']]]],
      [VERSION, [['0.9.0', 'ok', ['guest_memfd_luo_v1']], [VERSION, 'ok', ['guest_memfd@2.1.0']]]],
    ]);
    expect(r.code).toBe(0);
  });
});
