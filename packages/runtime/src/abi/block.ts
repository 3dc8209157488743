/** include/linux/kho/abi/block.h: KHO serialization blocks. */
import { defineStruct, u64 } from './struct.js';
import { PAGE_SIZE } from '@liveupdate/hw';

export const KHO_BLOCK_SIZE = PAGE_SIZE;
export const KHO_MAX_BLOCKS = 10000;
/** struct kho_block_header_ser: next header phys (0 = end) and entries used in this block. */
export const khoBlockHeader = defineStruct('kho_block_header_ser', { next: u64, count: u64 }, { size: 16 });
