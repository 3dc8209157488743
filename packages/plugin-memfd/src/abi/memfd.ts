/**
 * memfd preservation ABI. 1.x and 2.x are upstream's memfd-v1 and memfd-v2
 * (include/linux/kho/abi/memfd.h), byte for byte; 3.x is this project's sparse format, with
 * folios in a KHO xarray instead of a vmalloc array; 4.x (abi/memfd-v4.ts) describes folios as
 * extents of physically contiguous runs. Any layout change needs a new version:
 * a new major when an old reader cannot skip it, a new minor when fields are only appended.
 */
import { defineStruct, u8, u16, u32, u64 } from '@liveupdate/sdk';
import { CRC32_START, crc32U32, crc32Update } from '../crc32.js';

export const MEMFD_FAMILY = 'memfd';
/** Upstream compatible strings: x.0.0 of these majors is written under them. */
export const MEMFD_ALIASES = { 1: 'memfd-v1', 2: 'memfd-v2' } as const;

/** memfd-v1 (history): 40 bytes. */
export const memfdLuoSerV1 = defineStruct('memfd_luo_ser(v1)', {
  pos: u64, size: u64, nr_folios: u64,
  // struct kho_vmalloc folios
  folios_first: u64, folios_total_pages: u32, folios_flags: u16, folios_order: u16,
}, { size: 40 });

/** memfd-v2 (mainline): 48 bytes; flags is unused and must be 0. */
export const memfdLuoSerV2 = defineStruct('memfd_luo_ser', {
  pos: u64, size: u64, seals: u32, flags: u32, nr_folios: u64,
  folios_first: u64, folios_total_pages: u32, folios_flags: u16, folios_order: u16,
}, { size: 48 });

/** memfd 3.0 (this project): folios in a KHO xarray keyed by page-cache index; order for huge folios. */
export const memfdLuoSerV3 = defineStruct('memfd_luo_ser(v3)', {
  pos: u64, size: u64, seals: u32, flags: u32, nr_folios: u64,
  /** Physical address of the KHO xarray root: index → pfn | flags << 52. */
  folios_xa: u64,
  /** Folio order of every entry (0 for shmem, 9 or 18 for hugeTLB). */
  order: u32, reserved: u32,
}, { size: 48 });

/**
 * memfd 3.1 (a minor version): the 3.0 fields, then a CRC-32 (IEEE 802.3) of bytes 0..47 and a
 * pad word (0). Older 3.0 readers read the first 48 bytes and skip the rest; a 3.1 reader
 * refuses a header whose checksum does not match (a corrupted size is otherwise undetectable).
 */
export const memfdLuoSerV3_1 = defineStruct('memfd_luo_ser(v3.1)', {
  pos: u64, size: u64, seals: u32, flags: u32, nr_folios: u64,
  folios_xa: u64,
  order: u32, reserved: u32,
  /** CRC-32 of bytes 0..47 (the 3.0 header). */
  crc32: u32, pad: u32,
}, { size: 56 });
/** The bytes memfd 3.1's crc32 covers: the whole 3.0 header. */
export const MEMFD_V3_1_CRC_BYTES = 48;

/**
 * memfd 3.2 (a minor version): the 3.1 fields, then meta_crc32, a CRC-32 over ALL of the file's
 * handover metadata: this 64-byte header with meta_crc32 read as 0, then every xarray entry in
 * ascending index as (index u64 LE, entry u64 LE). A pointer retargeted anywhere in the header,
 * the xarray's nodes or its leaves changes what the walk yields, so it is a file error (EINVAL)
 * instead of served data. 3.0 and 3.1 readers read their prefix and skip the rest.
 */
export const memfdLuoSerV3_2 = defineStruct('memfd_luo_ser(v3.2)', {
  pos: u64, size: u64, seals: u32, flags: u32, nr_folios: u64,
  folios_xa: u64,
  order: u32, reserved: u32,
  crc32: u32, pad: u32,
  /** CRC-32 of the header (this field as 0) and every (index, entry) of the xarray. */
  meta_crc32: u32, meta_pad: u32,
}, { size: 64 });
/** Byte offset of memfd 3.2's meta_crc32 in the header. */
export const MEMFD_V3_2_META_CRC_OFFSET = 56;

/** The running CRC-32 state of meta_crc32 after the header (its first 64 bytes, meta_crc32 read as 0). */
export function memfdV3_2MetaStart(header: Uint8Array): number {
  const h = header.slice(0, memfdLuoSerV3_2.size);
  new DataView(h.buffer).setUint32(MEMFD_V3_2_META_CRC_OFFSET, 0, true);
  return crc32Update(CRC32_START, h);
}

