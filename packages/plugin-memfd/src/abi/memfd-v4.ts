/**
 * memfd 4.0 (this project): a file's folios as extents, one per run of folios that is contiguous
 * both in the file and in physical memory, in a byte stream handed over as a kho_vmalloc area;
 * a CRC-32 over the header and the whole stream. Any change to this layout needs a new version
 * (a new major when an old reader cannot skip it, a new minor when fields are only appended).
 *
 * Header (72 bytes, little-endian, in its own preserved page):
 *    0 u64 pos            8 u64 size          16 u32 seals        20 u32 flags (0)
 *   24 u64 nr_folios     32 u64 nr_extents    40 u64 stream_bytes
 *   48 struct kho_vmalloc extents { u64 first; u32 total_pages; u16 flags; u16 order }
 *   64 u32 order (folio order)                68 u32 crc32
 * crc32 = CRC-32 (IEEE 802.3) of header bytes 0..67, then of stream bytes [0, stream_bytes).
 *
 * 4.1 appends 8 bytes (header 80 bytes; a 4.0 reader reads the first 72 and is unaffected):
 *   72 u32 id_crc32      76 u32 id_pad (0)
 * id_crc32 = CRC-32 of header bytes 0..71 (crc32 included, so the stream too), then the token
 * as a u64 and the session name as its 64 NUL-padded bytes in luo_session_ser (SDK
 * crc32Identity). LUO's own blocks carry no check: without this, a rewired session or file
 * block hands one file's intact 4.0 metadata to another (session, token), and it is served.
 *
 * Extent stream: for each extent in ascending file index, three unsigned LEB128 varints
 * (at most 8 bytes each, value < 2^53):
 *   gap    = index - end index of the previous extent (0 before the first)
 *   dpfn   = zigzag(pfn - end pfn of the previous extent (0 before the first))
 *   len-1  = folios in the extent, minus one
 * where an extent of len folios of order o covers file indices [index, index+len) and
 * pfns [pfn, pfn + len * 2^o). A dense file is one extent (a few bytes); a fully fragmented one
 * (every other pfn) costs 3 bytes per folio. A varint of a value below 2^(7k) takes k bytes, so
 * an isolated folio costs at most 8 bytes whenever its index gap is below 2^21 and its pfn step
 * below 2^27 (512 GiB of 4 KiB pages); beyond that (a folio every 8 GiB of file, or scattered
 * over more than 512 GiB) a one-folio extent can take up to 17 bytes. A file without holes
 * (gap 0) costs at most 8 bytes per folio whatever its placement on any machine below 8 PiB.
 */
import { defineStruct, u16, u32, u64 } from '@liveupdate/sdk';
import { CRC32_START, crc32Final, crc32Update, identityCrc32 } from '../crc32.js';

export const MEMFD_V4_VERSION = '4.0.0';
/** The minor that binds the header to the file's (session name, token). */
export const MEMFD_V4_1_VERSION = '4.1.0';

export const memfdLuoSerV4 = defineStruct('memfd_luo_ser(v4)', {
  pos: u64, size: u64, seals: u32, flags: u32,
  nr_folios: u64, nr_extents: u64, stream_bytes: u64,
  extents_first: u64, extents_total_pages: u32, extents_flags: u16, extents_order: u16,
  order: u32,
  /** CRC-32 of bytes 0..67 and of the extent stream. */
  crc32: u32,
}, { size: 72 });
export const memfdLuoSerV4_1 = defineStruct('memfd_luo_ser(v4.1)', {
  pos: u64, size: u64, seals: u32, flags: u32,
  nr_folios: u64, nr_extents: u64, stream_bytes: u64,
  extents_first: u64, extents_total_pages: u32, extents_flags: u16, extents_order: u16,
  order: u32, crc32: u32,
  /** CRC-32 of bytes 0..71, the token and the session name. */
  id_crc32: u32,
  id_pad: u32,
}, { size: 80 });
/** Header bytes the id_crc32 covers before the identity. */
export const MEMFD_V4_1_ID_OFFSET = 72;
/** Header bytes the crc32 covers before the stream. */
export const MEMFD_V4_CRC_OFFSET = 68;
/** The longest varint a 4.x stream may hold (56 bits carry every value below 2^53). */
export const MEMFD_V4_VARINT_MAX = 8;

/** Extents as parallel typed arrays: no per-extent objects for TiB-scale files. */
export interface Extents {
  readonly count: number;
  readonly index: Float64Array;
  readonly pfn: Float64Array;
  readonly len: Float64Array;
}

