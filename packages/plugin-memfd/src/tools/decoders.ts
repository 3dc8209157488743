/**
 * Decoders of plugin-memfd's handover, from bytes alone (for inspect, report, dumps and the
 * fuzzer): the memfd family (memfd-v1 and memfd-v2 as upstream writes them, the sparse 3.x
 * formats, 3.0 and 3.1 walked here, 3.2 and the 4.x extents through the pure decoders of
 * abi/memfd-decode.ts), the hugetlb-memfd family, and the hugetlb FLB. Each returns the header's fields,
 * what is wrong with them, every handover page the file owns (header, vmalloc chunks and folio
 * arrays of v1/v2, KHO xarray nodes of 3.x, kho_vmalloc chunks and extent stream pages of 4.x)
 * and the folios it hands over. Hostile bytes give
 * problems, never an exception: pointers are range-checked, chains bounded and cycle-checked.
 */
import { PAGE_SIZE, type PhysMemory } from '@liveupdate/hw';
import { abi, defineDecoder, xarrayAbi, type Decoded, type DecodeContext, type DecodedValue, type FormatDecoder, type OwnedPages } from '@liveupdate/sdk';
import {
  decodeMemfdV3, decodeMemfdV4, folioPfn, HUGETLB_FAMILY, HUGETLB_FLB_COMPATIBLE, HUGETLB_MAX_HSTATES, hugetlbHstateSer, MEMFD_FAMILY, MEMFD_LUO_ALL_SEALS,
  MEMFD_LUO_FOLIO_PFN_BITS, MEMFD_V3_1_CRC_BYTES, memfdLuoFolioSer, memfdLuoSerV1, memfdLuoSerV2, memfdLuoSerV3, memfdLuoSerV3_1,
} from '../abi/memfd.js';
import { crc32 } from '../crc32.js';

const { KHO_VMALLOC_CHUNK_NEXT_OFFSET, KHO_VMALLOC_CHUNK_PHYS_OFFSET, KHO_VMALLOC_SIZE } = abi.kho;
const hex = (n: number | bigint): string => `0x${n.toString(16)}`;
/** A cap on what one decode walks (xarray nodes, chunk pages, folio array pages). */
const MAX_PAGES_WALKED = 1 << 16;
/** Data runs listed per file (beyond it the runs are summarized). */
const MAX_DATA_RUNS = 1 << 16;

type Words = NonNullable<OwnedPages['words']>;

class Walk {
  readonly problems: string[] = [];
  readonly pages: OwnedPages[] = [];
  readonly dataRuns: Array<[number, number]> = [];
  private readonly seen = new Set<number>();
  /** The pages walked are in an upstream layout (memfd-v1/v2, the hugetlb-v1 FLB): OwnedPages.upstream. */
  upstream = false;
  constructor(readonly memory: PhysMemory, readonly label: string) {}

  /** A page-aligned physical address of a whole page inside RAM. */
  pageOk(phys: number | bigint, what: string): number | null {
    const p = typeof phys === 'bigint' ? (phys <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(phys) : -1) : phys;
    if (p <= 0 || p % PAGE_SIZE !== 0 || p + PAGE_SIZE > this.memory.size) {
      this.problems.push(`${what} ${hex(phys)} is not a page of RAM`);
      return null;
    }
    return p;
  }

  /** Own a page run; a page owned twice is aliasing (a cycle or two structures on one page). */
  own(pfn: number, count: number, structure: string, role: string, words?: OwnedPages['words']): boolean {
    for (let k = 0; k < count; k++) {
      if (this.seen.has(pfn + k)) { this.problems.push(`${role}: page ${hex((pfn + k) * PAGE_SIZE)} is used twice (a cycle or aliasing)`); return false; }
    }
    for (let k = 0; k < count; k++) this.seen.add(pfn + k);
    this.pages.push({ pfn, ...(count !== 1 ? { count } : {}), structure, role, ...(words ? { words } : {}), ...(this.upstream ? { upstream: true } : {}) });
    return true;
  }

