/**
 * `liveupdate inspect <dump>`: what a new kernel would find in a handover, decoded from the
 * dump's bytes alone — the root FDT as dts, the preserved-memory tracker as ranges per order,
 * the LUO sessions and files with their compatible strings and format versions.
 */
import { PAGE_SIZE } from '@liveupdate/hw';
import type { DecodedValue, Plugin } from '@liveupdate/sdk';
import { EXIT, UsageError } from '../exit.js';
import { bytes, count, hex, plural } from '../output/format.js';
import { decodeHandover } from './decode.js';
import { dumpMemory, type HandoverDump } from './dump.js';
import { resolvePlugin } from '../plugins.js';

export interface InspectRange {
  readonly start: string;
  readonly end: string;
  readonly pages: number;
}

export interface InspectReport {
  readonly command: 'inspect';
  readonly ok: boolean;
  readonly exitCode: number;
  readonly dump: {
    readonly file: string; readonly createdBy: string; readonly scenario: string; readonly from: string; readonly to: string;
    readonly memoryBytes: number; readonly pages: number;
  };
  readonly bootParams: {
    readonly cmdline: string;
    readonly khoData: { readonly fdtAddr: string; readonly fdtSize: number; readonly scratchAddr: string; readonly scratchSize: number } | null;
  };
  readonly scratch: ReadonlyArray<{ readonly addr: string; readonly size: number }>;
  readonly fdt: { readonly phys: string; readonly size: number; readonly compatible: string | null; readonly dts: string } | null;
  readonly tracker: {
    readonly root: string; readonly nodes: number; readonly blocks: number; readonly pages: number;
    readonly orders: ReadonlyArray<{ readonly order: number; readonly blocks: number; readonly pages: number; readonly ranges: readonly InspectRange[] }>;
  } | null;
  readonly subtrees: ReadonlyArray<{ readonly name: string; readonly phys: string; readonly size: number }>;
  readonly luo: {
    readonly phys: string; readonly compatible: string; readonly liveupdateNum: number;
    readonly sessions: ReadonlyArray<{
      readonly name: string; readonly count: number;
      readonly files: ReadonlyArray<{
        readonly token: string; readonly compatible: string; readonly family: string | null; readonly version: string | null;
        readonly owner: string | null; readonly data: string; readonly header: Readonly<Record<string, string>> | null;
        readonly problems: readonly string[];
        /** Handover pages the file owns, by structure (header, xarray nodes, folio arrays...). */
        readonly pages: Readonly<Record<string, number>>;
        /** Guest data pages the file hands over. */
        readonly dataPages: number;
      }>;
    }>;
    readonly flbs: ReadonlyArray<{ readonly name: string; readonly data: string; readonly count: number; readonly owner: string | null; readonly fields: Readonly<Record<string, string>> | null }>;
  } | null;
  readonly kexecMetadata: { readonly previousRelease: string; readonly kexecCount: number } | null;
  /** The plugins whose decoders read the files (kernel A's, as the dump records them). */
  readonly decoders: readonly string[];
  /** What could not be decoded for want of a plugin (not a fault of the handover). */
  readonly notes: readonly string[];
  readonly problems: readonly string[];
}

const text = (fields: Readonly<Record<string, DecodedValue>>): Record<string, string> =>
  Object.fromEntries(Object.entries(fields).map(([k, v]) => [k, String(v)]));

/** Kernel A's plugins (they wrote the handover), loaded for their decoders; each that is not installed is a problem. */
async function decodersFor(d: HandoverDump): Promise<{ plugins: Plugin[]; notes: string[] }> {
  const plugins: Plugin[] = [];
  const notes: string[] = [];
  for (const [name, version] of Object.entries(d.plugins?.from ?? {})) {
    try {
      plugins.push((await resolvePlugin(name, version)).create());
    } catch (e) {
      if (!(e instanceof UsageError)) throw e;
      notes.push(`cannot decode ${name}'s files: ${e.message}`);
    }
  }
  if (!d.plugins) notes.push('the dump does not name its plugins (an older dump): files are listed, not decoded');
  return { plugins, notes };
}

export async function inspectDump(d: HandoverDump, file: string): Promise<InspectReport> {
  const { memory, khoData } = dumpMemory(d);
  const { plugins, notes } = await decodersFor(d);
  const v = decodeHandover(memory, khoData, plugins);
  const problems = v.problems;
  const ok = problems.length === 0;
  const byStructure = (pages: ReadonlyArray<{ structure: string; count?: number }>): Record<string, number> => {
    const out: Record<string, number> = {};
    for (const p of pages) out[p.structure] = (out[p.structure] ?? 0) + (p.count ?? 1);
    return out;
  };
  return {
    command: 'inspect', ok, exitCode: ok ? EXIT.ok : EXIT.failed,
    dump: { file, createdBy: d.createdBy, scenario: d.scenario, from: d.from, to: d.to, memoryBytes: d.machine.memoryBytes, pages: d.pages.length },
    bootParams: {
      cmdline: d.bootParams.cmdline,
      khoData: v.khoData ? { fdtAddr: hex(v.khoData.fdtAddr), fdtSize: v.khoData.fdtSize, scratchAddr: hex(v.khoData.scratchAddr), scratchSize: v.khoData.scratchSize } : null,
    },
    scratch: v.scratch.map((a) => ({ addr: hex(a.addr), size: a.size })),
    fdt: v.fdt ? { phys: hex(v.fdt.phys), size: v.fdt.size, compatible: v.fdt.compatible, dts: v.fdt.dts } : null,
    tracker: v.tracker ? {
      root: hex(v.tracker.rootPhys), nodes: v.tracker.nodePfns.length, blocks: v.tracker.blocks, pages: v.tracker.pages,
      orders: v.tracker.orders.map((o) => ({
        order: o.order, blocks: o.blocks, pages: o.pages,
        ranges: o.runs.map(([s, e]) => ({ start: hex(s * PAGE_SIZE), end: hex(e * PAGE_SIZE), pages: e - s })),
      })),
    } : null,
    subtrees: v.subtrees.map((s) => ({ name: s.name, phys: hex(s.phys), size: s.size })),
    luo: v.luo ? {
      phys: hex(v.luo.phys), compatible: v.luo.compatible, liveupdateNum: v.luo.liveupdateNum,
      sessions: v.luo.sessions.map((s) => ({
        name: s.name, count: s.count,
        files: s.files.map((f) => {
          const dec = f.decoded ?? null;
          return {
            token: f.token.toString(), compatible: f.compatible, family: dec?.family ?? null, version: dec?.version ?? null, owner: dec?.owner ?? null,
            data: hex(f.data), header: dec ? text(dec.fields) : null, problems: dec?.problems ?? [],
            pages: byStructure(dec?.pages ?? []), dataPages: (dec?.dataRuns ?? []).reduce((n, [a, b]) => n + (b - a), 0),
          };
        }),
      })),
      flbs: v.luo.flbs.map((f) => ({ name: f.name, data: hex(f.data), count: f.count, owner: f.decoded?.owner ?? null, fields: f.decoded ? text(f.decoded.fields) : null })),
    } : null,
    kexecMetadata: v.metadata,
    decoders: plugins.map((p) => `${p.name}@${p.version}`),
    notes,
    problems,
  };
}

