/**
 * Fault injection over a scenario: every LUO file-handler op and FLB op of every plugin of
 * the scenario, failed at call 1, 2, ... until a call index is past the op's last call (the run
 * then ends updated: the fault never fired). Each run replays the whole scenario (hook faults
 * fire in kernel A as well as B). A failure before the jump must roll back; one after it must
 * end file-error or refused-incoming (a failed PRESERVE_FD is returned to the VMM: preserve-failed); a wrong byte or an uncaught exception is a finding.
 */
import type { Scenario } from '@liveupdate/sdk';
import type { FaultSpec } from '@liveupdate/sdk/testing';
import { noProgress } from '../output/progress.js';
import { builtinScenario } from '../scenario/load.js';
import { runScenario } from '../scenario/runner.js';
import { classify, type FuzzClass } from './classify.js';

const FILE_OPS = ['canPreserve', 'preserve', 'unpreserve', 'freeze', 'unfreeze', 'retrieve', 'canFinish', 'finish'] as const;
const FLB_OPS = ['preserve', 'unpreserve', 'retrieve', 'finish'] as const;
/** Call indices tried per op at most. */
const MAX_CALL = 32;

/** 'preserve-failed': PRESERVE_FD returned the injected errno to the VMM in kernel A (no kexec was tried). */
export type SweepClass = FuzzClass | 'rolled-back' | 'preserve-failed';
export interface SweepRun {
  readonly fault: string;
  readonly outcome: SweepClass;
  readonly detail: string | null;
}

export async function sweepFaults(opts: { scenario?: Scenario; onRun?: (r: SweepRun) => void } = {}): Promise<SweepRun[]> {
  const scenario = opts.scenario ?? (await builtinScenario('fuzz')).scenario;
  const owners = [...new Set([...Object.keys(scenario.from.plugins), ...Object.keys(scenario.to.plugins)])];
  const specs: Array<(call: number) => FaultSpec> = [];
  for (const owner of owners) {
    for (const op of FILE_OPS) specs.push((call) => ({ kind: 'file-op', op, call, owner }));
    for (const op of FLB_OPS) specs.push((call) => ({ kind: 'flb-op', op, call, owner }));
  }
  const out: SweepRun[] = [];
  for (const spec of specs) {
    for (let call = 1; call <= MAX_CALL; call++) {
      const f = spec(call);
      const label = `${f.kind} ${f.kind === 'corrupt' ? '' : `${f.owner ?? ''} ${f.op} call ${call}`}`;
      let outcome: SweepClass;
      let detail: string | null;
      try {
        const r = await runScenario(scenario, { progress: noProgress, faults: [f] });
        if (r.harnessOutcome === 'rolled-back') ({ outcome, detail } = { outcome: 'rolled-back', detail: r.error });
        else if (r.harnessOutcome === null && r.outcome === 'failed' && f.kind !== 'corrupt' && (f.op === 'canPreserve' || f.op === 'preserve')) ({ outcome, detail } = { outcome: 'preserve-failed', detail: r.error });
        else ({ outcome, detail } = classify(r));
      } catch (e) {
        outcome = 'uncaught';
        detail = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
      }
      const run = { fault: label, outcome, detail };
      out.push(run);
      opts.onRun?.(run);
      // Past the op's last call the fault never fires and the update goes through.
      if (outcome === 'updated') break;
    }
  }
  return out;
}
