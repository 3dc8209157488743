/**
 * memfd preservation (mm/memfd_luo.c), in three formats:
 *  - 1.x / 2.x: upstream memfd-v1 / memfd-v2. Preserve freezes the inode, materializes every
 *    hole, pins and preserves every folio and records them in a vmalloc array; freeze only
 *    refreshes pos.
 *  - 3.x: sparse. Folios go into a KHO xarray as they appear, holes are never materialized, and
 *    the file may grow or fault pages in until freeze, which writes the final header.
 * Which semantics preserve uses follows the newest version this build writes; if the target
 * kernel only reads an upstream format, freeze converts (materializing holes in the blackout).
 */
import { PAGE_SIZE } from '@liveupdate/hw';
import {
  ErrnoError, KhoXarray, khoPreserveVmalloc, khoRestoreVmalloc, khoUnpreserveVmalloc, vfree, vzalloc,
  type HandlerContext, type Kernel, type KFile, type KhoVmallocDesc, type VmArea,
} from '@liveupdate/sdk';
import semver from 'semver';
import {
  MEMFD_LUO_ALL_SEALS, MEMFD_LUO_FOLIO_DIRTY, MEMFD_LUO_FOLIO_PFN_BITS, MEMFD_LUO_FOLIO_UPTODATE,
  MEMFD_V3_1_CRC_BYTES, folioPfn, memfdLuoFolioSer, memfdLuoSerV1, memfdLuoSerV2, memfdLuoSerV3, memfdLuoSerV3_1,
  readFolioSerIndex, readFolioSerPfn, writeFolioSer,
} from './abi/memfd.js';
import { crc32 } from './crc32.js';
import { hugetlbAdopt, hugetlbFree } from './hugetlb-pool.js';
import { MAX_LFS_FILESIZE, MemfdInode, inodeOf, memfdFile } from './memfd.js';

/** Upstream marks every preserved folio dirty and uptodate unconditionally. */
const FOLIO_FLAGS = MEMFD_LUO_FOLIO_DIRTY | MEMFD_LUO_FOLIO_UPTODATE;
/** The flags of a 3.x xarray entry in place: flags << 52. */
const FOLIO_FLAGS_BIG = BigInt(FOLIO_FLAGS) << BigInt(MEMFD_LUO_FOLIO_PFN_BITS);
const UINT_MAX = 0xffffffff;
/** A 3.x xarray entry: pfn | flags << 52, as the u64 the map stores. */
const folioEntry = (pfn: number): bigint => BigInt(pfn) | FOLIO_FLAGS_BIG;

interface FolioArray {
  readonly area: VmArea;
  readonly desc: KhoVmallocDesc;
  /** The folios the array describes, in record order; their preservation is the array's to undo. */
  readonly pfns: Float64Array;
}

/** Folios handed over, as typed (index, pfn) pairs: no per-folio objects for TiB-scale files. */
interface FolioList {
  readonly count: number;
  /** index of folio i at [2i], its pfn at [2i+1]. */
  readonly pairs: Float64Array;
}

/** Runtime-only state of one preserved memfd (args->private_data). */
export interface MemfdPreservation {
  readonly m: MemfdInode;
  readonly file: KFile;
  readonly mode: 'upstream' | 'sparse';
  readonly serPhys: number;
  /** Upstream formats record the seals at preserve (freeze only refreshes pos); 3.x at freeze. */
  readonly sealsAtPreserve: number;
  array: FolioArray | null;
  xa: KhoXarray | null;
  /** Counts of preserved folios by order, for the hugetlb FLB. */
  onCount?: (order: number, delta: number) => void;
}

export const majorOf = (v: string): number => semver.major(v);
/** memfd 3.1 and later 3.x minors append a CRC-32 of the 48-byte 3.0 header. */
export const hasHeaderChecksum = (v: string): boolean => majorOf(v) === 3 && semver.gte(v, '3.1.0');

