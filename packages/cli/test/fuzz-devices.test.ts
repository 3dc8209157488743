/**
 * Forking a machine with devices: the campaign snapshots the whole machine (Machine.snapshot:
 * memory copy on write, the clock, PCI config spaces and bus numbers, DMA engines and their
 * logs, VT-d registers, the hypervisor) right after the jump, so kernel B can boot from the same
 * state again and again. A second kernel B booted from the restored machine gives the same
 * result, byte for byte, as the first; and the campaign and `liveupdate fuzz --scenario` run the
 * plugins' device scenarios.
 */
import { createHash } from 'node:crypto';
import { pciHostOf, PAGE_SIZE, type Machine } from '@liveupdate/hw';
import { runScenario, type ScenarioRunResult } from '@liveupdate/sdk/testing';
import { beforeAll, describe, expect, it } from 'vitest';
import { runCampaign, scenarioOfSeed, type CampaignResult } from '../src/fuzz/campaign.js';
import { pluginScenarios, type FuzzScenario } from '../src/fuzz/scenarios.js';
import { resolvePlugins } from '../src/plugins.js';
import { cli } from './support/cli.js';

let scenarios: FuzzScenario[];
const PCI = '@liveupdate/plugin-pci:pci-continuous-dma';
const byLabel = (label: string): FuzzScenario => scenarios.find((s) => s.label === label) as FuzzScenario;
beforeAll(async () => { scenarios = await pluginScenarios(); }, 120_000);

/** What a run's result says (its timings aside: wall time differs from run to run). */
const stable = (r: ScenarioRunResult): string => JSON.stringify({
  outcome: r.outcome, harnessOutcome: r.harnessOutcome, error: r.error, violations: r.violations, leaks: r.leaks, poisonReads: r.poisonReads,
  liveupdateNum: r.liveupdateNum, formats: r.formats, sectionChecks: r.sectionChecks,
  objects: r.objects.map((o) => ({ session: o.session, token: o.token, compatible: o.compatible, restoredPages: o.restoredPages, check: o.check, error: o.error })),
}, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));

/** What kernel B left on the machine: the clock, every DMA engine's log, every config space, and the bytes of memory that any engine wrote. */
function machineImage(m: Machine): string {
  const h = createHash('sha256');
  h.update(String(m.clock.now));
  const host = pciHostOf(m);
  for (const f of host?.topology.functions() ?? []) h.update(f.config.bytes);
  for (const [name, e] of host?.engines ?? []) {
    h.update(`${name}:${e.log.count}:${e.pending}:${e.completed}`);
    h.update(new Uint8Array(e.log.phys.buffer, 0, e.log.count * 8));
    const pages = new Set<number>();
    for (let i = 0; i < e.log.count; i++) pages.add(Math.floor((e.log.phys[i] as number) / PAGE_SIZE));
    for (const p of [...pages].sort((a, b) => a - b)) h.update(m.memory.read(p * PAGE_SIZE, PAGE_SIZE));
  }
  return h.digest('hex');
}

describe('a forked kernel B on a machine with devices', () => {
  it('pci-continuous-dma: after a kernel B boot and a restore, a second kernel B boot gives an identical result and leaves an identical machine', async () => {
    const { scenario } = byLabel(PCI);
    const from = (await resolvePlugins(scenario.from.plugins)).map((b) => b.create());
    const to = (await resolvePlugins(scenario.to.plugins)).map((b) => b.create());
    const seen: Array<{ result: string; image: string; outcome: string; dmaWrites: number }> = [];
    runScenario(scenario, {
      from, to,
      fork: (machine, bootB) => {
        const snap = machine.snapshot();
        for (let i = 0; i < 2; i++) {
          const r = bootB();
          const writes = [...(pciHostOf(machine)?.engines.values() ?? [])].reduce((n, e) => n + e.log.count, 0);
          seen.push({ result: stable(r), image: machineImage(machine), outcome: r.outcome, dmaWrites: writes });
          machine.restore(snap);
        }
      },
    });
    expect(seen).toHaveLength(2);
    expect(seen[0]?.outcome).toBe('updated');
    // DMA kept flowing through kernel B's boot: the engines wrote during it.
    expect(seen[0]?.dmaWrites).toBeGreaterThan(0);
    expect(seen[1]?.result).toBe(seen[0]?.result);
    expect(seen[1]?.image).toBe(seen[0]?.image);
    expect(seen[1]?.dmaWrites).toBe(seen[0]?.dmaWrites);
  }, 120_000);
});

