/**
 * The result of `liveupdate run` as data (the --json object) and as text. Everything here is
 * derived from a RunResult; the verdict (`ok`) is: the update happened, no invariant broke,
 * nothing leaked, nothing read poison, every file came back and every byte matched.
 */
import { PAGE_SIZE } from '@liveupdate/hw';
import { EXIT } from '../exit.js';
import { regionPages } from '../report/memmap.js';
import type { RunOutcome, RunResult } from '../scenario/runner.js';
import { bytes, count, ms, plural, table } from './format.js';

export interface PhaseSummary {
  readonly phase: string;
  readonly ms: number;
  readonly parts?: ReadonlyArray<{ readonly phase: string; readonly ms: number }>;
}

export interface FormatUse {
  readonly family: string;
  readonly version: string | null;
  readonly compatible: string;
  readonly files: number;
}

/** One scenario object (a file, a VM, a device) as the summary shows it. */
export interface ObjectSummary {
  readonly session: string;
  readonly token: number;
  readonly type: string;
  /** The object's own fields from the scenario (type and token aside), as "key value" text. */
  readonly what: string;
  readonly spec: Readonly<Record<string, unknown>>;
  readonly createdBy: string | null;
  readonly restoredBy: string | null;
  readonly preservedPages: number;
  readonly restoredPages: number | null;
  readonly compatible: string | null;
  readonly check: 'passed' | 'failed' | 'not retrieved' | 'not run';
  /** The plugin's one-line account of what it checked. */
  readonly checked: string | null;
  readonly counts: Readonly<Record<string, number>>;
  readonly problems: readonly string[];
}

export interface RunSummary {
  readonly command: 'run' | 'report';
  readonly ok: boolean;
  readonly exitCode: number;
  readonly scenario: {
    readonly name: string;
    readonly description: string | null;
    readonly machine: { readonly memory: string; readonly memoryBytes: number; readonly numaNodes: number };
    readonly from: { readonly release: string; readonly plugins: Readonly<Record<string, string>> };
    readonly to: { readonly release: string; readonly plugins: Readonly<Record<string, string>> };
    readonly broker: string;
    readonly cmdline: string;
    /** The outcome the scenario expects (its `expect`, default 'updated'). */
    readonly expect: string;
  };
  readonly outcome: RunOutcome;
  readonly error: string | null;
  /** Set when the outcome is 'not-supported': which kernel cannot handle which object. */
  readonly unsupported: { readonly side: 'A' | 'B'; readonly reasons: readonly string[] } | null;
  readonly preserved: { readonly sessions: number; readonly objects: number; readonly pages: number; readonly bytes: number };
  readonly restored: { readonly sessions: number; readonly objects: number; readonly pages: number; readonly bytes: number; readonly finishedSessions: number };
  readonly formats: {
    readonly files: readonly FormatUse[];
    readonly kho: string | null;
    readonly luo: string | null;
    readonly flbs: readonly string[];
    readonly preflight: ReadonlyArray<{ family: string; owner: string; offered: readonly string[]; accepted: string | null; chosen: string | null }>;
  };
  readonly phases: readonly PhaseSummary[];
  readonly handover: {
    /** Preserved pages and tracker pages that are not guest memory: what the handover itself costs. */
    readonly metadataPages: number;
    readonly metadataBytes: number;
    readonly trackerNodes: number;
    readonly preservedBlocks: number;
    readonly preservedPages: number;
    /** Handover pages by structure (the core's, and the plugins' decoders' OwnedPages.structure). */
    readonly structures: Readonly<Record<string, number>>;
  } | null;
  readonly leaks: { readonly blocks: number; readonly pages: number; readonly poisonReads: number };
  readonly dataCheck: {
    readonly passed: boolean;
    readonly objectsChecked: number;
    /** The plugins' check counters (ObjectCheck.counts), summed over the objects. */
    readonly counts: Readonly<Record<string, number>>;
    readonly problems: readonly string[];
  };
  /** What the plugins' scenario sections checked in kernel B. */
  readonly sectionChecks: ReadonlyArray<{
    readonly section: string; readonly ok: boolean; readonly summary: string; readonly problems: readonly string[];
    /** The section's counters (e.g. the pci section's blackoutNs per VM, dmaWrites, dmaMaxGapNs per engine). */
    readonly counts: Readonly<Record<string, number>>;
  }>;
  readonly liveupdateNum: { readonly before: number | null; readonly after: number | null };
  readonly violations: readonly string[];
  readonly objects: readonly ObjectSummary[];
  readonly dump: string | null;
  readonly report: string | null;
}

