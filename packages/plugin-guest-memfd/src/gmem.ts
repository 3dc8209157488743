/**
 * guest_memfd (virt/kvm/guest_memfd.c): an unlinked inode of guest memory bound to one VM,
 * created by KVM_CREATE_GUEST_MEMFD. Folios are allocated on first use (a guest fault, a host
 * fault through its mapping, fallocate). Preservation freezes the mapping (the series'
 * preserved flag under filemap_invalidate_lock): from then on nothing may allocate a folio,
 * fallocate is EPERM, a host touch of a hole is SIGBUS and a guest fault on a hole exits to
 * the VMM with KVM_EXIT_MEMORY_FAULT.
 */
import { PAGE_SIZE } from '@liveupdate/hw';
import { ErrnoError, Inode, KFile, type FileOperations, type Kernel, type Process } from '@liveupdate/sdk';
import { GUEST_MEMFD_FLAG_INIT_SHARED, GUEST_MEMFD_FLAG_MMAP } from './abi/kvm.js';
import { FOLIO_HWPOISON, FOLIO_UPTODATE, GmemFolios } from './folios.js';

export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
/** Pages in a 2 MiB folio. */
export const HPAGE_PMD_NR = 512;

/** A host access through the mapping that the kernel answers with SIGBUS. */
export class SigbusError extends Error {
  override readonly name = 'SigbusError';
  readonly signal = 'SIGBUS';
  constructor(readonly offset: number, readonly reason: string) {
    super(`SIGBUS at file offset 0x${offset.toString(16)}: ${reason}`);
  }
}

/** A preserved sparse guest_memfd follows its folios until freeze. */
export interface FolioWatcher {
  added(head: number, pfn: number, order: number, meta: number): void;
  removed(head: number, pfn: number, order: number): void;
  changed(head: number, pfn: number, order: number, meta: number): void;
}

/** The owner a guest_memfd pins (struct kvm): the VM module implements it. */
export interface GmemOwner {
  readonly id: number;
  get(): void;
  put(): void;
}

/** What a guest fault or host fault found: the pfn of the page, or why there is none. */
export const FAULT_NEEDS_ALLOC = -2;
export const FAULT_HWPOISON = -3;

export class GmemInode {
  readonly inode: Inode;
  readonly folios = new GmemFolios();
  /** The mapping is frozen for preservation: no folio may be allocated, fallocate is EPERM. */
  frozen = false;
  /** Set while a handler has this inode preserved (a second preservation is EBUSY). */
  preserved = false;
  watcher: FolioWatcher | null = null;
  /** Memslots bound to it (KVM_SET_USER_MEMORY_REGION2). */
  bindings = 0;
  /** Folios marked HWPOISON (a preservation must not hand any over). */
  poisonedFolios = 0;

  constructor(readonly kernel: Kernel, readonly kvm: GmemOwner, readonly size: number, readonly flags: number) {
    this.inode = new Inode(this);
    this.inode.nlink = 0;
  }

  get pageCount(): number { return this.size / PAGE_SIZE; }
  get shared(): boolean { return (this.flags & GUEST_MEMFD_FLAG_INIT_SHARED) !== 0; }

  /** Allocate the order-0 folio at index: its pfn, or FAULT_NEEDS_ALLOC while the mapping is frozen (ENOMEM when memory ran out). */
  private allocate(index: number, uptodate: boolean): number {
    if (this.frozen) return FAULT_NEEDS_ALLOC;
    const pfn = this.kernel.mm.allocPages(0);
    if (pfn === null) throw new ErrnoError('ENOMEM', 'kvm_gmem_get_folio');
    if (uptodate) this.clear(pfn, 0);
    const meta = uptodate ? FOLIO_UPTODATE : 0;
    this.folios.set(index, pfn, 0, meta);
    this.watcher?.added(index, pfn, 0, meta);
    return pfn;
  }

