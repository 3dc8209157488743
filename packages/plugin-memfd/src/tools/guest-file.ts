/**
 * Guest RAM as a VMM lays it out in memfds: real pattern bytes, synthetic pages (generated per
 * page from a seed, so GiBs cost no host memory), sparse files whose untouched folios stay
 * holes, and files never written at all. Every byte is a pure function of (seed, offset), so
 * the incoming side checks the memory it got back without a copy of what was written.
 */
import { PAGE_SIZE } from '@liveupdate/hw';
import { parseSizeStrict, type ScenarioObjectSpec } from '@liveupdate/sdk';
import { F_SEAL_EXEC, F_SEAL_FUTURE_WRITE, F_SEAL_GROW, F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_WRITE } from '../abi/memfd.js';

/** hugeTLB memfds in scenarios use 2 MiB pages (hugepagesz=2M). */
export const HUGE_PAGE_BYTES = 2 << 20;
const PAGE_WORDS = PAGE_SIZE / 4;
/** Bytes generated and compared per step: large enough to amortize a syscall, small enough for smooth progress. */
export const CHUNK_BYTES = 4 << 20;
const PATTERN_MAGIC = 0x4750554c; // "LUPG"

export const SEAL_BITS: Readonly<Record<string, number>> = {
  seal: F_SEAL_SEAL, shrink: F_SEAL_SHRINK, grow: F_SEAL_GROW, write: F_SEAL_WRITE, future_write: F_SEAL_FUTURE_WRITE, exec: F_SEAL_EXEC,
};

export type Fill = 'pattern' | 'synthetic' | 'zero';

/**
 * Who owns the file's bytes after creation. 'device-written': guest RAM a passthrough device
 * writes by DMA (VFIO/iommufd pin every page of it). Every folio is populated at creation (fill
 * gives the initial bytes) and the check verifies size, seals, that every folio came back
 * resident at the same physical page for the same file offset, and that no page reads poison;
 * the bytes are left to the scenario section that holds the device's reference model.
 */
export type Contents = 'device-written';

/** A memfd object of a scenario, as written. */
export interface MemfdSpec extends ScenarioObjectSpec {
  readonly type: 'memfd' | 'hugetlb-memfd';
  readonly size: string;
  readonly fill: Fill;
  readonly touched?: number;
  readonly seals?: readonly string[];
  readonly contents?: Contents;
}

/** Resident folios as runs: file folio index, first pfn, folio count (pfns consecutive by folio). */
export type PfnRun = readonly [index: number, pfn: number, folios: number];

/**
 * One scenario memfd with its sizes resolved and its content seed fixed: plain data, the
 * expectation kernel A's plugin hands to kernel B's (maybe another release).
 */
export interface GuestFile {
  readonly session: string;
  readonly token: number;
  readonly type: 'memfd' | 'hugetlb-memfd';
  readonly fill: Fill;
  readonly size: number;
  readonly folioBytes: number;
  /** Fraction of folios written (1 = all). */
  readonly touched: number;
  readonly seals: number;
  readonly sealNames: readonly string[];
  readonly seed: number;
  /** Present for device-written memory only. */
  readonly contents?: Contents;
  /** Device-written memory: where every folio was when it was preserved. */
  readonly pfnRuns?: readonly PfnRun[];
}

