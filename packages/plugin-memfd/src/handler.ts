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
 * any folio, so a folio entry aimed at a metadata page cannot be restored as data.
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
  MEMFD_V3_1_CRC_BYTES, MEMFD_V3_2_META_CRC_OFFSET, folioPfn, memfdLuoFolioSer, memfdLuoSerV1, memfdLuoSerV2, memfdLuoSerV3,
  memfdLuoSerV3_1, memfdLuoSerV3_2, readFolioSerIndex, readFolioSerPfn, writeFolioSer,
} from './abi/memfd.js';
import { MEMFD_V4_CRC_OFFSET, memfdLuoSerV4, memfdV4Checksum } from './abi/memfd-v4.js';
import { CRC32_START, crc32, crc32Final, crc32U32, crc32Update } from './crc32.js';
import {
  ExtentError, incomingExtents, preserveExtents, releaseExtents, type ExtentHandover, type FolioList,
} from './extents.js';
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

/** The header slot: the longest header any version writes (each write rewrites all of it). */
const HEADER_SLOT = Math.max(memfdLuoSerV3_2.size, memfdLuoSerV4.size);
const TWO32 = 0x1_0000_0000;

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
  /** 4.x: the extent stream written by the last freeze. */
  extents: ExtentHandover | null;
  /** Counts of preserved folios by order, for the hugetlb FLB. */
  onCount?: (order: number, delta: number) => void;
}

export const majorOf = (v: string): number => semver.major(v);
/** memfd 3.1 and later 3.x minors append a CRC-32 of the 48-byte 3.0 header. */
export const hasHeaderChecksum = (v: string): boolean => majorOf(v) === 3 && semver.gte(v, '3.1.0');
/** memfd 3.2 and later 3.x minors add a CRC-32 over the header and every xarray entry. */
export const hasMetaChecksum = (v: string): boolean => majorOf(v) === 3 && semver.gte(v, '3.2.0');

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
  const state: MemfdPreservation = { m, file, mode, serPhys, sealsAtPreserve: m.seals, array, xa: holder.xa, extents: null, ...(onCount ? { onCount } : {}) };
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
 * the CRC-32 of all metadata; 4.x has its own layout (abi/memfd-v4.ts).
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
  }
  kernel.machine.memory.write(st.serPhys, slot);
}

/**
 * memfd 3.2's meta_crc32: the 64-byte header with meta_crc32 as 0, then (index, entry) of every
 * xarray entry in ascending index, each a little-endian u64.
 */
