/**
 * Run a scenario file's live update through the SDK harness, in the luod pattern: a broker
 * process holds /dev/liveupdate and one session per VM; each VM's VMM gets its session fd from
 * the broker, creates the guest RAM memfds, fills them and preserves them; the broker keeps
 * the session fds open through the kexec. In the new kernel a new broker retrieves the
 * sessions by name and hands each back to a new VMM, which retrieves its fds by token,
 * checks every byte and finishes the session.
 */
import { createMachine, PAGE_SIZE, type Machine } from '@liveupdate/hw';
import {
  createSession, ErrnoError, finishSession, FormatNegotiationError, openLiveupdate, preflight, preserveFd, retrieveFd,
  retrieveSession, type Kernel, type PreflightReport, type Plugin, type Process, type Scenario,
} from '@liveupdate/sdk';
import { InvariantError, liveUpdate, type FaultSpec, type Outcome, type PhaseTime } from '@liveupdate/sdk/testing';
import { decodeHandover, type HandoverView } from '../handover/decode.js';
import { captureDump, type HandoverDump } from '../handover/dump.js';
import { bytes, count } from '../output/format.js';
import type { Progress } from '../output/progress.js';
import { memfdSyscallsOf, resolvePlugins } from '../plugins.js';
import { createGuestFile, dataPages, guestFile, HUGE_PAGE_BYTES, verifyGuestFile, type GuestFile, type GuestFileCheck } from './guest-memory.js';

export const BASE_CMDLINE = 'kho=on liveupdate=on';
const DEFAULT_BROKER = 'luod';

export interface FileResult {
  readonly file: GuestFile;
  /** PRESERVE_FD succeeded. */
  preserved: boolean;
  /** Pages resident when the VMM preserved the file. */
  preservedPages: number;
  /** Pages resident in the restored file (upstream formats materialize holes). */
  restoredPages: number | null;
  /** The compatible string the file was handed over under. */
  compatible: string | null;
  check: GuestFileCheck | null;
  error: string | null;
}

export interface SessionResult {
  readonly name: string;
  preserved: boolean;
  restored: boolean;
  finished: boolean;
}

export type RunOutcome = 'updated' | 'rolled-back' | 'refused-incoming' | 'failed';

/** A kexec that format negotiation refused: what was refused, how many files had been frozen, whether kernel A still runs. */
export interface NegotiationRefusalResult {
  readonly refusals: FormatNegotiationError['refusals'];
  readonly freezes: number;
  readonly fromAlive: boolean;
}

export interface RunResult {
  readonly scenario: Scenario;
  readonly cmdline: string;
  readonly broker: string;
  readonly machine: Machine;
  readonly outcome: RunOutcome;
  /** The SDK harness's outcome class; null when the harness threw (an invariant broke, or an error it does not classify). */
  readonly harnessOutcome: Outcome['kind'] | null;
  /** Set when format negotiation refused the kexec (a FormatNegotiationError): the update was rolled back. */
  readonly refusal: NegotiationRefusalResult | null;
  /** Why the update did not complete (refusal, errno, invariant). */
  readonly error: string | null;
  readonly preflight: PreflightReport;
  readonly sessions: readonly SessionResult[];
  readonly files: readonly FileResult[];
  /** The harness timeline; `parts` split the long steps. */
  readonly phases: ReadonlyArray<PhaseTime & { readonly parts?: readonly PhaseTime[] }>;
  /** The handover as the new kernel found it, decoded from bytes right after the jump. */
  readonly handover: HandoverView | null;
  readonly dump: HandoverDump | null;
  readonly leaks: { readonly blocks: number; readonly pages: number } | null;
  readonly poisonReads: number;
  readonly liveupdateNum: { readonly before: number | null; readonly after: number | null };
  readonly violations: readonly string[];
}

export interface RunOptions {
  readonly progress: Progress;
  /** Keep the handover's raw pages (for --dump). */
  readonly capture?: boolean;
  /** Written into dumps: which tool made them. */
  readonly createdBy?: string;
  /** Faults for the SDK harness (with faults it classifies the outcome instead of throwing on a broken invariant). */
  readonly faults?: readonly FaultSpec[];
  /** Called right after the jump (after the harness applied any 'corrupt' fault) with the handover as decoded from bytes. */
  readonly onHandover?: (machine: Machine, handover: HandoverView) => void;
}

/** SCM_RIGHTS over the broker's socket: the receiver gets its own fd for the same file. */
function passFd(from: Process, fd: number, to: Process): number {
  return to.fdInstall(from.fget(fd, 'sendmsg'), true);
}

/** hugeTLB memfds need a pool: size it from the scenario (hugepagesz=2M hugepages=N). */
export function cmdlineFor(files: readonly GuestFile[]): string {
  const huge = files.filter((f) => f.type === 'hugetlb-memfd').reduce((n, f) => n + f.size / HUGE_PAGE_BYTES, 0);
  return huge > 0 ? `${BASE_CMDLINE} hugepagesz=2M hugepages=${huge}` : BASE_CMDLINE;
}