  data(pfn: number, pages: number): void {
    const last = this.dataRuns[this.dataRuns.length - 1];
    if (last && last[1] === pfn) { last[1] += pages; return; }
    if (this.dataRuns.length < MAX_DATA_RUNS) this.dataRuns.push([pfn, pfn + pages]);
  }

  result(fields: Record<string, DecodedValue>): Decoded {
    return { fields, problems: this.problems, pages: this.pages, dataRuns: this.dataRuns };
  }
}

const V2_WORDS: Words = [
  { offset: 0, size: 8, kind: 'count' }, { offset: 8, size: 8, kind: 'count' }, { offset: 16, size: 4, kind: 'flags' },
  { offset: 20, size: 4, kind: 'flags' }, { offset: 24, size: 8, kind: 'count' }, { offset: 32, size: 8, kind: 'pointer' },
  { offset: 40, size: 4, kind: 'count' }, { offset: 44, size: 4, kind: 'flags' },
];
const V1_WORDS: Words = [
  { offset: 0, size: 8, kind: 'count' }, { offset: 8, size: 8, kind: 'count' }, { offset: 16, size: 8, kind: 'count' },
  { offset: 24, size: 8, kind: 'pointer' }, { offset: 32, size: 4, kind: 'count' },
];
const V3_WORDS: Words = [
  { offset: 0, size: 8, kind: 'count' }, { offset: 8, size: 8, kind: 'count' }, { offset: 16, size: 4, kind: 'flags' },
  { offset: 20, size: 4, kind: 'flags' }, { offset: 24, size: 8, kind: 'count' }, { offset: 32, size: 8, kind: 'pointer' },
  { offset: 40, size: 4, kind: 'count' }, { offset: 44, size: 4, kind: 'flags' },
];
/** memfd 3.2: the 3.1 header, then meta_crc32 and meta_pad. */
const V3_2_WORDS: Words = [
  ...V3_WORDS, { offset: 48, size: 4, kind: 'flags' }, { offset: 52, size: 4, kind: 'flags' },
  { offset: 56, size: 4, kind: 'flags' }, { offset: 60, size: 4, kind: 'flags' },
];
/** memfd 4.x: pos, size, seals, flags, nr_folios, nr_extents, stream_bytes, the kho_vmalloc descriptor, order, crc32. */
const V4_WORDS: Words = [
  { offset: 0, size: 8, kind: 'count' }, { offset: 8, size: 8, kind: 'count' }, { offset: 16, size: 4, kind: 'flags' },
  { offset: 20, size: 4, kind: 'flags' }, { offset: 24, size: 8, kind: 'count' }, { offset: 32, size: 8, kind: 'count' },
  { offset: 40, size: 8, kind: 'count' }, { offset: 48, size: 8, kind: 'pointer' }, { offset: 56, size: 4, kind: 'count' },
  { offset: 60, size: 4, kind: 'flags' }, { offset: 64, size: 4, kind: 'count' }, { offset: 68, size: 4, kind: 'flags' },
];
/** memfd 4.1: the 4.0 words, then id_crc32 and id_pad. */
const V4_1_WORDS: Words = [...V4_WORDS, { offset: 72, size: 4, kind: 'flags' }, { offset: 76, size: 4, kind: 'flags' }];
const CHUNK_WORDS: Words = [
  { offset: KHO_VMALLOC_CHUNK_NEXT_OFFSET, size: 8, kind: 'pointer' }, { offset: KHO_VMALLOC_CHUNK_PHYS_OFFSET, size: 8, kind: 'pointer' },
];
const XA_WORDS: Words = [{ offset: 0, size: 8, kind: 'pointer' }, { offset: 8, size: 8, kind: 'pointer' }];

