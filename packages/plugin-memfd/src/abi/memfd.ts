/**
 * memfd preservation ABI. 1.x and 2.x are upstream's memfd-v1 and memfd-v2
 * (include/linux/kho/abi/memfd.h), byte for byte; 3.x is this project's sparse format, with
 * folios in a KHO xarray instead of a vmalloc array. Any layout change needs a new version:
 * a new major when an old reader cannot skip it, a new minor when fields are only appended.
 */
import { defineStruct, u8, u16, u32, u64 } from '@liveupdate/sdk';

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

/** struct memfd_luo_folio_ser: u64 { pfn:52, flags:12 }, u64 index. Unchanged since v1. */
export const memfdLuoFolioSer = defineStruct('memfd_luo_folio_ser', { pfn_flags: u64, index: u64 }, { size: 16 });
export const MEMFD_LUO_FOLIO_PFN_BITS = 52;
export const MEMFD_LUO_FOLIO_DIRTY = 1 << 0;
export const MEMFD_LUO_FOLIO_UPTODATE = 1 << 1;

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
/** The hugetlb FLB (hugetlb series RFC): per-hstate counts of preserved pages, up to 4 hstates. */
export const HUGETLB_FLB_COMPATIBLE = 'hugetlb-v1';
export const HUGETLB_MAX_HSTATES = 4;
export const hugetlbHstateSer = defineStruct('hugetlb_hstate_ser', { nr_pages: u64, order: u8 }, { size: 9 });
