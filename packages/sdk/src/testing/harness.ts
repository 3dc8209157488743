/**
 * liveUpdate(): boot kernel A, run the scenario's pre-kexec steps, kexec into kernel B (booted
 * from bytes only), run the post-kexec steps, and check the invariants every live update
 * must keep: every preserved page restored or released, nothing leaked, no poison read,
 * liveupdate_num advanced. With faults it reports which outcome class the update fell into.
 */
import { createHash } from 'node:crypto';
import { createMachine, PAGE_SIZE, type Machine, type MachineConfig } from '@liveupdate/hw';
import {
  ErrnoError, FormatNegotiationError, Kernel, KernelPanic,
  type CoreAbiRanges, type Process, type RuntimePlugin,
} from '@liveupdate/runtime';
import { applyCorruptions, armHookFaults, resolveCorruptions, type FaultRecord, type FaultSpec } from './faults.js';

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
    digest: (b) => createHash('sha256').update(b).digest('hex'),
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
    return { outcome: { kind: 'rolled-back', error: e }, from: k1, to: null, state, violations, timeline, faults };
  }
  applyCorruptions(k1, corruptions);
  scenario.afterJump?.(machine);

  const mem = machine.memory;
  mem.resetPoisonReads();
  let k2: Kernel;
  try {
    k2 = time('boot B', () => Kernel.boot(machine, target));
  } catch (e) {
    if (e instanceof KernelPanic) return { outcome: { kind: 'refused-incoming', reason: e.message }, from: k1, to: null, state, violations, timeline, faults };
    throw e;
  }
  const revival = k2.dmesg.lines().find(isRefusal);
  if (revival) return { outcome: { kind: 'refused-incoming', reason: revival }, from: k1, to: k2, state, violations, timeline, faults };
  armHookFaults(k2, faults, 'incoming');
  try {
    time('after', () => scenario.after(k2, state, tools));
  } catch (e) {
    if (e instanceof ErrnoError && e.code === 'EIO' && e.syscall === 'open') {
      return { outcome: { kind: 'refused-incoming', reason: `/dev/liveupdate: ${e.message}` }, from: k1, to: k2, state, violations, timeline, faults };
    }
    if (e instanceof ErrnoError && faults.length > 0) {
      return { outcome: { kind: 'file-error', error: e }, from: k1, to: k2, state, violations, timeline, faults };
    }
    throw e;
  }

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
  if (faults.length === 0 && violations.length > 0) throw new InvariantError(violations);
  return { outcome: { kind: 'updated' }, from: k1, to: k2, state, violations, timeline, faults };
}
