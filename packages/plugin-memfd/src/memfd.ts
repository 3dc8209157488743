/**
 * The memfd file type (mm/memfd.c, mm/shmem.c, fs/hugetlbfs): an unlinked shmem or hugetlbfs
 * inode whose pages are allocated on first write; holes stay holes. Sealing as F_ADD_SEALS
 * defines it. Syscalls are functions taking the process first (memfdCreate(p, name, flags)).
 */
import { PAGE_SIZE } from '@liveupdate/hw';
import { ErrnoError, Inode, KFile, type FileOperations, type Kernel, type Process } from '@liveupdate/sdk';
import {
  F_SEAL_EXEC, F_SEAL_FUTURE_WRITE, F_SEAL_GROW, F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_WRITE, MEMFD_LUO_ALL_SEALS,
} from './abi/memfd.js';
import { hugetlbAlloc, hugetlbFree } from './hugetlb-pool.js';
import { PageCache } from './page-cache.js';

export const MFD_CLOEXEC = 0x0001;
export const MFD_ALLOW_SEALING = 0x0002;
export const MFD_HUGETLB = 0x0004;
export const MFD_NOEXEC_SEAL = 0x0008;
export const MFD_EXEC = 0x0010;
export const MFD_HUGE_SHIFT = 26;
export const MFD_HUGE_MASK = 0x3f;
export const MFD_HUGE_2MB = 21 << MFD_HUGE_SHIFT;
export const MFD_HUGE_1GB = 30 << MFD_HUGE_SHIFT;
/** NAME_MAX - strlen("memfd:") */
export const MFD_NAME_MAX_LEN = 249;

export const F_ADD_SEALS = 1033;
export const F_GET_SEALS = 1034;
export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;

const O_RDWR = 0o2;
const O_LARGEFILE = 0o100000;
/** MAX_LFS_FILESIZE on 64-bit. */
export const MAX_LFS_FILESIZE = Number.MAX_SAFE_INTEGER - (Number.MAX_SAFE_INTEGER % PAGE_SIZE);

/** Watchers of a preserved inode (the sparse format keeps the handover current as pages come and go). */
export interface PageWatcher {
  added(index: number, pfn: number): void;
  removed(index: number, pfn: number): void;
}

export class MemfdInode {
  readonly inode: Inode;
  size = 0;
  seals: number;
  readonly cache = new PageCache();
  /** SHMEM_F_MAPPING_FROZEN: no growing, shrinking or hole punching while preserved (upstream formats). */
  frozen = false;
  watcher: PageWatcher | null = null;

  constructor(
    readonly kernel: Kernel,
    readonly name: string,
    /** Folio order: 0 for shmem, 9 (2 MiB) or 18 (1 GiB) for hugetlbfs. */
    readonly order: number,
    readonly hugetlb: boolean,
    seals: number,
  ) {
    this.inode = new Inode(this);
    this.inode.nlink = 0;
    this.seals = seals;
  }

  get folioBytes(): number { return PAGE_SIZE * 2 ** this.order; }

  /** Allocate the folio at page-cache index (zeroed), or return the existing one. */
  fault(index: number, zero = true): number {
    const have = this.cache.get(index);
    if (have >= 0) return have;
    const pfn = this.hugetlb ? hugetlbAlloc(this.kernel, this.order) : this.kernel.mm.allocPages(0);
    if (pfn === null) throw new ErrnoError('ENOMEM', 'fault', this.hugetlb ? `no free ${this.folioBytes >> 20} MiB huge page` : undefined);
    if (zero) this.clearFolio(pfn);
    this.cache.set(index, pfn);
    this.watcher?.added(index, pfn);
    return pfn;
  }

  /**
   * clear_highpage over the folio. A page that already reads zero (never written since power-on
   * and not handed over) is left alone: clearing it would only back it with host memory, which
   * matters when preserve materializes a GiB of holes.
   */
  private clearFolio(pfn: number): void {
    const mem = this.kernel.machine.memory;
    const pages = 2 ** this.order;
    for (let k = 0; k < pages; k++) if (mem.pageKind(pfn + k) !== 'zero') mem.fill((pfn + k) * PAGE_SIZE, PAGE_SIZE, 0);
  }

