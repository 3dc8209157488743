/**
 * Pure, non-throwing decoders of a memfd 3.x and 4.x handover, from the bytes of physical memory
 * alone (for inspect, reports and dumps). They claim nothing, never throw on hostile input and
 * report every problem they find: checksums, counts, aliasing and cycles in the metadata,
 * folios that are metadata pages, physical overlaps. The walk is bounded by the metadata's own
 * size (a visited set stops cycles; a node cap stops a forged fan-out).
 */
import { PAGE_SIZE, type PhysMemory } from '@liveupdate/hw';
import { abi, xarrayAbi } from '@liveupdate/sdk';
import { crc32, crc32Final } from '../crc32.js';
import {
  MEMFD_V3_1_CRC_BYTES, memfdLuoSerV3, memfdLuoSerV3_1, memfdLuoSerV3_2, memfdV3_2MetaEntry, memfdV3_2MetaStart, folioPfn,
} from './memfd.js';
import {
  ExtentBuilder, MEMFD_V4_CRC_OFFSET, checkExtents, decodeExtentStream, memfdLuoSerV4, memfdLuoSerV4_1, memfdV4Checksum, memfdV4IdChecksum, type Extents,
} from './memfd-v4.js';

export type DecodedField = string | number | bigint | boolean | null;

/** One page (or run of pages) of the file's handover metadata. */
export interface DecodedPage {
  readonly pfn: number;
  readonly count?: number;
  readonly structure: string;
  readonly role: string;
}

export interface DecodedMemfd {
  readonly fields: Record<string, DecodedField>;
  readonly problems: string[];
  readonly pages: DecodedPage[];
  /** The file's data folios as [startPfn, endPfn) runs, ascending by file index. */
  readonly dataRuns: Array<[number, number]>;
}

/** Nodes a decoder visits at most: far beyond any real file (a 1 TiB dense file has ~530k). */
const MAX_NODES = 1 << 22;
const TWO32 = 0x1_0000_0000;
const hex = (n: number): string => `0x${n.toString(16)}`;

function headerBytes(mem: PhysMemory, phys: number, size: number, problems: string[]): Uint8Array | null {
  if (!Number.isSafeInteger(phys) || phys <= 0 || phys % PAGE_SIZE !== 0 || phys + size > mem.size) {
    problems.push(`header ${hex(phys)} is not a page of RAM`);
    return null;
  }
  return mem.read(phys, size);
}

/** Data runs from (index-ordered) extents. */
function runsOf(ext: Extents, order: number): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (let i = 0; i < ext.count; i++) out.push([ext.pfn[i] as number, (ext.pfn[i] as number) + (ext.len[i] as number) * 2 ** order]);
  return out;
}

/**
 * memfd 3.x (minor 0, 1 or 2): the header, the KHO xarray walked from bytes, and the checks of
 * that minor (3.1: header CRC-32; 3.2: CRC-32 over header and entries) plus every structural one.
 */