function khoOut(kernel: Kernel) {
  const out = kernel.khoOut;
  if (!out) throw new ErrnoError('EOPNOTSUPP', 'preserve', 'KHO disabled');
  return out;
}

/**
 * Describe every folio of the cache in a vmalloc'd array of memfd_luo_folio_ser and hand the
 * array over; the array owns the folios' preservation from then on. With `preserveFolios` each
 * folio is KHO-preserved here (upstream preserve); without, it already is (a sparse file
 * converted at freeze).
 */
function preserveFolioArray(kernel: Kernel, m: MemfdInode, preserveFolios: boolean): FolioArray | null {
  const n = m.cache.count;
  if (n === 0) return null;
  const out = khoOut(kernel);
  const pfns = new Float64Array(n);
  const records = new Uint8Array(n * memfdLuoFolioSer.size);
  const view = new DataView(records.buffer);
  let done = 0;
  let preserved = 0;
  let area: VmArea | null = null;
  try {
    m.cache.forEach((index, pfn) => {
      if (preserveFolios) {
        out.preserveFolio(pfn, m.order);
        preserved++;
      }
      pfns[done] = pfn;
      writeFolioSer(view, done * memfdLuoFolioSer.size, pfn, FOLIO_FLAGS, index);
      done++;
    });
    area = vzalloc(kernel.mm, records.length);
    if (!area) throw new ErrnoError('ENOMEM', 'preserve');
    area.write(0, records);
    const desc = khoPreserveVmalloc(out, kernel.mm, area);
    return { area, desc, pfns };
  } catch (e) {
    for (let i = 0; i < preserved; i++) out.unpreserveFolio(pfns[i] as number, m.order);
    if (area) vfree(kernel.mm, area);
    throw e;
  }
}

/** Free the folio array and its handover; the folios stay preserved unless `unpreserveFolios`. */
function releaseFolioArray(kernel: Kernel, m: MemfdInode, a: FolioArray, unpreserveFolios: boolean): void {
  const out = khoOut(kernel);
  khoUnpreserveVmalloc(out, kernel.mm, a.desc);
  if (unpreserveFolios) for (let i = 0; i < a.pfns.length; i++) if (a.pfns[i] !== 0) out.unpreserveFolio(a.pfns[i] as number, m.order);
  vfree(kernel.mm, a.area);
}

/** The sparse format follows the page cache until freeze: every folio that appears or goes away. */
function watchPages(kernel: Kernel, m: MemfdInode, xa: KhoXarray, onCount?: (order: number, delta: number) => void): void {
  const out = khoOut(kernel);
  m.watcher = {
    added: (index, pfn) => { out.preserveFolio(pfn, m.order); xa.set(index, folioEntry(pfn)); onCount?.(m.order, 1); },
    removed: (index, pfn) => { xa.clear(index); out.unpreserveFolio(pfn, m.order); onCount?.(m.order, -1); },
  };
}

/** Materialize every hole below i_size (memfd_pin_folios allocates them). */
function materializeHoles(m: MemfdInode): void {
  const folios = Math.ceil(m.size / m.folioBytes);
  for (let i = 0; i < folios; i++) if (m.cache.get(i) < 0) m.fault(i);
}

