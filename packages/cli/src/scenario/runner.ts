/**
 * `liveupdate run`'s view of a scenario run: the SDK's generic runner (which knows no object
 * type by name; the plugins' tools do the work) plus what only the tool needs: the handover
 * decoded from bytes right after the jump, a dump of its pages, and a refusal up front when the
 * host cannot hold what the scenario would create.
 */
import { totalmem } from 'node:os';
import type { Machine } from '@liveupdate/hw';
import type { Plugin, Scenario } from '@liveupdate/sdk';
import { hostBytesOf, runScenario as runGeneric, type FaultSpec, type RunProgress, type ScenarioRunResult } from '@liveupdate/sdk/testing';
import { UsageError } from '../exit.js';
import type { HandoverView } from '../handover/decode.js';
import type { HandoverDump } from '../handover/dump.js';
import { bytes } from '../output/format.js';
import { resolvePlugins } from '../plugins.js';

export type { RunOutcome, ObjectResult, SessionResult } from '@liveupdate/sdk/testing';

export interface RunResult extends ScenarioRunResult {
  /** Kernel A's and B's plugins (the instances the run used; their decoders read the handover). */
  readonly plugins: { readonly from: readonly Plugin[]; readonly to: readonly Plugin[] };
  /** The handover as the new kernel found it, decoded from bytes right after the jump (null without the jump, or with `decode: false`). */
  readonly handover: HandoverView | null;
  /** Kernel A jumped: the run got past freeze, serialize and the jump into kernel B. */
  readonly jumped: boolean;
  readonly dump: HandoverDump | null;
}

export interface RunOptions {
  readonly progress: RunProgress;
  /** Keep the handover's raw pages (for --dump). */
  readonly capture?: boolean;
  /** Written into dumps: which tool made them. */
  readonly createdBy?: string;
  readonly faults?: readonly FaultSpec[];
  /** Called right after the jump (after any 'corrupt' fault) with the handover as decoded from bytes. */
  readonly onHandover?: (machine: Machine, handover: HandoverView) => void;
  /** Host memory the run may use (default: half of this host's RAM). */
  readonly hostMemoryLimit?: number;
  /**
   * Decode the handover for the result's view (default true). A tool that reads only the
   * outcome (matrix cells) says false; the harness's checks do not depend on it.
   */
  readonly decode?: boolean;
}

let hostLimit: number | null = null;
/** Half of this host's RAM (asked once: os.totalmem() reads /proc/meminfo on every call). */
const defaultHostLimit = (): number => (hostLimit ??= Math.floor(totalmem() / 2));

let decodeModule: Promise<typeof import('../handover/decode.js')> | null = null;
let dumpModule: Promise<typeof import('../handover/dump.js')> | null = null;

export async function runScenario(scenario: Scenario, opts: RunOptions): Promise<RunResult> {
  const fromBuilds = await resolvePlugins(scenario.from.plugins);
  const toBuilds = await resolvePlugins(scenario.to.plugins);
  const from = fromBuilds.map((b) => b.create());
  const to = toBuilds.map((b) => b.create());
  const need = hostBytesOf(scenario, from);
  const limit = opts.hostMemoryLimit ?? defaultHostLimit();
  if (need > limit) {
    throw new UsageError(`scenario ${scenario.name} needs about ${bytes(need)} of host memory to create its objects (real bytes, e.g. pattern fills), more than the ${bytes(limit)} this run may use (half of the host's RAM): use synthetic fills, a smaller touched fraction or smaller objects`);
  }
  let handover: HandoverView | null = null;
  let dump: HandoverDump | null = null;
  let jumped = false;
  const decode = opts.decode ?? true;
  // The decoder and the dump writer load only for a run that uses them (a matrix cell does not).
  const decoder = decode || opts.capture || opts.onHandover ? await (decodeModule ??= import('../handover/decode.js')) : null;
  const dumper = opts.capture ? await (dumpModule ??= import('../handover/dump.js')) : null;
  const result = runGeneric(scenario, {
    from, to, progress: opts.progress, ...(opts.faults ? { faults: opts.faults } : {}),
    onJump: (m) => {
      jumped = true;
      if (!decoder) return;
      const view = decoder.decodeHandover(m.memory, m.bootParams.khoData, from);
      handover = view;
      if (dumper) {
        dump = dumper.captureDump(m, view, {
          createdBy: opts.createdBy ?? 'liveupdate', scenario: scenario.name, from: scenario.from.release, to: scenario.to.release,
          plugins: { from: scenario.from.plugins, to: scenario.to.plugins },
        });
      }
      opts.onHandover?.(m, view);
    },
  });
  return { ...result, plugins: { from, to }, handover, jumped, dump };
}
