/**
 * Extensible-struct ioctl argument handling (copy_struct_from_user and friends). The
 * argument is "user memory": a Uint8Array whose first u32 is the struct size userspace
 * claims. Reads past its end fault (EFAULT).
 */
import { ErrnoError } from '../errno.js';

export interface IoctlOp {
  readonly cmd: number;
  /** sizeof the kernel's struct. */
  readonly size: number;
  readonly minSize: number;
}

/** Read the user's size word; EFAULT if the buffer cannot hold it. */
export function userSize(arg: Uint8Array): number {
  if (arg.length < 4) throw new ErrnoError('EFAULT', 'ioctl', 'argument shorter than its size field');
  return new DataView(arg.buffer, arg.byteOffset, 4).getUint32(0, true);
}

/**
 * copy_struct_from_user: a user struct larger than the kernel's must be zero beyond it
 * (E2BIG); a smaller one is zero-extended. EFAULT if `usize` exceeds the buffer.
 */
export function copyStructFromUser(arg: Uint8Array, ksize: number, usize: number): Uint8Array {
  if (usize > arg.length) throw new ErrnoError('EFAULT', 'ioctl', `size ${usize} exceeds the ${arg.length}-byte buffer`);
  for (let i = ksize; i < usize; i++) if (arg[i] !== 0) throw new ErrnoError('E2BIG', 'ioctl', `non-zero byte at offset ${i} beyond the ${ksize}-byte struct`);
  const k = new Uint8Array(ksize);
  k.set(arg.subarray(0, Math.min(ksize, usize)));
  return k;
}

/** Copy the response back: min(user size, kernel struct size) bytes. */
export function copyToUser(arg: Uint8Array, kstruct: Uint8Array, usize: number): void {
  const n = Math.min(usize, kstruct.length, arg.length);
  arg.set(kstruct.subarray(0, n));
}