/** memfd-v1/v2: the vmalloc'd array of memfd_luo_folio_ser behind struct kho_vmalloc. */
function walkFolioArray(w: Walk, first: bigint, totalPages: number, order: number, nrFolios: number): void {
  if (first === 0n) {
    if (nrFolios !== 0) w.problems.push(`nr_folios ${nrFolios} but no folio array`);
    return;
  }
  const runPages = 2 ** order;
  if (order > 18) { w.problems.push(`folio array order ${order} is not a vmalloc order`); return; }
  if (nrFolios * memfdLuoFolioSer.size > totalPages * PAGE_SIZE) w.problems.push(`nr_folios ${nrFolios} does not fit the folio array's ${totalPages} pages`);
  const runs: number[] = [];
  let chunk = w.pageOk(first, `${w.label}: vmalloc chunk`);
  const maxChunks = Math.ceil(totalPages / runPages / KHO_VMALLOC_SIZE) + 1;
  for (let n = 0; chunk !== null; n++) {
    if (n >= maxChunks || n >= MAX_PAGES_WALKED) { w.problems.push(`vmalloc chunk chain longer than ${maxChunks} chunks for ${totalPages} pages`); break; }
    if (!w.own(chunk / PAGE_SIZE, 1, 'memfd vmalloc chunk', `memfd vmalloc chunk (${w.label})`, CHUNK_WORDS)) break;
    for (let i = 0; i < KHO_VMALLOC_SIZE; i++) {
      const phys = w.memory.readU64(chunk + KHO_VMALLOC_CHUNK_PHYS_OFFSET + 8 * i);
      if (phys === 0n) break;
      const p = w.pageOk(phys, `${w.label}: folio array run`);
      if (p === null || p + runPages * PAGE_SIZE > w.memory.size) continue;
      runs.push(p);
    }
    const next = w.memory.readU64(chunk + KHO_VMALLOC_CHUNK_NEXT_OFFSET);
    chunk = next === 0n ? null : w.pageOk(next, `${w.label}: next vmalloc chunk`);
  }
  if (runs.length * runPages !== totalPages) w.problems.push(`folio array: ${runs.length * runPages} pages in the chunks, total_pages ${totalPages}`);
  for (const p of runs) if (!w.own(p / PAGE_SIZE, runPages, 'memfd folio array', `memfd folio array (${w.label})`)) return;
  // The entries: pfn_flags, index per folio.
  let seenEntries = 0;
  let lastIndex = -1;
  const perRun = (runPages * PAGE_SIZE) / memfdLuoFolioSer.size;
  for (const p of runs) {
    const bytes = w.memory.read(p, runPages * PAGE_SIZE);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let i = 0; i < perRun && seenEntries < nrFolios; i++, seenEntries++) {
      const at = i * memfdLuoFolioSer.size;
      const pfn = folioPfn(view.getUint32(at, true), view.getUint32(at + 4, true));
      const index = view.getUint32(at + 12, true) * 0x1_0000_0000 + view.getUint32(at + 8, true);
      if (index <= lastIndex && w.problems.length < 16) w.problems.push(`folio ${seenEntries}: index ${index} not above ${lastIndex}`);
      lastIndex = index;
      if ((pfn + 1) * PAGE_SIZE > w.memory.size) { if (w.problems.length < 16) w.problems.push(`folio ${seenEntries}: pfn ${hex(pfn)} outside RAM`); continue; }
      w.data(pfn, 1);
    }
  }
}

