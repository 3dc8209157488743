/**
 * memfd retrieve and finish (mm/memfd_luo.c memfd_luo_retrieve / memfd_luo_finish) for every
 * format: read and check the header, the folio list (vmalloc array, KHO xarray or extent
 * stream), then claim the folios into a new page cache. The project's formats (3.x, 4.x) claim
 * the header page and their other metadata before any folio, and check all of it against the
 * whole-metadata CRC-32 (3.2, 4.x) before trusting a single entry.
 */
import { PAGE_SIZE } from '@liveupdate/hw';
import { ErrnoError, KhoXarray, khoRestoreVmalloc, vfree, type HandlerContext, type Kernel, type KhoVmallocDesc } from '@liveupdate/sdk';
import {
  MEMFD_LUO_ALL_SEALS, MEMFD_V3_1_CRC_BYTES, folioPfn, memfdLuoFolioSer, memfdLuoSerV1, memfdLuoSerV2, memfdLuoSerV3,
  memfdLuoSerV3_1, memfdLuoSerV3_2, memfdV3_2MetaEntry, memfdV3_2MetaStart, readFolioSerIndex, readFolioSerPfn,
} from './abi/memfd.js';
import { MEMFD_V4_1_ID_OFFSET, memfdLuoSerV4 } from './abi/memfd-v4.js';
import { crc32, crc32Final, identityProblem } from './crc32.js';
import { ExtentError, incomingExtents, type FolioList } from './extents.js';
import { hasHeaderChecksum, hasIdChecksum, hasMetaChecksum, majorOf, type MemfdPreservation } from './handler.js';
import { hugetlbAdopt, hugetlbFree } from './hugetlb-pool.js';
import { MAX_LFS_FILESIZE, MemfdInode, memfdFile } from './memfd.js';

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
  v4?: { headerBytes: Uint8Array; nrExtents: number; streamBytes: number; crc: number; flags: number };
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
    // The field checks wait until the whole-metadata checksum has passed (checkV4Fields): in this
    // format any corrupted byte is a checksum failure first.
    return {
      pos: Number(h.pos), size: Number(h.size), seals: h.seals, order: h.order, nrFolios: num(h.nr_folios), xaRoot: 0,
      desc: { first: h.extents_first, total_pages: h.extents_total_pages, flags: h.extents_flags, order: h.extents_order },
      v4: { headerBytes: raw, nrExtents: num(h.nr_extents), streamBytes: num(h.stream_bytes), crc: h.crc32, flags: h.flags },
    };
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
  if (h.xaRoot === 0) {
    // No xarray: 3.2's checksum then covers the header alone.
    if (h.metaCrc && crc32Final(memfdV3_2MetaStart(h.metaCrc.header)) !== h.metaCrc.value) throw new UntrustedMetadata('metadata checksum mismatch');
    if (h.nrFolios !== 0) throw new ErrnoError('EINVAL', 'retrieve', `nr_folios ${h.nrFolios} without an xarray`);
    return { count: 0, pairs: new Float64Array(0) };
  }
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
    let c = h.metaCrc ? memfdV3_2MetaStart(h.metaCrc.header) : 0;
    const meta = h.metaCrc !== undefined;
    xa.forEachWords((index, lo, hi) => {
      pairs[2 * n] = index;
      pairs[2 * n + 1] = folioPfn(lo, hi);
      n++;
      if (meta) c = memfdV3_2MetaEntry(c, index, lo, hi);
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

/**
 * 4.1: the header must be the one written for this file's (session name, token). Checked in
 * place, before the page is claimed: a header reached through a rewired LUO session or file
 * block is another file's, and that file must still find it and its folios untouched.
 */
function checkIdentity(kernel: Kernel, phys: number, ctx: HandlerContext<MemfdPreservation>): void {
  const problem = identityProblem(kernel.machine.memory, phys, MEMFD_V4_1_ID_OFFSET, ctx.session.name, ctx.token);
  if (problem !== null) throw new ErrnoError('EINVAL', 'retrieve', `header 0x${phys.toString(16)} ${problem}`);
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
    if (hasIdChecksum(ctx.version)) checkIdentity(kernel, phys, ctx);
    claimed = claimHeader(kernel, phys, ctx.version);
    const h = readHeader(kernel, phys, ctx.version);
    // 4.x checks all of its metadata first; the folios it names are released if a field then fails.
    const early = h.v4 ? incomingFolios(kernel, h, phys / PAGE_SIZE) : null;
    try {
      if (h.v4) checkHeader(h, h.v4.flags, 0);
      if (h.seals & ~MEMFD_LUO_ALL_SEALS) throw new ErrnoError('EOPNOTSUPP', 'retrieve', `seals 0x${h.seals.toString(16)}`);
      if (hugetlb !== (h.order > 0)) throw new ErrnoError('EINVAL', 'retrieve', `folio order ${h.order}`);
    } catch (e) {
      if (early) dropFolios(kernel, early, 0, h.order);
      throw e;
    }
    // memfd_alloc_file("", MFD_ALLOW_SEALING): the name is not preserved.
    const m = new MemfdInode(kernel, '', h.order, hugetlb, 0);
    m.seals = h.seals;
    m.size = h.size;
    const list = early ?? incomingFolios(kernel, h, phys / PAGE_SIZE);
    const fail = (i: number, err: ErrnoError, restored: { pfn: number; order: number } | null): never => {
      // The folio that could not be inserted is put: a huge one goes back to its pool, as dropFolios does.
      if (restored && hugetlb && restored.order === h.order) hugetlbFree(kernel, h.order, restored.pfn);
      else if (restored) kernel.mm.freePages(restored.pfn, restored.order);
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
    if (hasIdChecksum(ctx.version)) checkIdentity(kernel, phys, ctx);
    claimed = claimHeader(kernel, phys, ctx.version);
    const h = readHeader(kernel, phys, ctx.version);
    dropFolios(kernel, incomingFolios(kernel, h, phys / PAGE_SIZE), 0, h.order);
  } catch (e) {
    kernel.dmesg.log('warn', 'memfd', `finish of an unretrieved memfd failed: ${e instanceof Error ? e.message : String(e)}`);
  } finally {
    if (claimed || !sparse) releaseHeader(kernel, phys, claimed);
  }
}
