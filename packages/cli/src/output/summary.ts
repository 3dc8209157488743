/**
 * The result of `liveupdate run` as data (the --json object) and as text. Everything here is
 * derived from a RunResult; the verdict (`ok`) is: the update happened, no invariant broke,
 * nothing leaked, nothing read poison, every file came back and every byte matched.
 */
import { PAGE_SIZE } from '@liveupdate/hw';
import { EXIT } from '../exit.js';
import { describeFile } from '../handover/file-formats.js';
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

export interface FileSummary {
  readonly session: string;
  readonly token: number;
  readonly type: string;
  readonly fill: string;
  readonly size: number;
  readonly touched: number;
  readonly seals: readonly string[];
  readonly preservedPages: number;
  readonly restoredPages: number | null;
  readonly compatible: string | null;
  readonly check: 'passed' | 'failed' | 'not retrieved' | 'not run';
  readonly problems: readonly string[];
}

export interface RunSummary {
  readonly command: 'run';
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
  };
  readonly outcome: RunOutcome;
  readonly error: string | null;
  readonly preserved: { readonly sessions: number; readonly files: number; readonly fileBytes: number; readonly pages: number; readonly bytes: number };
  readonly restored: { readonly sessions: number; readonly files: number; readonly pages: number; readonly bytes: number; readonly finishedSessions: number };
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
    /** Pages of the structures the CLI decodes, by what they hold (format-specific indexes are the rest). */
    readonly structures: Readonly<Record<string, number>>;
  } | null;
  readonly leaks: { readonly blocks: number; readonly pages: number; readonly poisonReads: number };
  readonly dataCheck: {
    readonly passed: boolean;
    readonly filesChecked: number;
    readonly patternBytes: number;
    readonly syntheticPages: number;
    readonly holeBytes: number;
    readonly problems: readonly string[];
  };
  readonly liveupdateNum: { readonly before: number | null; readonly after: number | null };
  readonly violations: readonly string[];
  readonly files: readonly FileSummary[];
  readonly dump: string | null;
  readonly report: string | null;
}

const round1 = (n: number): number => Math.round(n * 10) / 10;

function roleGroup(role: string): string {
  if (role.startsWith('file data')) return 'file headers';
  if (role.startsWith('flb data')) return 'FLB data';
  return role;
}

export function summarize(r: RunResult, outputs: { dump?: string | null; report?: string | null } = {}): RunSummary {
  const s = r.scenario;
  const files: FileSummary[] = r.files.map((f) => ({
    session: f.file.session, token: f.file.token, type: f.file.type, fill: f.file.fill, size: f.file.size, touched: f.file.touched,
    seals: f.file.sealNames, preservedPages: f.preservedPages, restoredPages: f.restoredPages, compatible: f.compatible,
    check: f.check ? (f.check.ok ? 'passed' : 'failed') : f.error ? 'not retrieved' : 'not run',
    problems: [...(f.error ? [f.error] : []), ...(f.check?.problems ?? [])],
  }));
  const preservedFiles = r.files.filter((f) => f.preserved);
  const restoredFiles = r.files.filter((f) => f.check !== null);
  const restoredPages = restoredFiles.reduce((n, f) => n + (f.restoredPages ?? 0), 0);
  const preservedPages = r.files.reduce((n, f) => n + f.preservedPages, 0);

  const uses = new Map<string, FormatUse>();
  for (const f of r.files) {
    if (!f.compatible || !r.handover) continue;
    const d = describeFile(r.machine.memory, { compatible: f.compatible, data: 0n, token: BigInt(f.file.token) }, () => false);
    const key = f.compatible;
    const u = uses.get(key);
    uses.set(key, { family: d.family ?? '?', version: d.version, compatible: f.compatible, files: (u?.files ?? 0) + 1 });
  }

  const h = r.handover;
  let handover: RunSummary['handover'] = null;
  if (h?.tracker) {
    // Guest memory is what came back as file pages; everything else preserved is the handover's own.
    const guestPages = r.files.reduce((n, f) => n + (f.restoredPages ?? f.preservedPages), 0);
    const metadataPages = h.tracker.pages + h.tracker.nodePfns.length - guestPages;
    const structures: Record<string, number> = {};
    for (const role of h.pages.values()) structures[roleGroup(role)] = (structures[roleGroup(role)] ?? 0) + 1;
    handover = {
      metadataPages, metadataBytes: metadataPages * PAGE_SIZE, trackerNodes: h.tracker.nodePfns.length,
      preservedBlocks: h.tracker.blocks, preservedPages: h.tracker.pages, structures,
    };
  }
  const checks = r.files.map((f) => f.check).filter((c) => c !== null);
  const problems = files.flatMap((f) => f.problems);
  const leaks = { blocks: r.leaks?.blocks ?? 0, pages: r.leaks?.pages ?? 0, poisonReads: r.poisonReads };
  const dataPassed = r.outcome === 'updated' && files.every((f) => f.check === 'passed');
  const ok = r.outcome === 'updated' && r.violations.length === 0 && leaks.blocks === 0 && leaks.poisonReads === 0
    && dataPassed && r.sessions.every((x) => x.finished);
  return {
    command: 'run', ok, exitCode: ok ? EXIT.ok : EXIT.failed,
    scenario: {
      name: s.name, description: s.description ?? null,
      machine: { memory: s.machine.memory, memoryBytes: r.machine.memory.size, numaNodes: r.machine.numaNodes.length },
      from: s.from, to: s.to, broker: r.broker, cmdline: r.cmdline,
    },
    outcome: r.outcome, error: r.error,
    preserved: {
      sessions: r.sessions.filter((x) => x.preserved).length, files: preservedFiles.length,
      fileBytes: preservedFiles.reduce((n, f) => n + f.file.size, 0), pages: preservedPages, bytes: preservedPages * PAGE_SIZE,
    },
    restored: {
      sessions: r.sessions.filter((x) => x.restored).length, files: restoredFiles.length, pages: restoredPages,
      bytes: restoredPages * PAGE_SIZE, finishedSessions: r.sessions.filter((x) => x.finished).length,
    },
    formats: {
      files: [...uses.values()], kho: h?.fdt?.compatible ?? null, luo: h?.luo?.compatible ?? null,
      flbs: h?.luo?.flbs.map((f) => f.name) ?? [],
      preflight: r.preflight.entries.map((e) => ({ family: e.family, owner: e.owner, offered: e.offered, accepted: e.accepted, chosen: e.chosen })),
    },
    phases: r.phases.map((p) => ({ phase: p.phase, ms: round1(p.ms), ...(p.parts ? { parts: p.parts.map((q) => ({ phase: q.phase, ms: round1(q.ms) })) } : {}) })),
    handover,
    leaks,
    dataCheck: {
      passed: dataPassed, filesChecked: checks.length,
      patternBytes: checks.reduce((n, c) => n + c.patternBytes, 0),
      syntheticPages: checks.reduce((n, c) => n + c.syntheticPages, 0),
      holeBytes: checks.reduce((n, c) => n + c.holeBytes, 0),
      problems,
    },
    liveupdateNum: r.liveupdateNum,
    violations: r.violations,
    files,
    dump: outputs.dump ?? null,
    report: outputs.report ?? null,
  };
}