const messageOf = (e: unknown): string => (e instanceof Error ? e.message : String(e));

export async function runScenario(scenario: Scenario, opts: RunOptions): Promise<RunResult> {
  const { progress } = opts;
  const files = scenario.sessions.flatMap((s) => s.files.map((f) => guestFile(s.name, f)));
  const fromBuilds = await resolvePlugins(scenario.from.plugins);
  const toBuilds = await resolvePlugins(scenario.to.plugins);
  const fromPlugins: Plugin[] = fromBuilds.map((b) => b.create());
  const toPlugins: Plugin[] = toBuilds.map((b) => b.create());
  // Each kernel's VMM uses the memfd syscalls of the release that kernel runs.
  const sysA = memfdSyscallsOf(fromBuilds);
  const sysB = memfdSyscallsOf(toBuilds);
  const cmdline = cmdlineFor(files);
  const broker = scenario.broker ?? DEFAULT_BROKER;
  const from = { plugins: fromPlugins, release: scenario.from.release, cmdline };
  const to = { plugins: toPlugins, release: scenario.to.release, cmdline };
  const plan = preflight(from, to);
  const machine = createMachine({ memory: scenario.machine.memory, ...(scenario.machine.numaNodes ? { numaNodes: scenario.machine.numaNodes } : {}) });

  const sessions: SessionResult[] = scenario.sessions.map((s) => ({ name: s.name, preserved: false, restored: false, finished: false }));
  const results: FileResult[] = files.map((file) => ({ file, preserved: false, preservedPages: 0, restoredPages: null, compatible: null, check: null, error: null }));
  const parts = { before: [] as PhaseTime[], after: [] as PhaseTime[] };
  const timed = <R>(list: PhaseTime[], phase: string, fn: () => R): R => {
    const t0 = performance.now();
    try { return fn(); } finally {
      const last = list.find((p) => p.phase === phase);
      const ms = performance.now() - t0;
      if (last) list.splice(list.indexOf(last), 1, { phase, ms: last.ms + ms }); else list.push({ phase, ms });
    }
  };
  let handover: HandoverView | null = null;
  let dump: HandoverDump | null = null;
  let k2: Kernel | null = null;
  const num = { before: null as number | null, after: null as number | null };
  let freezes = 0;
  const totalFilePages = files.reduce((n, f) => n + f.size / PAGE_SIZE, 0);

  // Phase boundaries as seen from the callbacks, for when the harness keeps its timeline to itself.
  const marks = { start: performance.now(), beforeStart: NaN, beforeEnd: NaN, jump: NaN, afterStart: NaN, afterEnd: NaN };

  const before = (k1: Kernel, t: { spawn(k: Kernel, name: string): Process }): void => {
    marks.beforeStart = performance.now();
    num.before = k1.luo.liveupdateNum;
    const luod = t.spawn(k1, broker);
    const dev = openLiveupdate(luod);
    progress.phase('preserve', files.reduce((n, f) => n + dataPages(f), 0), 'pages');
    scenario.sessions.forEach((s, si) => {
      const vmm = t.spawn(k1, `vmm/${s.name}`);
      // luod creates the session and hands its fd to the VMM over the socket.
      const sessionFd = passFd(luod, createSession(luod, dev, s.name), vmm);
      for (const r of results.filter((x) => x.file.session === s.name)) {
        const fd = timed(parts.before, 'fill guest RAM', () => createGuestFile(sysA, vmm, r.file, (n) => progress.tick(n)));
        timed(parts.before, 'PRESERVE_FD', () => preserveFd(vmm, sessionFd, fd, r.file.token));
        r.preserved = true;
        r.preservedPages = sysA.memfdResidentPages(vmm, fd);
        progress.note(`${s.name} token ${r.file.token}: ${r.file.type} ${bytes(r.file.size)} ${r.file.fill}, ${count(r.preservedPages)} pages preserved`);
      }
      // The VMM lets go of the session; luod keeps it open through the kexec. The guest keeps
      // running on its memfds until the reboot freezes them.
      vmm.close(sessionFd);
      (sessions[si] as SessionResult).preserved = true;
    });
    progress.phase('kexec', files.length + 2, 'steps');
    k1.luo.hooks.fileOpDone.tap('liveupdate-cli', (ev, err) => {
      if (ev.op !== 'freeze') return;
      freezes++;
      if (!err) progress.tick(1);
    });
    marks.beforeEnd = performance.now();
  };

  const afterJump = (m: Machine): void => {
    marks.jump = performance.now();
    progress.tick(1);
    handover = decodeHandover(m.memory, m.bootParams.khoData);
    if (opts.capture) {
      dump = captureDump(m, handover, {
        createdBy: opts.createdBy ?? 'liveupdate', scenario: scenario.name, from: scenario.from.release, to: scenario.to.release,
      });
    }
    for (const s of handover.luo?.sessions ?? []) {
      for (const f of s.files) {
        const r = results.find((x) => x.file.session === s.name && BigInt(x.file.token) === f.token);
        if (r) r.compatible = f.compatible;
      }
    }
    opts.onHandover?.(m, handover);
  };

  const after = (k: Kernel, _state: void, t: { spawn(k: Kernel, name: string): Process }): void => {
    marks.afterStart = performance.now();
    k2 = k;
    progress.tick(1);
    progress.phase('restore', totalFilePages, 'pages');
    const luod = t.spawn(k, broker);
    const dev = timed(parts.after, 'RETRIEVE', () => openLiveupdate(luod));
    scenario.sessions.forEach((s, si) => {
      const vmm = t.spawn(k, `vmm/${s.name}`);
      const sessionFd = timed(parts.after, 'RETRIEVE', () => {
        const fd = retrieveSession(luod, dev, s.name);
        const mine = passFd(luod, fd, vmm);
        luod.close(fd);
        return mine;
      });
      (sessions[si] as SessionResult).restored = true;
      for (const r of results.filter((x) => x.file.session === s.name)) {
        let fd: number;
        try {
          fd = timed(parts.after, 'RETRIEVE', () => retrieveFd(vmm, sessionFd, r.file.token));
        } catch (e) {
          if (!(e instanceof ErrnoError)) throw e;
          r.error = `RETRIEVE_FD token ${r.file.token}: ${e.message}`;
          continue;
        }
        r.restoredPages = sysB.memfdResidentPages(vmm, fd);
        r.check = timed(parts.after, 'verify', () => verifyGuestFile(sysB, vmm, fd, r.file, (n) => progress.tick(n), r.compatible === 'memfd-v1'));
        progress.note(`${s.name} token ${r.file.token}: ${count(r.restoredPages)} pages restored, data check ${r.check.ok ? 'passed' : 'FAILED'}`);
      }
      timed(parts.after, 'FINISH', () => finishSession(vmm, sessionFd));
      (sessions[si] as SessionResult).finished = true;
      vmm.close(sessionFd);
    });
    progress.done();
    marks.afterEnd = performance.now();
  };

  let outcome: RunOutcome = 'updated';
  let harnessOutcome: Outcome['kind'] | null = null;
  let refusal: NegotiationRefusalResult | null = null;
  let error: string | null = null;
  let violations: readonly string[] = [];
  let timeline: readonly PhaseTime[] = [];
  try {
    const res = liveUpdate({ from, to }, { name: scenario.name, machine, before, after, afterJump, ...(opts.faults ? { faults: opts.faults } : {}) });
    timeline = res.timeline;
    violations = res.violations;
    harnessOutcome = res.outcome.kind;
    if (res.outcome.kind === 'rolled-back') {
      outcome = 'rolled-back';
      error = res.outcome.error.message;
      if (res.outcome.error instanceof FormatNegotiationError) refusal = { refusals: res.outcome.error.refusals, freezes, fromAlive: !res.from.isDead };
    } else if (res.outcome.kind === 'refused-incoming') { outcome = 'refused-incoming'; error = res.outcome.reason; }
    else if (res.outcome.kind === 'file-error') { outcome = 'failed'; error = res.outcome.error.message; }
  } catch (e) {
    if (e instanceof InvariantError) {
      violations = e.violations;
    } else if (e instanceof ErrnoError || e instanceof FormatNegotiationError) {
      outcome = 'failed';
      error = `${e instanceof ErrnoError ? `${e.code} ` : ''}${messageOf(e)}`;
    } else {
      throw e;
    }
  } finally {
    progress.done();
  }
  const kin = k2 as Kernel | null;
  if (kin) num.after = kin.luo.liveupdateNum;
  // Without the harness timeline (it throws when an invariant broke), the callbacks' marks tell the same story.
  const fallback = [
    { phase: 'boot A', ms: marks.beforeStart - marks.start }, { phase: 'before', ms: marks.beforeEnd - marks.beforeStart },
    { phase: 'freeze + serialize + jump', ms: marks.jump - marks.beforeEnd }, { phase: 'boot B', ms: marks.afterStart - marks.jump },
    { phase: 'after', ms: marks.afterEnd - marks.afterStart },
  ].filter((p) => Number.isFinite(p.ms));
  const base = timeline.length > 0 ? timeline : fallback;
  const withParts = base.map((p) => (p.phase === 'before' || p.phase === 'after' ? { ...p, parts: parts[p.phase] } : p));
  return {
    scenario, cmdline, broker, machine, outcome, harnessOutcome, refusal, error, preflight: plan, sessions, files: results, phases: withParts,
    handover, dump, leaks: kin?.khoIn ? kin.khoIn.leaked() : null, poisonReads: machine.memory.poisonReads,
    liveupdateNum: num, violations,
  };
}
