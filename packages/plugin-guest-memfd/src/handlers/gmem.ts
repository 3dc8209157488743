/**
 * The guest_memfd file handler, outgoing side (virt/kvm/guest_memfd_luo.c of the guest_memfd
 * preservation series, Tarun Sahu, v3 2026-06-22; the incoming side is ./gmem-retrieve.ts), in
 * two formats:
 *  - 1.x "guest_memfd_luo_v1", upstream byte for byte: preserve freezes the mapping first,
 *    preserves every folio and describes it in a vmalloc'd array of 16-byte records; freeze
 *    resolves vm_token, the LUO token of the VM file, which must be in the same session.
 *  - 2.x, this project's sparse format: folios go into a KHO xarray as they appear, faults may
 *    allocate until freeze (which freezes the mapping), 2 MiB folios are allowed, and CRC-32s
 *    cover the header and every entry (the entries' sum kept current, so freeze is O(1)).
 * Preserve follows the newest version this build writes; if the target only reads 1.x, freeze
 * converts a sparse preservation (refusing large folios with EOPNOTSUPP).
 */
import { PAGE_SIZE } from '@liveupdate/hw';
import {
  ErrnoError, KhoXarray, khoPreserveVmalloc, khoUnpreserveVmalloc, vfree, vzalloc,
  type HandlerContext, type Kernel, type KFile, type KhoVmallocDesc, type VmArea,
} from '@liveupdate/sdk';
import { semver } from '@liveupdate/sdk';
import { GUEST_MEMFD_FLAG_INIT_SHARED, GUEST_MEMFD_FLAG_MMAP, hasPrivateMem } from '../abi/kvm.js';
import {
  GMEM_V2_1_ID_OFFSET, GMEM_V2_HEADER_CRC_BYTES, GUEST_MEMFD_LUO_FOLIO_UPTODATE, guestMemfdLuoFolioSer, guestMemfdLuoSer, guestMemfdLuoSerV2,
  guestMemfdLuoSerV2_1,
} from '../abi/luo.js';
import { crc32, identityCrc32 } from '../crc32.js';
import { FOLIO_HWPOISON, FOLIO_UPTODATE } from '../folios.js';
import { GmemInode, gmemOf, isGuestMemfd, type FolioWatcher } from '../gmem.js';
import { KvmVm } from '../kvm.js';
import {
  EntriesSum, entryFlags, entryHi, entryPfn, entryWords, sparseEntry, sparseFlags, sparseOrder, writeRecord,
} from './records.js';

/** The flags a preservation format can describe. */
export const GMEM_LUO_FLAGS = GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED;
const REC = guestMemfdLuoFolioSer.size;
const SER_SLOT = Math.max(guestMemfdLuoSer.size, guestMemfdLuoSerV2_1.size);

interface FolioArray {
  readonly area: VmArea;
  readonly desc: KhoVmallocDesc;
  /** The folios the array describes, in record order; the array owns their preservation. */
  readonly pfns: Float64Array;
  /** Record slot of each folio not yet up to date: its record follows it when the guest first touches it. */
  readonly stale: Map<number, number>;
}

export interface GmemPreservation {
  readonly g: GmemInode;
  readonly mode: 'upstream' | 'sparse';
  readonly serPhys: number;
  array: FolioArray | null;
  xa: KhoXarray | null;
  /** 2.x: the entries checksum, kept current with the xarray. */
  sum: EntriesSum;
  /** The (session name, token) the file is preserved under: 2.1 binds its header to them. */
  readonly session: string;
  readonly token: bigint;
}

export const majorOf = (v: string): number => semver.major(v);
/** guest_memfd 2.1 and later 2.x minors append a CRC-32 binding the header to its (session, token). */
export const hasIdChecksum = (v: string): boolean => majorOf(v) === 2 && semver.gte(v, '2.1.0');

/** A 2.1 header's id_crc32: bytes 0..47, the token, the session name. */
export function gmemIdChecksum(header: Uint8Array, session: string, token: bigint): number {
  return identityCrc32(header, GMEM_V2_1_ID_OFFSET, session, token);
}

function khoOut(kernel: Kernel) {
  const out = kernel.khoOut;
  if (!out) throw new ErrnoError('EOPNOTSUPP', 'preserve', 'KHO disabled');
  return out;
}