  /** clear_highpage over a folio; a page that already reads zero is left unbacked. */
  private clear(pfn: number, order: number): void {
    const mem = this.kernel.machine.memory;
    for (let k = 0; k < 2 ** order; k++) if (mem.pageKind(pfn + k) !== 'zero') mem.fill((pfn + k) * PAGE_SIZE, PAGE_SIZE, 0);
  }

  /**
   * kvm_gmem_get_pfn / kvm_gmem_fault_user_mapping: the pfn of page index, allocating and
   * zeroing as needed. FAULT_NEEDS_ALLOC when the mapping is frozen and there is no folio;
   * FAULT_HWPOISON for a poisoned folio.
   */
  faultPage(index: number): number {
    const head = this.folios.headOf(index);
    if (head < 0) return this.allocate(index, true);
    const meta = this.folios.metaAt(head);
    if (meta & FOLIO_HWPOISON) return FAULT_HWPOISON;
    const pfn = this.folios.pfnAt(head);
    if (!(meta & FOLIO_UPTODATE)) {
      // Preparing a folio allocated by fallocate zeroes it once; no allocation, so allowed while frozen.
      const order = this.folios.orderAt(head);
      this.clear(pfn, order);
      this.folios.setMeta(head, FOLIO_UPTODATE);
      this.watcher?.changed(head, pfn, order, FOLIO_UPTODATE);
    }
    return pfn + (index - head);
  }

  /** kvm_gmem_fallocate: KEEP_SIZE required, PUNCH_HOLE optional; page-aligned ranges inside i_size. */
  fallocate(mode: number, offset: number, length: number): void {
    if (!(mode & FALLOC_FL_KEEP_SIZE)) throw new ErrnoError('EOPNOTSUPP', 'fallocate', 'guest_memfd needs FALLOC_FL_KEEP_SIZE');
    if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE)) throw new ErrnoError('EOPNOTSUPP', 'fallocate');
    if (offset % PAGE_SIZE !== 0 || length % PAGE_SIZE !== 0) throw new ErrnoError('EINVAL', 'fallocate', 'not page aligned');
    // A preserved guest_memfd's mapping is frozen: no allocation and no hole punching.
    if (this.frozen) throw new ErrnoError('EPERM', 'fallocate', 'guest_memfd is preserved for live update');
    const first = offset / PAGE_SIZE;
    const end = Math.min((offset + length) / PAGE_SIZE, this.pageCount);
    if (mode & FALLOC_FL_PUNCH_HOLE) {
      for (let i = first; i < end; i++) {
        const head = this.folios.headOf(i);
        // A large folio is only dropped whole.
        if (head >= 0 && head >= first && head + 2 ** this.folios.orderAt(head) <= end) this.evict(head);
      }
      return;
    }
    if (offset + length > this.size) throw new ErrnoError('EINVAL', 'fallocate', 'beyond i_size');
    for (let i = first; i < end; i++) if (this.folios.headOf(i) < 0) this.allocate(i, false);
  }

  evict(head: number): void {
    const order = this.folios.orderAt(head);
    if (this.folios.metaAt(head) & FOLIO_HWPOISON) this.poisonedFolios--;
    const pfn = this.folios.delete(head);
    if (pfn < 0) return;
    this.watcher?.removed(head, pfn, order);
    this.kernel.mm.freePages(pfn, order);
  }

  /** memory_failure() on the folio holding index: it is marked HWPOISON (its data is gone). */
  poison(index: number): void {
    const head = this.folios.headOf(index);
    if (head < 0) throw new ErrnoError('EINVAL', 'memory_failure', `no folio at page ${index}`);
    if (this.folios.metaAt(head) & FOLIO_HWPOISON) return;
    this.folios.setMeta(head, this.folios.metaAt(head) | FOLIO_HWPOISON);
    this.poisonedFolios++;
  }

  /** khugepaged collapse of the 512 pages at a 2 MiB-aligned head into one 2 MiB folio (contents copied, holes zero). */
  collapse(head: number): void {
    if (head % HPAGE_PMD_NR !== 0 || head + HPAGE_PMD_NR > this.pageCount) throw new ErrnoError('EINVAL', 'madvise', 'MADV_COLLAPSE needs an aligned 2 MiB range inside the file');
    if (this.frozen) throw new ErrnoError('EPERM', 'madvise', 'guest_memfd is preserved for live update');
    const mem = this.kernel.machine.memory;
    const big = this.kernel.mm.allocPages(9);
    if (big === null) throw new ErrnoError('ENOMEM', 'madvise');
    for (let i = 0; i < HPAGE_PMD_NR; i++) {
      const pfn = this.folios.pfnOfPage(head + i);
      if (pfn >= 0) mem.write((big + i) * PAGE_SIZE, mem.read(pfn * PAGE_SIZE, PAGE_SIZE));
      else if (mem.pageKind(big + i) !== 'zero') mem.fill((big + i) * PAGE_SIZE, PAGE_SIZE, 0);
    }
    for (let i = 0; i < HPAGE_PMD_NR; i++) if (this.folios.headOf(head + i) === head + i) this.evict(head + i);
    this.folios.set(head, big, 9, FOLIO_UPTODATE);
    this.watcher?.added(head, big, 9, FOLIO_UPTODATE);
  }

  /** The last reference: every folio back to the page allocator. */
  releaseAll(): void {
    this.poisonedFolios = 0;
    this.folios.drain((_head, pfn, order) => this.kernel.mm.freePages(pfn, order));
  }
}