export function preserveMemfd(ctx: HandlerContext<MemfdPreservation>, onCount?: (order: number, delta: number) => void): void {
  const { kernel } = ctx;
  const file = ctx.file;
  if (!file) throw new ErrnoError('EINVAL', 'preserve');
  const m = inodeOf(file);
  const out = khoOut(kernel);
  const mode = majorOf(ctx.version) <= 2 ? 'upstream' : 'sparse';
  let serPhys = 0;
  let xa: KhoXarray | null = null;
  let array: FolioArray | null = null;
  const preserved: number[] = [];
  if (mode === 'upstream') m.frozen = true; // shmem_freeze(inode, true)
  try {
    serPhys = out.allocPreserve(memfdLuoSerV3_1.size);
    // Unknown seals cannot be described to the next kernel.
    if (m.seals & ~MEMFD_LUO_ALL_SEALS) throw new ErrnoError('EOPNOTSUPP', 'preserve', `seals 0x${m.seals.toString(16)}`);
    if (mode === 'upstream') {
      if (Math.ceil(m.size / PAGE_SIZE) > UINT_MAX) throw new ErrnoError('EFBIG', 'preserve');
      if (m.size > 0) {
        materializeHoles(m);
        array = preserveFolioArray(kernel, m, true);
      }
    } else {
      xa = KhoXarray.create(kernel);
      const x = xa;
      m.cache.forEach((index, pfn) => {
        out.preserveFolio(pfn, m.order);
        preserved.push(pfn);
        x.set(index, folioEntry(pfn));
      });
      watchPages(kernel, m, x, onCount);
    }
  } catch (e) {
    for (const pfn of preserved) out.unpreserveFolio(pfn, m.order);
    xa?.destroy();
    out.unpreserveFree(serPhys);
    m.watcher = null;
    m.frozen = false;
    throw e;
  }
  onCount?.(m.order, m.cache.count);
  const state: MemfdPreservation = { m, file, mode, serPhys, sealsAtPreserve: m.seals, array, xa, ...(onCount ? { onCount } : {}) };
  ctx.state = state;
  ctx.data = BigInt(serPhys);
  writeHeader(kernel, state, ctx.version);
}

/**
 * Write the handover header in `version`'s layout at its physical address. The whole 56-byte
 * slot is rewritten, so a 40-byte memfd-v1 or 48-byte 3.0 header written over a longer one
 * leaves zeros behind it, as a kernel that only knows that layout would. 3.1 and later append
 * the CRC-32 of the first 48 bytes.
 */
function writeHeader(kernel: Kernel, st: MemfdPreservation, version: string): void {
  const { m } = st;
  const major = majorOf(version);
  const pos = BigInt(st.file.pos);
  const seals = st.mode === 'upstream' ? st.sealsAtPreserve : m.seals;
  const vm = st.array
    ? { folios_first: st.array.desc.first, folios_total_pages: st.array.desc.total_pages, folios_flags: st.array.desc.flags, folios_order: st.array.desc.order }
    : { folios_first: 0n, folios_total_pages: 0, folios_flags: 0, folios_order: 0 };
  const nr = BigInt(st.array ? st.array.pfns.length : 0);
  const slot = new Uint8Array(memfdLuoSerV3_1.size);
  if (major === 1) {
    memfdLuoSerV1.encodeInto(slot, 0, { pos, size: BigInt(m.size), nr_folios: nr, ...vm });
  } else if (major === 2) {
    memfdLuoSerV2.encodeInto(slot, 0, { pos, size: BigInt(m.size), seals, flags: 0, nr_folios: nr, ...vm });
  } else {
    memfdLuoSerV3.encodeInto(slot, 0, {
      pos, size: BigInt(m.size), seals, flags: 0, nr_folios: BigInt(st.xa?.size ?? 0),
      folios_xa: BigInt(st.xa?.rootPhys ?? 0), order: m.order, reserved: 0,
    });
    if (hasHeaderChecksum(version)) {
      new DataView(slot.buffer, slot.byteOffset, slot.byteLength).setUint32(MEMFD_V3_1_CRC_BYTES, crc32(slot.subarray(0, MEMFD_V3_1_CRC_BYTES)), true);
    }
  }
  kernel.machine.memory.write(st.serPhys, slot);
}

/**
 * freeze: write the header in the negotiated version. A sparse file going to a kernel that
 * reads only an upstream format is converted here, in the blackout: the inode is frozen, every
 * hole materialized, the folio array built, and the xarray dropped from the handover (the
 * next kernel would not know its pages).
 */
