/**
 * A userspace process: an fd table and the syscalls the model needs. Errors are thrown as
 * ErrnoError with the syscall's name, the way libc reports them through errno.
 */
import { ErrnoError } from '../errno.js';
import { O_CLOEXEC } from '../abi/uapi.js';
import type { KFile } from './file.js';

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

  constructor(private readonly host: ProcessHost, readonly pid: number, readonly name: string) {}

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
      if (e instanceof ErrnoError && e.code === 'ENOIOCTLCMD') throw new ErrnoError('ENOTTY', 'ioctl', e.message);
      if (e instanceof ErrnoError && e.syscall !== 'ioctl') throw new ErrnoError(e.code, 'ioctl', e.message);
      throw e;
    } finally {
      file.put();
    }
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
