/**
 * Folio records of guest_memfd_luo_v1 (a vmalloc'd array of struct guest_memfd_luo_folio_ser)
 * and entries of the sparse 2.x xarray, as typed-array hot paths: no BigInt, no per-folio objects.
 */
import { GMEM_FOLIO_PFN_BITS, GMEM_V2_ORDER_MASK, GMEM_V2_ORDER_SHIFT, GUEST_MEMFD_LUO_FOLIO_UPTODATE } from '../abi/luo.js';
import { crc32Word } from '../crc32.js';

const TWO32 = 0x1_0000_0000;
const PFN_HI_BITS = GMEM_FOLIO_PFN_BITS - 32;
const PFN_HI_MASK = 2 ** PFN_HI_BITS - 1;

/** The high word of pfn:52 | flags:12. */
export const entryHi = (pfn: number, flags: number): number => ((Math.floor(pfn / TWO32) & PFN_HI_MASK) | (flags << PFN_HI_BITS)) >>> 0;
export const entryPfn = (lo: number, hi: number): number => (hi & PFN_HI_MASK) * TWO32 + lo;
export const entryFlags = (hi: number): number => hi >>> PFN_HI_BITS;

/** The flags field of a 2.x entry: UPTODATE and the folio order. */
export const sparseFlags = (order: number, uptodate: boolean): number => (order << GMEM_V2_ORDER_SHIFT) | (uptodate ? GUEST_MEMFD_LUO_FOLIO_UPTODATE : 0);
export const sparseOrder = (flags: number): number => (flags >>> GMEM_V2_ORDER_SHIFT) & GMEM_V2_ORDER_MASK;
const TWO52 = 2 ** GMEM_FOLIO_PFN_BITS;
/** A 2.x entry as the u64 the xarray stores: a number while it stays below 2^53 (order 0), so dense guests make no BigInt. */
export const sparseEntry = (pfn: number, flags: number): number | bigint => (flags < 2 ? flags * TWO52 + pfn : (BigInt(flags) << BigInt(GMEM_FOLIO_PFN_BITS)) | BigInt(pfn));

export function writeRecord(view: DataView, at: number, pfn: number, flags: number, index: number): void {
  view.setUint32(at, pfn >>> 0, true);
  view.setUint32(at + 4, entryHi(pfn, flags), true);
  view.setUint32(at + 8, index >>> 0, true);
  view.setUint32(at + 12, Math.floor(index / TWO32), true);
}

export const readRecordLo = (view: DataView, at: number): number => view.getUint32(at, true);
export const readRecordHi = (view: DataView, at: number): number => view.getUint32(at + 4, true);
/** The index of a record (exact below 2^53; larger is rejected by the caller's bound check). */
export const readRecordIndex = (view: DataView, at: number): number => view.getUint32(at + 12, true) * TWO32 + view.getUint32(at + 8, true);

/** CRC-32 of one (index u64, entry u64) little-endian pair. */
export function entryHash(index: number, lo: number, hi: number): number {
  let c = crc32Word(0, index >>> 0);
  c = crc32Word(c, Math.floor(index / TWO32));
  c = crc32Word(c, lo);
  return crc32Word(c, hi);
}

/**
 * The 2.x entries checksum: the sum mod 2^32 of entryHash over every entry. Order-independent,
 * so it is kept current as folios come and go and freeze does no per-folio work.
 */
export class EntriesSum {
  private sum = 0;
  add(index: number, lo: number, hi: number): void { this.sum = (this.sum + entryHash(index, lo, hi)) >>> 0; }
  sub(index: number, lo: number, hi: number): void { this.sum = (this.sum - entryHash(index, lo, hi)) >>> 0; }
  get value(): number { return this.sum; }
}

/** The two 32-bit words of an entry value. */
export const entryWords = (v: number | bigint): [number, number] => {
  const b = BigInt(v);
  return [Number(b & 0xffffffffn), Number(b >> 32n)];
};
