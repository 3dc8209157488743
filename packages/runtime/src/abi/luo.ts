/**
 * LUO ABI (include/linux/kho/abi/luo.h, luo-v5). Sessions and per-session files live in
 * kho_block chains; FLBs in one page. Any change here is a breaking ABI change and needs a
 * new compatible string.
 */
import { PAGE_SIZE } from '@liveupdate/hw';
import { cstring, defineStruct, u64 } from './struct.js';

export const LUO_ABI_VERSION = '5.0.0';
export const LUO_ABI_COMPATIBLE = 'luo-v5';
/** ALIGN(sizeof("luo-v5"), 8) */
export const LUO_ABI_COMPAT_LEN = 8;
/** The KHO subtree holding struct luo_ser. */
export const LUO_KHO_ENTRY_NAME = 'LUO';

/** LIVEUPDATE_SESSION_NAME_LENGTH, including the NUL. */
export const LIVEUPDATE_SESSION_NAME_LENGTH = 64;
/** LIVEUPDATE_HNDL_COMPAT_LENGTH and LIVEUPDATE_FLB_COMPAT_LENGTH: 47 characters + NUL. */
export const LIVEUPDATE_HNDL_COMPAT_LENGTH = 48;
export const LIVEUPDATE_FLB_COMPAT_LENGTH = 48;
/** One page of FLB entries: header + 63 entries. */
export const LUO_FLB_PGCNT = 1;
export const LUO_FLB_MAX = 63;

export const luoSer = defineStruct('luo_ser', {
  compatible: cstring(LUO_ABI_COMPAT_LEN),
  liveupdate_num: u64,
  sessions_pa: u64,
  flbs_pa: u64,
}, { size: 32 });

export const luoSessionSer = defineStruct('luo_session_ser', {
  name: cstring(LIVEUPDATE_SESSION_NAME_LENGTH),
  /** struct luo_file_set_ser: first file block header (0 if none) and total files. */
  files: u64,
  count: u64,
}, { size: 80 });

export const luoFileSer = defineStruct('luo_file_ser', {
  compatible: cstring(LIVEUPDATE_HNDL_COMPAT_LENGTH),
  data: u64,
  token: u64,
}, { size: 64 });

export const luoFlbHeaderSer = defineStruct('luo_flb_header_ser', { pgcnt: u64, count: u64 }, { size: 16 });
export const luoFlbSer = defineStruct('luo_flb_ser', {
  name: cstring(LIVEUPDATE_FLB_COMPAT_LENGTH),
  data: u64,
  count: u64,
}, { size: 64 });

/** 51 sessions per 4 KiB block, 63 files per block, at most 10000 blocks each. */
export const LUO_SESSIONS_PER_BLOCK = Math.floor((PAGE_SIZE - 16) / luoSessionSer.size);
export const LUO_FILES_PER_BLOCK = Math.floor((PAGE_SIZE - 16) / luoFileSer.size);
