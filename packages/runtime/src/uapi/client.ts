/**
 * libliveupdate: a client over the raw /dev/liveupdate ioctls, argument structs encoded
 * exactly the way the kernel selftests' luo_test_utils helpers fill them: `size = sizeof(arg)`,
 * the name copied with snprintf("%.*s", 63, name) into a zeroed 64-byte array, GET_NAME with a
 * zeroed struct. Errors are the ErrnoError the ioctl threw (the selftests return -errno).
 */
import * as uapi from '../abi/uapi.js';
import type { Process } from '../kernel/process.js';
const NAME_LEN = 64;

/** snprintf(name, 64, "%.*s", 63, s): at most 63 bytes, NUL-terminated, rest zero. */
export function nameBytes(name: string): Uint8Array {
  const out = new Uint8Array(NAME_LEN);
  out.set(new TextEncoder().encode(name).subarray(0, NAME_LEN - 1));
  return out;
}

/** open("/dev/liveupdate", O_RDWR): EBUSY while another opener holds it, EIO if the incoming state is bad. */
export function openLiveupdate(proc: Process): number {
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