const OUTCOME_TEXT: Record<RunOutcome, string> = {
  updated: 'updated',
  'rolled-back': 'ROLLED BACK: the kexec was refused or failed before the jump; the old kernel keeps running',
  'refused-incoming': 'REFUSED by the new kernel: the handover was not usable',
  failed: 'FAILED',
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
  row('result', x.ok ? `ok: kernel ${sc.to.release} runs every VM's memory from bytes alone` : failure(x));
  row('preserved', `${plural(x.preserved.sessions, 'session')}, ${plural(x.preserved.files, 'file')}: ${bytes(x.preserved.fileBytes)} of guest RAM, ${count(x.preserved.pages)} pages (${bytes(x.preserved.bytes)}) resident`);
  row('restored', `${plural(x.restored.sessions, 'session')}, ${plural(x.restored.files, 'file')}: ${count(x.restored.pages)} pages (${bytes(x.restored.bytes)}); ${plural(x.restored.finishedSessions, 'session')} finished`);
  const fmts = x.formats.files.map((u) => `${u.family} ${u.version ?? '?'} as "${u.compatible}" (${plural(u.files, 'file')})`);
  const core = [x.formats.kho && `KHO "${x.formats.kho}"`, x.formats.luo && `LUO "${x.formats.luo}"`, ...x.formats.flbs.map((f) => `FLB "${f}"`)].filter(Boolean);
  row('formats', [...fmts, ...core].join(', ') || 'none handed over');
  if (x.handover) {
    row('handover', `${count(x.handover.metadataPages)} pages (${bytes(x.handover.metadataBytes)}) of metadata beside the guest memory: ${count(x.handover.preservedBlocks)} preserved blocks, ${count(x.handover.trackerNodes)} tracker nodes`);
  }
  row('leaks', `${count(x.leaks.blocks)}${x.leaks.blocks === 0 ? '' : ` preserved blocks (${count(x.leaks.pages)} pages) never claimed`}${x.leaks.poisonReads ? `; ${count(x.leaks.poisonReads)} reads of poisoned memory` : ''}`);
  const dc = x.dataCheck;
  row('data check', dc.passed
    ? `passed: ${bytes(dc.patternBytes)} compared byte for byte, ${count(dc.syntheticPages)} synthetic pages by seed, ${bytes(dc.holeBytes)} of holes read as zero`
    : x.outcome === 'updated' || dc.filesChecked > 0
      ? `FAILED${dc.problems.length ? `: ${dc.problems.slice(0, 3).join('; ')}` : ''}`
      : 'not run: no live update happened');
  row('liveupdate_num', `${x.liveupdateNum.before ?? '-'} -> ${x.liveupdateNum.after ?? '-'}`);
  lines.push(table(rows, ''));
  for (const v of x.violations) lines.push(`invariant broken: ${v}`);

  lines.push('', 'time');
  lines.push(table(x.phases.map((p) => [p.phase, ms(p.ms).padStart(9), (p.parts ?? []).map((q) => `${q.phase} ${ms(q.ms)}`).join(', ')])));

  lines.push('', 'files');
  lines.push(table([
    ['session', 'token', 'type', 'size', 'fill', 'preserved', 'restored', 'format', 'check'],
    ...x.files.map((f) => [
      f.session, String(f.token), f.type, bytes(f.size), f.fill === 'zero' || f.touched >= 1 ? f.fill : `${f.fill} ${+(f.touched * 100).toFixed(2)}%`,
      count(f.preservedPages), f.restoredPages === null ? '-' : count(f.restoredPages), f.compatible ?? '-', f.check,
    ]),
  ]));
  if (x.dump) lines.push('', `handover dump written to ${x.dump} (liveupdate inspect ${x.dump})`);
  if (x.report) lines.push(`${x.dump ? '' : '\n'}HTML report written to ${x.report}`);
  return `${lines.join('\n')}\n`;
}
