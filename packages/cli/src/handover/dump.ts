/**
 * The handover dump: the raw pages of a handover as they stood right after the old kernel's
 * jump (root FDT, tracker nodes, LUO blob, session/file blocks, FLB page, kexec-metadata,
 * scratch array, and every page the plugins' decoders say their files and FLBs own: headers,
 * xarray nodes, vmalloc chunks, folio arrays) plus the kexec boot parameters. Guest memory is left out:
 * the dump is the metadata a new kernel parses, small enough to attach to a bug report.
 *
 * Format (JSON, version 1):
 *   { format: "liveupdate-handover-dump", version: 1, createdBy, scenario, from, to,
 *     plugins: { from: { name: version }, to: { name: version } }   (optional: older dumps lack it)
 *     machine: { memoryBytes, numaNodes: [{ id, startPfn, endPfn }] },
 *     bootParams: { cmdline, khoData: base64 | null },
 *     pages: [{ phys: "0x…" (page aligned), role, data: base64 of 4096 bytes }] }
 * `role` is informative only: `inspect` decodes from the bytes, never from the labels.
 */
import { PAGE_SIZE, PhysMemory, type Machine, type NumaNode } from '@liveupdate/hw';
import { UsageError } from '../exit.js';
import type { HandoverView } from './decode.js';

export const DUMP_FORMAT = 'liveupdate-handover-dump';
export const DUMP_VERSION = 1;

export interface DumpPage {
  readonly phys: string;
  readonly role: string;
  readonly data: string;
}

export interface HandoverDump {
  readonly format: typeof DUMP_FORMAT;
  readonly version: typeof DUMP_VERSION;
  readonly createdBy: string;
  readonly scenario: string;
  readonly from: string;
  readonly to: string;
  /** The plugins (name → version) of kernel A and B: `inspect` loads kernel A's to decode the files. */
  readonly plugins?: { readonly from: Readonly<Record<string, string>>; readonly to: Readonly<Record<string, string>> };
  readonly machine: { readonly memoryBytes: number; readonly numaNodes: readonly NumaNode[] };
  readonly bootParams: { readonly cmdline: string; readonly khoData: string | null };
  readonly pages: readonly DumpPage[];
}

const b64 = (bytes: Uint8Array): string => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('base64');

/** Copy the handover's pages out of a machine that has just crossed the kexec. */
export function captureDump(
  machine: Machine, view: HandoverView,
  meta: { createdBy: string; scenario: string; from: string; to: string; plugins: NonNullable<HandoverDump['plugins']> },
): HandoverDump {
  const params = machine.bootParams;
  const pages = [...view.pages].sort((a, b) => a[0] - b[0]).map(([pfn, role]) => ({
    phys: `0x${(pfn * PAGE_SIZE).toString(16)}`, role, data: b64(machine.memory.read(pfn * PAGE_SIZE, PAGE_SIZE)),
  }));
  return {
    format: DUMP_FORMAT, version: DUMP_VERSION, ...meta,
    machine: { memoryBytes: machine.memory.size, numaNodes: machine.numaNodes.map((n) => ({ ...n })) },
    bootParams: { cmdline: params.cmdline, khoData: params.khoData ? b64(params.khoData) : null },
    pages,
  };
}

/** JSON with one page per line, so a diff of two dumps lines up page by page. */
export function serializeDump(d: HandoverDump): string {
  const { pages, ...head } = d;
  const headJson = JSON.stringify(head, null, 2);
  const pageLines = pages.map((p) => `    ${JSON.stringify(p)}`).join(',\n');
  return `${headJson.slice(0, -2)},\n  "pages": [\n${pageLines}\n  ]\n}\n`;
}

const isRecord = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);

/** Parse and check a dump file; a UsageError names the field that is wrong. */
export function parseDump(text: string, file: string): HandoverDump {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (e) {
    throw new UsageError(`${file}: not a handover dump (not JSON: ${e instanceof Error ? e.message : String(e)})`);
  }
  const bad = (field: string, why: string): never => { throw new UsageError(`${file}: ${field} ${why}`); };
  if (!isRecord(data)) return bad('/', 'is not an object');
  if (data.format !== DUMP_FORMAT) bad('/format', `must be "${DUMP_FORMAT}"`);
  if (data.version !== DUMP_VERSION) bad('/version', `is ${JSON.stringify(data.version)}; this CLI reads version ${DUMP_VERSION}`);
  const machine = data.machine;
  if (!isRecord(machine)) return bad('/machine', 'is missing');
  const size = machine.memoryBytes;
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size <= 0 || size % PAGE_SIZE !== 0) bad('/machine/memoryBytes', 'must be a positive multiple of 4096');
  if (!Array.isArray(machine.numaNodes)) bad('/machine/numaNodes', 'must be an array');
  const params = data.bootParams;
  if (!isRecord(params)) return bad('/bootParams', 'is missing');
  if (typeof params.cmdline !== 'string') bad('/bootParams/cmdline', 'must be a string');
  if (params.khoData !== null && typeof params.khoData !== 'string') bad('/bootParams/khoData', 'must be base64 or null');
  for (const k of ['createdBy', 'scenario', 'from', 'to']) if (typeof data[k] !== 'string') bad(`/${k}`, 'must be a string');
  if (data.plugins !== undefined) {
    const pl = data.plugins;
    if (!isRecord(pl)) return bad('/plugins', 'must be an object');
    for (const side of ['from', 'to']) {
      const m = pl[side];
      if (!isRecord(m) || !Object.values(m).every((v) => typeof v === 'string')) bad(`/plugins/${side}`, 'must map plugin names to versions');
    }
  }
  if (!Array.isArray(data.pages)) return bad('/pages', 'must be an array');
  data.pages.forEach((p: unknown, i: number) => {
    if (!isRecord(p)) return bad(`/pages/${i}`, 'is not an object');
    const phys = typeof p.phys === 'string' && /^0x[0-9a-f]+$/i.test(p.phys) ? Number.parseInt(p.phys.slice(2), 16) : NaN;
    if (!Number.isSafeInteger(phys) || phys % PAGE_SIZE !== 0 || phys + PAGE_SIZE > (size as number)) bad(`/pages/${i}/phys`, 'must be a page-aligned hex address inside the machine');
    if (typeof p.role !== 'string') bad(`/pages/${i}/role`, 'must be a string');
    if (typeof p.data !== 'string' || Buffer.from(p.data, 'base64').length !== PAGE_SIZE) bad(`/pages/${i}/data`, `must be base64 of ${PAGE_SIZE} bytes`);
    return undefined;
  });
  return data as unknown as HandoverDump;
}

/** A fresh, otherwise empty memory holding the dump's pages, and the kho_data to start from. */
export function dumpMemory(d: HandoverDump): { memory: PhysMemory; khoData: Uint8Array | undefined } {
  const memory = new PhysMemory(d.machine.memoryBytes);
  for (const p of d.pages) memory.write(Number.parseInt(p.phys.slice(2), 16), new Uint8Array(Buffer.from(p.data, 'base64')));
  return { memory, khoData: d.bootParams.khoData === null ? undefined : new Uint8Array(Buffer.from(d.bootParams.khoData, 'base64')) };
}