/** Collect extents from (index, pfn) pairs given in ascending index order. */
export class ExtentBuilder {
  private index: Float64Array = new Float64Array(16);
  private pfn: Float64Array = new Float64Array(16);
  private len: Float64Array = new Float64Array(16);
  private n = 0;
  private nextIndex = -1;
  private nextPfn = -1;

  constructor(private readonly order: number) {}

  add(index: number, pfn: number): void {
    if (this.n > 0 && index === this.nextIndex && pfn === this.nextPfn) {
      this.len[this.n - 1] = (this.len[this.n - 1] as number) + 1;
    } else {
      if (this.n === this.index.length) this.grow();
      this.index[this.n] = index;
      this.pfn[this.n] = pfn;
      this.len[this.n] = 1;
      this.n++;
    }
    this.nextIndex = index + 1;
    this.nextPfn = pfn + 2 ** this.order;
  }

  private grow(): void {
    const g = (a: Float64Array): Float64Array => { const b = new Float64Array(a.length * 2); b.set(a); return b; };
    this.index = g(this.index);
    this.pfn = g(this.pfn);
    this.len = g(this.len);
  }

  finish(): Extents {
    return { count: this.n, index: this.index.subarray(0, this.n), pfn: this.pfn.subarray(0, this.n), len: this.len.subarray(0, this.n) };
  }
}

const zigzag = (d: number): number => (d >= 0 ? 2 * d : -2 * d - 1);
const unzigzag = (z: number): number => (z % 2 === 0 ? z / 2 : -(z + 1) / 2);

function putVarint(out: Uint8Array, at: number, v: number): number {
  let x = v;
  let i = at;
  while (x >= 0x80) {
    out[i++] = (x % 0x80) | 0x80;
    x = Math.floor(x / 0x80);
  }
  out[i++] = x;
  return i;
}

/** The extent stream of `ext` (folio order `order`). */
export function encodeExtentStream(ext: Extents, order: number): Uint8Array {
  // Values stay below 2^53 (zigzag: 2^54), so no varint exceeds MEMFD_V4_VARINT_MAX bytes.
  const out = new Uint8Array(ext.count * 3 * MEMFD_V4_VARINT_MAX);
  let at = 0;
  let end = 0;
  let pfnEnd = 0;
  const step = 2 ** order;
  for (let i = 0; i < ext.count; i++) {
    const index = ext.index[i] as number;
    const pfn = ext.pfn[i] as number;
    const len = ext.len[i] as number;
    at = putVarint(out, at, index - end);
    at = putVarint(out, at, zigzag(pfn - pfnEnd));
    at = putVarint(out, at, len - 1);
    end = index + len;
    pfnEnd = pfn + len * step;
  }
  return out.slice(0, at);
}

/**
 * Decode a stream that must hold exactly `nrExtents` extents and nothing after them. Returns
 * the extents or a string naming the first problem (truncation, an overlong varint, a value
 * beyond 2^53, a negative pfn, trailing bytes, a count that disagrees).
 */
export function decodeExtentStream(bytes: Uint8Array, nrExtents: number, order: number): Extents | string {
  // Every extent takes at least 3 bytes: a count the stream cannot hold is refused before any allocation.
  if (!Number.isSafeInteger(nrExtents) || nrExtents < 0 || nrExtents * 3 > bytes.length) return `nr_extents ${nrExtents} does not fit a stream of ${bytes.length} bytes`;
  const index = new Float64Array(nrExtents);
  const pfn = new Float64Array(nrExtents);
  const len = new Float64Array(nrExtents);
  let at = 0;
  let bad: string | null = null;
  const varint = (): number => {
    let v = 0;
    let scale = 1;
    for (let k = 0; k < MEMFD_V4_VARINT_MAX; k++) {
      if (at >= bytes.length) { bad = `stream truncated at byte ${at}`; return 0; }
      const b = bytes[at++] as number;
      v += (b & 0x7f) * scale;
      if ((b & 0x80) === 0) {
        if (!Number.isSafeInteger(v)) { bad = `varint ending at byte ${at - 1} is beyond 2^53`; return 0; }
        return v;
      }
      scale *= 0x80;
    }
    bad = `varint at byte ${at - MEMFD_V4_VARINT_MAX} is longer than ${MEMFD_V4_VARINT_MAX} bytes`;
    return 0;
  };
  let end = 0;
  let pfnEnd = 0;
  const step = 2 ** order;
  for (let i = 0; i < nrExtents; i++) {
    const gap = varint();
    const dpfn = varint();
    const lenMinus1 = varint();
    if (bad !== null) return bad;
    const start = end + gap;
    const p = pfnEnd + unzigzag(dpfn);
    const n = lenMinus1 + 1;
    if (p < 0) return `extent ${i} starts at negative pfn ${p}`;
    if (!Number.isSafeInteger(start + n) || !Number.isSafeInteger(p + n * step)) return `extent ${i} runs beyond 2^53`;
    index[i] = start;
    pfn[i] = p;
    len[i] = n;
    end = start + n;
    pfnEnd = p + n * step;
  }
  if (at !== bytes.length) return `${bytes.length - at} byte(s) after extent ${nrExtents - 1}`;
  return { count: nrExtents, index, pfn, len };
}

