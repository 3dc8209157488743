/**
 * liveUpdate(): boot kernel A, run the scenario's pre-kexec steps, kexec into kernel B (booted
 * from bytes only), run the post-kexec steps, and check the invariants every live update
 * must keep: every preserved page restored or released, nothing leaked, no poison read,
 * liveupdate_num advanced. With faults it reports which outcome class the update fell into.
 */
import { createRequire } from 'node:module';
import { createMachine, PAGE_SIZE, type Machine, type MachineConfig } from '@liveupdate/hw';
import {
  BootError, ErrnoError, FormatNegotiationError, Kernel, KernelDeadError, KernelPanic,
  type CoreAbiRanges, type Process, type RuntimePlugin,
} from '@liveupdate/runtime';
import { checkSdkCopy, type SdkIdentity } from '../copies.js';
import { applyCorruptions, armHookFaults, resolveCorruptions, type FaultRecord, type FaultSpec } from './faults.js';

// node:crypto costs ~9 ms to load; most scenarios never ask for a digest.
let cryptoModule: typeof import('node:crypto') | null = null;
const nodeCrypto = (): typeof import('node:crypto') => (cryptoModule ??= createRequire(import.meta.url)('node:crypto') as typeof import('node:crypto'));

export interface KernelSide {
  readonly plugins: readonly RuntimePlugin[];
  readonly release: string;
  readonly cmdline?: string;
  readonly abi?: CoreAbiRanges;
}

export interface ScenarioTools {
  /** A process the harness will exit on cleanup (e.g. the broker holding the sessions). */
  spawn(kernel: Kernel, name: string): Process;
  digest(bytes: Uint8Array): string;
}

export interface LiveUpdateScenario<S> {
  readonly name?: string;
  readonly machine?: MachineConfig | Machine;
  /** Pre-kexec steps in kernel A. The returned state is what the test remembers (not what crosses). */
  before(k: Kernel, t: ScenarioTools): S;
  /** Post-kexec steps in kernel B: retrieve, verify, finish. */
  after(k: Kernel, state: S, t: ScenarioTools): void;
  /**
   * Between kernel A's jump and kernel B's boot, when only memory and the boot parameters are
   * left (dump tools read the handover here). Its reads of poisoned pages are not counted.
   */
  afterJump?(machine: Machine): void;
  readonly faults?: readonly FaultSpec[];
  /**
   * Right after the jump (after `afterJump`), with a function that boots kernel B from the
   * machine as it is now, runs `after` and returns that update's result. A fuzzer takes a
   * snapshot of memory here and calls `bootB` once per mutated copy of the handover, so the
   * pre-kexec part runs once for many incoming kernels. The harness then boots B once more, as
   * without `fork`, from whatever the machine holds when `fork` returns.
   */
  fork?(machine: Machine, bootB: () => LiveUpdateResult<S>): void;
  /**
   * The outcome(s) this scenario expects. Any other outcome throws UnexpectedOutcomeError, so a
   * test copied from an example cannot pass green on an update that did not happen. Default:
   * 'updated' without faults; 'any' (return every class) with faults, where classifying is the point.
   */
  readonly expect?: Outcome['kind'] | readonly Outcome['kind'][] | 'any';
}

export type Outcome =
  | { readonly kind: 'updated' }
  /** Refused or failed before the jump; kernel A keeps running with everything rolled back. */
  | { readonly kind: 'rolled-back'; readonly error: Error }
  /** Kernel B runs with the incoming state, but a file operation failed (e.g. a sticky retrieve error). */
  | { readonly kind: 'file-error'; readonly error: ErrnoError }
  /** Kernel B refused the incoming state: KHO revival disabled, LUO panic, or /dev/liveupdate EIO. */
  | { readonly kind: 'refused-incoming'; readonly reason: string };

export interface PhaseTime {
  readonly phase: string;
  readonly ms: number;
}

export interface LiveUpdateResult<S> {
  readonly outcome: Outcome;
  readonly from: Kernel;
  readonly to: Kernel | null;
  readonly state: S | undefined;
  readonly violations: readonly string[];
  readonly timeline: readonly PhaseTime[];
  readonly faults: readonly FaultRecord[];
  /** Per format family of kernel A's plugins: the version negotiated for the kexec (empty when it did not happen). */
  readonly formats: Readonly<Record<string, string>>;
}

/** The update ended in an outcome the scenario did not declare in `expect`. */
export class UnexpectedOutcomeError extends Error {
  override readonly name = 'UnexpectedOutcomeError';
  constructor(readonly result: LiveUpdateResult<unknown>, readonly expected: readonly Outcome['kind'][]) {
    const o = result.outcome;
    const why = o.kind === 'updated' ? '' : o.kind === 'refused-incoming' ? `: ${o.reason}` : `: ${o.error.message}`;
    super(`live update ended ${o.kind}${why} (the scenario expects ${expected.join(' or ')}; declare expect: '${o.kind}' if that is what it tests)`);
  }
}

