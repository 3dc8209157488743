/**
 * The incoming side of the guest_memfd handler (kvm_gmem_luo_retrieve / kvm_gmem_luo_finish of
 * the guest_memfd preservation series v3, and this project's 2.x): the record read back from
 * bytes, checked, and turned into a new guest_memfd on the VM its token names.
 */
import { PAGE_SIZE } from '@liveupdate/hw';
import { ErrnoError, KhoXarray, khoRestoreVmalloc, vfree, type HandlerContext, type Kernel, type KhoVmallocDesc } from '@liveupdate/sdk';
import { GUEST_MEMFD_FLAG_INIT_SHARED, hasPrivateMem } from '../abi/kvm.js';
import {
  GMEM_V2_1_ID_OFFSET, GMEM_V2_HEADER_CRC_BYTES, GUEST_MEMFD_LUO_FOLIO_UPTODATE, guestMemfdLuoFolioSer, guestMemfdLuoSer, guestMemfdLuoSerV2,
} from '../abi/luo.js';
import { crc32, identityProblem } from '../crc32.js';
import { FOLIO_UPTODATE } from '../folios.js';
import { GmemInode, gmemFile } from '../gmem.js';
import { KvmVm, isKvmVm, vmOf } from '../kvm.js';
import { GMEM_LUO_FLAGS, hasIdChecksum, majorOf, type GmemPreservation } from './gmem.js';
import { EntriesSum, entryFlags, entryPfn, readRecordHi, readRecordIndex, readRecordLo, sparseOrder } from './records.js';

const REC = guestMemfdLuoFolioSer.size;

interface Header {
  readonly size: bigint;
  readonly flags: bigint;
  readonly nrFolios: bigint;
  readonly vmToken: bigint;
  readonly desc: KhoVmallocDesc | null;
  readonly xaRoot: number;
  readonly entriesSum: number;
}

function readHeader(kernel: Kernel, phys: number, version: string): Header {
  const mem = kernel.machine.memory;
  if (majorOf(version) === 1) {
    const h = guestMemfdLuoSer.decode(mem.read(phys, guestMemfdLuoSer.size));
    return { size: h.size, flags: h.flags, nrFolios: h.nr_folios, vmToken: h.vm_token, xaRoot: 0, entriesSum: 0,
      desc: { first: h.folios_first, total_pages: h.folios_total_pages, flags: h.folios_flags, order: h.folios_order } };
  }
  const raw = mem.read(phys, guestMemfdLuoSerV2.size);
  const h = guestMemfdLuoSerV2.decode(raw);
  const want = crc32(raw.subarray(0, GMEM_V2_HEADER_CRC_BYTES));
  if (h.header_crc32 !== want) throw new ErrnoError('EINVAL', 'retrieve', `header checksum 0x${h.header_crc32.toString(16)}, header 0x${want.toString(16)}`);
  if (h.folios_xa > BigInt(Number.MAX_SAFE_INTEGER)) throw new ErrnoError('EINVAL', 'retrieve', 'folios_xa');
  return { size: h.size, flags: h.flags, nrFolios: h.nr_folios, vmToken: h.vm_token, desc: null, xaRoot: Number(h.folios_xa), entriesSum: h.entries_sum };
}

/** Incoming folios as typed triples (index, pfn, flags) at [3i..3i+2], in record order. */
interface FolioList { readonly count: number; readonly triples: Float64Array }

/**
 * Read the folio list; its metadata pages (array chunks and data, xarray nodes) are claimed and
 * freed here. A list that cannot be read is EINVAL: an array that does not restore or is shorter
 * than nr_folios; for 2.x, a node that does not restore, a count or a checksum that disagrees.
 */