/** Bounds a set of extents must keep: the file's folios, RAM, and the pages that are metadata. */
export interface ExtentLimits {
  readonly order: number;
  /** Folios below i_size: ceil(size / folio bytes). */
  readonly fileFolios: number;
  readonly ramPages: number;
  /** pfns of the file's own handover metadata pages (header, stream pages). */
  readonly metadataPfns: readonly number[];
  readonly nrFolios: number;
}

/**
 * Everything a writer never produces, checked before any folio is claimed: an extent past i_size
 * or past RAM, a misaligned pfn, two extents that should have been one, extents overlapping in
 * physical memory, an extent over a metadata page, a folio count that disagrees. File-side
 * overlaps cannot be written (gaps are unsigned). Returns the first problem, or null.
 */
export function checkExtents(ext: Extents, lim: ExtentLimits): string | null {
  const step = 2 ** lim.order;
  let folios = 0;
  for (let i = 0; i < ext.count; i++) {
    const index = ext.index[i] as number;
    const pfn = ext.pfn[i] as number;
    const len = ext.len[i] as number;
    if (index + len > lim.fileFolios) return `extent ${i} (index ${index}, ${len} folios) is beyond i_size (${lim.fileFolios} folios)`;
    if (pfn % step !== 0) return `extent ${i} pfn 0x${pfn.toString(16)} is not aligned to order ${lim.order}`;
    if (pfn === 0 || pfn + len * step > lim.ramPages) return `extent ${i} pfns [0x${pfn.toString(16)}, +${len * step}) are not RAM`;
    if (i > 0 && index === (ext.index[i - 1] as number) + (ext.len[i - 1] as number) && pfn === (ext.pfn[i - 1] as number) + (ext.len[i - 1] as number) * step) {
      return `extents ${i - 1} and ${i} are one run written as two`;
    }
    folios += len;
  }
  if (folios !== lim.nrFolios) return `nr_folios ${lim.nrFolios} but the extents hold ${folios}`;
  // Physical overlaps: extents ordered by pfn must not reach into the next.
  const order = Array.from({ length: ext.count }, (_, i) => i).sort((a, b) => (ext.pfn[a] as number) - (ext.pfn[b] as number));
  for (let k = 1; k < order.length; k++) {
    const a = order[k - 1] as number;
    const b = order[k] as number;
    if ((ext.pfn[a] as number) + (ext.len[a] as number) * step > (ext.pfn[b] as number)) return `extents ${a} and ${b} overlap in physical memory`;
  }
  for (const m of lim.metadataPfns) {
    // Binary search the pfn-ordered extents for one covering m.
    let lo = 0;
    let hi = order.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const e = order[mid] as number;
      const s = ext.pfn[e] as number;
      if (m < s) hi = mid - 1;
      else if (m >= s + (ext.len[e] as number) * step) lo = mid + 1;
      else return `extent ${e} covers pfn 0x${m.toString(16)}, a page of the file's handover metadata`;
    }
  }
  return null;
}

/** The crc32 field of a 4.x header: header bytes 0..67, then the stream. */
export function memfdV4Checksum(header: Uint8Array, stream: Uint8Array): number {
  return crc32Final(crc32Update(crc32Update(CRC32_START, header.subarray(0, MEMFD_V4_CRC_OFFSET)), stream));
}

/** The id_crc32 field of a 4.1 header: header bytes 0..71, the token, the session name. */
export function memfdV4IdChecksum(header: Uint8Array, session: string, token: bigint): number {
  return identityCrc32(header, MEMFD_V4_1_ID_OFFSET, session, token);
}
