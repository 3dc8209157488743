/**
 * memfd preservation (mm/memfd_luo.c), in four formats:
 *  - 1.x / 2.x: upstream memfd-v1 / memfd-v2. Preserve freezes the inode, materializes every
 *    hole, pins and preserves every folio and records them in a vmalloc array; freeze only
 *    refreshes pos.
 *  - 3.x: sparse. Folios go into a KHO xarray as they appear, holes are never materialized, and
 *    the file may grow or fault pages in until freeze, which writes the final header. 3.2 adds a
 *    CRC-32 over the header and every xarray entry.
 *  - 4.x: sparse as 3.x, but the folios are described at freeze as extents (abi/memfd-v4.ts).
 * 3.x and 4.x restore the file's own metadata (header, xarray nodes, extent stream) before
 * any folio, so a folio entry aimed at a metadata page cannot be restored as data (retrieve.ts).
 * Which semantics preserve uses follows the newest version this build writes; if the target
 * kernel only reads an upstream format, freeze converts (materializing holes in the blackout).
 */
import { PAGE_SIZE } from '@liveupdate/hw';
import {
  ErrnoError, KhoXarray, khoPreserveVmalloc, khoUnpreserveVmalloc, vfree, vzalloc,
  type HandlerContext, type Kernel, type KFile, type KhoVmallocDesc, type VmArea,
} from '@liveupdate/sdk';
import { remembered, semver } from '@liveupdate/sdk';
import {
  MEMFD_LUO_ALL_SEALS, MEMFD_LUO_FOLIO_DIRTY, MEMFD_LUO_FOLIO_PFN_BITS, MEMFD_LUO_FOLIO_UPTODATE,
  MEMFD_V3_1_CRC_BYTES, MEMFD_V3_2_META_CRC_OFFSET, memfdLuoFolioSer, memfdLuoSerV1, memfdLuoSerV2, memfdLuoSerV3,
  memfdLuoSerV3_2, memfdV3_2MetaEntry, memfdV3_2MetaStart, writeFolioSer,
} from './abi/memfd.js';
import { MEMFD_V4_1_ID_OFFSET, MEMFD_V4_CRC_OFFSET, memfdLuoSerV4, memfdLuoSerV4_1, memfdV4Checksum, memfdV4IdChecksum } from './abi/memfd-v4.js';
import { crc32, crc32Final } from './crc32.js';
import { preserveExtents, releaseExtents, type ExtentHandover } from './extents.js';
import { MemfdInode, inodeOf } from './memfd.js';

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

/** The header slot: the longest header any version writes (each write rewrites all of it). */
const HEADER_SLOT = Math.max(memfdLuoSerV3_2.size, memfdLuoSerV4_1.size);

/** Runtime-only state of one preserved memfd (args->private_data). */
export interface MemfdPreservation {
  readonly m: MemfdInode;
  readonly file: KFile;
  readonly mode: 'upstream' | 'sparse';
  readonly serPhys: number;
  /** Upstream formats record the seals at preserve (freeze only refreshes pos); 3.x at freeze. */
  readonly sealsAtPreserve: number;
  /** The (session name, token) the file is preserved under: 4.1 binds its header to them. */
  readonly session: string;
  readonly token: bigint;
  array: FolioArray | null;
  xa: KhoXarray | null;
  /** 4.x: the extent stream written by the last freeze. */
  extents: ExtentHandover | null;
  /** Counts of preserved folios by order, for the hugetlb FLB. */
  onCount?: (order: number, delta: number) => void;
}

/**
 * Format versions parsed once each: every handler op asks these questions of the same few
 * version strings, and semver.major/gte would parse them again on every call. Same answers
 * (an invalid version throws semver's TypeError, as semver.major does); a full table starts over.
 */
const parsed = remembered((v) => new semver.SemVer(v), 256);
const atLeast = (v: string, floor: string): boolean => parsed(v).compare(parsed(floor)) >= 0;

export const majorOf = (v: string): number => parsed(v).major;
/** memfd 3.1 and later 3.x minors append a CRC-32 of the 48-byte 3.0 header. */
export const hasHeaderChecksum = (v: string): boolean => majorOf(v) === 3 && atLeast(v, '3.1.0');
/** memfd 3.2 and later 3.x minors add a CRC-32 over the header and every xarray entry. */
export const hasMetaChecksum = (v: string): boolean => majorOf(v) === 3 && atLeast(v, '3.2.0');
/** memfd 4.1 and later 4.x minors append a CRC-32 binding the header to the file's (session, token). */
export const hasIdChecksum = (v: string): boolean => majorOf(v) === 4 && atLeast(v, '4.1.0');

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

/**
 * The sparse formats follow the page cache until freeze: every folio that appears or goes away
 * is preserved or unpreserved, and entered in the xarray while there is one (3.x).
 */
function watchPages(kernel: Kernel, m: MemfdInode, holder: { xa: KhoXarray | null }, onCount?: (order: number, delta: number) => void): void {
  const out = khoOut(kernel);
  m.watcher = {
    added: (index, pfn) => { out.preserveFolio(pfn, m.order); holder.xa?.set(index, folioEntry(pfn)); onCount?.(m.order, 1); },
    removed: (index, pfn) => { holder.xa?.clear(index); out.unpreserveFolio(pfn, m.order); onCount?.(m.order, -1); },
  };
}