const gmemFops: FileOperations = {
  kind: 'anon_inode:[kvm-gmem]',
  size: (f) => gmemOf(f).size,
  // guest_memfd has no ftruncate: its size is fixed at creation.
  truncate: () => { throw new ErrnoError('EINVAL', 'ftruncate', 'guest_memfd size is fixed'); },
  fallocate: (f, mode, off, len) => gmemOf(f).fallocate(mode, off, len),
  release: (f) => {
    const g = gmemOf(f);
    g.releaseAll();
    g.kvm.put();
  },
};

export function isGuestMemfd(file: KFile): boolean {
  return file.inode.owner instanceof GmemInode;
}

export function gmemOf(file: KFile): GmemInode {
  const g = file.inode.owner;
  if (!(g instanceof GmemInode)) throw new ErrnoError('EINVAL', 'guest_memfd', 'not a guest_memfd');
  return g;
}

/** __kvm_gmem_create's file: O_RDWR | O_LARGEFILE; pins the VM (kvm_get_kvm). */
export function gmemFile(kernel: Kernel, g: GmemInode): KFile {
  g.kvm.get();
  return new KFile(gmemFops, g.inode, g, 0o2 | 0o100000, kernel.id);
}

/** The host side of mmap(MAP_SHARED) on a guest_memfd: one page fault at file offset `offset`. */
function hostFault(g: GmemInode, offset: number): number {
  if (!(g.flags & GUEST_MEMFD_FLAG_MMAP)) throw new ErrnoError('ENODEV', 'mmap', 'guest_memfd created without GUEST_MEMFD_FLAG_MMAP');
  if (offset >= g.size) throw new SigbusError(offset, 'beyond i_size');
  if (!g.shared) throw new SigbusError(offset, 'private memory');
  const pfn = g.faultPage(Math.floor(offset / PAGE_SIZE));
  if (pfn === FAULT_NEEDS_ALLOC) throw new SigbusError(offset, 'guest_memfd is preserved: no new folio may be allocated');
  if (pfn === FAULT_HWPOISON) throw new SigbusError(offset, 'hardware-poisoned folio');
  return pfn * PAGE_SIZE + (offset % PAGE_SIZE);
}

