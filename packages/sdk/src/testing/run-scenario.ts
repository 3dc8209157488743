/**
 * The generic scenario runner: a scenario document's live update through liveUpdate(), in the
 * luod pattern, knowing no object type by name. A broker process holds /dev/liveupdate and one
 * session per VM; each session's VMM creates its objects with the object kind of kernel A's
 * plugins (`plugin.tools.objects`: create, fill, PRESERVE_FD) and lets go of the session; the
 * broker keeps the session fds through the kexec. In kernel B a new broker retrieves the
 * sessions by name, hands each to a new VMM whose objects are restored and checked by the
 * object kind of kernel B's plugins (maybe another version), then FINISH. Plugins' machine-level
 * sections run around that (`plugin.tools.sections`). The CLI (run, report, fuzz, matrix) and
 * tests use this same function.
 */
import { createMachine, type Machine } from '@liveupdate/hw';
import { ErrnoError, FormatNegotiationError, type Kernel, type Process } from '@liveupdate/runtime';
import { createSession, finishSession, openLiveupdate, preserveFd, retrieveFd, retrieveSession } from '../client.js';
import type { Plugin } from '../plugin.js';
import { sessionObjects, type Scenario, type ScenarioObject } from '../schemas.js';
import type { MachineStepContext, ObjectCheck, ObjectKind, RestoredObject, ScenarioSection, SessionStepContext } from '../tools.js';
import { parseSizeStrict } from '../size.js';
import { preflight, type PreflightReport } from '../versions.js';
import type { FaultSpec } from './faults.js';
import { InvariantError, liveUpdate, UnexpectedOutcomeError, type LiveUpdateResult, type Outcome, type PhaseTime } from './harness.js';

export const BASE_CMDLINE = 'kho=on liveupdate=on';
const DEFAULT_BROKER = 'luod';

/** Progress of a run, in the units object kinds report (ObjectKind.units). */
export interface RunProgress {
  phase(name: 'preserve' | 'kexec' | 'restore', total: number, unit: string): void;
  tick(n: number): void;
  note(line: string): void;
  done(): void;
}

export const noRunProgress: RunProgress = { phase() {}, tick() {}, note() {}, done() {} };

type AnyKind = ObjectKind<never, unknown>;
type AnySection = ScenarioSection<never, unknown>;
type Kind = ObjectKind<ScenarioObject, unknown>;
type Section = ScenarioSection<unknown, unknown>;

export interface ObjectResult {
  readonly session: string;
  readonly token: number;
  readonly type: string;
  /** The object as the scenario wrote it. */
  readonly spec: ScenarioObject;
  /** The plugin (name@version) whose kind created it, and the one that restored it. */
  createdBy: string | null;
  restoredBy: string | null;
  preserved: boolean;
  preservedPages: number;
  restoredPages: number | null;
  /** The compatible string it was handed over under (as kernel B's LUO found it). */
  compatible: string | null;
  check: ObjectCheck | null;
  /** Why it could not be created, preserved or retrieved. */
  error: string | null;
}

export interface SessionResult {
  readonly name: string;
  preserved: boolean;
  restored: boolean;
  finished: boolean;
}

export type RunOutcome = 'updated' | 'rolled-back' | 'refused-incoming' | 'failed' | 'not-supported';

export interface NegotiationRefusal {
  readonly refusals: FormatNegotiationError['refusals'];
  /** Files frozen before the refusal (0 when negotiation refused before freeze, as it must). */
  readonly freezes: number;
  readonly fromAlive: boolean;
}

