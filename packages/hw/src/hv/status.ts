/**
 * Hypercall status codes (include/hyperv/hvgdk_mini.h) and the hypercall interface limits the
 * root uses (drivers/hv/hv_proc.c, drivers/hv/mshv_root_hv_call.c).
 */
export const HV_STATUS_SUCCESS = 0x0;
export const HV_STATUS_INVALID_PARAMETER = 0x5;
export const HV_STATUS_ACCESS_DENIED = 0x6;
export const HV_STATUS_INVALID_PARTITION_STATE = 0x7;
/** The target partition's pool ran short: deposit to that partition and retry. */
export const HV_STATUS_INSUFFICIENT_MEMORY = 0xb;
export const HV_STATUS_INVALID_PARTITION_ID = 0xd;
export const HV_STATUS_INVALID_VP_INDEX = 0xe;
export const HV_STATUS_INVALID_VP_STATE = 0x15;
/** The hypervisor's own (root) pool ran short: deposit to HV_PARTITION_ID_SELF and retry. */
export const HV_STATUS_INSUFFICIENT_ROOT_MEMORY = 0x73;
/** As 0x73, but the request needs physically contiguous root pages. */
export const HV_STATUS_INSUFFICIENT_CONTIGUOUS_ROOT_MEMORY = 0x83;

export type HvStatus = number;

/** The caller's own partition (the root, or the L1 virtual host). */
export const HV_PARTITION_ID_SELF = 0xffff_ffff_ffff_ffffn;
/** struct hv_deposit_memory: one page of input, the partition id then GPAs. */
export const HV_DEPOSIT_MAX = 511;
/** struct hv_output_withdraw_memory: at most this many GPAs per call. */
export const HV_WITHDRAW_BATCH_SIZE = 511;
export const MSHV_MAX_VPS = 256;

const NAMES: Readonly<Record<number, string>> = {
  [HV_STATUS_SUCCESS]: 'HV_STATUS_SUCCESS',
  [HV_STATUS_INVALID_PARAMETER]: 'HV_STATUS_INVALID_PARAMETER',
  [HV_STATUS_ACCESS_DENIED]: 'HV_STATUS_ACCESS_DENIED',
  [HV_STATUS_INVALID_PARTITION_STATE]: 'HV_STATUS_INVALID_PARTITION_STATE',
  [HV_STATUS_INSUFFICIENT_MEMORY]: 'HV_STATUS_INSUFFICIENT_MEMORY',
  [HV_STATUS_INVALID_PARTITION_ID]: 'HV_STATUS_INVALID_PARTITION_ID',
  [HV_STATUS_INVALID_VP_INDEX]: 'HV_STATUS_INVALID_VP_INDEX',
  [HV_STATUS_INVALID_VP_STATE]: 'HV_STATUS_INVALID_VP_STATE',
  [HV_STATUS_INSUFFICIENT_ROOT_MEMORY]: 'HV_STATUS_INSUFFICIENT_ROOT_MEMORY',
  [HV_STATUS_INSUFFICIENT_CONTIGUOUS_ROOT_MEMORY]: 'HV_STATUS_INSUFFICIENT_CONTIGUOUS_ROOT_MEMORY',
};

export function hvStatusName(status: HvStatus): string {
  return NAMES[status] ?? `HV_STATUS_0x${status.toString(16)}`;
}
