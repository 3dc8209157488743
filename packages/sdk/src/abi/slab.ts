/**
 * Preserved slab cache layout (this project's; the June 1 LUO call proposed preserving slab
 * caches through a kmem_cache flag and offered kho_block as the immediate alternative). A
 * cache is one descriptor and a chain of slab pages; each slab page is a header, a bitmap of
 * used slots and the objects. Any change here needs a new KHO_SLAB_VERSION major.
 */
import { cstring, defineStruct, u32, u64 } from '@liveupdate/runtime';

export const KHO_SLAB_VERSION = '1.0.0';
export const KHO_SLAB_MAGIC = 0x4b534c42; // 'KSLB'
export const KHO_SLAB_NAME_LEN = 32;

/** struct kho_slab_ser: the per-cache descriptor. */
export const khoSlabSer = defineStruct('kho_slab_ser', {
  magic: u32, obj_size: u32, objs_per_slab: u32, reserved: u32,
  nr_slabs: u64, nr_objects: u64, first: u64,
  name: cstring(KHO_SLAB_NAME_LEN),
}, { size: 72 });

/** struct kho_slab_page_ser: at the start of every slab page; the used bitmap and objects follow. */
export const khoSlabPageSer = defineStruct('kho_slab_page_ser', { next: u64, inuse: u32, reserved: u32 }, { size: 16 });

/** Objects per 4 KiB slab page: header + ceil(n/8) bitmap bytes + n objects (bitmap padded to 8 bytes). */
export function objsPerSlab(objSize: number, pageSize: number): number {
  let n = Math.floor(((pageSize - khoSlabPageSer.size) * 8) / (objSize * 8 + 1));
  while (n > 0 && khoSlabPageSer.size + bitmapBytes(n) + n * objSize > pageSize) n--;
  return n;
}

export const bitmapBytes = (n: number): number => Math.ceil(n / 64) * 8;
