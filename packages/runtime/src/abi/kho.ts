/**
 * KHO ABI (include/linux/kho/abi/kexec_handover.h, kho-v4). Any change to a name, property
 * or layout here is a breaking ABI change and needs a new compatible string.
 */
import { defineStruct, u16, u32, u64 } from './struct.js';

export const KHO_ABI_VERSION = '4.0.0';
export const KHO_FDT_COMPATIBLE = 'kho-v4';
export const KHO_FDT_MEMORY_MAP_PROP_NAME = 'preserved-memory-map';
export const KHO_SUB_TREE_PROP_NAME = 'preserved-data';
export const KHO_SUB_TREE_SIZE_PROP_NAME = 'blob-size';

/** "KHOP": written into the head page's private word by the incoming kernel. */
export const KHO_PAGE_MAGIC = 0x4b484f50;

// Radix-tree tracker, 4 KiB pages.
export const KHO_ORDER_0_LOG2 = 52; // 64 - PAGE_SHIFT
export const KHO_TABLE_SIZE_LOG2 = 9; // 512 u64 entries per node
export const KHO_BITMAP_SIZE_LOG2 = 15; // 32768 bits per leaf page
export const KHO_TREE_MAX_DEPTH = 6; // 5 table levels + 1 bitmap level

/** MAX_PAGE_ORDER on x86-64 (kho_alloc_preserve returns -E2BIG above it). */
export const MAX_PAGE_ORDER = 10;

/** struct kho_scratch: one scratch area in the array handed to the next kernel. */
export const khoScratch = defineStruct('kho_scratch', { addr: u64, size: u64 }, { size: 16 });

/** x86 setup_data type carrying struct kho_data. */
export const SETUP_KEXEC_KHO = 10;
/** struct kho_data: what the boot parameters carry for KHO. */
export const khoData = defineStruct(
  'kho_data',
  { fdt_addr: u64, fdt_size: u64, scratch_addr: u64, scratch_size: u64 },
  { size: 32 },
);

/** struct kho_vmalloc: the descriptor a caller embeds in its own ABI struct. */
export const khoVmalloc = defineStruct(
  'kho_vmalloc',
  { first: u64, total_pages: u32, flags: u16, order: u16 },
  { size: 16 },
);
export const KHO_VMALLOC_ALLOC = 0x1;
export const KHO_VMALLOC_HUGE_VMAP = 0x2;
/** struct kho_vmalloc_chunk is one page: u64 next + u64 phys[511], zero-terminated. */
export const KHO_VMALLOC_SIZE = 511;
export const KHO_VMALLOC_CHUNK_NEXT_OFFSET = 0;
export const KHO_VMALLOC_CHUNK_PHYS_OFFSET = 8;

/** The scratch array segment is 64 KiB aligned and placed top-down in a scratch area. */
export const KHO_SCRATCH_SEGMENT_ALIGN = 64 * 1024;
/** CMA_MIN_ALIGNMENT_BYTES on x86-64: one pageblock (order 9). */
export const CMA_MIN_ALIGNMENT_BYTES = 2 * 1024 * 1024;
/** ARCH_LOW_ADDRESS_LIMIT on x86-64 (memblock_alloc_low). */
export const ARCH_LOW_ADDRESS_LIMIT = 0x1_0000_0000;
