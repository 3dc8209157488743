// One thread of `npm run campaign` (bench/campaign.ts): for each scenario in turn, runs kernel A
// once, then one mutated handover per index of its shard (start, start+step, ...) whose seed
// maps to that scenario (scenarioOfSeed), and reports each run to the main thread (which counts
// them and watches for hangs). With a deadline, each scenario gets an equal share of the time
// left when it starts, and at least `minRuns` runs (a slow setup does not starve the ones after it). Plain JavaScript: worker threads do not inherit tsx.
import { parentPort, workerData } from 'node:worker_threads';
import { pluginScenarios, runCampaign, scenarioOfSeed } from '@liveupdate/cli';

const d = workerData;
const port = parentPort;
if (!port) throw new Error('campaign-worker runs in a worker thread');
try {
  const scenarios = await pluginScenarios();
  const n = scenarios.length;
  port.postMessage({ type: 'scenarios', labels: scenarios.map((x) => x.label) });
  const from = d.resume ? d.resume.scenario : 0;
  for (let j = from; j < n; j++) {
    const { label, scenario } = scenarios[j];
    // An equal share of the time left to each scenario still to run (setup included).
    const left = (d.deadline - Date.now()) / (n - j);
    const indices = [];
    const first = d.resume && j === d.resume.scenario ? d.resume.after + d.step : d.start;
    for (let i = first; i < d.runs; i += d.step) if (scenarioOfSeed(d.seed + i, n) === j) indices.push(i);
    if (indices.length === 0) continue;
    const t0 = performance.now();
    let index = -1;
    const res = await runCampaign({
      scenario, label, seed: d.seed, runs: indices.length, deadlineMs: Math.max(0, left), minRuns: d.minRuns,
      seeds: (k) => { index = indices[k]; return d.seed + index; },
      onSetup: (targets, structures) => port.postMessage({ type: 'setup', scenario: label, ms: performance.now() - t0, targets, structures }),
      onStart: (seed) => port.postMessage({ type: 'start', j, i: index, seed }),
      onRun: (r) => port.postMessage({
        type: 'run', scenario: label, i: index, seed: r.seed, structure: r.structure, mutation: r.mutation, outcome: r.outcome, detail: r.detail, what: r.what,
        violation: r.violations[0] ?? null, accepted: r.accepted.length > 0, upstream: r.upstream,
      }),
    });
    port.postMessage({ type: 'scenario-done', scenario: label, runs: res.runs, fuzzMs: res.ms - res.setupMs });
  }
  port.postMessage({ type: 'done' });
} catch (e) {
  port.postMessage({ type: 'error', message: e instanceof Error ? `${e.name}: ${e.message}` : String(e) });
}
