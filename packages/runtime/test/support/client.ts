/**
 * A tiny client over the raw LUO ioctls, argument structs encoded with abi.uapi exactly the
 * way the kernel selftests' luo_test_utils helpers fill them: `size = sizeof(arg)`, the name
 * copied with snprintf("%.*s", 63, name) into a zeroed 64-byte array, GET_NAME with a
 * zeroed struct. Errors are the ErrnoError the ioctl threw (the selftests return -errno).
 */
import { abi, ErrnoError, type ErrnoCode, type Process } from '@liveupdate/runtime';

const { uapi } = abi;
const NAME_LEN = 64;

/** snprintf(name, 64, "%.*s", 63, s): at most 63 bytes, NUL-terminated, rest zero. */
export function nameBytes(name: string): Uint8Array {
  const out = new Uint8Array(NAME_LEN);
  out.set(new TextEncoder().encode(name).subarray(0, NAME_LEN - 1));
  return out;
}

export function openLuo(proc: Process): number {
  return proc.open('/dev/liveupdate', uapi.O_RDWR);
}

export function createSession(proc: Process, devFd: number, name: string): number {
  const arg = uapi.createSessionArgs.encode({ size: uapi.createSessionArgs.size, fd: 0, name: nameBytes(name) });
  proc.ioctl(devFd, uapi.LIVEUPDATE_IOCTL_CREATE_SESSION, arg);
  return uapi.createSessionArgs.read(arg, 'fd');
}

export function retrieveSession(proc: Process, devFd: number, name: string): number {
  const arg = uapi.retrieveSessionArgs.encode({ size: uapi.retrieveSessionArgs.size, fd: 0, name: nameBytes(name) });
  proc.ioctl(devFd, uapi.LIVEUPDATE_IOCTL_RETRIEVE_SESSION, arg);
  return uapi.retrieveSessionArgs.read(arg, 'fd');
}

export function preserveFd(proc: Process, sessionFd: number, fd: number, token: bigint | number): void {
  const arg = uapi.preserveFdArgs.encode({ size: uapi.preserveFdArgs.size, fd, token: BigInt(token) });
  proc.ioctl(sessionFd, uapi.LIVEUPDATE_SESSION_PRESERVE_FD, arg);
}

export function retrieveFd(proc: Process, sessionFd: number, token: bigint | number): number {
  const arg = uapi.retrieveFdArgs.encode({ size: uapi.retrieveFdArgs.size, fd: 0, token: BigInt(token) });
  proc.ioctl(sessionFd, uapi.LIVEUPDATE_SESSION_RETRIEVE_FD, arg);
  return uapi.retrieveFdArgs.read(arg, 'fd');
}

export function finishSession(proc: Process, sessionFd: number): void {
  const arg = uapi.finishArgs.encode({ size: uapi.finishArgs.size, reserved: 0 });
  proc.ioctl(sessionFd, uapi.LIVEUPDATE_SESSION_FINISH, arg);
}

/** luo_get_session_name: a zeroed 72-byte struct with size set; the name comes back NUL-terminated. */
export function getName(proc: Process, sessionFd: number): string {
  const arg = uapi.getNameArgs.encode({ size: uapi.getNameArgs.size, reserved: 0 });
  proc.ioctl(sessionFd, uapi.LIVEUPDATE_SESSION_GET_NAME, arg);
  const name = uapi.getNameArgs.read(arg, 'name');
  const end = name.indexOf(0);
  return new TextDecoder().decode(name.subarray(0, end < 0 ? NAME_LEN - 1 : end));
}

/** luo_ensure_nofile_limit: RLIMIT_NOFILE of at least min + 32 (the test's own fds). */
export function ensureNofile(proc: Process, min: number): void {
  if (proc.nofile < min + 32) proc.nofile = min + 32;
}

/**
 * The errno a call failed with, or 0 on success, like the selftest helpers' -errno return.
 * Anything thrown that is not an ErrnoError is rethrown: the model must never fail that way.
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