/** Stores through the VMM's shared mapping of the guest_memfd. */
export function gmemStore(proc: Process, fd: number, data: Uint8Array, offset: number): void {
  const g = gmemOf(proc.file(fd, 'store'));
  const mem = g.kernel.machine.memory;
  let done = 0;
  while (done < data.length) {
    const off = offset + done;
    const n = Math.min(PAGE_SIZE - (off % PAGE_SIZE), data.length - done);
    mem.write(hostFault(g, off), data.subarray(done, done + n));
    done += n;
  }
}

/** Loads through the VMM's shared mapping (a hole is faulted in, as every read fault is). */
export function gmemLoad(proc: Process, fd: number, length: number, offset: number): Uint8Array {
  const g = gmemOf(proc.file(fd, 'load'));
  const mem = g.kernel.machine.memory;
  const out = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const off = offset + done;
    const n = Math.min(PAGE_SIZE - (off % PAGE_SIZE), length - done);
    mem.readInto(hostFault(g, off), out.subarray(done, done + n));
    done += n;
  }
  return out;
}

/** Synthetic content for [offset, offset+length): page i of the file holds seed+i (whole pages; for TiB-scale guests). */
export function gmemFillSynthetic(proc: Process, fd: number, offset: number, length: number, seed: number): void {
  const g = gmemOf(proc.file(fd, 'store'));
  if (offset % PAGE_SIZE !== 0 || length % PAGE_SIZE !== 0) throw new ErrnoError('EINVAL', 'store', 'synthetic ranges are whole pages');
  const mem = g.kernel.machine.memory;
  let runPfn = -1;
  let runIndex = 0;
  let runPages = 0;
  const flush = (): void => { if (runPages > 0) mem.fillSynthetic(runPfn * PAGE_SIZE, runPages * PAGE_SIZE, (seed + runIndex) >>> 0); runPages = 0; };
  for (let off = offset; off < offset + length; off += PAGE_SIZE) {
    const pfn = Math.floor(hostFault(g, off) / PAGE_SIZE);
    const index = off / PAGE_SIZE;
    if (runPages > 0 && pfn === runPfn + runPages) { runPages++; continue; }
    flush();
    runPfn = pfn; runIndex = index; runPages = 1;
  }
  flush();
}

/** True when every page of [offset, offset+length) holds the synthetic content seeded `seed` (checked per contiguous run). */
export function gmemCheckSynthetic(proc: Process, fd: number, offset: number, length: number, seed: number): boolean {
  const g = gmemOf(proc.file(fd, 'check'));
  const mem = g.kernel.machine.memory;
  let runPfn = -1;
  let runIndex = 0;
  let runPages = 0;
  const ok = (): boolean => runPages === 0 || mem.isSyntheticRun(runPfn * PAGE_SIZE, runPages * PAGE_SIZE, (seed + runIndex) >>> 0);
  for (let off = offset; off < offset + length; off += PAGE_SIZE) {
    const index = off / PAGE_SIZE;
    const pfn = g.folios.pfnOfPage(index);
    if (pfn < 0) return false;
    if (runPages > 0 && pfn === runPfn + runPages) { runPages++; continue; }
    if (!ok()) return false;
    runPfn = pfn; runIndex = index; runPages = 1;
  }
  return ok();
}

/** memory_failure() on the folio at file offset (MADV_HWPOISON through the mapping). */
export function gmemMemoryFailure(proc: Process, fd: number, offset: number): void {
  gmemOf(proc.file(fd, 'madvise')).poison(Math.floor(offset / PAGE_SIZE));
}

/** MADV_COLLAPSE of the 2 MiB range at `offset` into one large folio. */
export function gmemCollapse(proc: Process, fd: number, offset: number): void {
  gmemOf(proc.file(fd, 'madvise')).collapse(offset / PAGE_SIZE);
}

/** Folios and pages present (the guest's true footprint). */
export function gmemResident(proc: Process, fd: number): { folios: number; largeFolios: number } {
  const g = gmemOf(proc.file(fd, 'stat'));
  return { folios: g.folios.count, largeFolios: g.folios.largeCount };
}