/**
 * kvm_gmem_luo_can_preserve, in its order: a guest_memfd; created INIT_SHARED (fully shared);
 * not of a VM with private memory; no large folios unless a sparse format may describe them.
 */
export function canPreserveGmem(file: KFile, largeFolios: boolean): boolean {
  if (!isGuestMemfd(file)) return false;
  const g = gmemOf(file);
  if (!(g.flags & GUEST_MEMFD_FLAG_INIT_SHARED)) return false;
  if (g.kvm instanceof KvmVm && hasPrivateMem(g.kvm.type)) return false;
  if (g.folios.largeCount > 0 && !largeFolios) return false;
  return true;
}

/** The record array of every folio; with `preserveFolios` each is KHO-preserved here. Full rollback on error. */
function buildArray(kernel: Kernel, g: GmemInode, preserveFolios: boolean): FolioArray | null {
  const n = g.folios.count;
  if (n === 0) return null;
  const out = khoOut(kernel);
  const pfns = new Float64Array(n);
  const stale = new Map<number, number>();
  const records = new Uint8Array(n * REC);
  const view = new DataView(records.buffer);
  let done = 0;
  let preserved = 0;
  let area: VmArea | null = null;
  try {
    g.folios.forEach((head, pfn, order, meta) => {
      if (order !== 0) throw new ErrnoError('EOPNOTSUPP', 'preserve', `folio at page ${head} is order ${order}`);
      // A hardware-poisoned folio cannot be handed over.
      if (meta & FOLIO_HWPOISON) throw new ErrnoError('EHWPOISON', 'preserve', `folio at page ${head}`);
      if (preserveFolios) { out.preserveFolio(pfn, 0); preserved++; }
      const uptodate = (meta & FOLIO_UPTODATE) !== 0;
      if (!uptodate) stale.set(head, done);
      pfns[done] = pfn;
      writeRecord(view, done * REC, pfn, uptodate ? GUEST_MEMFD_LUO_FOLIO_UPTODATE : 0, head);
      done++;
    });
    area = vzalloc(kernel.mm, records.length);
    if (!area) throw new ErrnoError('ENOMEM', 'preserve');
    area.write(0, records);
    return { area, desc: khoPreserveVmalloc(out, kernel.mm, area), pfns, stale };
  } catch (e) {
    for (let i = 0; i < preserved; i++) out.unpreserveFolio(pfns[i] as number, 0);
    if (area) vfree(kernel.mm, area);
    throw e;
  }
}

function releaseArray(kernel: Kernel, a: FolioArray, unpreserveFolios: boolean): void {
  const out = khoOut(kernel);
  khoUnpreserveVmalloc(out, kernel.mm, a.desc);
  if (unpreserveFolios) for (let i = 0; i < a.pfns.length; i++) out.unpreserveFolio(a.pfns[i] as number, 0);
  vfree(kernel.mm, a.area);
}

/** Upstream: the mapping is frozen, so the only change is a fallocated folio becoming up to date. */
function arrayWatcher(st: GmemPreservation): FolioWatcher {
  return {
    added: () => { /* frozen: cannot happen */ },
    removed: () => { /* frozen: cannot happen */ },
    changed: (head, pfn) => {
      const slot = st.array?.stale.get(head);
      if (slot === undefined || !st.array) return;
      const hi = new Uint8Array(4);
      new DataView(hi.buffer).setUint32(0, entryHi(pfn, GUEST_MEMFD_LUO_FOLIO_UPTODATE), true);
      st.array.area.write(slot * REC + 4, hi);
      st.array.stale.delete(head);
    },
  };
}

/** Set an entry, keeping the checksum current. */
function setEntry(xa: KhoXarray, sum: EntriesSum, head: number, value: number | bigint): void {
  const old = xa.get(head);
  if (old !== 0n) sum.sub(head, ...entryWords(old));
  xa.set(head, value);
  sum.add(head, ...entryWords(value));
}