function readFolios(kernel: Kernel, h: Header, version: string): FolioList {
  const kin = kernel.khoIn;
  if (!kin) throw new ErrnoError('EINVAL', 'retrieve', 'not a KHO boot');
  const empty = { count: 0, triples: new Float64Array(0) };
  if (majorOf(version) === 1) {
    if (h.nrFolios === 0n) return empty;
    const area = h.desc ? khoRestoreVmalloc(kin, kernel.mm, h.desc) : null;
    if (!area) throw new ErrnoError('EINVAL', 'retrieve', 'folio array');
    try {
      if (h.nrFolios * BigInt(REC) > BigInt(area.pageCount * PAGE_SIZE)) throw new ErrnoError('EINVAL', 'retrieve', `nr_folios ${h.nrFolios} beyond the folio array`);
      const n = Number(h.nrFolios);
      const raw = area.read(0, n * REC);
      const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
      const triples = new Float64Array(3 * n);
      for (let i = 0; i < n; i++) {
        const hi = readRecordHi(view, i * REC);
        triples[3 * i] = readRecordIndex(view, i * REC);
        triples[3 * i + 1] = entryPfn(readRecordLo(view, i * REC), hi);
        triples[3 * i + 2] = entryFlags(hi);
      }
      return { count: n, triples };
    } finally {
      vfree(kernel.mm, area);
    }
  }
  if (h.xaRoot === 0) {
    if (h.nrFolios !== 0n) throw new ErrnoError('EINVAL', 'retrieve', `nr_folios ${h.nrFolios} without an xarray`);
    return empty;
  }
  const xa = KhoXarray.restore(kernel, h.xaRoot);
  try {
    if (BigInt(xa.size) !== h.nrFolios) throw new ErrnoError('EINVAL', 'retrieve', `nr_folios ${h.nrFolios} but ${xa.size} entries`);
    const sum = new EntriesSum();
    const triples = new Float64Array(3 * xa.size);
    let i = 0;
    xa.forEachWords((key, lo, hi) => {
      sum.add(key, lo, hi);
      triples[3 * i] = key;
      triples[3 * i + 1] = entryPfn(lo, hi);
      triples[3 * i + 2] = entryFlags(hi);
      i++;
    });
    if (sum.value !== h.entriesSum) throw new ErrnoError('EINVAL', 'retrieve', `entries checksum 0x${h.entriesSum.toString(16)}, entries 0x${sum.value.toString(16)}`);
    return { count: xa.size, triples };
  } finally {
    xa.destroy();
  }
}

/**
 * Beyond upstream, which would add such a folio past i_size: every folio lies inside the file.
 * 2.x entries also carry a known order (0 or 9), aligned, and never overlap (the xarray keeps
 * them in ascending order). 1.x record order is free and unknown record flags are ignored, as
 * upstream does; a duplicate index is EEXIST when the folio is added.
 */
function validateFolios(list: FolioList, version: string, pages: number): void {
  const v1 = majorOf(version) === 1;
  let prevEnd = 0;
  for (let i = 0; i < list.count; i++) {
    const index = list.triples[3 * i] as number;
    const flags = list.triples[3 * i + 2] as number;
    const order = v1 ? 0 : sparseOrder(flags);
    if (!v1) {
      if ((order !== 0 && order !== 9) || (flags & ~(GUEST_MEMFD_LUO_FOLIO_UPTODATE | (0x1f << 1))) !== 0) throw new ErrnoError('EINVAL', 'retrieve', `folio ${i}: flags 0x${flags.toString(16)}`);
      if (index < prevEnd) throw new ErrnoError('EINVAL', 'retrieve', `folio ${i}: index ${index} overlaps the previous folio`);
    }
    if (index % 2 ** order !== 0 || index + 2 ** order > pages) throw new ErrnoError('EINVAL', 'retrieve', `folio ${i}: index ${index} order ${order} outside the ${pages}-page file`);
    prevEnd = index + 2 ** order;
  }
}

/** kvm_gmem_luo_discard_folios: restore and free folios [from, count) that nobody will use. */
function dropFolios(kernel: Kernel, list: FolioList, from: number): void {
  for (let i = from; i < list.count; i++) {
    const pfn = list.triples[3 * i + 1] as number;
    if (pfn === 0) continue;
    const f = kernel.khoIn?.restoreFolio(pfn * PAGE_SIZE);
    if (f) kernel.mm.freePages(f.pfn, f.order);
  }
}

/** On a failed retrieve every folio the records name is discarded, if the records can be read at all. */
function discardAll(kernel: Kernel, h: Header, version: string, list: FolioList | null): void {
  try {
    dropFolios(kernel, list ?? readFolios(kernel, h, version), 0);
  } catch (e) {
    kernel.dmesg.log('warn', 'guest_memfd', `folios of a failed retrieve stay reserved: ${e instanceof Error ? e.message : String(e)}`);
  }
}

/**
 * 2.1: the header must be the one written for this file's (session name, token). Checked in
 * place before the record page is claimed: a header reached through a rewired LUO block is
 * another file's, which must still find it and its folios untouched.
 */
function checkIdentity(kernel: Kernel, phys: number, ctx: HandlerContext<GmemPreservation>): void {
  const problem = identityProblem(kernel.machine.memory, phys, GMEM_V2_1_ID_OFFSET, ctx.session.name, ctx.token);
  if (problem !== null) throw new ErrnoError('EINVAL', 'retrieve', `guest_memfd_luo_ser 0x${phys.toString(16)} ${problem}`);
}

/**
 * retrieve, in kvm_gmem_luo_retrieve's order: size (EINVAL), flags (EOPNOTSUPP), the VM by
 * token (liveupdate_get_file_incoming retrieves it on demand; not a KVM VM is EINVAL), flags
 * that VM supports (EINVAL), a new guest_memfd of `size` on it, then every folio at its index
 * (EIO for one that cannot be restored, EEXIST for an index already filled), the record freed.
 */