export function decodeMemfdV3(mem: PhysMemory, headerPhys: number, minor = 2): DecodedMemfd {
  const problems: string[] = [];
  const pages: DecodedPage[] = [];
  const fields: Record<string, DecodedField> = {};
  const size = minor >= 2 ? memfdLuoSerV3_2.size : minor === 1 ? memfdLuoSerV3_1.size : memfdLuoSerV3.size;
  const raw = headerBytes(mem, headerPhys, size, problems);
  if (!raw) return { fields, problems, pages, dataRuns: [] };
  pages.push({ pfn: headerPhys / PAGE_SIZE, structure: `memfd@3.${minor} header`, role: 'header' });
  const h = memfdLuoSerV3.decode(raw);
  Object.assign(fields, { pos: h.pos, size: h.size, seals: h.seals, flags: h.flags, nr_folios: h.nr_folios, folios_xa: h.folios_xa, order: h.order, reserved: h.reserved });
  if (h.flags !== 0 || h.reserved !== 0) problems.push(`flags 0x${h.flags.toString(16)} reserved 0x${h.reserved.toString(16)} (must be 0)`);
  if (h.order !== 0 && h.order !== 9 && h.order !== 18) problems.push(`folio order ${h.order}`);
  if (minor >= 1) {
    const h1 = memfdLuoSerV3_1.decode(raw);
    const want = crc32(raw.subarray(0, MEMFD_V3_1_CRC_BYTES));
    Object.assign(fields, { crc32: h1.crc32, crc32_ok: h1.crc32 === want, pad: h1.pad });
    if (h1.crc32 !== want) problems.push(`header crc32 0x${h1.crc32.toString(16)}, header 0x${want.toString(16)}`);
    if (h1.pad !== 0) problems.push(`pad 0x${h1.pad.toString(16)} (must be 0)`);
  }
  // Walk the xarray from bytes: every node a page of RAM, reached once.
  const metadata = new Set<number>([headerPhys / PAGE_SIZE]);
  const entries: number[] = []; // index, lo, hi triples
  const root = Number(h.folios_xa);
  const visited = new Set<number>();
  let aborted = false;
  const visit = (phys: number, level: number, base: number, what: string): void => {
    if (aborted) return;
    if (!Number.isSafeInteger(phys) || phys <= 0 || phys % PAGE_SIZE !== 0 || phys + PAGE_SIZE > mem.size) { problems.push(`${what} ${hex(phys)} is not a page of RAM`); return; }
    const pfn = phys / PAGE_SIZE;
    if (visited.has(pfn) || metadata.has(pfn)) { problems.push(`${what} ${hex(phys)} is reached twice (a cycle or an alias)`); return; }
    if (visited.size >= MAX_NODES) { problems.push(`more than ${MAX_NODES} xarray nodes`); aborted = true; return; }
    visited.add(pfn);
    metadata.add(pfn);
    pages.push({ pfn, structure: 'kho-xarray', role: level === 0 ? 'leaf' : `node level ${level}` });
    const words = new DataView(mem.read(phys, PAGE_SIZE).buffer);
    const span = level === 0 ? 1 : xarrayAbi.KHO_XA_SLOTS ** level;
    for (let s = 0; s < xarrayAbi.KHO_XA_SLOTS; s++) {
      const lo = words.getUint32(8 * s, true);
      const hi = words.getUint32(8 * s + 4, true);
      if ((lo | hi) === 0) continue;
      if (level === 0) entries.push(base + s, lo, hi);
      else visit(hi * TWO32 + lo, level - 1, base + s * span, `level-${level - 1} node`);
    }
  };
  if (root !== 0) visit(root, xarrayAbi.KHO_XA_DEPTH - 1, 0, 'root');
  else if (h.nr_folios !== 0n) problems.push(`nr_folios ${h.nr_folios} without an xarray`);
  const n = entries.length / 3;
  fields.folios_found = n;
  if (BigInt(n) !== h.nr_folios) problems.push(`nr_folios ${h.nr_folios} but ${n} folios in the xarray`);
  if (minor >= 2) {
    const h2 = memfdLuoSerV3_2.decode(raw);
    let c = memfdV3_2MetaStart(raw);
    for (let i = 0; i < entries.length; i += 3) c = memfdV3_2MetaEntry(c, entries[i] as number, entries[i + 1] as number, entries[i + 2] as number);
    const want = crc32Final(c);
    Object.assign(fields, { meta_crc32: h2.meta_crc32, meta_crc32_ok: h2.meta_crc32 === want, meta_pad: h2.meta_pad });
    if (h2.meta_crc32 !== want) problems.push(`meta_crc32 0x${h2.meta_crc32.toString(16)}, metadata 0x${want.toString(16)}`);
    if (h2.meta_pad !== 0) problems.push(`meta pad 0x${h2.meta_pad.toString(16)} (must be 0)`);
  }
  // Folios: extents in index order; each must be RAM, not metadata, and claimed once.
  const step = 2 ** h.order;
  const b = new ExtentBuilder(h.order);
  const seen = new Set<number>();
  for (let i = 0; i < entries.length; i += 3) {
    const pfn = folioPfn(entries[i + 1] as number, entries[i + 2] as number);
    if (pfn === 0 || pfn + step > mem.pageCount) { problems.push(`folio at index ${entries[i] as number}: pfn ${hex(pfn)} is not RAM`); continue; }
    if (metadata.has(pfn)) problems.push(`folio at index ${entries[i] as number} is handover metadata (pfn ${hex(pfn)})`);
    if (seen.has(pfn)) problems.push(`folio pfn ${hex(pfn)} appears twice`);
    seen.add(pfn);
    b.add(entries[i] as number, pfn);
  }
  return { fields, problems, pages, dataRuns: runsOf(b.finish(), h.order) };
}

/** memfd 3.2: decodeMemfdV3 with every check of the 3.2 reader. */
export const decodeMemfdV3_2 = (mem: PhysMemory, headerPhys: number): DecodedMemfd => decodeMemfdV3(mem, headerPhys, 2);