const round1 = (n: number): number => Math.round(n * 10) / 10;

/** A spec value in one line: lists of words joined by '+', nested objects as { key value, ... }. */
function valueText(v: unknown): string {
  if (Array.isArray(v)) return v.every((x) => x === null || typeof x !== 'object') ? v.join('+') : `[${v.map(valueText).join(', ')}]`;
  if (v !== null && typeof v === 'object') return `{ ${Object.entries(v).map(([k, x]) => `${k} ${valueText(x)}`).join(', ')} }`;
  return String(v);
}

const whatOf = (spec: Readonly<Record<string, unknown>>): string => Object.entries(spec)
  .filter(([k]) => k !== 'type' && k !== 'token')
  .map(([k, v]) => `${k} ${valueText(v)}`).join(', ');

/** What decides a run's verdict, without the view: all a matrix cell needs (no text is formatted). */
export interface RunVerdict {
  readonly ok: boolean;
  readonly outcome: RunOutcome;
  readonly error: string | null;
  readonly leaks: RunSummary['leaks'];
  readonly dataCheck: RunSummary['dataCheck'];
  readonly violations: readonly string[];
  readonly restored: { readonly sessions: number; readonly finishedSessions: number };
}

/** The problems of one object as the summary lists them: why it was not retrieved, then its check's. */
const problemsOf = (o: RunResult['objects'][number]): string[] => [...(o.error ? [o.error] : []), ...(o.check?.problems ?? [])];

/** The verdict of a run (`summarize` reports the same one, with the view around it). */
export function verdictOf(r: RunResult): RunVerdict {
  const s = r.scenario;
  const checks = r.objects.map((o) => o.check).filter((c) => c !== null);
  const counts: Record<string, number> = {};
  for (const c of checks) for (const [k, v] of Object.entries(c.counts ?? {})) counts[k] = (counts[k] ?? 0) + v;
  const problems = [...r.objects.flatMap(problemsOf), ...r.sectionChecks.flatMap((c) => c.problems)];
  const leaks = { blocks: r.leaks?.blocks ?? 0, pages: r.leaks?.pages ?? 0, poisonReads: r.poisonReads };
  const dataPassed = r.outcome === 'updated' && r.objects.every((o) => o.check !== null && o.check.ok) && r.sectionChecks.every((c) => c.ok);
  const expected = s.expect ?? 'updated';
  const outcomeOk = expected === 'updated'
    ? r.outcome === 'updated' && dataPassed
    : (expected === 'rolled-back' && r.outcome === 'rolled-back') || (expected === 'refused-incoming' && r.outcome === 'refused-incoming')
      || (expected === 'file-error' && r.harnessOutcome === 'file-error');
  const ok = outcomeOk && r.violations.length === 0 && leaks.blocks === 0 && leaks.poisonReads === 0
    && (r.outcome !== 'updated' || r.sessions.every((x) => x.finished));
  return {
    ok, outcome: r.outcome, error: r.error, leaks,
    dataCheck: { passed: dataPassed, objectsChecked: checks.length, counts, problems },
    violations: r.violations,
    restored: { sessions: r.sessions.filter((x) => x.restored).length, finishedSessions: r.sessions.filter((x) => x.finished).length },
  };
}

