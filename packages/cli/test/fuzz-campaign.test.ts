/**
 * A short forked campaign over the default fuzz scenario: kernel A once, 200 mutated handovers
 * booted from a copy-on-write snapshot. Every page of the handover is a target, every run ends
 * in a defined class, and the only wrong answers are the known cross-wirings of the upstream
 * LUO ABI (luo-v5 session and file blocks carry no integrity check: a session's file-set
 * pointer swapped or duplicated, or a file's data pointer retargeted to another file's header,
 * hands one VMM another VMM's memfd, as upstream would).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { runCampaign, type CampaignResult, type CampaignRun } from '../src/fuzz/campaign.js';
import { sweepFaults } from '../src/fuzz/fault-sweep.js';
import { classify } from '../src/fuzz/fuzz.js';
import { chooseMutation, mutatedPage } from '../src/fuzz/mutate.js';
import { noProgress } from '../src/output/progress.js';
import { builtinScenario } from '../src/scenario/load.js';
import { runScenario } from '../src/scenario/runner.js';
import { mutationTargets, structureList, preservedDataRuns } from '../src/fuzz/campaign.js';
import type { FaultSpec } from '@liveupdate/sdk/testing';

let result: CampaignResult;
const runs: CampaignRun[] = [];
beforeAll(async () => {
  result = await runCampaign({ seed: 1, runs: 200, onRun: (r) => { runs.push(r); } });
}, 120_000);

describe('fuzz campaign (200 forked runs, seed 1, one thread)', () => {
  it('mutates every structure of the handover: the core\'s, the scratch array, kexec-metadata and the plugin\'s', () => {
    expect(result.structures).toEqual(KNOWN_STRUCTURES);
    expect(new Set(runs.map((r) => r.structure))).toEqual(new Set(KNOWN_STRUCTURES));
  });

  it('runs 200 times with no uncaught exception and no unexpected outcome', () => {
    expect(result.runs).toBe(200);
    expect(result.outcomes.uncaught).toBe(0);
    expect(result.outcomes.unexpected).toBe(0);
    expect(result.outcomes.updated + result.outcomes['file-error'] + result.outcomes['refused-incoming'] + result.outcomes['wrong-answer']).toBe(200);
  });

  it('uses every mutation kind', () => {
    expect(new Set(runs.map((r) => r.mutation))).toEqual(new Set(['xor', 'retarget-page', 'retarget-folio', 'duplicate', 'count+1', 'count-1', 'count-0', 'count-max', 'cycle-self', 'cycle-earlier', 'swap']));
  });

  it('has no wrong answer: memfd@4.1.0 refuses a header reached through a rewired session or file block', () => {
    expect(runs.filter((r) => r.outcome === 'wrong-answer').map((r) => `${r.seed} ${r.structure} ${r.mutation}`)).toEqual([]);
  });

  it('ends seeds 52 and 195 (vm-a and vm-b swapped in the luo-v5 session block; wrong answers with memfd@4.0.0) in a file error', () => {
    for (const seed of [52, 195]) {
      expect(runs.find((r) => r.seed === seed), `seed ${seed}`).toMatchObject({ structure: 'session block', mutation: 'swap', outcome: 'file-error' });
    }
  });

  it('the same seed gives the same run', async () => {
    const again = await runCampaign({ seed: 17, runs: 1 });
    const first = runs.find((r) => r.seed === 17) as CampaignRun;
    expect(again.outcomes[first.outcome]).toBe(1);
    expect(again.table[first.structure]?.[first.mutation]?.[first.outcome]).toBe(1);
  }, 60_000);
});

/** The default fuzz scenario's handover: core structures, then the memfd plugin's decoder's pages. */
describe('a forked run ends as the same mutation replayed from scratch', () => {
  it.each([30, 87, 17, 100, 150])('seed %i: the same outcome class with kernel A once (fork) as with the whole scenario replayed', async (seed) => {
    const forked = runs.find((r) => r.seed === seed) as CampaignRun;
    const scenario = (await builtinScenario('fuzz')).scenario;
    // Replay: the same bytes written by 'corrupt' faults after the jump, kernel A run again.
    let faults: FaultSpec[] = [];
    await runScenario(scenario, {
      progress: noProgress,
      onHandover: (m, view) => {
        const targets = mutationTargets(m.memory, view);
        const ctx = { targets, dataRuns: view.dataRuns.length > 0 ? view.dataRuns : preservedDataRuns(view), pageCount: m.memory.pageCount };
        const mu = chooseMutation(seed, ctx, structureList(targets));
        const page = mutatedPage(targets.find((t) => t.pfn === mu.pfn) as (typeof targets)[number], mu);
        faults = mu.writes.map((w) => ({ kind: 'corrupt', target: { phys: mu.pfn * 4096 }, offset: w.offset, value: page[w.offset] as number }));
      },
    });
    const replay = await runScenario(scenario, { progress: noProgress, faults });
    expect(classify(replay).outcome).toBe(forked.outcome);
  }, 60_000);
});

describe('fault injection sweep over the default fuzz scenario', () => {
  it('fails every file-handler and FLB op at each call index; no run ends uncaught or wrong', async () => {
    const sweep = await sweepFaults();
    const ops = new Set(sweep.map((r) => r.fault.replace(/ call \d+$/, '')));
    // 8 file-handler ops and 4 FLB ops of the one plugin.
    expect(ops.size).toBe(12);
    expect(sweep.filter((r) => !['updated', 'rolled-back', 'preserve-failed', 'file-error', 'refused-incoming'].includes(r.outcome))).toEqual([]);
    // Each op's sweep ends at the call index past its last call: the update then goes through.
    expect(sweep.filter((r) => r.outcome === 'updated')).toHaveLength(12);
  }, 120_000);
});

const KNOWN_STRUCTURES = ['root FDT', 'tracker node', 'LUO blob', 'session block', 'file block', 'FLB page', 'scratch array', 'kexec-metadata', 'memfd extent stream', 'memfd header', 'memfd vmalloc chunk'];
