/** include/linux/kho/abi/kexec_metadata.h: the "kexec-metadata" subtree, version 1. */
import { cstring, defineStruct, u32 } from './struct.js';

export const KHO_KEXEC_METADATA_NAME = 'kexec-metadata';
export const KHO_KEXEC_METADATA_VERSION = 1;
/** __NEW_UTS_LEN + 1 */
export const KEXEC_METADATA_RELEASE_LEN = 65;

export const khoKexecMetadata = defineStruct(
  'kho_kexec_metadata',
  { version: u32, previous_release: cstring(KEXEC_METADATA_RELEASE_LEN), kexec_count: u32 },
  { size: 73 },
);