export function freezeMemfd(ctx: HandlerContext<MemfdPreservation>): void {
  const st = ctx.state;
  if (!st) throw new ErrnoError('EINVAL', 'freeze', 'no preserved state');
  const major = majorOf(ctx.version);
  if (st.mode === 'sparse' && major <= 2 && st.xa) {
    if (st.m.order !== 0) throw new ErrnoError('EOPNOTSUPP', 'freeze', `format ${ctx.version} cannot describe huge folios`);
    if (Math.ceil(st.m.size / PAGE_SIZE) > UINT_MAX) throw new ErrnoError('EFBIG', 'freeze');
    st.m.frozen = true;
    try {
      materializeHoles(st.m); // the watcher preserves each new folio
      st.array = preserveFolioArray(ctx.kernel, st.m, false);
    } catch (e) {
      st.m.frozen = false;
      throw e;
    }
    st.m.watcher = null;
    st.xa.destroy();
    st.xa = null;
  }
  // After a rollback that could not rebuild the xarray, the sparse format has nothing to point at.
  if (st.mode === 'sparse' && major >= 3 && !st.xa) throw new ErrnoError('ENOMEM', 'freeze', 'no folio xarray');
  writeHeader(ctx.kernel, st, ctx.version);
}

/** unfreeze (rollback of a failed reboot): undo a sparse → upstream conversion; the file is growable again. */
export function unfreezeMemfd(ctx: HandlerContext<MemfdPreservation>): void {
  const st = ctx.state;
  if (!st || st.mode !== 'sparse' || st.xa) return;
  const { kernel } = ctx;
  let xa: KhoXarray;
  try {
    xa = KhoXarray.create(kernel);
    const x = xa;
    st.m.cache.forEach((index, pfn) => { x.set(index, folioEntry(pfn)); });
  } catch (e) {
    // unfreeze is void: the file stays converted (and frozen) and a later freeze to 3.x fails.
    kernel.dmesg.log('warn', 'memfd', `unfreeze: cannot rebuild the folio xarray: ${e instanceof Error ? e.message : String(e)}`);
    return;
  }
  st.xa = xa;
  if (st.array) releaseFolioArray(kernel, st.m, st.array, false);
  st.array = null;
  watchPages(kernel, st.m, xa, st.onCount);
  st.m.frozen = false;
  writeHeader(kernel, st, majorOf(ctx.version) >= 3 ? ctx.version : '3.0.0');
}

export function unpreserveMemfd(ctx: HandlerContext<MemfdPreservation>): void {
  const st = ctx.state;
  if (!st) return;
  const out = khoOut(ctx.kernel);
  st.m.watcher = null;
  if (st.array) releaseFolioArray(ctx.kernel, st.m, st.array, true);
  if (st.xa) {
    st.xa.forEachWords((_i, lo, hi) => { out.unpreserveFolio(folioPfn(lo, hi), st.m.order); });
    st.xa.destroy();
  }
  st.onCount?.(st.m.order, -st.m.cache.count);
  out.unpreserveFree(st.serPhys);
  st.m.frozen = false; // shmem_freeze(inode, false)
  ctx.state = undefined;
}

interface Header {
  pos: number;
  size: number;
  seals: number;
  order: number;
  nrFolios: number;
  /** upstream: the folio array descriptor; sparse: the xarray root. */
  desc: KhoVmallocDesc | null;
  xaRoot: number;
}

/** Fields no writer produces are corruption: the file is refused (EINVAL) rather than rebuilt wrong. */
function checkHeader(h: Header, flags: number, reserved: number): Header {
  if (!(h.size <= MAX_LFS_FILESIZE) || !(h.pos <= MAX_LFS_FILESIZE)) throw new ErrnoError('EINVAL', 'retrieve', `size ${h.size} or pos ${h.pos} beyond MAX_LFS_FILESIZE`);
  // memfd_luo_ser.flags is unused and must be 0; so are the 3.x reserved word and the 3.1 pad.
  if (flags !== 0 || reserved !== 0) throw new ErrnoError('EINVAL', 'retrieve', `flags 0x${flags.toString(16)} reserved 0x${reserved.toString(16)}`);
  if (h.order !== 0 && h.order !== 9 && h.order !== 18) throw new ErrnoError('EINVAL', 'retrieve', `folio order ${h.order}`);
  return h;
}