export function summarize(r: RunResult, outputs: { dump?: string | null; report?: string | null } = {}): RunSummary {
  const s = r.scenario;
  const objects: ObjectSummary[] = r.objects.map((o) => ({
    session: o.session, token: o.token, type: o.type, what: whatOf(o.spec), spec: o.spec, createdBy: o.createdBy, restoredBy: o.restoredBy,
    preservedPages: o.preservedPages, restoredPages: o.restoredPages, compatible: o.compatible,
    check: o.check ? (o.check.ok ? 'passed' : 'failed') : o.error ? 'not retrieved' : 'not run',
    checked: o.check?.summary ?? null, counts: o.check?.counts ?? {},
    problems: problemsOf(o),
  }));
  const preserved = r.objects.filter((o) => o.preserved);
  const restored = r.objects.filter((o) => o.check !== null);
  const restoredPages = restored.reduce((n, o) => n + (o.restoredPages ?? 0), 0);
  const preservedPages = r.objects.reduce((n, o) => n + o.preservedPages, 0);

  const uses = new Map<string, FormatUse>();
  const decodedOf = new Map<string, { family: string | null; version: string | null }>();
  for (const sess of r.handover?.luo?.sessions ?? []) for (const f of sess.files) if (f.decoded) decodedOf.set(f.compatible, f.decoded);
  for (const o of r.objects) {
    if (!o.compatible) continue;
    const d = decodedOf.get(o.compatible);
    const u = uses.get(o.compatible);
    uses.set(o.compatible, { family: d?.family ?? '?', version: d?.version ?? null, compatible: o.compatible, files: (u?.files ?? 0) + 1 });
  }

  const h = r.handover;
  let handover: RunSummary['handover'] = null;
  if (h?.tracker) {
    // Guest memory is the data the files' decoders report; every other handover page (preserved
    // or a tracker node) is the handover's own: the same count the report's memory map paints.
    const metadataPages = regionPages(r.machine.numaNodes, h).metadata;
    const structures: Record<string, number> = {};
    for (const st of h.structures.values()) structures[st] = (structures[st] ?? 0) + 1;
    handover = {
      metadataPages, metadataBytes: metadataPages * PAGE_SIZE, trackerNodes: h.tracker.nodePfns.length,
      preservedBlocks: h.tracker.blocks, preservedPages: h.tracker.pages, structures,
    };
  }
  const v = verdictOf(r);
  const { ok, leaks } = v;
  const expected = s.expect ?? 'updated';
  return {
    command: 'run', ok, exitCode: ok ? EXIT.ok : EXIT.failed,
    scenario: {
      name: s.name, description: s.description ?? null,
      machine: { memory: s.machine.memory, memoryBytes: r.machine.memory.size, numaNodes: r.machine.numaNodes.length },
      from: s.from, to: s.to, broker: r.broker, cmdline: r.cmdline, expect: expected,
    },
    outcome: r.outcome, error: r.error, unsupported: r.unsupported,
    preserved: {
      sessions: r.sessions.filter((x) => x.preserved).length, objects: preserved.length, pages: preservedPages, bytes: preservedPages * PAGE_SIZE,
    },
    restored: {
      sessions: v.restored.sessions, objects: restored.length, pages: restoredPages,
      bytes: restoredPages * PAGE_SIZE, finishedSessions: v.restored.finishedSessions,
    },
    formats: {
      files: [...uses.values()], kho: h?.fdt?.compatible ?? null, luo: h?.luo?.compatible ?? null,
      flbs: h?.luo?.flbs.map((f) => f.name) ?? [],
      preflight: r.preflight.entries.map((e) => ({ family: e.family, owner: e.owner, offered: e.offered, accepted: e.accepted, chosen: e.chosen })),
    },
    phases: r.phases.map((p) => ({ phase: p.phase, ms: round1(p.ms), ...(p.parts ? { parts: p.parts.map((q) => ({ phase: q.phase, ms: round1(q.ms) })) } : {}) })),
    handover,
    leaks,
    dataCheck: v.dataCheck,
    sectionChecks: r.sectionChecks.map((c) => ({ section: c.section, ok: c.ok, summary: c.summary, problems: c.problems, counts: c.counts ?? {} })),
    liveupdateNum: r.liveupdateNum,
    violations: r.violations,
    objects,
    dump: outputs.dump ?? null,
    report: outputs.report ?? null,
  };
}

const OUTCOME_TEXT: Record<RunOutcome, string> = {
  updated: 'updated',
  'rolled-back': 'ROLLED BACK: the kexec was refused or failed before the jump; the old kernel keeps running',
  'refused-incoming': 'REFUSED by the new kernel: the handover was not usable',
  failed: 'FAILED',
  'not-supported': 'NOT SUPPORTED: a kernel\'s plugins cannot handle the scenario\'s objects; nothing ran',
};

/** Why a run is not ok, in one line. */
function failure(x: RunSummary): string {
  if (x.outcome !== 'updated') return `${OUTCOME_TEXT[x.outcome]}${x.error ? `: ${x.error}` : ''}`;
  const why: string[] = [];
  if (x.leaks.blocks > 0) why.push(`${plural(x.leaks.blocks, 'preserved block')} leaked`);
  if (x.leaks.poisonReads > 0) why.push(`${plural(x.leaks.poisonReads, 'read')} of poisoned memory`);
  if (!x.dataCheck.passed) why.push('the data check failed');
  if (x.restored.finishedSessions < x.restored.sessions) why.push('a session was not finished');
  if (why.length === 0 && x.violations.length > 0) why.push(plural(x.violations.length, 'invariant') + ' broke');
  return `FAILED: kernel ${x.scenario.to.release} booted, but ${why.join(', ')}`;
}