describe('the campaign over every plugin scenario', () => {
  it('finds every installed plugin\'s built-in scenarios, devices included', () => {
    expect(scenarios.map((s) => s.label)).toEqual([
      '@liveupdate/plugin-guest-memfd:guest-memfd-relaxed-fault', '@liveupdate/plugin-guest-memfd:guest-memfd-two-vms',
      '@liveupdate/plugin-guest-memfd:guest-memfd-vm', '@liveupdate/plugin-guest-memfd:guest-memfd-vm-with-memfd',
      '@liveupdate/plugin-iommu:iommu-vfio-passthrough', '@liveupdate/plugin-memfd:hugetlb', '@liveupdate/plugin-memfd:small',
      '@liveupdate/plugin-memfd:three-vms', '@liveupdate/plugin-mshv:mshv-l1vh-1g-scattered', PCI,
    ]);
  });

  it('spreads seeds over the scenarios as a pure function of the seed', () => {
    const picks = Array.from({ length: 1000 }, (_, i) => scenarioOfSeed(1 + i, 10));
    expect(picks.slice(0, 3)).toEqual([scenarioOfSeed(1, 10), scenarioOfSeed(2, 10), scenarioOfSeed(3, 10)]);
    const counts = Array.from({ length: 10 }, (_, j) => picks.filter((p) => p === j).length);
    for (const n of counts) expect(n).toBeGreaterThan(60);
    expect(scenarioOfSeed(12345, 1)).toBe(0);
  });

  let pci: CampaignResult;
  beforeAll(async () => { pci = await runCampaign({ scenario: byLabel(PCI).scenario, label: PCI, seed: 280, runs: 10, keepRuns: true }); }, 120_000);

  it('runs a device scenario: pci-continuous-dma, 10 forked runs from seed 280, each one classified', () => {
    expect(pci.scenario).toBe(PCI);
    expect(pci.runs).toBe(10);
    expect(pci.results.map((r) => r.seed)).toEqual([280, 281, 282, 283, 284, 285, 286, 287, 288, 289]);
    expect(pci.outcomes.uncaught + pci.outcomes.unexpected).toBe(0);
    expect(pci.structures).toContain('pci_ser');
    expect(pci.structures).toContain('vfio_pci_core_device_ser');
    // Seed 287 swaps two files' entries of the luo-v5 file block (no check value there): with
    // vfio-pci@2.1.0 bound to its session and token, each device's record is refused (EINVAL),
    // where 2.0 gave one device another's state.
    expect(pci.results.filter((r) => r.outcome === 'wrong-answer')).toEqual([]);
    expect(pci.results.find((r) => r.seed === 287)).toMatchObject({ structure: 'file block', mutation: 'swap', outcome: 'file-error' });
  });

  it('liveupdate fuzz --scenario reproduces a campaign run of that scenario exactly', () => {
    const r = cli(['fuzz', '--scenario', PCI, '--seed', '287', '--runs', '1', '--json']);
    const f = JSON.parse(r.stdout) as { engine: string; results: Array<{ seed: number; structure: string; mutation: string; what: string; outcome: string; detail: string }>; reproduce: string };
    const run = pci.results.find((x) => x.seed === 287);
    expect(f.engine).toBe('structure');
    expect(f.results).toHaveLength(1);
    expect(f.results[0]).toMatchObject({ seed: 287, structure: run?.structure, mutation: run?.mutation, what: run?.what, outcome: run?.outcome, detail: run?.detail });
    expect([r.code, f.reproduce]).toEqual([0, null]);
  }, 120_000);

  // Seed 614 swaps two entries of a KHO tracker node (kho-v4 has no check value): deposited
  // pages of the hypervisor fall out of the preserved set, as they would upstream; the run fails.
  it('a failing run\'s reproduce line names the scenario (mshv seed 614, a KHO tracker node corrupted)', () => {
    const r = cli(['fuzz', '--scenario', '@liveupdate/plugin-mshv:mshv-l1vh-1g-scattered', '--seed', '614', '--runs', '1', '--json', '--no-progress']);
    const f = JSON.parse(r.stdout) as { results: Array<{ structure: string; outcome: string }>; reproduce: string };
    expect([r.code, f.results[0]?.structure, f.results[0]?.outcome]).toEqual([1, 'tracker node', 'wrong-answer']);
    expect(f.reproduce).toBe('liveupdate fuzz --scenario @liveupdate/plugin-mshv:mshv-l1vh-1g-scattered --seed 614 --runs 1');
  }, 120_000);
});