/** 3.x and hugetlb-memfd: the KHO xarray of index → pfn | flags << 52 (table nodes, then leaves). */
function walkXarray(w: Walk, root: bigint, order: number, nrFolios: number): void {
  if (root === 0n) {
    if (nrFolios !== 0) w.problems.push(`nr_folios ${nrFolios} but no folio xarray`);
    return;
  }
  let entries = 0;
  let walked = 0;
  const pfnMask = 2 ** (MEMFD_LUO_FOLIO_PFN_BITS - 32);
  const visit = (phys: number, level: number): void => {
    if (walked++ >= MAX_PAGES_WALKED) return;
    if (!w.own(phys / PAGE_SIZE, 1, 'memfd xarray node', `memfd xarray node (${w.label})`, level > 0 ? XA_WORDS : undefined)) return;
    const page = w.memory.read(phys, PAGE_SIZE);
    const view = new DataView(page.buffer, page.byteOffset, page.byteLength);
    for (let slot = 0; slot < xarrayAbi.KHO_XA_SLOTS; slot++) {
      const lo = view.getUint32(slot * 8, true);
      const hi = view.getUint32(slot * 8 + 4, true);
      if (lo === 0 && hi === 0) continue;
      if (level > 0) {
        const child = w.pageOk(BigInt(hi) * 0x1_0000_0000n + BigInt(lo), `${w.label}: xarray node`);
        if (child !== null) visit(child, level - 1);
      } else {
        entries++;
        const pfn = (hi % pfnMask) * 0x1_0000_0000 + lo;
        if ((pfn + 2 ** order) * PAGE_SIZE > w.memory.size) { if (w.problems.length < 16) w.problems.push(`xarray entry: pfn ${hex(pfn)} outside RAM`); continue; }
        w.data(pfn, 2 ** order);
      }
    }
  };
  const r = w.pageOk(root, `${w.label}: xarray root`);
  if (r !== null) visit(r, xarrayAbi.KHO_XA_DEPTH - 1);
  if (walked > MAX_PAGES_WALKED) w.problems.push(`xarray has more than ${MAX_PAGES_WALKED} nodes`);
  if (entries !== nrFolios) w.problems.push(`nr_folios ${nrFolios} but ${entries} folios in the xarray`);
}

function headerProblems(w: Walk, size: bigint, pos: bigint, seals: number | null, flags: number, reserved: number): void {
  if (size > BigInt(Number.MAX_SAFE_INTEGER)) w.problems.push(`size ${size} beyond MAX_LFS_FILESIZE`);
  if (pos > BigInt(Number.MAX_SAFE_INTEGER)) w.problems.push(`pos ${pos} beyond MAX_LFS_FILESIZE`);
  if (seals !== null && (seals & ~MEMFD_LUO_ALL_SEALS) !== 0) w.problems.push(`seals ${hex(seals)} has unknown bits`);
  if (flags !== 0) w.problems.push(`flags ${hex(flags)} must be 0`);
  if (reserved !== 0) w.problems.push(`reserved ${hex(reserved)} must be 0`);
}