/** The text summary `liveupdate run` prints. */
export function formatSummary(x: RunSummary): string {
  const lines: string[] = [];
  const sc = x.scenario;
  const plugins = (p: Readonly<Record<string, string>>): string => Object.entries(p).map(([n, v]) => `${n} ${v}`).join(', ') || 'no plugins';
  lines.push(`liveupdate run: ${sc.name}`);
  if (sc.description) lines.push(`  ${sc.description}`);
  lines.push(`  ${bytes(sc.machine.memoryBytes)} machine, ${plural(sc.machine.numaNodes, 'NUMA node')}; kernel ${sc.from.release} -> ${sc.to.release}; broker ${sc.broker}`);
  lines.push(`  plugins ${plugins(sc.from.plugins)} -> ${plugins(sc.to.plugins)}`);
  lines.push('');
  const rows: string[][] = [];
  const row = (k: string, v: string): void => { rows.push([k, v]); };
  const expected = sc.expect ?? 'updated';
  row('result', x.ok
    ? expected === 'updated' ? `ok: kernel ${sc.to.release} runs every object from bytes alone` : `ok: ${x.outcome}, as the scenario expects${x.error ? ` (${x.error})` : ''}`
    : failure(x));
  row('preserved', `${plural(x.preserved.sessions, 'session')}, ${plural(x.preserved.objects, 'object')}: ${count(x.preserved.pages)} pages (${bytes(x.preserved.bytes)}) resident`);
  row('restored', `${plural(x.restored.sessions, 'session')}, ${plural(x.restored.objects, 'object')}: ${count(x.restored.pages)} pages (${bytes(x.restored.bytes)}); ${plural(x.restored.finishedSessions, 'session')} finished`);
  const fmts = x.formats.files.map((u) => `${u.family} ${u.version ?? '?'} as "${u.compatible}" (${plural(u.files, 'file')})`);
  const core = [x.formats.kho && `KHO "${x.formats.kho}"`, x.formats.luo && `LUO "${x.formats.luo}"`, ...x.formats.flbs.map((f) => `FLB "${f}"`)].filter(Boolean);
  row('formats', [...fmts, ...core].join(', ') || 'none handed over');
  if (x.handover) {
    row('handover', `${count(x.handover.metadataPages)} pages (${bytes(x.handover.metadataBytes)}) of metadata beside the guest memory: ${count(x.handover.preservedBlocks)} preserved blocks, ${count(x.handover.trackerNodes)} tracker nodes`);
  }
  row('leaks', `${count(x.leaks.blocks)}${x.leaks.blocks === 0 ? '' : ` preserved blocks (${count(x.leaks.pages)} pages) never claimed`}${x.leaks.poisonReads ? `; ${count(x.leaks.poisonReads)} reads of poisoned memory` : ''}`);
  const dc = x.dataCheck;
  row('data check', dc.passed
    ? `passed: ${plural(dc.objectsChecked, 'object')}; ${Object.entries(dc.counts).map(([k, v]) => `${count(v)} ${k}`).join(', ') || 'nothing to compare'}`
    : x.outcome === 'updated' || dc.objectsChecked > 0
      ? `FAILED${dc.problems.length ? `: ${dc.problems.slice(0, 3).join('; ')}` : ''}`
      : 'not run: no live update happened');
  row('liveupdate_num', `${x.liveupdateNum.before ?? '-'} -> ${x.liveupdateNum.after ?? '-'}`);
  lines.push(table(rows, ''));
  for (const v of x.violations) lines.push(`invariant broken: ${v}`);

  lines.push('', 'time');
  lines.push(table(x.phases.map((p) => [p.phase, ms(p.ms).padStart(9), (p.parts ?? []).map((q) => `${q.phase} ${ms(q.ms)}`).join(', ')])));

  for (const c of x.sectionChecks) lines.push(`section ${c.section}: ${c.ok ? 'passed' : 'FAILED'}: ${c.summary}${c.problems.length ? ` (${c.problems.slice(0, 3).join('; ')})` : ''}`);
  for (const why of x.unsupported?.reasons ?? []) lines.push(`not supported by ${x.unsupported?.side ?? '?'}: ${why}`);

  lines.push('', 'objects');
  lines.push(table([
    ['session', 'token', 'type', 'object', 'preserved', 'restored', 'format', 'check'],
    ...x.objects.map((o) => [
      o.session, String(o.token), o.type, o.what, count(o.preservedPages), o.restoredPages === null ? '-' : count(o.restoredPages), o.compatible ?? '-', o.check,
    ]),
  ]));
  if (x.dump) lines.push('', `handover dump written to ${x.dump} (liveupdate inspect ${x.dump})`);
  if (x.report) lines.push(`${x.dump ? '' : '\n'}HTML report written to ${x.report}`);
  return `${lines.join('\n')}\n`;
}