/** memfd 4.x: the header, the kho_vmalloc chunks and stream pages walked from bytes, the stream decoded and checked. */
export function decodeMemfdV4(mem: PhysMemory, headerPhys: number, minor = 0, file?: { readonly session: string; readonly token: bigint }): DecodedMemfd {
  const problems: string[] = [];
  const pages: DecodedPage[] = [];
  const fields: Record<string, DecodedField> = {};
  const raw = headerBytes(mem, headerPhys, minor >= 1 ? memfdLuoSerV4_1.size : memfdLuoSerV4.size, problems);
  if (!raw) return { fields, problems, pages, dataRuns: [] };
  pages.push({ pfn: headerPhys / PAGE_SIZE, structure: 'memfd@4 header', role: 'header' });
  const h = memfdLuoSerV4.decode(raw);
  Object.assign(fields, { ...h });
  if (minor >= 1) {
    // 4.1: the header names the (session, token) it was written for; the reader checks it first.
    const id = memfdLuoSerV4_1.decode(raw);
    fields.id_crc32 = id.id_crc32;
    if (id.id_pad !== 0) problems.push(`id_pad 0x${id.id_pad.toString(16)} (must be 0)`);
    if (file) {
      const want = memfdV4IdChecksum(raw, file.session, file.token);
      fields.id_crc32_ok = want === id.id_crc32;
      if (want !== id.id_crc32) problems.push(`id_crc32 0x${id.id_crc32.toString(16)}, expected 0x${want.toString(16)} for session ${file.session} token ${file.token}: the header was written for another file`);
    }
  }
  if (h.flags !== 0) problems.push(`flags 0x${h.flags.toString(16)} (must be 0)`);
  if (h.order !== 0 && h.order !== 9 && h.order !== 18) problems.push(`folio order ${h.order}`);
  const metadataPfns = [headerPhys / PAGE_SIZE];
  // kho_vmalloc: a chain of chunk pages, each u64 next then up to 511 u64 run addresses (0 ends).
  const { KHO_VMALLOC_SIZE, KHO_VMALLOC_CHUNK_NEXT_OFFSET, KHO_VMALLOC_CHUNK_PHYS_OFFSET } = abi.kho;
  const streamPages: number[] = [];
  const runPages = 2 ** h.extents_order;
  const visited = new Set<number>([headerPhys / PAGE_SIZE]);
  let chunk = Number(h.extents_first);
  while (chunk !== 0 && streamPages.length < h.extents_total_pages) {
    if (!Number.isSafeInteger(chunk) || chunk % PAGE_SIZE !== 0 || chunk + PAGE_SIZE > mem.size) { problems.push(`kho_vmalloc chunk ${hex(chunk)} is not a page of RAM`); break; }
    if (visited.has(chunk / PAGE_SIZE)) { problems.push(`kho_vmalloc chunk ${hex(chunk)} is reached twice (a cycle or an alias)`); break; }
    visited.add(chunk / PAGE_SIZE);
    metadataPfns.push(chunk / PAGE_SIZE);
    pages.push({ pfn: chunk / PAGE_SIZE, structure: 'kho_vmalloc', role: 'chunk' });
    const page = new DataView(mem.read(chunk, PAGE_SIZE).buffer);
    for (let i = 0; i < KHO_VMALLOC_SIZE && streamPages.length < h.extents_total_pages; i++) {
      const at = KHO_VMALLOC_CHUNK_PHYS_OFFSET + 8 * i;
      const phys = page.getUint32(at + 4, true) * TWO32 + page.getUint32(at, true);
      if (phys === 0) break;
      if (phys % PAGE_SIZE !== 0 || phys + runPages * PAGE_SIZE > mem.size) { problems.push(`extent stream page ${hex(phys)} is not RAM`); break; }
      const pfn = phys / PAGE_SIZE;
      if (visited.has(pfn)) { problems.push(`extent stream page ${hex(phys)} is reached twice`); break; }
      visited.add(pfn);
      pages.push({ pfn, count: runPages, structure: 'memfd@4 extent stream', role: 'data' });
      for (let k = 0; k < runPages; k++) { streamPages.push(pfn + k); metadataPfns.push(pfn + k); }
    }
    chunk = page.getUint32(KHO_VMALLOC_CHUNK_NEXT_OFFSET + 4, true) * TWO32 + page.getUint32(KHO_VMALLOC_CHUNK_NEXT_OFFSET, true);
  }
  if (streamPages.length !== h.extents_total_pages) problems.push(`kho_vmalloc total_pages ${h.extents_total_pages} but ${streamPages.length} pages found`);
  const streamBytes = Number(h.stream_bytes);
  if (!Number.isSafeInteger(streamBytes) || streamBytes > streamPages.length * PAGE_SIZE) {
    problems.push(`stream_bytes ${h.stream_bytes} beyond the ${streamPages.length}-page stream`);
    return { fields, problems, pages, dataRuns: [] };
  }
  const stream = new Uint8Array(streamBytes);
  for (let at = 0, p = 0; at < streamBytes; at += PAGE_SIZE, p++) {
    stream.set(mem.read((streamPages[p] as number) * PAGE_SIZE, Math.min(PAGE_SIZE, streamBytes - at)), at);
  }
  const want = memfdV4Checksum(raw, stream);
  fields.crc32_ok = want === h.crc32;
  if (want !== h.crc32) problems.push(`crc32 0x${h.crc32.toString(16)}, metadata 0x${want.toString(16)} (covers bytes 0..${MEMFD_V4_CRC_OFFSET - 1} and the stream)`);
  const nrExtents = h.nr_extents > BigInt(Number.MAX_SAFE_INTEGER) ? -1 : Number(h.nr_extents);
  const ext = decodeExtentStream(stream, nrExtents, h.order);
  if (typeof ext === 'string') {
    problems.push(ext);
    return { fields, problems, pages, dataRuns: [] };
  }
  const bad = checkExtents(ext, {
    order: h.order, fileFolios: Math.ceil(Number(h.size) / (PAGE_SIZE * 2 ** h.order)), ramPages: mem.pageCount, metadataPfns,
    nrFolios: h.nr_folios > BigInt(Number.MAX_SAFE_INTEGER) ? -1 : Number(h.nr_folios),
  });
  if (bad !== null) problems.push(bad);
  fields.extents_found = ext.count;
  return { fields, problems, pages, dataRuns: runsOf(ext, h.order) };
}