export interface ScenarioRunResult {
  readonly scenario: Scenario;
  readonly cmdline: string;
  readonly broker: string;
  readonly machine: Machine;
  readonly outcome: RunOutcome;
  /** The harness's outcome class; null when it threw (an invariant broke) or the run did not start. */
  readonly harnessOutcome: Outcome['kind'] | null;
  readonly refusal: NegotiationRefusal | null;
  /** Why the update did not complete (refusal, errno, unsupported object). */
  readonly error: string | null;
  /** Set when outcome is 'not-supported': kernel A's plugins cannot create or preserve these objects. */
  readonly unsupported: { readonly side: 'A' | 'B'; readonly reasons: readonly string[] } | null;
  readonly preflight: PreflightReport;
  readonly sessions: readonly SessionResult[];
  readonly objects: readonly ObjectResult[];
  /** What the plugins' sections checked in kernel B. */
  readonly sectionChecks: ReadonlyArray<ObjectCheck & { readonly section: string }>;
  readonly phases: ReadonlyArray<PhaseTime & { readonly parts?: readonly PhaseTime[] }>;
  /** Per format family: the version negotiated for the kexec. */
  readonly formats: Readonly<Record<string, string>>;
  readonly leaks: { readonly blocks: number; readonly pages: number } | null;
  readonly poisonReads: number;
  readonly liveupdateNum: { readonly before: number | null; readonly after: number | null };
  readonly violations: readonly string[];
}

export interface ScenarioRunOptions {
  /** Kernel A's and kernel B's plugins (fresh instances). */
  readonly from: readonly Plugin[];
  readonly to: readonly Plugin[];
  readonly progress?: RunProgress;
  /** Faults for the harness (with faults every outcome class is returned, not thrown). */
  readonly faults?: readonly FaultSpec[];
  /** Right after the jump (after any 'corrupt' fault), with only memory and boot params left. */
  readonly onJump?: (machine: Machine) => void;
  /**
   * Right after the jump (after `onJump`), with a function that boots kernel B from the bytes
   * in memory now, restores and checks every object and returns that run's result (as if the
   * handover had been corrupted by a fault: every outcome class is returned). A fuzzer takes
   * a memory snapshot here and calls `bootB` once per mutated copy of the handover. The
   * returned result's `violations` are kernel B's; the run then ends once more from whatever
   * memory holds when `fork` returns.
   */
  readonly fork?: (machine: Machine, bootB: () => ScenarioRunResult) => void;
}

/** The object kinds and sections of a list of plugins, by type / key (first plugin wins). */
export function vocabularyOf(plugins: readonly Plugin[]): { kinds: Map<string, { kind: Kind; plugin: Plugin }>; sections: Map<string, { section: Section; plugin: Plugin }> } {
  const kinds = new Map<string, { kind: Kind; plugin: Plugin }>();
  const sections = new Map<string, { section: Section; plugin: Plugin }>();
  for (const p of plugins) {
    for (const k of (p.tools.objects ?? []) as readonly AnyKind[]) if (!kinds.has(k.type)) kinds.set(k.type, { kind: k as unknown as Kind, plugin: p });
    for (const s of (p.tools.sections ?? []) as readonly AnySection[]) if (!sections.has(s.key)) sections.set(s.key, { section: s as unknown as Section, plugin: p });
  }
  return { kinds, sections };
}

/** What each side cannot do with this scenario's objects: a missing kind, or `supports()` saying no. */
export function unsupportedBy(scenario: Scenario, plugins: readonly Plugin[], side: 'A' | 'B'): string[] {
  const { kinds } = vocabularyOf(plugins);
  const reasons: string[] = [];
  scenario.sessions.forEach((s, i) => {
    for (const { object } of sessionObjects(s, i)) {
      const k = kinds.get(object.type);
      const where = `session ${s.name} token ${object.token}`;
      if (!k) { reasons.push(`${where}: no plugin of kernel ${side} (${plugins.map((p) => `${p.name}@${p.version}`).join(', ') || 'none'}) handles '${object.type}' objects`); continue; }
      const ok = k.kind.supports?.(object) ?? true;
      if (ok !== true) reasons.push(`${where}: ${k.plugin.name}@${k.plugin.version}: ${ok}`);
    }
  });
  return reasons;
}

/** The kernel command line the scenario's objects and sections need (e.g. a hugeTLB pool). */
export function cmdlineOf(scenario: Scenario, plugins: readonly Plugin[]): string {
  const { kinds, sections } = vocabularyOf(plugins);
  // Each parameter once, in the order first asked for (a kind and a section may both need it).
  const words: string[] = [];
  const add = (w: string | undefined): void => { for (const x of (w ?? '').split(/\s+/)) if (x && !words.includes(x)) words.push(x); };
  add(BASE_CMDLINE);
  const byType = new Map<string, ScenarioObject[]>();
  scenario.sessions.forEach((s, i) => {
    for (const { object } of sessionObjects(s, i)) byType.set(object.type, [...(byType.get(object.type) ?? []), object]);
  });
  for (const [type, specs] of byType) {
    add(kinds.get(type)?.kind.cmdline?.(specs));
  }
  for (const [key, { section }] of sections) {
    if (scenario[key] === undefined) continue;
    add(section.cmdline?.(scenario[key]));
  }
  return words.join(' ');
}

