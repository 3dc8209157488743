// One thread of `npm run campaign` (bench/campaign.ts): runs kernel A once, then one mutated
// handover per index start, start+step, ... and reports each run to the main thread (which
// counts them and watches for hangs). Plain JavaScript: worker threads do not inherit tsx.
import { parentPort, workerData } from 'node:worker_threads';
import { runCampaign } from '@liveupdate/cli';

const d = workerData;
const port = parentPort;
if (!port) throw new Error('campaign-worker runs in a worker thread');
const total = Math.max(0, Math.ceil((d.runs - d.start) / d.step));
try {
  const t0 = performance.now();
  let index = d.start;
  await runCampaign({
    seed: d.seed, runs: total, deadlineMs: d.deadlineMs,
    seeds: (i) => { index = d.start + i * d.step; return d.seed + index; },
    onSetup: (targets, structures) => port.postMessage({ type: 'setup', ms: performance.now() - t0, targets, structures }),
    onStart: (seed) => port.postMessage({ type: 'start', i: index, seed }),
    onRun: (r) => port.postMessage({ type: 'run', i: index, seed: r.seed, structure: r.structure, mutation: r.mutation, outcome: r.outcome, detail: r.detail, what: r.what }),
  });
  port.postMessage({ type: 'done' });
} catch (e) {
  port.postMessage({ type: 'error', message: e instanceof Error ? `${e.name}: ${e.message}` : String(e) });
}