function decodeMemfd(memory: PhysMemory, data: bigint, version: string | null, context: DecodeContext, family: string): Decoded {
  const { label } = context;
  const w = new Walk(memory, label);
  const phys = w.pageOk(data, `${label}: header`);
  if (phys === null) return w.result({});
  const [major = 0, minor = 0] = (version ?? '').split('.').map(Number);
  const hugetlb = family === HUGETLB_FAMILY;
  // memfd-v1 and memfd-v2 are mainline's layouts (mm/memfd_luo.c), without a check value.
  w.upstream = !hugetlb && major <= 2;
  if (!hugetlb && ((major === 3 && minor >= 2) || major === 4)) return decodeChecked(memory, phys, major, minor, context);
  // hugetlb-memfd 2.x is the memfd@4.1.0 layout (HUGETLB_AS_MEMFD).
  if (hugetlb && major === 2) return decodeChecked(memory, phys, 4, 1, context);
  if (hugetlb || major === 3) {
    const withCrc = !hugetlb && minor >= 1;
    const raw = memory.read(phys, withCrc ? memfdLuoSerV3_1.size : memfdLuoSerV3.size);
    const h = memfdLuoSerV3.decode(raw);
    w.own(phys / PAGE_SIZE, 1, 'memfd header', `memfd header (${label})`, V3_WORDS);
    const fields: Record<string, DecodedValue> = {
      size: h.size, pos: h.pos, seals: hex(h.seals), flags: hex(h.flags), nr_folios: h.nr_folios, folios_xa: hex(h.folios_xa), order: h.order,
    };
    if (withCrc) {
      const c = memfdLuoSerV3_1.decode(raw);
      const want = crc32(raw.subarray(0, MEMFD_V3_1_CRC_BYTES));
      fields.crc32 = hex(c.crc32);
      if (c.crc32 !== want) w.problems.push(`crc32 ${hex(c.crc32)} does not match the header (${hex(want)})`);
      if (c.pad !== 0) w.problems.push(`pad ${hex(c.pad)} must be 0`);
    }
    headerProblems(w, h.size, h.pos, h.seals, h.flags, h.reserved);
    if (hugetlb ? h.order !== 9 && h.order !== 18 : h.order !== 0) w.problems.push(`order ${h.order} is not a ${hugetlb ? 'huge page' : 'shmem folio'} order`);
    if (h.nr_folios <= BigInt(Number.MAX_SAFE_INTEGER) && h.order <= 18) walkXarray(w, h.folios_xa, h.order, Number(h.nr_folios));
    return w.result(fields);
  }
  if (major === 2) {
    const h = memfdLuoSerV2.decode(memory.read(phys, memfdLuoSerV2.size));
    w.own(phys / PAGE_SIZE, 1, 'memfd header', `memfd header (${label})`, V2_WORDS);
    headerProblems(w, h.size, h.pos, h.seals, h.flags, 0);
    if (h.nr_folios <= BigInt(Number.MAX_SAFE_INTEGER)) walkFolioArray(w, h.folios_first, h.folios_total_pages, h.folios_order, Number(h.nr_folios));
    return w.result({
      size: h.size, pos: h.pos, seals: hex(h.seals), flags: hex(h.flags), nr_folios: h.nr_folios,
      folios_first: hex(h.folios_first), folios_total_pages: h.folios_total_pages, folios_order: h.folios_order,
    });
  }
  if (major === 1) {
    const h = memfdLuoSerV1.decode(memory.read(phys, memfdLuoSerV1.size));
    w.own(phys / PAGE_SIZE, 1, 'memfd header', `memfd header (${label})`, V1_WORDS);
    headerProblems(w, h.size, h.pos, null, 0, 0);
    if (h.nr_folios <= BigInt(Number.MAX_SAFE_INTEGER)) walkFolioArray(w, h.folios_first, h.folios_total_pages, h.folios_order, Number(h.nr_folios));
    return w.result({
      size: h.size, pos: h.pos, nr_folios: h.nr_folios, folios_first: hex(h.folios_first), folios_total_pages: h.folios_total_pages, folios_order: h.folios_order,
    });
  }
  w.own(phys / PAGE_SIZE, 1, 'memfd header', `memfd header (${label})`);
  w.problems.push(`memfd format ${version ?? '?'}: no decoder in this release`);
  return w.result({});
}

/** Problems listed per file from the pure decoders (a forged file can have one per folio). */
const MAX_PROBLEMS = 16;

/**
 * memfd 3.2 and 4.x: the pure decoders (every check the reader makes, both CRC-32s), their pages
 * named for the memory map and the fuzzer (with the words worth mutating), header fields in hex.
 */