export class InvariantError extends Error {
  override readonly name = 'InvariantError';
  constructor(readonly violations: readonly string[]) {
    super(`live update broke ${violations.length} invariant(s):\n- ${violations.join('\n- ')}`);
  }
}

const cmdlineOf = (side: KernelSide): string => side.cmdline ?? 'kho=on liveupdate=on';

function isRefusal(reason: string): boolean {
  return /disabling KHO revival/.test(reason);
}

/**
 * Run a live update. Without faults, any broken invariant throws InvariantError and any
 * unexpected failure is rethrown. With faults, the outcome class is returned, and the
 * no-leak invariant is checked for that class.
 */
export function liveUpdate<S>(sides: { from: KernelSide; to: KernelSide }, scenario: LiveUpdateScenario<S>): LiveUpdateResult<S> {
  for (const p of [...sides.from.plugins, ...sides.to.plugins]) checkSdkCopy(p as { sdkIdentity?: SdkIdentity }, `${p.name}@${p.version}`);
  const result = run(sides, scenario);
  const expect = scenario.expect ?? ((scenario.faults ?? []).length > 0 ? 'any' : 'updated');
  if (expect === 'any') return result;
  const expected: readonly Outcome['kind'][] = typeof expect === 'string' ? [expect] : expect;
  if (!expected.includes(result.outcome.kind)) throw new UnexpectedOutcomeError(result as LiveUpdateResult<unknown>, expected);
  return result;
}

function negotiated(k: Kernel, side: KernelSide): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of side.plugins) {
    for (const f of p.formats ?? []) {
      const v = k.formats.chosen(f.family);
      if (v !== undefined) out[f.family] = v;
    }
  }
  return out;
}

function run<S>(sides: { from: KernelSide; to: KernelSide }, scenario: LiveUpdateScenario<S>): LiveUpdateResult<S> {
  const timeline: PhaseTime[] = [];
  const time = <R>(phase: string, fn: () => R): R => {
    const t0 = performance.now();
    try { return fn(); } finally { timeline.push({ phase, ms: performance.now() - t0 }); }
  };
  const machine = scenario.machine instanceof Object && 'memory' in scenario.machine && typeof (scenario.machine as Machine).kexec === 'function'
    ? scenario.machine as Machine
    : createMachine(scenario.machine as MachineConfig | undefined ?? { memory: '8GiB', numaNodes: 1 });
  const faults: FaultRecord[] = (scenario.faults ?? []).map((fault) => ({ fault, seen: 0, fired: false }));
  const procs: Process[] = [];
  const tools: ScenarioTools = {
    spawn: (k, name) => { const p = k.spawn(name); procs.push(p); return p; },
    digest: (b) => nodeCrypto().createHash('sha256').update(b).digest('hex'),
  };
  const violations: string[] = [];

  const k1 = time('boot A', () => Kernel.boot(machine, { cmdline: cmdlineOf(sides.from), plugins: sides.from.plugins, release: sides.from.release, ...(sides.from.abi ? { abi: sides.from.abi } : {}) }));
  const baseline = k1.khoOut?.survivors().blocks ?? 0;
  armHookFaults(k1, faults, 'outgoing');
  const state = time('before', () => scenario.before(k1, tools));
  const num1 = k1.luo.liveupdateNum;
  const corruptions = resolveCorruptions(k1, faults);

  const target = { cmdline: cmdlineOf(sides.to), plugins: sides.to.plugins, release: sides.to.release, ...(sides.to.abi ? { abi: sides.to.abi } : {}) };
  try {
    time('freeze + serialize + jump', () => k1.kexecJump(target));
  } catch (e) {
    if (!(e instanceof ErrnoError || e instanceof FormatNegotiationError)) throw e;
    // Rolled back: after the processes let go, nothing may stay preserved beyond boot's own.
    for (const p of procs) if (!p.isExited) p.exit();
    const left = k1.khoOut?.survivors().blocks ?? 0;
    if (left !== baseline) violations.push(`after rollback and cleanup ${left - baseline} preserved block(s) leaked in kernel A`);
    if (k1.isDead) violations.push('kernel A is dead after a failed kexec');
    return { outcome: { kind: 'rolled-back', error: e }, from: k1, to: null, state, violations, timeline, faults, formats: {} };
  }
  const formats = negotiated(k1, sides.from);
  applyCorruptions(k1, corruptions);
  scenario.afterJump?.(machine);

  // Only kernel A's processes are kept (for a rollback's cleanup): a forked kernel B's are dropped
  // after its run, or every fork would keep its kernel alive through them.
  const kernelAProcs = procs.length;
  if (scenario.fork) {
    scenario.fork(machine, () => {
      try { return incoming(machine, k1, target, scenario, state, tools, faults, timeline.slice(), formats, num1, true); } finally { procs.length = kernelAProcs; }
    });
  }
  return incoming(machine, k1, target, scenario, state, tools, faults, timeline, formats, num1, faults.length > 0);
}

