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
  memfdLuoFolioSer, memfdLuoSerV1, memfdLuoSerV2, memfdLuoSerV3,
} from './abi/memfd.js';
import { hugetlbAdopt } from './hugetlb-pool.js';
import { MemfdInode, inodeOf, memfdFile } from './memfd.js';

const PFN_MASK = 2 ** MEMFD_LUO_FOLIO_PFN_BITS;
const FOLIO_FLAGS = MEMFD_LUO_FOLIO_DIRTY | MEMFD_LUO_FOLIO_UPTODATE;
const UINT_MAX = 0xffffffff;
/** The pfn field (bits 0..51) of a folio entry given as two 32-bit words. */
const pfnOf = (lo: number, hi: number): number => (hi % 2 ** (MEMFD_LUO_FOLIO_PFN_BITS - 32)) * 2 ** 32 + lo;
const folioValue = (pfn: number): bigint => BigInt(pfn) | (BigInt(FOLIO_FLAGS) << BigInt(MEMFD_LUO_FOLIO_PFN_BITS));

interface FolioArray {
  readonly area: VmArea;
  readonly desc: KhoVmallocDesc;
  readonly pfns: number[];
}

/** Runtime-only state of one preserved memfd (args->private_data). */
export interface MemfdPreservation {
  readonly m: MemfdInode;
  readonly file: KFile;
  readonly mode: 'upstream' | 'sparse';
  readonly serPhys: number;
  array: FolioArray | null;
  xa: KhoXarray | null;
  /** Counts of preserved folios by order, for the hugetlb FLB. */
  onCount?: (order: number, delta: number) => void;
}

export const majorOf = (v: string): number => semver.major(v);

function khoOut(kernel: Kernel) {
  const out = kernel.khoOut;
  if (!out) throw new ErrnoError('EOPNOTSUPP', 'preserve', 'KHO disabled');
  return out;
}

/** Preserve every folio of the cache in a vmalloc'd array of memfd_luo_folio_ser. */
function preserveFolioArray(kernel: Kernel, m: MemfdInode): FolioArray | null {
  if (m.cache.count === 0) return null;
  const out = khoOut(kernel);
  const pfns: number[] = [];
  const records = new Uint8Array(m.cache.count * memfdLuoFolioSer.size);
  let area: VmArea | null = null;
  try {
    let i = 0;
    m.cache.forEach((index, pfn) => {
      out.preserveFolio(pfn, m.order);
      pfns.push(pfn);
      // Upstream marks every folio dirty and uptodate unconditionally.
      memfdLuoFolioSer.encodeInto(records, i * memfdLuoFolioSer.size, { pfn_flags: folioValue(pfn), index: BigInt(index) });
      i++;
    });
    area = vzalloc(kernel.mm, records.length);
    if (!area) throw new ErrnoError('ENOMEM', 'preserve');
    area.write(0, records);
    const desc = khoPreserveVmalloc(out, kernel.mm, area);
    return { area, desc, pfns };
  } catch (e) {
    for (const pfn of pfns) out.unpreserveFolio(pfn, m.order);
    if (area) vfree(kernel.mm, area);
    throw e;
  }
}