function decodeChecked(memory: PhysMemory, phys: number, major: number, minor: number, context: DecodeContext): Decoded {
  const { label } = context;
  const d = major === 4 ? decodeMemfdV4(memory, phys, minor, context.file) : decodeMemfdV3(memory, phys, minor);
  const f = d.fields;
  const h = (k: string): string => { const v = f[k]; return typeof v === 'number' || typeof v === 'bigint' ? hex(v) : String(v); };
  const fields: Record<string, DecodedValue> = major === 4
    ? {
        size: f.size ?? null, pos: f.pos ?? null, seals: h('seals'), flags: h('flags'), nr_folios: f.nr_folios ?? null, nr_extents: f.nr_extents ?? null,
        stream_bytes: f.stream_bytes ?? null, extents_first: h('extents_first'), extents_total_pages: f.extents_total_pages ?? null,
        extents_order: f.extents_order ?? null, order: f.order ?? null, crc32: h('crc32'),
        ...(minor >= 1 ? { id_crc32: h('id_crc32') } : {}),
      }
    : {
        size: f.size ?? null, pos: f.pos ?? null, seals: h('seals'), flags: h('flags'), nr_folios: f.nr_folios ?? null, folios_xa: h('folios_xa'),
        order: f.order ?? null, crc32: h('crc32'), meta_crc32: h('meta_crc32'),
      };
  const problems = d.problems.slice(0, MAX_PROBLEMS);
  if (d.problems.length > MAX_PROBLEMS) problems.push(`... and ${d.problems.length - MAX_PROBLEMS} more problems`);
  const size = f.size, pos = f.pos, seals = f.seals;
  if (typeof size === 'bigint' && size > BigInt(Number.MAX_SAFE_INTEGER)) problems.push(`size ${size} beyond MAX_LFS_FILESIZE`);
  if (typeof pos === 'bigint' && pos > BigInt(Number.MAX_SAFE_INTEGER)) problems.push(`pos ${pos} beyond MAX_LFS_FILESIZE`);
  if (typeof seals === 'number' && (seals & ~MEMFD_LUO_ALL_SEALS) !== 0) problems.push(`seals ${hex(seals)} has unknown bits`);
  const pages: OwnedPages[] = d.pages.map((p) => {
    const count = p.count !== undefined && p.count !== 1 ? { count: p.count } : {};
    if (p.role === 'header') return { pfn: p.pfn, structure: 'memfd header', role: `memfd header (${label})`, words: major === 4 ? (minor >= 1 ? V4_1_WORDS : V4_WORDS) : V3_2_WORDS };
    if (p.structure === 'kho-xarray') {
      return { pfn: p.pfn, structure: 'memfd xarray node', role: `memfd xarray ${p.role} (${label})`, ...(p.role === 'leaf' ? {} : { words: XA_WORDS }) };
    }
    if (p.structure === 'kho_vmalloc') return { pfn: p.pfn, structure: 'memfd vmalloc chunk', role: `memfd vmalloc chunk (${label})`, words: CHUNK_WORDS };
    return { pfn: p.pfn, ...count, structure: 'memfd extent stream', role: `memfd extent stream (${label})` };
  });
  return { fields, problems, pages, dataRuns: d.dataRuns };
}

function decodeHugetlbFlb(memory: PhysMemory, data: bigint, label: string): Decoded {
  const w = new Walk(memory, label);
  // The hugetlb series' FLB layout: per-hstate counts, no check value.
  w.upstream = true;
  const phys = w.pageOk(data, `${label}: hstate page`);
  if (phys === null) return w.result({});
  w.own(phys / PAGE_SIZE, 1, 'hugetlb FLB', `hugetlb FLB hstates (${label})`);
  const raw = memory.read(phys, HUGETLB_MAX_HSTATES * hugetlbHstateSer.size);
  const fields: Record<string, DecodedValue> = {};
  for (let i = 0; i < HUGETLB_MAX_HSTATES; i++) {
    const h = hugetlbHstateSer.decode(raw, i * hugetlbHstateSer.size);
    if (h.nr_pages === 0n && h.order === 0) continue;
    fields[`hstate${i}`] = `${h.nr_pages} page(s) of order ${h.order}`;
    if (h.order !== 9 && h.order !== 18) w.problems.push(`hstate ${i}: order ${h.order} is not a huge page order`);
  }
  return w.result(fields);
}

export function memfdDecoders(): FormatDecoder[] {
  return [
    defineDecoder({ target: { kind: 'file', family: MEMFD_FAMILY }, decode: (m, d, v, c) => decodeMemfd(m, d, v, c, MEMFD_FAMILY) }),
    defineDecoder({ target: { kind: 'file', family: HUGETLB_FAMILY }, decode: (m, d, v, c) => decodeMemfd(m, d, v, c, HUGETLB_FAMILY) }),
    defineDecoder({ target: { kind: 'flb', compatible: HUGETLB_FLB_COMPATIBLE }, decode: (m, d, _v, c) => decodeHugetlbFlb(m, d, c.label) }),
  ];
}