function readHeader(kernel: Kernel, phys: number, version: string): Header {
  const mem = kernel.machine.memory;
  const major = majorOf(version);
  if (major === 1) {
    const h = memfdLuoSerV1.decode(mem.read(phys, memfdLuoSerV1.size));
    return checkHeader({ pos: Number(h.pos), size: Number(h.size), seals: 0, order: 0, nrFolios: Number(h.nr_folios), xaRoot: 0,
      desc: { first: h.folios_first, total_pages: h.folios_total_pages, flags: h.folios_flags, order: h.folios_order } }, 0, 0);
  }
  if (major === 2) {
    const h = memfdLuoSerV2.decode(mem.read(phys, memfdLuoSerV2.size));
    return checkHeader({ pos: Number(h.pos), size: Number(h.size), seals: h.seals, order: 0, nrFolios: Number(h.nr_folios), xaRoot: 0,
      desc: { first: h.folios_first, total_pages: h.folios_total_pages, flags: h.folios_flags, order: h.folios_order } }, h.flags, 0);
  }
  if (hasHeaderChecksum(version)) {
    const raw = mem.read(phys, memfdLuoSerV3_1.size);
    const h = memfdLuoSerV3_1.decode(raw);
    if (h.crc32 !== crc32(raw.subarray(0, MEMFD_V3_1_CRC_BYTES))) {
      throw new ErrnoError('EINVAL', 'retrieve', `header checksum mismatch: crc32 0x${h.crc32.toString(16)}, header 0x${crc32(raw.subarray(0, MEMFD_V3_1_CRC_BYTES)).toString(16)}`);
    }
    return checkHeader({ pos: Number(h.pos), size: Number(h.size), seals: h.seals, order: h.order, nrFolios: Number(h.nr_folios), desc: null, xaRoot: Number(h.folios_xa) }, h.flags, h.reserved | h.pad);
  }
  const h = memfdLuoSerV3.decode(mem.read(phys, memfdLuoSerV3.size));
  return checkHeader({ pos: Number(h.pos), size: Number(h.size), seals: h.seals, order: h.order, nrFolios: Number(h.nr_folios), desc: null, xaRoot: Number(h.folios_xa) }, h.flags, h.reserved);
}

/** The incoming folio list from the array or the xarray (whose pages are freed after reading). */
function incomingFolios(kernel: Kernel, h: Header): FolioList {
  const kin = kernel.khoIn;
  if (!kin) throw new ErrnoError('EINVAL', 'retrieve', 'not a KHO boot');
  if (h.desc) {
    if (h.nrFolios === 0) return { count: 0, pairs: new Float64Array(0) };
    const area = khoRestoreVmalloc(kin, kernel.mm, h.desc);
    if (!area) throw new ErrnoError('EINVAL', 'retrieve', 'folio array');
    try {
      if (h.nrFolios * memfdLuoFolioSer.size > area.pageCount * PAGE_SIZE) throw new ErrnoError('EINVAL', 'retrieve', 'nr_folios beyond the folio array');
      const raw = area.read(0, h.nrFolios * memfdLuoFolioSer.size);
      const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
      const pairs = new Float64Array(2 * h.nrFolios);
      for (let i = 0; i < h.nrFolios; i++) {
        pairs[2 * i] = readFolioSerIndex(view, i * memfdLuoFolioSer.size);
        pairs[2 * i + 1] = readFolioSerPfn(view, i * memfdLuoFolioSer.size);
      }
      return { count: h.nrFolios, pairs };
    } finally {
      vfree(kernel.mm, area);
    }
  }
  if (h.xaRoot === 0) return { count: 0, pairs: new Float64Array(0) };
  const xa = KhoXarray.restore(kernel, h.xaRoot);
  try {
    const pairs = new Float64Array(2 * xa.size);
    let n = 0;
    xa.forEachWords((index, lo, hi) => {
      pairs[2 * n] = index;
      pairs[2 * n + 1] = folioPfn(lo, hi);
      n++;
    });
    const list = { count: n, pairs };
    // nr_folios and the xarray must agree; a mismatch is corruption, and the folios we can see are released.
    if (n !== h.nrFolios) {
      dropFolios(kernel, list, 0, h.order);
      throw new ErrnoError('EINVAL', 'retrieve', `nr_folios ${h.nrFolios} but ${n} folios in the xarray`);
    }
    return list;
  } finally {
    xa.destroy();
  }
}