/** A KHO xarray of every cached folio (they are already preserved). */
function buildXarray(kernel: Kernel, m: MemfdInode): KhoXarray {
  const xa = KhoXarray.create(kernel);
  try {
    m.cache.forEach((index, pfn) => { xa.set(index, folioEntry(pfn)); });
  } catch (e) {
    xa.destroy();
    throw e;
  }
  return xa;
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
  const holder: { xa: KhoXarray | null } = { xa: null };
  let array: FolioArray | null = null;
  const preserved: number[] = [];
  if (mode === 'upstream') m.frozen = true; // shmem_freeze(inode, true)
  try {
    serPhys = out.allocPreserve(HEADER_SLOT);
    // Unknown seals cannot be described to the next kernel.
    if (m.seals & ~MEMFD_LUO_ALL_SEALS) throw new ErrnoError('EOPNOTSUPP', 'preserve', `seals 0x${m.seals.toString(16)}`);
    if (mode === 'upstream') {
      if (Math.ceil(m.size / PAGE_SIZE) > UINT_MAX) throw new ErrnoError('EFBIG', 'preserve');
      if (m.size > 0) {
        materializeHoles(m);
        array = preserveFolioArray(kernel, m, true);
      }
    } else {
      // 3.x keeps its xarray current from here on; 4.x only preserves folios and describes them at freeze.
      if (majorOf(ctx.version) === 3) holder.xa = KhoXarray.create(kernel);
      const x = holder.xa;
      m.cache.forEach((index, pfn) => {
        out.preserveFolio(pfn, m.order);
        preserved.push(pfn);
        x?.set(index, folioEntry(pfn));
      });
      watchPages(kernel, m, holder, onCount);
    }
  } catch (e) {
    for (const pfn of preserved) out.unpreserveFolio(pfn, m.order);
    holder.xa?.destroy();
    out.unpreserveFree(serPhys);
    m.watcher = null;
    m.frozen = false;
    throw e;
  }
  onCount?.(m.order, m.cache.count);
  const state: MemfdPreservation = { m, file, mode, serPhys, sealsAtPreserve: m.seals, session: ctx.session.name, token: ctx.token, array, xa: holder.xa, extents: null, ...(onCount ? { onCount } : {}) };
  // The watcher reads the xarray through the state from now on (freeze may build or drop it).
  if (mode === 'sparse') watchPages(kernel, m, state, onCount);
  ctx.state = state;
  ctx.data = BigInt(serPhys);
  writeHeader(kernel, state, ctx.version);
}

/**
 * Write the handover header in `version`'s layout at its physical address. The whole slot is
 * rewritten, so a shorter header written over a longer one leaves zeros behind it, as a kernel
 * that only knows that layout would. 3.1 and later append the CRC-32 of the first 48 bytes; 3.2
 * the CRC-32 of all metadata; 4.x has its own layout (abi/memfd-v4.ts), to which 4.1 appends
 * the CRC-32 binding it to (session, token).
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
  const slot = new Uint8Array(HEADER_SLOT);
  const view = new DataView(slot.buffer, slot.byteOffset, slot.byteLength);
  if (major === 1) {
    memfdLuoSerV1.encodeInto(slot, 0, { pos, size: BigInt(m.size), nr_folios: nr, ...vm });
  } else if (major === 2) {
    memfdLuoSerV2.encodeInto(slot, 0, { pos, size: BigInt(m.size), seals, flags: 0, nr_folios: nr, ...vm });
  } else if (major === 3) {
    memfdLuoSerV3.encodeInto(slot, 0, {
      pos, size: BigInt(m.size), seals, flags: 0, nr_folios: BigInt(st.xa?.size ?? 0),
      folios_xa: BigInt(st.xa?.rootPhys ?? 0), order: m.order, reserved: 0,
    });
    if (hasHeaderChecksum(version)) view.setUint32(MEMFD_V3_1_CRC_BYTES, crc32(slot.subarray(0, MEMFD_V3_1_CRC_BYTES)), true);
    if (hasMetaChecksum(version)) view.setUint32(MEMFD_V3_2_META_CRC_OFFSET, xarrayChecksum(slot.subarray(0, memfdLuoSerV3_2.size), st.xa), true);
  } else {
    const e = st.extents;
    memfdLuoSerV4.encodeInto(slot, 0, {
      pos, size: BigInt(m.size), seals, flags: 0,
      nr_folios: BigInt(e?.nrFolios ?? 0), nr_extents: BigInt(e?.nrExtents ?? 0), stream_bytes: BigInt(e?.stream.length ?? 0),
      extents_first: e?.desc.first ?? 0n, extents_total_pages: e?.desc.total_pages ?? 0, extents_flags: e?.desc.flags ?? 0, extents_order: e?.desc.order ?? 0,
      order: m.order, crc32: 0,
    });
    view.setUint32(MEMFD_V4_CRC_OFFSET, memfdV4Checksum(slot, e?.stream ?? new Uint8Array(0)), true);
    if (hasIdChecksum(version)) view.setUint32(MEMFD_V4_1_ID_OFFSET, memfdV4IdChecksum(slot, st.session, st.token), true);
  }
  kernel.machine.memory.write(st.serPhys, slot);
}

/** memfd 3.2's meta_crc32 of `header` and every entry of `xa` (abi/memfd.ts defines what it covers). */
function xarrayChecksum(header: Uint8Array, xa: KhoXarray | null): number {
  let c = memfdV3_2MetaStart(header);
  xa?.forEachWords((index, lo, hi) => { c = memfdV3_2MetaEntry(c, index, lo, hi); });
  return crc32Final(c);
}