function xarrayChecksum(header: Uint8Array, xa: KhoXarray | null): number {
  const h = header.slice(0, memfdLuoSerV3_2.size);
  new DataView(h.buffer).setUint32(MEMFD_V3_2_META_CRC_OFFSET, 0, true);
  let c = crc32Update(CRC32_START, h);
  xa?.forEachWords((index, lo, hi) => {
    c = crc32U32(c, index >>> 0);
    c = crc32U32(c, Math.floor(index / TWO32));
    c = crc32U32(c, lo);
    c = crc32U32(c, hi);
  });
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

interface Header {
  pos: number;
  size: number;
  seals: number;
  order: number;
  nrFolios: number;
  /** upstream: the folio array descriptor; sparse: the xarray root. */
  desc: KhoVmallocDesc | null;
  xaRoot: number;
  /** 3.2: the meta_crc32 and the header bytes it covers. */
  metaCrc?: { value: number; header: Uint8Array };
  /** 4.x: everything the extent stream is checked against. */
  v4?: { headerBytes: Uint8Array; nrExtents: number; streamBytes: number; crc: number };
}

/** Fields no writer produces are corruption: the file is refused (EINVAL) rather than rebuilt wrong. */
function checkHeader(h: Header, flags: number, reserved: number): Header {
  if (!(h.size <= MAX_LFS_FILESIZE) || !(h.pos <= MAX_LFS_FILESIZE)) throw new ErrnoError('EINVAL', 'retrieve', `size ${h.size} or pos ${h.pos} beyond MAX_LFS_FILESIZE`);
  // memfd_luo_ser.flags is unused and must be 0; so are the 3.x reserved word and the 3.1/3.2 pads.
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
  if (major >= 4) {
    const raw = mem.read(phys, memfdLuoSerV4.size);
    const h = memfdLuoSerV4.decode(raw);
    // Counts beyond 2^53 are corruption; they fail the checksum or the stream checks as NaN-free numbers.
    const num = (v: bigint): number => (v > BigInt(Number.MAX_SAFE_INTEGER) ? -1 : Number(v));
    return checkHeader({
      pos: Number(h.pos), size: Number(h.size), seals: h.seals, order: h.order, nrFolios: num(h.nr_folios), xaRoot: 0,
      desc: { first: h.extents_first, total_pages: h.extents_total_pages, flags: h.extents_flags, order: h.extents_order },
      v4: { headerBytes: raw, nrExtents: num(h.nr_extents), streamBytes: num(h.stream_bytes), crc: h.crc32 },
    }, h.flags, 0);
  }
  if (hasHeaderChecksum(version)) {
    const raw = mem.read(phys, hasMetaChecksum(version) ? memfdLuoSerV3_2.size : memfdLuoSerV3_1.size);
    const h = memfdLuoSerV3_1.decode(raw);
    if (h.crc32 !== crc32(raw.subarray(0, MEMFD_V3_1_CRC_BYTES))) {
      throw new ErrnoError('EINVAL', 'retrieve', `header checksum mismatch: crc32 0x${h.crc32.toString(16)}, header 0x${crc32(raw.subarray(0, MEMFD_V3_1_CRC_BYTES)).toString(16)}`);
    }
    let metaPad = 0;
    let metaCrc: Header['metaCrc'];
    if (hasMetaChecksum(version)) {
      const h2 = memfdLuoSerV3_2.decode(raw);
      metaPad = h2.meta_pad;
      metaCrc = { value: h2.meta_crc32, header: raw };
    }
    return checkHeader({ pos: Number(h.pos), size: Number(h.size), seals: h.seals, order: h.order, nrFolios: Number(h.nr_folios), desc: null, xaRoot: Number(h.folios_xa), ...(metaCrc ? { metaCrc } : {}) }, h.flags, h.reserved | h.pad | metaPad);
  }
  const h = memfdLuoSerV3.decode(mem.read(phys, memfdLuoSerV3.size));
  return checkHeader({ pos: Number(h.pos), size: Number(h.size), seals: h.seals, order: h.order, nrFolios: Number(h.nr_folios), desc: null, xaRoot: Number(h.folios_xa) }, h.flags, h.reserved);
}

/**
 * A metadata problem in a format with a whole-metadata check: the entries that were read cannot
 * be trusted, so the folios they name are left reserved (a leak) rather than released: one of
 * them may belong to another file.
 */
class UntrustedMetadata extends ErrnoError {
  constructor(message: string) { super('EINVAL', 'retrieve', message); }
}

/** The incoming folio list from the array, the xarray or the extent stream (whose pages are freed after reading). */
function incomingFolios(kernel: Kernel, h: Header, headerPfn: number): FolioList {
  const kin = kernel.khoIn;
  if (!kin) throw new ErrnoError('EINVAL', 'retrieve', 'not a KHO boot');
  if (h.v4) {
    try {
      return incomingExtents(kernel, {
        headerBytes: h.v4.headerBytes, headerPfn, desc: h.desc ?? { first: 0n, total_pages: 0, flags: 0, order: 0 },
        streamBytes: h.v4.streamBytes, nrExtents: h.v4.nrExtents, nrFolios: h.nrFolios, order: h.order,
        fileFolios: Math.ceil(h.size / (PAGE_SIZE * 2 ** h.order)), crc: h.v4.crc,
      });
    } catch (e) {
      if (e instanceof ExtentError && !e.trusted) throw new UntrustedMetadata(e.message);
      throw e;
    }
  }
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
  if (h.xaRoot === 0 && !h.metaCrc) return { count: 0, pairs: new Float64Array(0) };
  let xa: KhoXarray;
  try {
    xa = KhoXarray.restore(kernel, h.xaRoot);
  } catch (e) {
    if (h.metaCrc && e instanceof ErrnoError) throw new UntrustedMetadata(e.message);
    throw e;
  }
  try {
    const pairs = new Float64Array(2 * xa.size);
    let n = 0;
    let c = 0;
    if (h.metaCrc) {
      const hdr = h.metaCrc.header.slice(0, memfdLuoSerV3_2.size);
      new DataView(hdr.buffer).setUint32(MEMFD_V3_2_META_CRC_OFFSET, 0, true);
      c = crc32Update(CRC32_START, hdr);
    }
    const meta = h.metaCrc !== undefined;
    xa.forEachWords((index, lo, hi) => {
      pairs[2 * n] = index;
      pairs[2 * n + 1] = folioPfn(lo, hi);
      n++;
      if (meta) c = crc32U32(crc32U32(crc32U32(crc32U32(c, index >>> 0), Math.floor(index / TWO32)), lo), hi);
    });
    if (h.metaCrc && crc32Final(c) !== h.metaCrc.value) {
      throw new UntrustedMetadata(`metadata checksum mismatch: meta_crc32 0x${h.metaCrc.value.toString(16)}, metadata 0x${crc32Final(c).toString(16)}`);
    }
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

/**
 * The handover header page. The project's formats (3.x, 4.x) claim it before anything else, so
 * no folio entry can restore it as data; upstream formats read it in place and free it last,
 * as memfd_luo_retrieve does.
 */
function claimHeader(kernel: Kernel, phys: number, version: string): boolean {
  if (majorOf(version) <= 2) return false;
  const f = kernel.khoIn?.restoreFolio(phys);
  if (!f) throw new ErrnoError('EINVAL', 'retrieve', `header 0x${phys.toString(16)} is not a preserved page`);
  if (f.order !== 0) {
    kernel.mm.freePages(f.pfn, f.order);
    throw new ErrnoError('EINVAL', 'retrieve', `header 0x${phys.toString(16)} is an order-${f.order} block`);
  }
  return true;
}

function releaseHeader(kernel: Kernel, phys: number, claimed: boolean): void {
  if (claimed) kernel.mm.freePages(phys / PAGE_SIZE, 0);
  else kernel.khoIn?.restoreFree(phys);
}

/** retrieve: rebuild the memfd from bytes; the ser page is always consumed. */
export function retrieveMemfd(ctx: HandlerContext<MemfdPreservation>, hugetlb: boolean): void {
  const { kernel } = ctx;
  const kin = kernel.khoIn;
  if (!kin) throw new ErrnoError('EINVAL', 'retrieve', 'not a KHO boot');
  const phys = Number(ctx.data);
  const sparse = majorOf(ctx.version) >= 3;
  let claimed = false;
  try {
    claimed = claimHeader(kernel, phys, ctx.version);
    const h = readHeader(kernel, phys, ctx.version);
    if (h.seals & ~MEMFD_LUO_ALL_SEALS) throw new ErrnoError('EOPNOTSUPP', 'retrieve', `seals 0x${h.seals.toString(16)}`);
    if (hugetlb !== (h.order > 0)) throw new ErrnoError('EINVAL', 'retrieve', `folio order ${h.order}`);
    // memfd_alloc_file("", MFD_ALLOW_SEALING): the name is not preserved.
    const m = new MemfdInode(kernel, '', h.order, hugetlb, 0);
    m.seals = h.seals;
    m.size = h.size;
    const list = incomingFolios(kernel, h, phys / PAGE_SIZE);
    const fail = (i: number, err: ErrnoError, restored: { pfn: number; order: number } | null): never => {
      if (restored) kernel.mm.freePages(restored.pfn, restored.order);
      dropFolios(kernel, list, i + 1, h.order);
      m.releaseAll();
      throw err;
    };
    for (let i = 0; i < list.count; i++) {
      const index = list.pairs[2 * i] as number;
      const pfn = list.pairs[2 * i + 1] as number;
      if (pfn === 0) continue;
      // The project's formats refuse a folio that is the file's own handover metadata.
      if (sparse && pfn * PAGE_SIZE === phys) fail(i, new ErrnoError('EINVAL', 'retrieve', `folio 0x${phys.toString(16)} is the file's own header page`), null);
      const f = kin.restoreFolio(pfn * PAGE_SIZE);
      if (!f || f.order !== h.order) fail(i, new ErrnoError('EIO', 'retrieve', `folio 0x${(pfn * PAGE_SIZE).toString(16)} cannot be restored`), f);
      // shmem_add_to_page_cache: an index already in the cache is -EEXIST, and the folio is put.
      if (m.cache.get(index) >= 0) fail(i, new ErrnoError('EEXIST', 'retrieve', `page-cache index ${index} twice`), f);
      if (hugetlb) hugetlbAdopt(kernel, h.order);
      m.cache.set(index, pfn);
    }
    const file = memfdFile(kernel, m);
    file.pos = h.pos;
    ctx.file = file;
  } catch (e) {
    if (e instanceof UntrustedMetadata) kernel.dmesg.log('warn', 'memfd', `retrieve: ${e.message}; the folios it names stay reserved`);
    throw e;
  } finally {
    if (claimed || !sparse) releaseHeader(kernel, phys, claimed);
  }
}

/** finish: an unretrieved memfd is discarded (its folios restored and freed); otherwise nothing is left. */
export function finishMemfd(ctx: HandlerContext<MemfdPreservation>): void {
  if (ctx.retrieveStatus !== 0) return;
  const { kernel } = ctx;
  const phys = Number(ctx.data);
  const sparse = majorOf(ctx.version) >= 3;
  let claimed = false;
  try {
    claimed = claimHeader(kernel, phys, ctx.version);
    const h = readHeader(kernel, phys, ctx.version);
    dropFolios(kernel, incomingFolios(kernel, h, phys / PAGE_SIZE), 0, h.order);
  } catch (e) {
    kernel.dmesg.log('warn', 'memfd', `finish of an unretrieved memfd failed: ${e instanceof Error ? e.message : String(e)}`);
  } finally {
    if (claimed || !sparse) releaseHeader(kernel, phys, claimed);
  }
}