/** FNV-1a: a stable content seed per (session, token). */
function seedOf(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/** The file a spec describes; RangeError when its size is not whole folios. */
export function guestFile(session: string, f: MemfdSpec): GuestFile {
  const folioBytes = f.type === 'hugetlb-memfd' ? HUGE_PAGE_BYTES : PAGE_SIZE;
  const size = parseSizeStrict(f.size);
  if (size % folioBytes !== 0) {
    throw new RangeError(`size ${f.size} is not a multiple of the ${f.type === 'hugetlb-memfd' ? '2 MiB huge page' : '4 KiB page'}`);
  }
  const sealNames = [...(f.seals ?? [])];
  const device = f.contents === 'device-written';
  if (device && f.touched !== undefined && f.touched < 1) {
    throw new RangeError('device-written memory is populated whole (a device pins every page): touched must be 1 or absent');
  }
  return {
    session, token: f.token, type: f.type, fill: f.fill, size, folioBytes,
    ...(device ? { contents: 'device-written' as const } : {}),
    touched: f.fill === 'zero' && !device ? 0 : (f.touched ?? 1),
    seals: sealNames.reduce((m, s) => m | (SEAL_BITS[s] ?? 0), 0), sealNames,
    seed: seedOf(`${session}/${f.token}`),
  };
}

/**
 * Folios that hold data, as ascending [start, end) runs spread evenly over the file. A list,
 * not a generator: create and verify walk it for every object of every run.
 */
export function touchedRunList(g: GuestFile): Array<[start: number, end: number]> {
  const out: Array<[number, number]> = [];
  const folios = g.size / g.folioBytes;
  if (folios === 0 || g.touched <= 0) return out;
  if (g.touched >= 1) { out.push([0, folios]); return out; }
  const n = Math.max(1, Math.round(folios * g.touched));
  const stride = folios / n;
  let start = -1;
  let end = -1;
  for (let j = 0; j < n; j++) {
    const i = Math.floor(j * stride);
    if (i === end) { end++; continue; }
    if (start >= 0) out.push([start, end]);
    start = i;
    end = i + 1;
  }
  if (start >= 0) out.push([start, end]);
  return out;
}

/** The runs of touchedRunList, one at a time. */
export function* touchedRuns(g: GuestFile): Generator<[start: number, end: number]> {
  yield* touchedRunList(g);
}

/** Folios that will hold data. */
export function dataFolios(g: GuestFile): number {
  const folios = g.size / g.folioBytes;
  if (folios === 0 || g.touched <= 0) return 0;
  return g.touched >= 1 ? folios : Math.max(1, Math.round(folios * g.touched));
}

/** Pages that will hold data: the resident footprint a sparse format preserves. */
export const dataPages = (g: GuestFile): number => (dataFolios(g) * g.folioBytes) / PAGE_SIZE;

/** The bytes of page `page` of a pattern file: a header naming it, then a xorshift stream. */
export function patternPage(dst: Uint32Array, at: number, seed: number, page: number): void {
  let x = Math.imul((seed ^ Math.imul((page + 1) >>> 0, 0x9e3779b1)) >>> 0, 0x85ebca6b) >>> 0;
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35) >>> 0;
  if (x === 0) x = 0x2545f491;
  dst[at] = PATTERN_MAGIC;
  dst[at + 1] = seed;
  dst[at + 2] = page >>> 0;
  dst[at + 3] = ~page >>> 0;
  for (let i = 4; i < PAGE_WORDS; i++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    dst[at + i] = x >>> 0;
  }
}

export function patternBytes(seed: number, offset: number, length: number): Uint8Array {
  const words = new Uint32Array(length / 4);
  const first = offset / PAGE_SIZE;
  for (let p = 0; p < length / PAGE_SIZE; p++) patternPage(words, p * PAGE_WORDS, seed, first + p);
  return new Uint8Array(words.buffer);
}

/** Host bytes of generated pattern kept for reuse; beyond this the cache starts over. */
const PATTERN_CACHE_BYTES = 16 << 20;
const patternCache = new Map<string, Uint8Array>();
let patternCacheBytes = 0;

/**
 * patternBytes, generated once per (seed, offset, length) and shared: the bytes a pattern file
 * is written with and checked against are a pure function of those, and every run of the same
 * scenario (every cell of a matrix) asks for the same ones. The caller must only read them (the
 * file's bytes are still read back and compared in full; only the expectation is reused).
 */
export function sharedPatternBytes(seed: number, offset: number, length: number): Uint8Array {
  const key = `${seed}:${offset}:${length}`;
  let bytes = patternCache.get(key);
  if (bytes === undefined) {
    bytes = patternBytes(seed, offset, length);
    if (length <= PATTERN_CACHE_BYTES) {
      if (patternCacheBytes + length > PATTERN_CACHE_BYTES) { patternCache.clear(); patternCacheBytes = 0; }
      patternCache.set(key, bytes);
      patternCacheBytes += length;
    }
  }
  return bytes;
}

/** Folios per step: steps of at most CHUNK_BYTES (and at least one folio); [start, end) goes in steps of this many. */
export const stepFolios = (g: GuestFile): number => Math.max(1, Math.floor(CHUNK_BYTES / g.folioBytes));