  /** Drop the folio at index back to its allocator. */
  evict(index: number): void {
    const pfn = this.cache.delete(index);
    if (pfn < 0) return;
    this.watcher?.removed(index, pfn);
    this.releaseFolio(pfn);
  }

  releaseFolio(pfn: number): void {
    if (this.hugetlb) hugetlbFree(this.kernel, this.order, pfn);
    else this.kernel.mm.freePages(pfn, 0);
  }

  /** Release every page (last reference to an unpreserved memfd). */
  releaseAll(): void {
    this.cache.drain((_index, pfn) => this.releaseFolio(pfn));
  }

  /**
   * The resident folios of [pos, pos + length) (clipped to i_size) as runs that are
   * contiguous both in the file and in physical memory, ascending: fn(fileOffset, phys, bytes)
   * for each, clipped to the range; return true from fn to stop. Holes are skipped a
   * page-cache chunk (512 folios) at a time, so the cost follows the resident folios touched,
   * never the bytes of the holes.
   */
  forEachResidentRun(pos: number, length: number, fn: (fileOffset: number, phys: number, bytes: number) => boolean | void): void {
    const end = Math.min(pos + length, this.size);
    if (!(end > pos)) return;
    const folioBytes = this.folioBytes;
    const pagesPerFolio = 2 ** this.order;
    const endIndex = Math.ceil(end / folioBytes);
    let index = this.cache.nextPresent(Math.floor(pos / folioBytes), endIndex);
    while (index >= 0) {
      const pfn = this.cache.get(index);
      let count = 1;
      while (index + count < endIndex && this.cache.get(index + count) === pfn + count * pagesPerFolio) count++;
      const runStart = Math.max(pos, index * folioBytes);
      const runEnd = Math.min(end, (index + count) * folioBytes);
      if (fn(runStart, pfn * PAGE_SIZE + (runStart - index * folioBytes), runEnd - runStart) === true) return;
      index = this.cache.nextPresent(index + count, endIndex);
    }
  }

  /** read(2) at pos: holes read as zeros; one zero fill per hole and one copy per resident run. */
  read(dst: Uint8Array, pos: number): number {
    if (pos >= this.size) return 0;
    const n = Math.min(dst.length, this.size - pos);
    const mem = this.kernel.machine.memory;
    let done = 0;
    this.forEachResidentRun(pos, n, (offset, phys, bytes) => {
      const at = offset - pos;
      if (at > done) dst.fill(0, done, at);
      mem.readInto(phys, dst.subarray(at, at + bytes));
      done = at + bytes;
    });
    if (done < n) dst.fill(0, done, n);
    return n;
  }