function releaseFolioArray(kernel: Kernel, m: MemfdInode, a: FolioArray): void {
  const out = khoOut(kernel);
  khoUnpreserveVmalloc(out, kernel.mm, a.desc);
  for (const pfn of a.pfns) if (pfn !== 0) out.unpreserveFolio(pfn, m.order);
  vfree(kernel.mm, a.area);
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
    serPhys = out.allocPreserve(memfdLuoSerV2.size);
    // Unknown seals cannot be described to the next kernel.
    if (m.seals & ~MEMFD_LUO_ALL_SEALS) throw new ErrnoError('EOPNOTSUPP', 'preserve', `seals 0x${m.seals.toString(16)}`);
    if (mode === 'upstream') {
      if (Math.ceil(m.size / PAGE_SIZE) > UINT_MAX) throw new ErrnoError('EFBIG', 'preserve');
      if (m.size > 0) {
        materializeHoles(m);
        array = preserveFolioArray(kernel, m);
      }
    } else {
      xa = KhoXarray.create(kernel);
      const x = xa;
      m.cache.forEach((index, pfn) => {
        out.preserveFolio(pfn, m.order);
        preserved.push(pfn);
        x.set(index, folioValue(pfn));
      });
      // Pages that appear or go away until freeze keep the handover current.
      m.watcher = {
        added: (index, pfn) => { out.preserveFolio(pfn, m.order); x.set(index, folioValue(pfn)); onCount?.(m.order, 1); },
        removed: (index, pfn) => { x.clear(index); out.unpreserveFolio(pfn, m.order); onCount?.(m.order, -1); },
      };
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
  const state: MemfdPreservation = { m, file, mode, serPhys, array, xa, ...(onCount ? { onCount } : {}) };
  ctx.state = state;
  ctx.data = BigInt(serPhys);
  writeHeader(kernel, state, ctx.version);
}

/** Write the handover header in `version`'s layout at its physical address. */
function writeHeader(kernel: Kernel, st: MemfdPreservation, version: string): void {
  const mem = kernel.machine.memory;
  const { m } = st;
  const major = majorOf(version);
  const pos = BigInt(st.file.pos);
  const vm = st.array
    ? { folios_first: st.array.desc.first, folios_total_pages: st.array.desc.total_pages, folios_flags: st.array.desc.flags, folios_order: st.array.desc.order }
    : { folios_first: 0n, folios_total_pages: 0, folios_flags: 0, folios_order: 0 };
  const nr = BigInt(st.array ? st.array.pfns.length : 0);
  if (major === 1) {
    mem.write(st.serPhys, memfdLuoSerV1.encode({ pos, size: BigInt(m.size), nr_folios: nr, ...vm }));
  } else if (major === 2) {
    mem.write(st.serPhys, memfdLuoSerV2.encode({ pos, size: BigInt(m.size), seals: m.seals, flags: 0, nr_folios: nr, ...vm }));
  } else {
    mem.write(st.serPhys, memfdLuoSerV3.encode({
      pos, size: BigInt(m.size), seals: m.seals, flags: 0, nr_folios: BigInt(st.xa?.size ?? 0),
      folios_xa: BigInt(st.xa?.rootPhys ?? 0), order: m.order, reserved: 0,
    }));
  }
}

/** freeze: write the header in the negotiated version (converting sparse → upstream if needed). */
export function freezeMemfd(ctx: HandlerContext<MemfdPreservation>): void {
  const st = ctx.state;
  if (!st) throw new ErrnoError('EINVAL', 'freeze', 'no preserved state');
  const major = majorOf(ctx.version);
  if (st.mode === 'sparse' && major <= 2) {
    if (st.m.order !== 0) throw new ErrnoError('EOPNOTSUPP', 'freeze', `format ${ctx.version} cannot describe huge folios`);
    if (Math.ceil(st.m.size / PAGE_SIZE) > UINT_MAX) throw new ErrnoError('EFBIG', 'freeze');
    st.m.frozen = true;
    try {
      materializeHoles(st.m); // the watcher preserves each new folio and records it in the xarray too
      if (st.m.size > 0 && !st.array) {
        // The folios are already preserved (xarray side); the array only describes them.
        const records = new Uint8Array(st.m.cache.count * memfdLuoFolioSer.size);
        const pfns: number[] = [];
        let i = 0;
        st.m.cache.forEach((index, pfn) => {
          memfdLuoFolioSer.encodeInto(records, i++ * memfdLuoFolioSer.size, { pfn_flags: folioValue(pfn), index: BigInt(index) });
          pfns.push(0); // not preserved by the array: unfreeze must not unpreserve them
        });
        const area = vzalloc(ctx.kernel.mm, records.length);
        if (!area) throw new ErrnoError('ENOMEM', 'freeze');
        area.write(0, records);
        try {
          st.array = { area, desc: khoPreserveVmalloc(khoOut(ctx.kernel), ctx.kernel.mm, area), pfns };
        } catch (e) {
          vfree(ctx.kernel.mm, area);
          throw e;
        }
      }
    } catch (e) {
      st.m.frozen = false;
      throw e;
    }
  }
  writeHeader(ctx.kernel, st, ctx.version);
}

/** unfreeze (rollback of a failed reboot): undo a sparse → upstream conversion. */
export function unfreezeMemfd(ctx: HandlerContext<MemfdPreservation>): void {
  const st = ctx.state;
  if (!st || st.mode !== 'sparse') return;
  if (st.array) { releaseFolioArray(ctx.kernel, st.m, st.array); st.array = null; }
  st.m.frozen = false;
  writeHeader(ctx.kernel, st, '3.0.0');
}

export function unpreserveMemfd(ctx: HandlerContext<MemfdPreservation>): void {
  const st = ctx.state;
  if (!st) return;
  const out = khoOut(ctx.kernel);
  st.m.watcher = null;
  if (st.array) releaseFolioArray(ctx.kernel, st.m, st.array);
  if (st.xa) {
    st.xa.forEachWords((_i, lo, hi) => { out.unpreserveFolio(pfnOf(lo, hi), st.m.order); });
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

function readHeader(kernel: Kernel, phys: number, version: string): Header {
  const mem = kernel.machine.memory;
  const major = majorOf(version);
  if (major === 1) {
    const h = memfdLuoSerV1.decode(mem.read(phys, memfdLuoSerV1.size));
    return { pos: Number(h.pos), size: Number(h.size), seals: 0, order: 0, nrFolios: Number(h.nr_folios), xaRoot: 0,
      desc: { first: h.folios_first, total_pages: h.folios_total_pages, flags: h.folios_flags, order: h.folios_order } };
  }
  if (major === 2) {
    const h = memfdLuoSerV2.decode(mem.read(phys, memfdLuoSerV2.size));
    return { pos: Number(h.pos), size: Number(h.size), seals: h.seals, order: 0, nrFolios: Number(h.nr_folios), xaRoot: 0,
      desc: { first: h.folios_first, total_pages: h.folios_total_pages, flags: h.folios_flags, order: h.folios_order } };
  }
  const h = memfdLuoSerV3.decode(mem.read(phys, memfdLuoSerV3.size));
  return { pos: Number(h.pos), size: Number(h.size), seals: h.seals, order: h.order, nrFolios: Number(h.nr_folios), desc: null, xaRoot: Number(h.folios_xa) };
}

/** The incoming folio list, as (index, pfn) pairs, from the array or the xarray (freed after reading). */
function incomingFolios(kernel: Kernel, h: Header): Array<[number, number]> {
  const kin = kernel.khoIn;
  if (!kin) throw new ErrnoError('EINVAL', 'retrieve', 'not a KHO boot');
  const list: Array<[number, number]> = [];
  if (h.desc) {
    if (h.nrFolios === 0) return list;
    const area = khoRestoreVmalloc(kin, kernel.mm, h.desc);
    if (!area) throw new ErrnoError('EINVAL', 'retrieve', 'folio array');
    try {
      if (h.nrFolios * memfdLuoFolioSer.size > area.pageCount * PAGE_SIZE) throw new ErrnoError('EINVAL', 'retrieve', 'nr_folios beyond the folio array');
      const raw = area.read(0, h.nrFolios * memfdLuoFolioSer.size);
      for (let i = 0; i < h.nrFolios; i++) {
        const r = memfdLuoFolioSer.decode(raw, i * memfdLuoFolioSer.size);
        list.push([Number(r.index), Number(r.pfn_flags % BigInt(PFN_MASK))]);
      }
    } finally {
      vfree(kernel.mm, area);
    }
    return list;
  }
  if (h.xaRoot === 0) return list;
  const xa = KhoXarray.restore(kernel, h.xaRoot);
  xa.forEachWords((index, lo, hi) => { list.push([index, pfnOf(lo, hi)]); });
  xa.destroy();
  return list;
}

/** Restore and free folios nobody will use (error paths and finish of an unretrieved file). */
function dropFolios(kernel: Kernel, list: ReadonlyArray<[number, number]>, order: number): void {
  for (const [, pfn] of list) {
    if (pfn === 0) continue;
    const f = kernel.khoIn?.restoreFolio(pfn * PAGE_SIZE);
    if (f) kernel.mm.freePages(f.pfn, f.order);
    else kernel.dmesg.log('warn', 'memfd', `could not restore folio 0x${(pfn * PAGE_SIZE).toString(16)} order ${order}`);
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
    for (let i = 0; i < list.length; i++) {
      const [index, pfn] = list[i] as [number, number];
      if (pfn === 0) continue;
      const f = kin.restoreFolio(pfn * PAGE_SIZE);
      if (!f || f.order !== h.order) {
        if (f) kernel.mm.freePages(f.pfn, f.order);
        dropFolios(kernel, list.slice(i + 1), h.order);
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
    dropFolios(kernel, incomingFolios(kernel, h), h.order);
  } catch (e) {
    kernel.dmesg.log('warn', 'memfd', `finish of an unretrieved memfd failed: ${e instanceof Error ? e.message : String(e)}`);
  } finally {
    kernel.khoIn?.restoreFree(phys);
  }
}