/**
 * freeze: write the header in the negotiated version. A sparse file going to a kernel that
 * reads only an upstream format is converted here, in the blackout: the inode is frozen, every
 * hole materialized, the folio array built, and the xarray dropped from the handover (the
 * next kernel would not know its pages). 3.x needs the xarray (built now if the file was
 * preserved for 4.x); 4.x describes the folios as extents and drops any xarray.
 */
export function freezeMemfd(ctx: HandlerContext<MemfdPreservation>): void {
  const st = ctx.state;
  if (!st) throw new ErrnoError('EINVAL', 'freeze', 'no preserved state');
  const { kernel } = ctx;
  const major = majorOf(ctx.version);
  if (st.mode === 'sparse' && st.extents) {
    // A second freeze (after a rollback that kept the stream): describe the file as it is now.
    releaseExtents(kernel, st.extents);
    st.extents = null;
  }
  if (st.mode === 'sparse' && major <= 2 && !st.array) {
    if (st.m.order !== 0) throw new ErrnoError('EOPNOTSUPP', 'freeze', `format ${ctx.version} cannot describe huge folios`);
    if (Math.ceil(st.m.size / PAGE_SIZE) > UINT_MAX) throw new ErrnoError('EFBIG', 'freeze');
    st.m.frozen = true;
    try {
      materializeHoles(st.m); // the watcher preserves each new folio
      st.array = preserveFolioArray(kernel, st.m, false);
    } catch (e) {
      st.m.frozen = false;
      throw e;
    }
    st.m.watcher = null;
    st.xa?.destroy();
    st.xa = null;
  } else if (st.mode === 'sparse' && major === 3 && !st.xa && !st.array && st.m.watcher) {
    st.xa = buildXarray(kernel, st.m);
  } else if (st.mode === 'sparse' && major >= 4 && !st.array) {
    st.extents = preserveExtents(kernel, st.m);
    st.xa?.destroy();
    st.xa = null;
  }
  // After a rollback that could not rebuild the xarray, the sparse formats have nothing to point at.
  if (st.mode === 'sparse' && major >= 3 && (st.array || (major === 3 && !st.xa))) throw new ErrnoError('ENOMEM', 'freeze', 'no folio xarray');
  writeHeader(kernel, st, ctx.version);
}

/** unfreeze (rollback of a failed reboot): undo a sparse → upstream conversion; the file is growable again. */
export function unfreezeMemfd(ctx: HandlerContext<MemfdPreservation>): void {
  const st = ctx.state;
  if (!st || st.mode !== 'sparse') return;
  const { kernel } = ctx;
  if (st.extents) {
    releaseExtents(kernel, st.extents);
    st.extents = null;
  }
  if (!st.array) {
    writeHeader(kernel, st, majorOf(ctx.version) >= 3 ? ctx.version : '3.0.0');
    return;
  }
  let xa: KhoXarray;
  try {
    xa = buildXarray(kernel, st.m);
  } catch (e) {
    // unfreeze is void: the file stays converted (and frozen) and a later freeze to 3.x fails.
    kernel.dmesg.log('warn', 'memfd', `unfreeze: cannot rebuild the folio xarray: ${e instanceof Error ? e.message : String(e)}`);
    return;
  }
  st.xa = xa;
  releaseFolioArray(kernel, st.m, st.array, false);
  st.array = null;
  watchPages(kernel, st.m, st, st.onCount);
  st.m.frozen = false;
  writeHeader(kernel, st, majorOf(ctx.version) >= 3 ? ctx.version : '3.0.0');
}

export function unpreserveMemfd(ctx: HandlerContext<MemfdPreservation>): void {
  const st = ctx.state;
  if (!st) return;
  const out = khoOut(ctx.kernel);
  st.m.watcher = null;
  if (st.array) releaseFolioArray(ctx.kernel, st.m, st.array, true);
  if (st.extents) releaseExtents(ctx.kernel, st.extents);
  if (st.mode === 'sparse' && !st.array) {
    // Every cached folio was preserved by preserve or the watcher.
    st.m.cache.forEach((_i, pfn) => { out.unpreserveFolio(pfn, st.m.order); });
  }
  st.xa?.destroy();
  st.onCount?.(st.m.order, -st.m.cache.count);
  out.unpreserveFree(st.serPhys);
  st.m.frozen = false; // shmem_freeze(inode, false)
  ctx.state = undefined;
}