  /** Stores into the page cache, growing the file as needed (write(2) and stores through a shared mapping). */
  store(src: Uint8Array, pos: number, syscall: string): number {
    // F_SEAL_WRITE and F_SEAL_FUTURE_WRITE forbid writes.
    if (this.seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)) throw new ErrnoError('EPERM', syscall, 'sealed against writes');
    const end = pos + src.length;
    if (end > MAX_LFS_FILESIZE) throw new ErrnoError('EFBIG', syscall);
    if (end > this.size) {
      if (this.seals & F_SEAL_GROW) throw new ErrnoError('EPERM', syscall, 'F_SEAL_GROW');
      // A frozen mapping cannot grow.
      if (this.frozen) throw new ErrnoError('EPERM', syscall, 'inode frozen by live update');
    }
    const mem = this.kernel.machine.memory;
    let done = 0;
    while (done < src.length) {
      const off = pos + done;
      const index = Math.floor(off / this.folioBytes);
      const inFolio = off % this.folioBytes;
      const chunk = Math.min(this.folioBytes - inFolio, src.length - done);
      const pfn = this.fault(index);
      mem.write(pfn * PAGE_SIZE + inFolio, src.subarray(done, done + chunk));
      done += chunk;
    }
    if (end > this.size) this.size = end;
    return src.length;
  }

  truncate(size: number): void {
    if (size === this.size) return;
    if (this.hugetlb && size % this.folioBytes !== 0) throw new ErrnoError('EINVAL', 'ftruncate', 'hugetlbfs sizes are whole huge pages');
    if (size > MAX_LFS_FILESIZE) throw new ErrnoError('EFBIG', 'ftruncate');
    if (size < this.size && (this.seals & F_SEAL_SHRINK)) throw new ErrnoError('EPERM', 'ftruncate', 'F_SEAL_SHRINK');
    if (size > this.size && (this.seals & F_SEAL_GROW)) throw new ErrnoError('EPERM', 'ftruncate', 'F_SEAL_GROW');
    // shmem_setattr: a preserved (frozen) mapping cannot change size.
    if (this.frozen) throw new ErrnoError('EPERM', 'ftruncate', 'inode frozen by live update');
    if (size < this.size) {
      const firstGone = Math.ceil(size / this.folioBytes);
      const gone: number[] = [];
      this.cache.forEach((i) => { if (i >= firstGone) gone.push(i); });
      for (const i of gone) this.evict(i);
      const tail = size % this.folioBytes;
      if (tail !== 0) {
        const pfn = this.cache.get(Math.floor(size / this.folioBytes));
        if (pfn >= 0) this.kernel.machine.memory.fill(pfn * PAGE_SIZE + tail, this.folioBytes - tail, 0);
      }
    }
    this.size = size;
  }

  fallocate(mode: number, offset: number, length: number): void {
    if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE)) throw new ErrnoError('EOPNOTSUPP', 'fallocate');
    const end = offset + length;
    // vfs_fallocate: PUNCH_HOLE without KEEP_SIZE is refused before the filesystem is asked.
    if ((mode & FALLOC_FL_PUNCH_HOLE) && !(mode & FALLOC_FL_KEEP_SIZE)) throw new ErrnoError('EOPNOTSUPP', 'fallocate', 'PUNCH_HOLE needs KEEP_SIZE');
    // shmem_fallocate checks SHMEM_F_MAPPING_FROZEN before it looks at the mode: every mode is EPERM.
    if (this.frozen) throw new ErrnoError('EPERM', 'fallocate', 'inode frozen by live update');
    if (mode & FALLOC_FL_PUNCH_HOLE) {
      if (this.seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)) throw new ErrnoError('EPERM', 'fallocate', 'sealed against writes');
      const first = Math.ceil(offset / this.folioBytes);
      const last = Math.floor(Math.min(end, this.size) / this.folioBytes);
      for (let i = first; i < last; i++) this.evict(i);
      // Partial folios at either edge are zeroed, not freed.
      const zeroRange = (from: number, to: number): void => {
        if (to <= from) return;
        const pfn = this.cache.get(Math.floor(from / this.folioBytes));
        if (pfn >= 0) this.kernel.machine.memory.fill(pfn * PAGE_SIZE + (from % this.folioBytes), to - from, 0);
      };
      zeroRange(offset, Math.min(end, first * this.folioBytes));
      if (last >= first) zeroRange(Math.max(offset, last * this.folioBytes), Math.min(end, this.size));
      return;
    }
    // shmem_fallocate checks F_SEAL_GROW against i_size even with FALLOC_FL_KEEP_SIZE.
    if (end > this.size && (this.seals & F_SEAL_GROW)) throw new ErrnoError('EPERM', 'fallocate', 'F_SEAL_GROW');
    for (let i = Math.floor(offset / this.folioBytes); i < Math.ceil(end / this.folioBytes); i++) this.fault(i);
    if (end > this.size && !(mode & FALLOC_FL_KEEP_SIZE)) this.size = end;
  }

  addSeals(seals: number): number {
    if (seals & ~MEMFD_LUO_ALL_SEALS) throw new ErrnoError('EINVAL', 'fcntl', 'unknown seal');
    if (this.seals & F_SEAL_SEAL) throw new ErrnoError('EPERM', 'fcntl', 'F_SEAL_SEAL');
    this.seals |= seals;
    return 0;
  }
}