/** Host memory the tool needs to create every object (ObjectKind.hostBytes), summed. */
export function hostBytesOf(scenario: Scenario, plugins: readonly Plugin[]): number {
  const { kinds } = vocabularyOf(plugins);
  let n = 0;
  scenario.sessions.forEach((s, i) => {
    for (const { object } of sessionObjects(s, i)) n += kinds.get(object.type)?.kind.hostBytes?.(object) ?? 0;
  });
  return n;
}

/** SCM_RIGHTS over the broker's socket: the receiver gets its own fd for the same file. */
function passFd(from: Process, fd: number, to: Process): number {
  return to.fdInstall(from.fget(fd, 'sendmsg'), true);
}

const messageOf = (e: unknown): string => (e instanceof Error ? e.message : String(e));
const label = (p: Plugin): string => `${p.name}@${p.version}`;

export function runScenario(scenario: Scenario, opts: ScenarioRunOptions): ScenarioRunResult {
  const progress = opts.progress ?? noRunProgress;
  const A = vocabularyOf(opts.from);
  const B = vocabularyOf(opts.to);
  const cmdline = cmdlineOf(scenario, [...opts.from, ...opts.to]);
  const broker = scenario.broker ?? DEFAULT_BROKER;
  const from = { plugins: opts.from, release: scenario.from.release, cmdline };
  const to = { plugins: opts.to, release: scenario.to.release, cmdline };
  const plan = preflight(from, to);
  const machine = createMachine({ memory: parseSizeStrict(scenario.machine.memory), ...(scenario.machine.numaNodes ? { numaNodes: scenario.machine.numaNodes } : {}) });
  const sessions: SessionResult[] = scenario.sessions.map((s) => ({ name: s.name, preserved: false, restored: false, finished: false }));
  const objects: ObjectResult[] = scenario.sessions.flatMap((s, i) => sessionObjects(s, i).map(({ object }) => ({
    session: s.name, token: object.token, type: object.type, spec: object, createdBy: null, restoredBy: null,
    preserved: false, preservedPages: 0, restoredPages: null, compatible: null, check: null, error: null,
  })));
  const base = {
    scenario, cmdline, broker, machine, preflight: plan, sessions, objects, sectionChecks: [] as Array<ObjectCheck & { section: string }>,
    formats: {}, leaks: null, poisonReads: 0, liveupdateNum: { before: null, after: null }, violations: [] as string[], refusal: null, harnessOutcome: null,
  };
  // Kernel A must be able to create and preserve every object. Kernel B's plugins are not
  // checked up front: a B that cannot read a format refuses the kexec by negotiation, which is
  // the outcome to report (an object B has no kind for is reported unchecked).
  const reasons = unsupportedBy(scenario, opts.from, 'A');
  if (reasons.length > 0) {
    return { ...base, outcome: 'not-supported', error: `not supported by A: ${reasons[0] ?? ''}`, unsupported: { side: 'A', reasons }, phases: [] };
  }

  // Machine-level sections first: hardware exists before kernel A boots.
  const sectionState = new Map<string, unknown>();
  const activeSections = [...A.sections].filter(([key]) => scenario[key] !== undefined);
  for (const [key, { section }] of activeSections) sectionState.set(key, section.machine?.(machine, scenario[key]));

  const parts = { before: [] as PhaseTime[], after: [] as PhaseTime[] };
  const addPart = (list: PhaseTime[], phase: string, ms: number): void => {
    const i = list.findIndex((p) => p.phase === phase);
    if (i >= 0) list.splice(i, 1, { phase, ms: (list[i] as PhaseTime).ms + ms }); else list.push({ phase, ms });
  };
  const timed = <R>(list: PhaseTime[], phase: string, fn: () => R): R => {
    const t0 = performance.now();
    try { return fn(); } finally { addPart(list, phase, performance.now() - t0); }
  };
  let k2: Kernel | null = null;
  const num = { before: null as number | null, after: null as number | null };
  let freezes = 0;
  const units = (k: Kind, spec: ScenarioObject): number => k.units?.(spec) ?? 1;
  const sectionChecks: Array<ObjectCheck & { section: string }> = [];
  const machineCtx = (k: Kernel, t: { spawn(k: Kernel, name: string): Process }): MachineStepContext => ({
    kernel: k, machine, spawn: (name) => t.spawn(k, name), note: (line) => progress.note(line),
  });
  const marks = { start: performance.now(), beforeStart: NaN, beforeEnd: NaN, jump: NaN, afterStart: NaN, afterEnd: NaN };
  const expectations = new Map<ObjectResult, unknown>();

  const before = (k1: Kernel, t: { spawn(k: Kernel, name: string): Process }): void => {
    marks.beforeStart = performance.now();
    num.before = k1.luo.liveupdateNum;
    const mctx = machineCtx(k1, t);
    for (const [key, { section }] of activeSections) section.before?.(mctx, scenario[key], sectionState.get(key));
    const luod = t.spawn(k1, broker);
    const dev = openLiveupdate(luod);
    progress.phase('preserve', objects.reduce((n, o) => n + units((A.kinds.get(o.type) as { kind: Kind }).kind, o.spec), 0), 'pages');
    scenario.sessions.forEach((s, si) => {
      const vmm = t.spawn(k1, `vmm/${s.name}`);
      // luod creates the session and hands its fd to the VMM over the socket.
      const sessionFd = passFd(luod, createSession(luod, dev, s.name), vmm);
      const peers = new Map<number, unknown>();
      const ctx: SessionStepContext = {
        kernel: k1, machine, session: s.name, vmm, sessionFd,
        preserve: (fd, token) => timed(parts.before, 'PRESERVE_FD', () => preserveFd(vmm, sessionFd, fd, token)),
        retrieve: () => { throw new ErrnoError('EINVAL', 'retrieve', 'RETRIEVE_FD is for kernel B'); },
        peer: (token) => peers.get(token),
        section: (key) => sectionState.get(key),
        tick: (n) => progress.tick(n),
        note: (line) => progress.note(line),
      };
      for (const r of objects.filter((o) => o.session === s.name)) {
        const { kind, plugin } = A.kinds.get(r.type) as { kind: Kind; plugin: Plugin };
        // The kind's own work (create, fill), apart from the PRESERVE_FD it calls.
        const t0 = performance.now();
        const preserveBefore = parts.before.find((p) => p.phase === 'PRESERVE_FD')?.ms ?? 0;
        const created = kind.create(ctx, r.spec);
        const preserveMs = (parts.before.find((p) => p.phase === 'PRESERVE_FD')?.ms ?? 0) - preserveBefore;
        addPart(parts.before, `create ${r.type}`, performance.now() - t0 - preserveMs);
        r.createdBy = label(plugin);
        r.preserved = true;
        r.preservedPages = created.preservedPages ?? 0;
        peers.set(r.token, created);
        expectations.set(r, created.expect);
      }
      // The VMM lets go of the session; luod keeps it open through the kexec.
      vmm.close(sessionFd);
      (sessions[si] as SessionResult).preserved = true;
    });
    for (const [key, { section }] of activeSections) section.beforeKexec?.(mctx, scenario[key], sectionState.get(key));
    // 'kexec' is the harness's 'freeze + serialize + jump': one step per frozen file, one for the jump.
    progress.phase('kexec', objects.length + 1, 'steps');
    k1.luo.hooks.fileOpDone.tap('liveupdate-runner', (ev, err) => {
      if (ev.op !== 'freeze') return;
      freezes++;
      if (!err) progress.tick(1);
    });
    marks.beforeEnd = performance.now();
  };

  const afterJump = (m: Machine): void => {
    marks.jump = performance.now();
    progress.tick(1);
    progress.done();
    opts.onJump?.(m);
  };

  const restoreSession = (k: Kernel, t: { spawn(k: Kernel, name: string): Process }, luod: Process, dev: number, name: string, si: number): void => {
    const vmm = t.spawn(k, `vmm/${name}`);
    const sessionFd = timed(parts.after, 'RETRIEVE', () => {
      const fd = retrieveSession(luod, dev, name);
      const mine = passFd(luod, fd, vmm);
      luod.close(fd);
      return mine;
    });
    (sessions[si] as SessionResult).restored = true;
    const peers = new Map<number, unknown>();
    const ctx: SessionStepContext = {
      kernel: k, machine, session: name, vmm, sessionFd,
      preserve: () => { throw new ErrnoError('EINVAL', 'preserve', 'PRESERVE_FD is for kernel A'); },
      retrieve: (token) => timed(parts.after, 'RETRIEVE', () => retrieveFd(vmm, sessionFd, token)),
      peer: (token) => peers.get(token),
      section: (key) => sectionState.get(key),
      tick: (n) => progress.tick(n),
      note: (line) => progress.note(line),
    };
    for (const r of objects.filter((o) => o.session === name)) {
      const b = B.kinds.get(r.type);
      if (!b) {
        r.error = `not checked: no plugin of kernel B (${opts.to.map(label).join(', ') || 'none'}) handles '${r.type}' objects`;
        continue;
      }
      const { kind, plugin } = b;
      r.restoredBy = label(plugin);
      try {
        // The kind's own work (its check), apart from the RETRIEVE_FD it calls.
        const t0 = performance.now();
        const retrieveBefore = parts.after.find((p) => p.phase === 'RETRIEVE')?.ms ?? 0;
        let restored: RestoredObject;
        try {
          restored = kind.restore(ctx, r.spec, expectations.get(r));
        } finally {
          const retrieveMs = (parts.after.find((p) => p.phase === 'RETRIEVE')?.ms ?? 0) - retrieveBefore;
          addPart(parts.after, 'verify', performance.now() - t0 - retrieveMs);
        }
        peers.set(r.token, restored);
        r.restoredPages = restored.restoredPages ?? null;
        r.check = restored.check;
        progress.note(`${name} token ${r.token}: ${r.type} ${restored.check.summary}, check ${restored.check.ok ? 'passed' : 'FAILED'}`);
      } catch (e) {
        if (!(e instanceof ErrnoError)) throw e;
        r.error = `RETRIEVE_FD token ${r.token}: ${e.code} ${e.message}`;
      }
    }
    timed(parts.after, 'FINISH', () => finishSession(vmm, sessionFd));
    (sessions[si] as SessionResult).finished = true;
    vmm.close(sessionFd);
  };

  const after = (k: Kernel, _state: void, t: { spawn(k: Kernel, name: string): Process }): void => {
    marks.afterStart = performance.now();
    k2 = k;
    progress.phase('restore', objects.reduce((n, o) => { const b = B.kinds.get(o.type); return n + (b ? units(b.kind, o.spec) : 0); }, 0), 'pages');
    const luod = t.spawn(k, broker);
    const dev = timed(parts.after, 'RETRIEVE', () => openLiveupdate(luod));
    // The first open rebuilt the incoming sessions: what each object was handed over as.
    for (const s of k.luo.sessions.incoming) {
      for (const f of s.fileSet.files) {
        const r = objects.find((o) => o.session === s.name && BigInt(o.token) === f.token);
        if (r) r.compatible = f.compatible;
      }
    }
    // A session that fails (RETRIEVE or FINISH) does not stop the others from being checked:
    // a wrong byte anywhere must be seen. The first such error is rethrown at the end.
    let firstError: ErrnoError | null = null;
    scenario.sessions.forEach((s, si) => {
      try {
        restoreSession(k, t, luod, dev, s.name, si);
      } catch (e) {
        if (!(e instanceof ErrnoError)) throw e;
        firstError ??= e;
      }
    });
    const mctx = machineCtx(k, t);
    for (const [key, { section }] of activeSections) {
      const bSection = B.sections.get(key)?.section ?? section;
      for (const c of bSection.after?.(mctx, scenario[key], sectionState.get(key)) ?? []) sectionChecks.push({ ...c, section: key });
    }
    progress.done();
    marks.afterEnd = performance.now();
    if (firstError) throw firstError;
  };

  /** Forget what a previous kernel B did (a forked run starts from the same kernel A). */
  const resetB = (): void => {
    for (const r of objects) { r.restoredBy = null; r.restoredPages = null; r.check = null; r.error = null; r.compatible = null; }
    for (const s of sessions) { s.restored = false; s.finished = false; }
    sectionChecks.length = 0;
    parts.after.length = 0;
    k2 = null;
    num.after = null;
    marks.afterStart = NaN;
    marks.afterEnd = NaN;
  };
  const fork = opts.fork;
  const forkB = fork === undefined ? undefined : (m: Machine, bootB: () => LiveUpdateResult<void>): void => {
    fork(m, () => {
      resetB();
      let res: LiveUpdateResult<void> | null = null;
      let thrown: unknown = null;
      try { res = bootB(); } catch (e) { thrown = e; }
      const snapshotOf = <T extends object>(xs: readonly T[]): T[] => xs.map((x) => ({ ...x }));
      const r = resultOf(res, thrown);
      return { ...r, objects: snapshotOf(r.objects), sessions: snapshotOf(r.sessions), sectionChecks: r.sectionChecks.slice() };
    });
    resetB();
  };

  /** The run's result from the harness's result, or what it threw. */
  const resultOf = (res: LiveUpdateResult<void> | null, thrown: unknown): ScenarioRunResult => {
    let outcome: RunOutcome = 'updated';
    let harnessOutcome: Outcome['kind'] | null = null;
    let refusal: NegotiationRefusal | null = null;
    let error: string | null = null;
    let violations: readonly string[] = [];
    let timeline: readonly PhaseTime[] = [];
    let formats: Readonly<Record<string, string>> = {};
    if (res) {
      timeline = res.timeline;
      violations = res.violations;
      formats = res.formats;
      harnessOutcome = res.outcome.kind;
      if (res.outcome.kind === 'rolled-back') {
        outcome = 'rolled-back';
        error = res.outcome.error.message;
        if (res.outcome.error instanceof FormatNegotiationError) refusal = { refusals: res.outcome.error.refusals, freezes, fromAlive: !res.from.isDead };
      } else if (res.outcome.kind === 'refused-incoming') { outcome = 'refused-incoming'; error = res.outcome.reason; }
      else if (res.outcome.kind === 'file-error') { outcome = 'failed'; error = `${res.outcome.error.code} ${res.outcome.error.message}`; }
    } else if (thrown instanceof InvariantError) {
      violations = thrown.violations;
    } else if (thrown instanceof ErrnoError || thrown instanceof FormatNegotiationError || thrown instanceof UnexpectedOutcomeError) {
      outcome = 'failed';
      error = `${thrown instanceof ErrnoError ? `${thrown.code} ` : ''}${messageOf(thrown)}`;
    } else {
      throw thrown;
    }
    const kin = k2 as Kernel | null;
    if (kin) num.after = kin.luo.liveupdateNum;
    // Without the harness timeline (it throws when an invariant broke), the callbacks' marks tell the same story.
    const fallback = [
      { phase: 'boot A', ms: marks.beforeStart - marks.start }, { phase: 'before', ms: marks.beforeEnd - marks.beforeStart },
      { phase: 'freeze + serialize + jump', ms: marks.jump - marks.beforeEnd }, { phase: 'boot B', ms: marks.afterStart - marks.jump },
      { phase: 'after', ms: marks.afterEnd - marks.afterStart },
    ].filter((p) => Number.isFinite(p.ms));
    const phases = (timeline.length > 0 ? timeline : fallback).map((p) => (p.phase === 'before' || p.phase === 'after' ? { ...p, parts: parts[p.phase] } : p));
    return {
      ...base, outcome, harnessOutcome, refusal, error, unsupported: null, sectionChecks, phases, formats,
      leaks: kin?.khoIn ? kin.khoIn.leaked() : null, poisonReads: machine.memory.poisonReads, liveupdateNum: { ...num }, violations,
    };
  };

  let res: LiveUpdateResult<void> | null = null;
  let thrown: unknown = null;
  try {
    res = liveUpdate({ from, to }, {
      name: scenario.name, machine, before, after, afterJump, expect: 'any', ...(opts.faults ? { faults: opts.faults } : {}), ...(forkB ? { fork: forkB } : {}),
    });
  } catch (e) {
    thrown = e;
  } finally {
    progress.done();
  }
  return resultOf(res, thrown);
}