export function retrieveGmem(ctx: HandlerContext<GmemPreservation>): void {
  const { kernel } = ctx;
  const kin = kernel.khoIn;
  if (!kin) throw new ErrnoError('EINVAL', 'retrieve', 'not a KHO boot');
  const phys = Number(ctx.data);
  if (hasIdChecksum(ctx.version)) checkIdentity(kernel, phys, ctx);
  const ser = kin.restoreFolio(phys);
  if (!ser) throw new ErrnoError('EINVAL', 'retrieve', `guest_memfd_luo_ser at 0x${phys.toString(16)} is not preserved`);
  try {
    const h = readHeader(kernel, phys, ctx.version);
    let list: FolioList | null = null;
    let vm: KvmVm;
    let size: number;
    try {
      if (h.size === 0n || h.size % BigInt(PAGE_SIZE) !== 0n || h.size > BigInt(Number.MAX_SAFE_INTEGER - PAGE_SIZE)) throw new ErrnoError('EINVAL', 'retrieve', `size ${h.size}`);
      size = Number(h.size);
      // Flags no format describes.
      if (h.flags & ~BigInt(GMEM_LUO_FLAGS)) throw new ErrnoError('EOPNOTSUPP', 'retrieve', `guest_memfd flags 0x${h.flags.toString(16)}`);
      const vmFileIn = ctx.session.fileByToken(h.vmToken);
      if (!isKvmVm(vmFileIn)) throw new ErrnoError('EINVAL', 'retrieve', `token ${h.vmToken} is not a KVM VM`);
      vm = vmOf(vmFileIn);
      // kvm_gmem_get_supported_flags(): INIT_SHARED only on a VM without private memory.
      if ((h.flags & BigInt(GUEST_MEMFD_FLAG_INIT_SHARED)) && hasPrivateMem(vm.type)) throw new ErrnoError('EINVAL', 'retrieve', `VM type ${vm.type} cannot have a shared guest_memfd`);
      list = readFolios(kernel, h, ctx.version);
      validateFolios(list, ctx.version, size / PAGE_SIZE);
    } catch (e) {
      discardAll(kernel, h, ctx.version, list);
      throw e;
    }
    const g = new GmemInode(kernel, vm, size, Number(h.flags));
    const v1 = majorOf(ctx.version) === 1;
    for (let i = 0; i < list.count; i++) {
      const index = list.triples[3 * i] as number;
      const pfn = list.triples[3 * i + 1] as number;
      const flags = list.triples[3 * i + 2] as number;
      if (pfn === 0) continue; // upstream skips empty records
      const order = v1 ? 0 : sparseOrder(flags);
      const f = kin.restoreFolio(pfn * PAGE_SIZE);
      const fail = (code: 'EIO' | 'EEXIST', why: string): never => {
        if (f) kernel.mm.freePages(f.pfn, f.order);
        dropFolios(kernel, list as FolioList, i + 1);
        g.releaseAll();
        throw new ErrnoError(code, 'retrieve', why);
      };
      if (!f || f.order !== order) fail('EIO', `folio 0x${(pfn * PAGE_SIZE).toString(16)} cannot be restored`);
      // filemap_add_folio: an index already in the page cache.
      if (g.folios.headOf(index) >= 0 || (order > 0 && g.folios.headOf(index + 2 ** order - 1) >= 0)) fail('EEXIST', `index ${index} already holds a folio`);
      g.folios.set(index, pfn, order, flags & GUEST_MEMFD_LUO_FOLIO_UPTODATE ? FOLIO_UPTODATE : 0);
    }
    ctx.file = gmemFile(kernel, g);
  } finally {
    kernel.mm.freePages(ser.pfn, ser.order);
  }
}

/** finish with nothing retrieved: every folio and the record are released. */
export function finishGmem(ctx: HandlerContext<GmemPreservation>): void {
  if (ctx.retrieveStatus !== 0) return;
  const { kernel } = ctx;
  const phys = Number(ctx.data);
  if (hasIdChecksum(ctx.version)) {
    try {
      checkIdentity(kernel, phys, ctx);
    } catch (e) {
      kernel.dmesg.log('warn', 'guest_memfd', `finish of an unretrieved guest_memfd: ${e instanceof Error ? e.message : String(e)}`);
      return;
    }
  }
  const ser = kernel.khoIn?.restoreFolio(phys);
  if (!ser) { kernel.dmesg.log('warn', 'guest_memfd', `finish: record 0x${phys.toString(16)} is not preserved`); return; }
  try {
    discardAll(kernel, readHeader(kernel, phys, ctx.version), ctx.version, null);
  } catch (e) {
    kernel.dmesg.log('warn', 'guest_memfd', `finish of an unretrieved guest_memfd: ${e instanceof Error ? e.message : String(e)}`);
  } finally {
    kernel.mm.freePages(ser.pfn, ser.order);
  }
}
