/**
 * MSHV handover ABI, one version of the `mshv` format family each. Any change to a name,
 * property or layout here is a breaking change and needs a new major version.
 *
 * - 1.x, "mshv-v1" (include/linux/kho/abi/mshv.h, RFC "mshv: Add kexec safety for deposited
 *   pages", 2026-01-24): a freeze veto on an in-kernel session; no serialized data.
 * - 2.x (RFC 00/20 "mshv: preserve hypervisor-owned pages across kexec", 2026-05-27,
 *   drivers/hv/mshv_page_preserve.c): every deposited PFN is a key of a KHO radix tree, handed
 *   over in the KHO subtree "mshv_prsv_pt" (compatible "mshv_kho-v1"); the LUO file carries 0.
 * - 3.x (ours, the reviewers' direction): the same tracking in the LUO file itself, a KHO
 *   xarray of 64-page bitmaps, with a CRC-32 over every metadata byte.
 */
import { defineStruct, u32, u64 } from '@liveupdate/sdk';

export const MSHV_FAMILY = 'mshv';
export const MSHV_LUO_FH_COMPATIBLE = 'mshv-v1';
export const MSHV_ALIASES: Readonly<Record<number, string>> = { 1: MSHV_LUO_FH_COMPATIBLE };
/** The in-kernel session the driver creates at init (liveupdate_session_create). */
export const MSHV_SESSION_NAME = 'mshv_root';
/** The token of the driver's own file in that session. */
export const MSHV_SESSION_TOKEN = 0n;

// ---- 2.x: the KHO subtree (drivers/hv/mshv_page_preserve.c) ----------------------------------
export const FDT_SUBTREE_MSHV = 'mshv_prsv_pt';
export const MSHV_KHO_COMPAT_STR = 'mshv_kho-v1';
export const MSHV_PROP_ROOT_TABLE = 'root_table';
export const MSHV_PROP_PARTITION_IDS = 'partition_ids';
export const MSHV_PROP_NR_PARTITION_IDS = 'nr_partition_ids';
/** The partition id array is one kho_alloc_preserve()'d page at most: PAGE_SIZE / sizeof(u64). */
export const MSHV_MAX_PARTITION_IDS = 512;

// ---- 3.x: the tracking file (ours) ------------------------------------------------------------
/** Pages per xarray value: key = pfn >> 6, value bit i = page (key << 6) + i. */
export const MSHV_XA_PAGES_PER_KEY = 64;
export const MSHV_TRACK_FLAG_L1VH = 0x1;
/**
 * struct mshv_track_ser, 48 bytes at the start of a preserved page. `crc` is the CRC-32
 * (IEEE) of bytes [0, 40) of this header, then every xarray node page in ascending walk
 * order (a node before its children), then the nr_partition_ids u64s of the id array.
 */
export const mshvTrackSer = defineStruct('mshv_track_ser', {
  xa_root: u64,
  nr_pages: u64,
  nr_nodes: u64,
  partition_ids: u64,
  nr_partition_ids: u32,
  flags: u32,
  crc: u32,
  reserved: u32,
}, { size: 48 });
export const MSHV_TRACK_CRC_OFFSET = 40;

// ---- uAPI (include/uapi/linux/mshv.h) ---------------------------------------------------------
export const MSHV_IOCTL = 0xb8;
const ioc = (dir: number, nr: number, size: number): number => ((dir << 30) | (size << 16) | (MSHV_IOCTL << 8) | nr) >>> 0;
/** struct mshv_create_partition { u64 pt_flags; u64 pt_isolation; } */
export const mshvCreatePartition = defineStruct('mshv_create_partition', { pt_flags: u64, pt_isolation: u64 }, { size: 16 });
/** struct mshv_create_vp { u32 vp_index; } */
export const mshvCreateVp = defineStruct('mshv_create_vp', { vp_index: u32 }, { size: 4 });
/** /dev/mshv: _IOW(MSHV_IOCTL, 0x00, struct mshv_create_partition) */
export const MSHV_CREATE_PARTITION = ioc(1, 0x00, mshvCreatePartition.size);
/** partition fd: _IO(MSHV_IOCTL, 0x00) */
export const MSHV_INITIALIZE_PARTITION = ioc(0, 0x00, 0);
/** partition fd: _IOW(MSHV_IOCTL, 0x01, struct mshv_create_vp) */
export const MSHV_CREATE_VP = ioc(1, 0x01, mshvCreateVp.size);
/** VP fd: _IOR(MSHV_IOCTL, 0x00, struct mshv_run_vp), a 256-byte hv_message. */
export const MSHV_RUN_VP_SIZE = 256;
export const MSHV_RUN_VP = ioc(2, 0x00, MSHV_RUN_VP_SIZE);