const memfdFops: FileOperations = {
  kind: 'memfd',
  read: (f, dst, pos) => inodeOf(f).read(dst, pos),
  write: (f, src, pos) => {
    const m = inodeOf(f);
    // hugetlbfs has no write(2): its pages are written through mappings (memfdStore).
    if (m.hugetlb) throw new ErrnoError('EINVAL', 'write', 'hugetlbfs does not support write(2)');
    return m.store(src, pos, 'write');
  },
  size: (f) => inodeOf(f).size,
  truncate: (f, size) => inodeOf(f).truncate(size),
  fallocate: (f, mode, off, len) => inodeOf(f).fallocate(mode, off, len),
  fcntl: (f, cmd, arg) => {
    if (cmd === F_ADD_SEALS) return inodeOf(f).addSeals(arg);
    if (cmd === F_GET_SEALS) return inodeOf(f).seals;
    return undefined;
  },
  release: (f) => inodeOf(f).releaseAll(),
};

export function isMemfd(file: KFile): boolean {
  return file.inode.owner instanceof MemfdInode;
}

export function inodeOf(file: KFile): MemfdInode {
  const m = file.inode.owner;
  if (!(m instanceof MemfdInode)) throw new ErrnoError('EINVAL', 'memfd', 'not a memfd');
  return m;
}

/** A new struct file on an inode (memfd_alloc_file). */
export function memfdFile(kernel: Kernel, m: MemfdInode): KFile {
  return new KFile({ ...memfdFops, kind: `/memfd:${m.name} (deleted)` }, m.inode, m, O_RDWR | O_LARGEFILE, kernel.id);
}

/** memfd_create(2). */
export function memfdCreate(proc: Process, name: string, flags: number): number {
  const kernel = proc.kernel;
  const known = MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_HUGETLB | MFD_NOEXEC_SEAL | MFD_EXEC | (MFD_HUGE_MASK << MFD_HUGE_SHIFT);
  if (flags & ~known) throw new ErrnoError('EINVAL', 'memfd_create', 'unknown flags');
  if (!(flags & MFD_HUGETLB) && (flags & (MFD_HUGE_MASK << MFD_HUGE_SHIFT))) throw new ErrnoError('EINVAL', 'memfd_create', 'huge page size without MFD_HUGETLB');
  if ((flags & MFD_NOEXEC_SEAL) && (flags & MFD_EXEC)) throw new ErrnoError('EINVAL', 'memfd_create', 'MFD_EXEC with MFD_NOEXEC_SEAL');
  if (new TextEncoder().encode(name).length > MFD_NAME_MAX_LEN) throw new ErrnoError('EINVAL', 'memfd_create', 'name too long');
  let order = 0;
  if (flags & MFD_HUGETLB) {
    const shift = (flags >>> MFD_HUGE_SHIFT) & MFD_HUGE_MASK;
    order = shift === 0 ? 9 : shift - 12;
    if (order !== 9 && order !== 18) throw new ErrnoError('EINVAL', 'memfd_create', `unsupported huge page size 2^${shift}`);
  }
  // MFD_NOEXEC_SEAL implies sealing is allowed: F_SEAL_SEAL is cleared and F_SEAL_EXEC set (mm/memfd.c).
  const seals = flags & MFD_NOEXEC_SEAL ? F_SEAL_EXEC : flags & MFD_ALLOW_SEALING ? 0 : F_SEAL_SEAL;
  const m = new MemfdInode(kernel, name, order, (flags & MFD_HUGETLB) !== 0, seals);
  return proc.fdInstall(memfdFile(kernel, m), (flags & MFD_CLOEXEC) !== 0);
}

