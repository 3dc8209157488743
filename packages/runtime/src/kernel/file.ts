/**
 * struct file, reduced to what live update needs: reference counting (LUO holds its own
 * reference on a preserved file), an identity (the inode) and the file operations.
 */
import { ErrnoError } from '../errno.js';
import type { Process } from './process.js';

export interface FileOperations {
  /** Shown in /proc/<pid>/fd, e.g. 'anon_inode:[luo_session] vm0' or '/memfd:ram (deleted)'. */
  readonly kind: string;
  ioctl?(file: KFile, cmd: number, arg: Uint8Array, proc: Process): number;
  read?(file: KFile, dst: Uint8Array, pos: number): number;
  write?(file: KFile, src: Uint8Array, pos: number): number;
  /** i_size for lseek(SEEK_END) and fstat. */
  size?(file: KFile): number;
  /** ftruncate (setattr ATTR_SIZE). */
  truncate?(file: KFile, size: number): void;
  fallocate?(file: KFile, mode: number, offset: number, length: number): void;
  /** File-specific fcntl commands (F_ADD_SEALS, F_GET_SEALS); undefined = not handled (EINVAL). */
  fcntl?(file: KFile, cmd: number, arg: number): number | undefined;
  /** Called when the last reference is dropped. */
  release?(file: KFile): void;
}

let nextFileId = 1;
let nextInodeId = 1;

/** An inode: identity shared by every file opened on the same object. */
export class Inode {
  readonly ino = nextInodeId++;
  /** i_nlink: 0 for an unlinked object such as a memfd. */
  nlink = 0;
  constructor(readonly owner: unknown = undefined) {}
}

export class KFile {
  readonly id = nextFileId++;
  /** f_pos */
  pos = 0;
  private refs = 1;
  private released = false;

  constructor(
    readonly ops: FileOperations,
    readonly inode: Inode,
    /** private_data: the owning subsystem's object. */
    readonly privateData: unknown,
    /** f_flags (O_RDWR, O_LARGEFILE, ...). */
    readonly flags: number,
    /** The kernel instance this file belongs to (files never cross a kexec). */
    readonly kernelId: number,
  ) {}

  get refcount(): number { return this.refs; }
  get isReleased(): boolean { return this.released; }

  /** get_file */
  get(): KFile {
    if (this.released) throw new Error(`get_file on a released file #${this.id}`);
    this.refs++;
    return this;
  }

  /** fput: the last reference runs ->release. */
  put(): void {
    if (this.released) return;
    if (--this.refs === 0) {
      this.released = true;
      this.ops.release?.(this);
    }
  }
}

/** Only these may be passed where the kernel expects a live file. */
export function assertFile(file: KFile, syscall: string): void {
  if (file.isReleased) throw new ErrnoError('EBADF', syscall);
}