/** Sparse: the xarray (and its checksum) follows the folios until freeze. */
function xarrayWatcher(kernel: Kernel, xa: KhoXarray, sum: EntriesSum): FolioWatcher {
  const out = khoOut(kernel);
  return {
    added: (head, pfn, order, meta) => { out.preserveFolio(pfn, order); setEntry(xa, sum, head, sparseEntry(pfn, sparseFlags(order, (meta & FOLIO_UPTODATE) !== 0))); },
    removed: (head, pfn, order) => {
      const old = xa.get(head);
      if (old !== 0n) sum.sub(head, ...entryWords(old));
      xa.clear(head);
      out.unpreserveFolio(pfn, order);
    },
    changed: (head, pfn, order, meta) => { setEntry(xa, sum, head, sparseEntry(pfn, sparseFlags(order, (meta & FOLIO_UPTODATE) !== 0))); },
  };
}

function fillXarray(kernel: Kernel, g: GmemInode, xa: KhoXarray, sum: EntriesSum, preserve: boolean, preserved: number[]): void {
  const out = khoOut(kernel);
  g.folios.forEach((head, pfn, order, meta) => {
    if (meta & FOLIO_HWPOISON) throw new ErrnoError('EHWPOISON', 'preserve', `folio at page ${head}`);
    if (preserve) { out.preserveFolio(pfn, order); preserved.push(pfn, order); }
    const value = sparseEntry(pfn, sparseFlags(order, (meta & FOLIO_UPTODATE) !== 0));
    xa.set(head, value);
    sum.add(head, ...entryWords(value));
  });
}

export function preserveGmem(ctx: HandlerContext<GmemPreservation>): void {
  const { kernel, file } = ctx;
  if (!file) throw new ErrnoError('EINVAL', 'preserve');
  const g = gmemOf(file);
  const out = khoOut(kernel);
  const mode = majorOf(ctx.version) >= 2 ? 'sparse' : 'upstream';
  // The mapping is frozen first (filemap_invalidate_lock held): no allocation can race the walk.
  if (mode === 'upstream') g.frozen = true;
  let serPhys = 0;
  let xa: KhoXarray | null = null;
  let array: FolioArray | null = null;
  const preserved: number[] = [];
  const sum = new EntriesSum();
  try {
    if (g.size === 0 || g.size % PAGE_SIZE !== 0) throw new ErrnoError('EINVAL', 'preserve', `size ${g.size}`);
    // Flags no format describes.
    if (g.flags & ~GMEM_LUO_FLAGS) throw new ErrnoError('EOPNOTSUPP', 'preserve', `guest_memfd flags 0x${g.flags.toString(16)}`);
    serPhys = out.allocPreserve(SER_SLOT);
    if (mode === 'upstream') {
      array = buildArray(kernel, g, true);
    } else {
      xa = KhoXarray.create(kernel);
      fillXarray(kernel, g, xa, sum, true, preserved);
    }
  } catch (e) {
    for (let i = 0; i < preserved.length; i += 2) out.unpreserveFolio(preserved[i] as number, preserved[i + 1] as number);
    xa?.destroy();
    out.unpreserveFree(serPhys);
    g.frozen = false;
    throw e;
  }
  const st: GmemPreservation = { g, mode, serPhys, array, xa, sum, session: ctx.session.name, token: ctx.token };
  g.watcher = xa ? xarrayWatcher(kernel, xa, sum) : arrayWatcher(st);
  g.preserved = true;
  ctx.state = st;
  ctx.data = BigInt(serPhys);
  writeHeader(kernel, st, ctx.version, 0n);
}

/** Write the header in `version`'s layout; the whole slot is rewritten. */
function writeHeader(kernel: Kernel, st: GmemPreservation, version: string, vmToken: bigint): void {
  const { g } = st;
  const slot = new Uint8Array(SER_SLOT);
  if (majorOf(version) === 1) {
    const d = st.array?.desc;
    guestMemfdLuoSer.encodeInto(slot, 0, {
      size: BigInt(g.size), flags: BigInt(g.flags), nr_folios: BigInt(st.array?.pfns.length ?? 0), vm_token: vmToken,
      folios_first: d?.first ?? 0n, folios_total_pages: d?.total_pages ?? 0, folios_flags: d?.flags ?? 0, folios_order: d?.order ?? 0,
    });
  } else {
    guestMemfdLuoSerV2.encodeInto(slot, 0, {
      size: BigInt(g.size), flags: BigInt(g.flags), nr_folios: BigInt(st.xa?.size ?? 0), vm_token: vmToken,
      folios_xa: BigInt(st.xa?.rootPhys ?? 0), entries_sum: st.sum.value, header_crc32: 0,
    });
    new DataView(slot.buffer).setUint32(GMEM_V2_HEADER_CRC_BYTES, crc32(slot.subarray(0, GMEM_V2_HEADER_CRC_BYTES)), true);
    if (hasIdChecksum(version)) new DataView(slot.buffer).setUint32(GMEM_V2_1_ID_OFFSET, gmemIdChecksum(slot, st.session, st.token), true);
  }
  kernel.machine.memory.write(st.serPhys, slot);
}