/**
 * Restore and release folios [from, count) nobody will use (error paths and finish of an
 * unretrieved file). Huge folios go back to their hugeTLB pool, which counted them as preserved.
 */
function dropFolios(kernel: Kernel, list: FolioList, from: number, order: number): void {
  for (let i = from; i < list.count; i++) {
    const pfn = list.pairs[2 * i + 1] as number;
    if (pfn === 0) continue;
    const f = kernel.khoIn?.restoreFolio(pfn * PAGE_SIZE);
    if (!f) kernel.dmesg.log('warn', 'memfd', `could not restore folio 0x${(pfn * PAGE_SIZE).toString(16)} order ${order}`);
    else if (order > 0 && f.order === order) hugetlbFree(kernel, order, f.pfn);
    else kernel.mm.freePages(f.pfn, f.order);
  }
}

/** retrieve: rebuild the memfd from bytes; the ser page is always consumed. */
export function retrieveMemfd(ctx: HandlerContext<MemfdPreservation>, hugetlb: boolean): void {
  const { kernel } = ctx;
  const kin = kernel.khoIn;
  if (!kin) throw new ErrnoError('EINVAL', 'retrieve', 'not a KHO boot');
  const phys = Number(ctx.data);
  try {
    const h = readHeader(kernel, phys, ctx.version);
    if (h.seals & ~MEMFD_LUO_ALL_SEALS) throw new ErrnoError('EOPNOTSUPP', 'retrieve', `seals 0x${h.seals.toString(16)}`);
    if (hugetlb !== (h.order > 0)) throw new ErrnoError('EINVAL', 'retrieve', `folio order ${h.order}`);
    // memfd_alloc_file("", MFD_ALLOW_SEALING): the name is not preserved.
    const m = new MemfdInode(kernel, '', h.order, hugetlb, 0);
    m.seals = h.seals;
    m.size = h.size;
    const list = incomingFolios(kernel, h);
    for (let i = 0; i < list.count; i++) {
      const index = list.pairs[2 * i] as number;
      const pfn = list.pairs[2 * i + 1] as number;
      if (pfn === 0) continue;
      const f = kin.restoreFolio(pfn * PAGE_SIZE);
      if (!f || f.order !== h.order) {
        if (f) kernel.mm.freePages(f.pfn, f.order);
        dropFolios(kernel, list, i + 1, h.order);
        m.releaseAll();
        throw new ErrnoError('EIO', 'retrieve', `folio 0x${(pfn * PAGE_SIZE).toString(16)} cannot be restored`);
      }
      if (hugetlb) hugetlbAdopt(kernel, h.order);
      m.cache.set(index, pfn);
    }
    const file = memfdFile(kernel, m);
    file.pos = h.pos;
    ctx.file = file;
  } finally {
    kin.restoreFree(phys);
  }
}

/** finish: an unretrieved memfd is discarded (its folios restored and freed); otherwise nothing is left. */
export function finishMemfd(ctx: HandlerContext<MemfdPreservation>): void {
  if (ctx.retrieveStatus !== 0) return;
  const { kernel } = ctx;
  const phys = Number(ctx.data);
  try {
    const h = readHeader(kernel, phys, ctx.version);
    dropFolios(kernel, incomingFolios(kernel, h), 0, h.order);
  } catch (e) {
    kernel.dmesg.log('warn', 'memfd', `finish of an unretrieved memfd failed: ${e instanceof Error ? e.message : String(e)}`);
  } finally {
    kernel.khoIn?.restoreFree(phys);
  }
}
