/** Generic Linux errno numbering (include/uapi/asm-generic/errno-base.h and errno.h). */
export const ERRNO = {
  EPERM: 1, ENOENT: 2, EIO: 5, E2BIG: 7, EBADF: 9, EAGAIN: 11, ENOMEM: 12, EFAULT: 14,
  ESRCH: 3, EINTR: 4, EBUSY: 16, EEXIST: 17, ENODEV: 19, EINVAL: 22, EMFILE: 24, ENOTTY: 25, EFBIG: 27,
  ENOSPC: 28, ESPIPE: 29, ERANGE: 34, ENODATA: 61, EOVERFLOW: 75, EOPNOTSUPP: 95,
  EADDRINUSE: 98, EADDRNOTAVAIL: 99, EHWPOISON: 133,
  /** Kernel-internal; the ioctl layer turns it into ENOTTY before userspace sees it. */
  ENOIOCTLCMD: 515,
} as const;

export type ErrnoCode = keyof typeof ERRNO;

let stackTraceLimit = Error.stackTraceLimit;

/**
 * A kernel error as userspace (or a caller of a kernel API) sees it: the errno by name and number.
 *
 * An errno is an answer, often an expected one (an FLB with no incoming data, a lookup that
 * misses), so it is made without capturing the JavaScript call stack: V8 walks the frames at
 * construction, which cost a qualification run more than the work around most of these calls.
 * The message names the call and the errno; `stack` is `ErrnoError: <message>` alone. Set
 * `ErrnoError.captureStacks = true` while debugging to get the frames back.
 */
export class ErrnoError extends Error {
  /** Capture the call stack of each new ErrnoError (off: see the class comment). */
  static captureStacks = false;

  /** Error.stackTraceLimit off for the super() call that follows (the constructor restores it). */
  private static framesOff(message: string): string {
    stackTraceLimit = Error.stackTraceLimit;
    if (!ErrnoError.captureStacks) Error.stackTraceLimit = 0;
    return message;
  }

  override readonly name = 'ErrnoError';
  readonly errno: number;
  readonly code: ErrnoCode;
  readonly syscall: string;
  readonly detail?: string;
  constructor(code: ErrnoCode, syscall: string, detail?: string) {
    super(ErrnoError.framesOff(`${syscall}: ${code}${detail ? ` (${detail})` : ''}`));
    Error.stackTraceLimit = stackTraceLimit;
    this.code = code;
    this.syscall = syscall;
    if (detail !== undefined) this.detail = detail;
    this.errno = ERRNO[code];
  }
}

/**
 * The errno a call failed with, or 0 on success, like the selftest helpers' -errno return.
 * Anything thrown that is not an ErrnoError is rethrown: the model never fails that way.
 */
export function errnoOf(fn: () => unknown): ErrnoCode | 0 {
  try {
    fn();
    return 0;
  } catch (e) {
    if (e instanceof ErrnoError) return e.code;
    throw e;
  }
}

export const isErrno = (e: unknown, code?: ErrnoCode): e is ErrnoError =>
  e instanceof ErrnoError && (code === undefined || e.code === code);

/** The kernel is gone (after kexec): every call on it throws this. */
export class KernelDeadError extends Error {
  override readonly name = 'KernelDeadError';
}