/**
 * freeze: resolve the VM's token in this session (liveupdate_get_token_outgoing; ENOENT when
 * the VM file is not preserved with it, which fails the reboot), then write the final header.
 */
export function freezeGmem(ctx: HandlerContext<GmemPreservation>): void {
  const st = ctx.state;
  if (!st) throw new ErrnoError('EINVAL', 'freeze', 'no preserved state');
  const vm = st.g.kvm instanceof KvmVm ? st.g.kvm : null;
  const token = vm?.file ? ctx.session.tokenOf(vm.file) : undefined;
  if (token === undefined) throw new ErrnoError('ENOENT', 'freeze', `the VM of this guest_memfd is not preserved in session ${ctx.session.name}`);
  const major = majorOf(ctx.version);
  const { g } = st;
  if (st.mode === 'sparse') {
    g.frozen = true;
    try {
      // Counted as they happen: the blackout does no per-folio work for 2.x.
      if (g.poisonedFolios > 0) throw new ErrnoError('EHWPOISON', 'freeze', `${g.poisonedFolios} hardware-poisoned folio(s)`);
      if (major === 1 && g.folios.largeCount > 0) throw new ErrnoError('EOPNOTSUPP', 'freeze', `format ${ctx.version} cannot describe the ${g.folios.largeCount} large folio(s)`);
      if (major === 1 && st.xa) {
        // The target reads only the upstream format: the array replaces the xarray.
        st.array = buildArray(ctx.kernel, g, false);
        st.xa.destroy();
        st.xa = null;
        g.watcher = arrayWatcher(st);
      }
    } catch (e) {
      g.frozen = false;
      throw e;
    }
    if (major >= 2 && !st.xa) throw new ErrnoError('ENOMEM', 'freeze', 'no folio xarray');
  }
  writeHeader(ctx.kernel, st, ctx.version, token);
}

/** unfreeze (a failed reboot): a sparse preservation may allocate again, converted back to its xarray if needed. */
export function unfreezeGmem(ctx: HandlerContext<GmemPreservation>): void {
  const st = ctx.state;
  if (!st || st.mode !== 'sparse') return;
  const { kernel } = ctx;
  const { g } = st;
  if (!st.xa) {
    let xa: KhoXarray;
    const sum = new EntriesSum();
    try {
      xa = KhoXarray.create(kernel);
      fillXarray(kernel, g, xa, sum, false, []);
    } catch (e) {
      kernel.dmesg.log('warn', 'guest_memfd', `unfreeze: cannot rebuild the folio xarray: ${e instanceof Error ? e.message : String(e)}`);
      return;
    }
    if (st.array) releaseArray(kernel, st.array, false);
    st.array = null;
    st.xa = xa;
    st.sum = sum;
    g.watcher = xarrayWatcher(kernel, xa, st.sum);
  }
  g.frozen = false;
  writeHeader(kernel, st, '2.0.0', 0n);
}

export function unpreserveGmem(ctx: HandlerContext<GmemPreservation>): void {
  const st = ctx.state;
  if (!st) return;
  const out = khoOut(ctx.kernel);
  st.g.watcher = null;
  if (st.array) releaseArray(ctx.kernel, st.array, true);
  if (st.xa) {
    st.xa.forEachWords((_key, lo, hi) => { out.unpreserveFolio(entryPfn(lo, hi), sparseOrder(entryFlags(hi))); });
    st.xa.destroy();
  }
  out.unpreserveFree(st.serPhys);
  st.g.frozen = false;
  st.g.preserved = false;
  ctx.state = undefined;
}
