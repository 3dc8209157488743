/**
 * A userspace process: an fd table and the syscalls the model needs. Errors are thrown as
 * ErrnoError with the syscall's name, the way libc reports them through errno.
 */
import { ErrnoError } from '../errno.js';
import { O_CLOEXEC } from '../abi/uapi.js';
import type { KFile } from './file.js';
import type { Kernel } from './kernel.js';

export interface ProcessHost {
  readonly id: number;
  assertAlive(): void;
  openPath(path: string, flags: number, proc: Process): KFile;
  onExit(proc: Process): void;
}

interface FdEntry {
  readonly file: KFile;
  cloexec: boolean;
}

/** RLIMIT_NOFILE soft limit default. */
export const DEFAULT_NOFILE = 1024;

export class Process {
  private readonly fds = new Map<number, FdEntry>();
  private exited = false;
  /** No fd below this is free: keeps fd allocation O(1) amortized for 100,000 fds. */
  private lowestFree = 3;
  /** RLIMIT_NOFILE: fds must be below it (EMFILE). */
  nofile = DEFAULT_NOFILE;

  constructor(private readonly host: ProcessHost & Kernel, readonly pid: number, readonly name: string) {}

  /** The kernel this process runs on (plugin syscalls need it). */
  get kernel(): Kernel { return this.host; }

  get isExited(): boolean { return this.exited; }
  get openFds(): number[] { return [...this.fds.keys()].sort((a, b) => a - b); }

  private live(syscall: string): void {
    this.host.assertAlive();
    if (this.exited) throw new ErrnoError('ESRCH', syscall, `process ${this.pid} has exited`);
  }

  open(path: string, flags = 0o2): number {
    this.live('open');
    const file = this.host.openPath(path, flags, this);
    try {
      return this.fdInstall(file, (flags & O_CLOEXEC) !== 0);
    } catch (e) {
      file.put();
      throw e;
    }
  }

  close(fd: number): void {
    this.live('close');
    const e = this.fds.get(fd);
    if (!e) throw new ErrnoError('EBADF', 'close', `fd ${fd}`);
    this.fds.delete(fd);
    if (fd < this.lowestFree) this.lowestFree = fd;
    e.file.put();
  }

  ioctl(fd: number, request: number, arg: Uint8Array): number {
    this.live('ioctl');
    const file = this.fget(fd, 'ioctl');
    try {
      if (!file.ops.ioctl) throw new ErrnoError('ENOTTY', 'ioctl');
      return file.ops.ioctl(file, request, arg, this);
    } catch (e) {
      // ENOIOCTLCMD never reaches userspace: the VFS turns it into ENOTTY.
      if (e instanceof ErrnoError && e.code === 'ENOIOCTLCMD') throw new ErrnoError('ENOTTY', 'ioctl', e.detail);
      if (e instanceof ErrnoError && e.syscall !== 'ioctl') throw new ErrnoError(e.code, 'ioctl', e.detail ? `${e.syscall}: ${e.detail}` : e.syscall);
      throw e;
    } finally {
      file.put();
    }
  }