/** Kernel B's part: boot from the machine's bytes, run `after`, check the invariants. */
function incoming<S>(
  machine: Machine, k1: Kernel, target: Parameters<typeof Kernel.boot>[1], scenario: LiveUpdateScenario<S>, state: S, tools: ScenarioTools,
  faults: FaultRecord[], timeline: PhaseTime[], formats: Record<string, string>, num1: number, faulted: boolean,
): LiveUpdateResult<S> {
  const violations: string[] = [];
  const time = <R>(phase: string, fn: () => R): R => {
    const t0 = performance.now();
    try { return fn(); } finally { timeline.push({ phase, ms: performance.now() - t0 }); }
  };
  const mem = machine.memory;
  mem.resetPoisonReads();
  // Kernel B panicked while taking the handover over (an oops on a page it may not touch, such
  // as a hypervisor-owned one): it could not use the handover, as when it panics at boot.
  const panickedB = (k: Kernel): LiveUpdateResult<S> => ({
    outcome: { kind: 'refused-incoming', reason: `kernel ${k.release} panicked: ${k.panicked ?? ''}` }, from: k1, to: k, state, violations, timeline, faults, formats,
  });
  let k2: Kernel;
  try {
    k2 = time('boot B', () => Kernel.boot(machine, target));
  } catch (e) {
    // A panic while kernel B boots (KernelDeadError: a later call on the kernel that panicked), or
    // a boot that cannot go on (BootError: e.g. no room for the memmap in the scratch areas it was
    // handed, where early boot panics): kernel B does not come up on this handover.
    if (e instanceof KernelPanic || e instanceof KernelDeadError || e instanceof BootError) return { outcome: { kind: 'refused-incoming', reason: e.message }, from: k1, to: null, state, violations, timeline, faults, formats };
    throw e;
  }
  const revival = k2.dmesg.lines().find(isRefusal);
  if (revival) return { outcome: { kind: 'refused-incoming', reason: revival }, from: k1, to: k2, state, violations, timeline, faults, formats };
  armHookFaults(k2, faults, 'incoming');
  try {
    time('after', () => scenario.after(k2, state, tools));
  } catch (e) {
    if (e instanceof ErrnoError && e.code === 'EIO' && e.syscall === 'open') {
      return { outcome: { kind: 'refused-incoming', reason: `/dev/liveupdate: ${e.message}` }, from: k1, to: k2, state, violations, timeline, faults, formats };
    }
    if (e instanceof ErrnoError && faulted) {
      return { outcome: { kind: 'file-error', error: e }, from: k1, to: k2, state, violations, timeline, faults, formats };
    }
    if (k2.panicked !== null) return panickedB(k2);
    throw e;
  }
  if (k2.panicked !== null) return panickedB(k2);

  if (!k1.isDead) violations.push('kernel A is still alive after the kexec');
  if (num1 > 0 && k2.luo.liveupdateNum !== num1 + 1) violations.push(`liveupdate_num ${k2.luo.liveupdateNum} after ${num1}: not advanced by one`);
  if (mem.poisonReads > 0) violations.push(`${mem.poisonReads} read(s) of poisoned memory: something was not preserved`);
  for (const s of k2.luo.sessions.incoming) {
    const files = s.fileSet.files;
    if (files.length > 0) {
      violations.push(`incoming session '${s.name}' was never finished: ${files.map((f) => `token ${f.token} (${f.compatible})`).join(', ')} still held by LUO`);
    }
  }
  const leaked = k2.khoIn?.leaked();
  if (k2.khoIn && leaked && leaked.blocks > 0) {
    const named: string[] = [];
    for (const b of k2.khoIn.heads.remaining()) {
      if (named.length === 8) { named.push(`and ${leaked.blocks - 8} more`); break; }
      named.push(`0x${(b.pfn * PAGE_SIZE).toString(16)} order ${b.order}`);
    }
    violations.push(`${leaked.blocks} preserved block(s) (${leaked.pages} pages) neither restored nor released: ${named.join(', ')}`);
  }
  if (!faulted && violations.length > 0) throw new InvariantError(violations);
  return { outcome: { kind: 'updated' }, from: k1, to: k2, state, violations, timeline, faults, formats };
}