/** Stores through a MAP_SHARED mapping of the memfd (the way a VMM writes guest RAM; works on hugetlbfs). */
export function memfdStore(proc: Process, fd: number, data: Uint8Array, offset: number): void {
  const m = inodeOf(proc.file(fd, 'store'));
  if (offset + data.length > m.size) throw new ErrnoError('EFAULT', 'store', 'SIGBUS: beyond the end of the file');
  m.store(data, offset, 'store');
}

/**
 * Give [offset, offset+length) synthetic content: page i of the file holds page seed seed+i.
 * Allocates the pages (like writing them) without host memory for their bytes. Folios that are
 * physically contiguous and consecutive in the file become one synthetic run, so a fresh
 * allocation of a GiB costs one run, not one per page.
 */
export function memfdFillSynthetic(proc: Process, fd: number, offset: number, length: number, seed: number): void {
  const m = inodeOf(proc.file(fd, 'store'));
  if (offset % m.folioBytes !== 0 || length % m.folioBytes !== 0) throw new ErrnoError('EINVAL', 'store', 'synthetic ranges are whole folios');
  if (m.seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)) throw new ErrnoError('EPERM', 'store', 'sealed against writes');
  const end = offset + length;
  if (end > m.size) {
    if (m.seals & F_SEAL_GROW) throw new ErrnoError('EPERM', 'store', 'F_SEAL_GROW');
    if (m.frozen) throw new ErrnoError('EPERM', 'store', 'inode frozen by live update');
  }
  const mem = m.kernel.machine.memory;
  const pagesPerFolio = 2 ** m.order;
  let runIndex = -1;
  let runPfn = -1;
  let runFolios = 0;
  const flush = (): void => {
    if (runFolios > 0) mem.fillSynthetic(runPfn * PAGE_SIZE, runFolios * m.folioBytes, (seed + runIndex * pagesPerFolio) >>> 0);
    runFolios = 0;
  };
  for (let index = offset / m.folioBytes; index < end / m.folioBytes; index++) {
    const pfn = m.fault(index, false);
    if (runFolios > 0 && pfn === runPfn + runFolios * pagesPerFolio) { runFolios++; continue; }
    flush();
    runIndex = index;
    runPfn = pfn;
    runFolios = 1;
  }
  flush();
  if (end > m.size) m.size = end;
}

/**
 * True when every page of [offset, offset+length) still holds the synthetic content seeded
 * `seed` (page i of the file: seed+i). Checked per physically contiguous run: O(runs), not O(pages).
 */
export function memfdCheckSynthetic(proc: Process, fd: number, offset: number, length: number, seed: number): boolean {
  const m = inodeOf(proc.file(fd, 'check'));
  if (offset % PAGE_SIZE !== 0 || length % PAGE_SIZE !== 0) return false;
  const mem = m.kernel.machine.memory;
  let runPhys = -1;
  let runFileOff = 0;
  let runBytes = 0;
  const runOk = (): boolean => runBytes === 0 || mem.isSyntheticRun(runPhys, runBytes, (seed + runFileOff / PAGE_SIZE) >>> 0);
  for (let off = offset; off < offset + length;) {
    const index = Math.floor(off / m.folioBytes);
    const pfn = m.cache.get(index);
    if (pfn < 0) return false;
    const inFolio = off % m.folioBytes;
    const n = Math.min(m.folioBytes - inFolio, offset + length - off);
    const phys = pfn * PAGE_SIZE + inFolio;
    if (runBytes > 0 && phys === runPhys + runBytes) {
      runBytes += n;
    } else {
      if (!runOk()) return false;
      runPhys = phys;
      runFileOff = off;
      runBytes = n;
    }
    off += n;
  }
  return runOk();
}

/** Pages present in the page cache (a sparse file's true footprint). */
export function memfdResidentPages(proc: Process, fd: number): number {
  const m = inodeOf(proc.file(fd, 'stat'));
  return m.cache.count * 2 ** m.order;
}