/** Ranges per order shown in text; --json has them all. */
const RANGES_SHOWN = 8;

export function formatInspect(x: InspectReport): string {
  const out: string[] = [];
  const d = x.dump;
  out.push(`handover dump ${d.file}: scenario ${d.scenario}, kernel ${d.from} -> ${d.to}, ${bytes(d.memoryBytes)} machine, ${plural(d.pages, 'page')}`);
  out.push(`boot params: cmdline "${x.bootParams.cmdline}"`);
  const k = x.bootParams.khoData;
  out.push(k ? `kho_data: fdt ${k.fdtAddr} (${k.fdtSize} bytes), scratch array ${k.scratchAddr} (${k.scratchSize} bytes)` : 'kho_data: none (nothing handed over)');
  if (x.scratch.length) out.push(`scratch areas: ${x.scratch.map((a) => `${a.addr} +${bytes(a.size)}`).join(', ')}`);
  if (x.fdt) {
    out.push('', `KHO root FDT at ${x.fdt.phys}, ${x.fdt.size} bytes, compatible = "${x.fdt.compatible ?? ''}":`);
    out.push(...x.fdt.dts.trimEnd().split('\n').map((l) => `  ${l.replace(/\t/g, '    ')}`));
  }
  if (x.tracker) {
    const t = x.tracker;
    out.push('', `preserved memory: tracker root ${t.root}, ${plural(t.nodes, 'node page')}; ${plural(t.blocks, 'block')}, ${count(t.pages)} pages (${bytes(t.pages * PAGE_SIZE)})`);
    for (const o of t.orders) {
      out.push(`  order ${o.order} (${bytes(PAGE_SIZE * 2 ** o.order)} blocks): ${plural(o.blocks, 'block')}, ${count(o.pages)} pages in ${plural(o.ranges.length, 'range')}`);
      for (const r of o.ranges.slice(0, RANGES_SHOWN)) out.push(`    ${r.start}-${r.end}  ${plural(r.pages, 'page')}`);
      if (o.ranges.length > RANGES_SHOWN) out.push(`    ... ${count(o.ranges.length - RANGES_SHOWN)} more (--json lists them all)`);
    }
  }
  if (x.subtrees.length) out.push('', `subtrees: ${x.subtrees.map((s) => `${s.name} at ${s.phys} (${s.size} bytes)`).join(', ')}`);
  if (x.luo) {
    out.push('', `LUO at ${x.luo.phys}: compatible "${x.luo.compatible}", liveupdate_num ${x.luo.liveupdateNum}, ${plural(x.luo.sessions.length, 'session')}`);
    for (const s of x.luo.sessions) {
      out.push(`  session "${s.name}": ${plural(s.count, 'file')}`);
      for (const f of s.files) {
        const fmt = f.family ? `${f.family} ${f.version}` : 'unknown format';
        const hdr = f.header ? `  ${Object.entries(f.header).map(([kk, vv]) => `${kk} ${vv}`).join(', ')}` : '';
        out.push(`    token ${f.token}: compatible "${f.compatible}" (${fmt}), data ${f.data}${hdr}`);
        const owned = Object.entries(f.pages).map(([st, n]) => `${st} ${n}`).join(', ');
        if (owned) out.push(`      pages: ${owned}; ${count(f.dataPages)} data pages`);
        for (const p of f.problems) out.push(`      problem: ${p}`);
      }
    }
    out.push(`  FLBs: ${x.luo.flbs.length ? x.luo.flbs.map((f) => `"${f.name}" data ${f.data}, ${plural(f.count, 'file')}${f.fields ? ` (${Object.entries(f.fields).map(([k, vv]) => `${k} ${vv}`).join(', ')})` : ''}`).join('; ') : 'none'}`);
  }
  if (x.kexecMetadata) out.push('', `kexec-metadata: previous release ${x.kexecMetadata.previousRelease}, kexec count ${x.kexecMetadata.kexecCount}`);
  for (const n of x.notes) out.push('', `note: ${n}`);
  out.push('', x.problems.length ? `problems (a new kernel would not trust this handover):\n${x.problems.map((p) => `  - ${p}`).join('\n')}` : 'problems: none');
  return `${out.join('\n')}\n`;
}