  /**
   * pread(2): up to `length` bytes at `offset`, in a new array; f_pos is untouched. The array
   * is never larger than what the file holds past `offset` (when it reports a size), so a
   * long read near the end of a file costs the bytes it returns.
   */
  pread(fd: number, length: number, offset: number): Uint8Array {
    const file = this.file(fd, 'pread');
    if (!file.ops.read) throw new ErrnoError('EINVAL', 'pread');
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) throw new ErrnoError('EINVAL', 'pread');
    const size = file.ops.size?.(file);
    const buf = new Uint8Array(size === undefined ? length : Math.max(0, Math.min(length, size - offset)));
    const n = file.ops.read(file, buf, offset);
    return buf.subarray(0, n);
  }

  /**
   * pread(2) into the caller's buffer, the way C calls it: up to dst.length bytes at `offset`;
   * returns how many were read (0 at end of file); bytes of dst past that count are left as
   * they were; f_pos is untouched. A loop that reuses one buffer allocates nothing per call.
   */
  preadInto(fd: number, dst: Uint8Array, offset: number): number {
    const file = this.file(fd, 'pread');
    if (!file.ops.read) throw new ErrnoError('EINVAL', 'pread');
    if (!Number.isSafeInteger(offset) || offset < 0) throw new ErrnoError('EINVAL', 'pread');
    return file.ops.read(file, dst, offset);
  }

  /** pwrite(2): returns the bytes written; f_pos is untouched. */
  pwrite(fd: number, data: Uint8Array, offset: number): number {
    const file = this.file(fd, 'pwrite');
    if (!file.ops.write) throw new ErrnoError('EINVAL', 'pwrite');
    if (!Number.isSafeInteger(offset) || offset < 0) throw new ErrnoError('EINVAL', 'pwrite');
    return file.ops.write(file, data, offset);
  }

  /** read(2) at f_pos, advancing it. */
  read(fd: number, length: number): Uint8Array {
    const file = this.file(fd, 'read');
    const out = this.pread(fd, length, file.pos);
    file.pos += out.length;
    return out;
  }

  /** write(2) at f_pos, advancing it. */
  write(fd: number, data: Uint8Array): number {
    const file = this.file(fd, 'write');
    const n = this.pwrite(fd, data, file.pos);
    file.pos += n;
    return n;
  }

  /** lseek(2) with SEEK_SET (0), SEEK_CUR (1), SEEK_END (2). */
  lseek(fd: number, offset: number, whence: 0 | 1 | 2): number {
    const file = this.file(fd, 'lseek');
    const base = whence === 0 ? 0 : whence === 1 ? file.pos : whence === 2 ? (file.ops.size?.(file) ?? 0) : NaN;
    const pos = base + offset;
    if (!Number.isSafeInteger(pos) || pos < 0) throw new ErrnoError('EINVAL', 'lseek');
    file.pos = pos;
    return pos;
  }

  ftruncate(fd: number, size: number | bigint): void {
    const file = this.file(fd, 'ftruncate');
    const n = typeof size === 'bigint' ? Number(size) : size;
    if (!Number.isSafeInteger(n) || n < 0) throw new ErrnoError('EINVAL', 'ftruncate');
    if (!file.ops.truncate) throw new ErrnoError('EINVAL', 'ftruncate');
    file.ops.truncate(file, n);
  }

  fallocate(fd: number, mode: number, offset: number, length: number): void {
    const file = this.file(fd, 'fallocate');
    if (!file.ops.fallocate) throw new ErrnoError('EOPNOTSUPP', 'fallocate');
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length <= 0) throw new ErrnoError('EINVAL', 'fallocate');
    file.ops.fallocate(file, mode, offset, length);
  }

  /** fcntl(2): F_GETFD (1), F_SETFD (2), and file-specific commands such as F_ADD_SEALS. */
  fcntl(fd: number, cmd: number, arg = 0): number {
    this.live('fcntl');
    const e = this.fds.get(fd);
    if (!e) throw new ErrnoError('EBADF', 'fcntl', `fd ${fd}`);
    if (cmd === 1) return e.cloexec ? 1 : 0;
    if (cmd === 2) { e.cloexec = (arg & 1) === 1; return 0; }
    const r = e.file.ops.fcntl?.(e.file, cmd, arg);
    if (r === undefined) throw new ErrnoError('EINVAL', 'fcntl', `cmd ${cmd}`);
    return r;
  }

  /** FD_CLOEXEC of an open fd (fcntl F_GETFD). */
  isCloexec(fd: number): boolean {
    this.live('fcntl');
    const e = this.fds.get(fd);
    if (!e) throw new ErrnoError('EBADF', 'fcntl', `fd ${fd}`);
    return e.cloexec;
  }

  /** fget: a new reference to the file behind fd, or EBADF. The caller must put() it. */
  fget(fd: number, syscall = 'fget'): KFile {
    const e = this.fds.get(fd);
    if (!e) throw new ErrnoError('EBADF', syscall, `fd ${fd}`);
    return e.file.get();
  }

  /** The file behind fd without taking a reference (for plugin syscalls that operate on it). */
  file(fd: number, syscall: string): KFile {
    this.live(syscall);
    const e = this.fds.get(fd);
    if (!e) throw new ErrnoError('EBADF', syscall, `fd ${fd}`);
    return e.file;
  }

  /** Install `file` (consuming the caller's reference) at the lowest free fd. */
  fdInstall(file: KFile, cloexec: boolean): number {
    let fd = this.lowestFree; // 0..2 are the standard streams of a real process
    while (this.fds.has(fd)) fd++;
    if (fd >= this.nofile) throw new ErrnoError('EMFILE', 'open');
    this.fds.set(fd, { file, cloexec });
    this.lowestFree = fd + 1;
    return fd;
  }

  /** exit(): every fd is closed, in ascending order. */
  exit(): void {
    this.live('exit');
    for (const fd of this.openFds) {
      const e = this.fds.get(fd);
      this.fds.delete(fd);
      e?.file.put();
    }
    this.exited = true;
    this.host.onExit(this);
  }
}