/** Feed one xarray entry (index, entry as its two u32 words) into the meta_crc32 state. */
export const memfdV3_2MetaEntry = (state: number, index: number, lo: number, hi: number): number =>
  crc32U32(crc32U32(crc32U32(crc32U32(state, index >>> 0), Math.floor(index / 0x1_0000_0000)), lo), hi);

/** struct memfd_luo_folio_ser: u64 { pfn:52, flags:12 }, u64 index. Unchanged since v1. */
export const memfdLuoFolioSer = defineStruct('memfd_luo_folio_ser', { pfn_flags: u64, index: u64 }, { size: 16 });
export const MEMFD_LUO_FOLIO_PFN_BITS = 52;
export const MEMFD_LUO_FOLIO_DIRTY = 1 << 0;
export const MEMFD_LUO_FOLIO_UPTODATE = 1 << 1;

/*
 * The same u64 { pfn:52, flags:12 } as two little-endian 32-bit words, for the per-folio hot
 * paths (millions of records: no BigInt, no struct objects). The 3.x xarray entries use the
 * same encoding as the pfn_flags field.
 */
const TWO32 = 0x1_0000_0000;
const PFN_HI_BITS = MEMFD_LUO_FOLIO_PFN_BITS - 32;

/** High word of pfn_flags: pfn bits 32..51, flags in bits 20..31. */
export const folioHiWord = (pfn: number, flags: number): number => ((Math.floor(pfn / TWO32) % 2 ** PFN_HI_BITS) | (flags << PFN_HI_BITS)) >>> 0;
/** The pfn of a pfn_flags value given as its two words. */
export const folioPfn = (lo: number, hi: number): number => (hi % 2 ** PFN_HI_BITS) * TWO32 + lo;

/** Write a memfd_luo_folio_ser at byte offset `at` of `view`. */
export function writeFolioSer(view: DataView, at: number, pfn: number, flags: number, index: number): void {
  view.setUint32(at, pfn >>> 0, true);
  view.setUint32(at + 4, folioHiWord(pfn, flags), true);
  view.setUint32(at + 8, index >>> 0, true);
  view.setUint32(at + 12, Math.floor(index / TWO32), true);
}

/** The page-cache index of the memfd_luo_folio_ser at byte offset `at` (exact below 2^53). */
export const readFolioSerIndex = (view: DataView, at: number): number => view.getUint32(at + 12, true) * TWO32 + view.getUint32(at + 8, true);
/** The pfn of the memfd_luo_folio_ser at byte offset `at`. */
export const readFolioSerPfn = (view: DataView, at: number): number => folioPfn(view.getUint32(at, true), view.getUint32(at + 4, true));

// Seals (include/uapi/linux/fcntl.h).
export const F_SEAL_SEAL = 0x0001;
export const F_SEAL_SHRINK = 0x0002;
export const F_SEAL_GROW = 0x0004;
export const F_SEAL_WRITE = 0x0008;
export const F_SEAL_FUTURE_WRITE = 0x0010;
export const F_SEAL_EXEC = 0x0020;
export const MEMFD_LUO_ALL_SEALS = F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_FUTURE_WRITE | F_SEAL_EXEC;

/** hugeTLB memfds: the project's format family (folios with their order, in a KHO xarray). */
export const HUGETLB_FAMILY = 'hugetlb-memfd';
/**
 * The hugetlb-memfd family's layouts are the memfd family's with huge folio orders: 1.x is the
 * sparse memfd@3.0.0 xarray layout, 2.x the memfd@4.1.0 extents (whole-metadata CRC-32, bound
 * to session and token). Kept as its own version line: a kernel that reads memfd 4.x may still
 * not restore huge folios.
 */
export const HUGETLB_AS_MEMFD: Readonly<Record<number, string>> = { 1: '3.0.0', 2: '4.1.0' };
/** The hugetlb FLB (hugetlb series RFC): per-hstate counts of preserved pages, up to 4 hstates. */
export const HUGETLB_FLB_COMPATIBLE = 'hugetlb-v1';
export const HUGETLB_MAX_HSTATES = 4;
export const hugetlbHstateSer = defineStruct('hugetlb_hstate_ser', { nr_pages: u64, order: u8 }, { size: 9 });

export * from './memfd-v4.js';
export * from './memfd-decode.js';
