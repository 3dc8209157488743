/**
 * Updated runs that broke an invariant: the harness reports it (r.violations), and the fuzzer
 * sorts it by the kernel's rules (src/fuzz/violations.ts). A page whose only reference was
 * corrupted stays preserved and unclaimed (upstream's KHO does the same: accepted); a
 * liveupdate_num taken from a corrupted LUO blob is what upstream's luo_core.c does (accepted);
 * anything else (a poisoned read, a leak after a corruption of a plugin's page) is a finding.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { runCampaign, type CampaignResult } from '../src/fuzz/campaign.js';
import { pluginScenarios } from '../src/fuzz/scenarios.js';
import { judgeViolations } from '../src/fuzz/violations.js';

describe('judgeViolations()', () => {
  const leak = '1 preserved block(s) (1 pages) neither restored nor released: 0x6202000 order 0';
  it('a leak after a corruption of the core\'s handover metadata is upstream-defined (accepted)', () => {
    for (const s of ['root FDT', 'tracker node', 'LUO blob', 'session block', 'file block', 'FLB page']) {
      expect(judgeViolations(s, [leak]), s).toEqual({ accepted: [leak], findings: [] });
    }
  });

  it('a leak after a corruption of a plugin\'s own page is a finding (its decoder must release what it refuses)', () => {
    expect(judgeViolations('memfd header', [leak])).toEqual({ accepted: [], findings: [leak] });
  });

  it('liveupdate_num off by the corrupted amount is accepted only when the LUO blob was corrupted', () => {
    const num = 'liveupdate_num 1 after 1: not advanced by one';
    expect(judgeViolations('LUO blob', [num])).toEqual({ accepted: [num], findings: [] });
    expect(judgeViolations('session block', [num])).toEqual({ accepted: [], findings: [num] });
  });

  it('a poisoned read is always a finding', () => {
    const poison = '1 read(s) of poisoned memory: something was not preserved';
    expect(judgeViolations('root FDT', [poison, leak])).toEqual({ accepted: [leak], findings: [poison] });
  });
});

describe('the campaign counts updated runs with violations (plugin-memfd hugetlb scenario)', () => {
  let r: CampaignResult;
  beforeAll(async () => {
    const s = (await pluginScenarios()).find((x) => x.label === '@liveupdate/plugin-memfd:hugetlb');
    if (!s) throw new Error('no hugetlb scenario');
    const seeds = [81, 1173, 10031];
    r = await runCampaign({ scenario: s.scenario, label: s.label, seed: 0, runs: seeds.length, seeds: (i) => seeds[i] as number, keepRuns: true });
  }, 120_000);

  it('seed 81 retargets the FLB page\'s data pointer: updated, the hugeTLB FLB\'s page leaks as upstream\'s would (accepted)', () => {
    expect(r.results[0]).toMatchObject({
      seed: 81, structure: 'FLB page', mutation: 'retarget-page', outcome: 'updated', violations: [],
      accepted: ['1 preserved block(s) (1 pages) neither restored nor released: 0x6202000 order 0'],
    });
  });

  it('seed 1173 duplicates a root FDT entry: updated after a read of poisoned memory, a finding in its own column', () => {
    expect(r.results[1]).toMatchObject({
      seed: 1173, structure: 'root FDT', mutation: 'duplicate', outcome: 'updated',
      violations: ['1 read(s) of poisoned memory: something was not preserved'],
    });
  });

  it('seed 10031 aims the hugeTLB FLB\'s data beyond RAM: the FLB is refused (EINVAL, no exception), pools sized as configured, its page leaks (accepted)', () => {
    expect(r.results[2]).toMatchObject({
      seed: 10031, structure: 'FLB page', mutation: 'xor', outcome: 'updated', violations: [],
      accepted: ['1 preserved block(s) (1 pages) neither restored nor released: 0x6202000 order 0'],
    });
    expect([r.updatedWithViolations, r.updatedAccepted, r.firstViolation?.seed]).toEqual([1, 2, 1173]);
  });
});

describe('a kernel B that cannot boot on the handover (plugin-memfd three-vms scenario)', () => {
  it('seed 26676 duplicates a scratch array entry: no room for the memmap in the scratch areas, refused-incoming (was an uncaught BootError)', async () => {
    const s = (await pluginScenarios()).find((x) => x.label === '@liveupdate/plugin-memfd:three-vms');
    if (!s) throw new Error('no three-vms scenario');
    const r = await runCampaign({ scenario: s.scenario, label: s.label, seed: 26676, runs: 1, keepRuns: true });
    expect(r.results.map((x) => [x.structure, x.mutation, x.outcome, x.detail])).toEqual([
      ['scratch array', 'duplicate', 'refused-incoming', 'cannot allocate the memmap of node 0 inside scratch'],
    ]);
  }, 120_000);
});
