/**
 * A client over the raw /dev/liveupdate ioctls, shaped like the kernel selftests' helper
 * library: every call builds the exact uAPI struct, issues the ioctl and decodes the reply.
 * Errors are the kernel's, as ErrnoError.
 */
import { abi, type Process } from '@liveupdate/runtime';

const { uapi } = abi;

function nameBytes(name: string): Uint8Array {
  const b = new Uint8Array(64);
  const enc = new TextEncoder().encode(name);
  b.set(enc.subarray(0, 64));
  return b;
}

/** open("/dev/liveupdate", O_RDWR): EBUSY while another opener holds it, EIO if the incoming state is bad. */
export function openLiveupdate(proc: Process): number {
  return proc.open('/dev/liveupdate', uapi.O_RDWR);
}

/** LIVEUPDATE_IOCTL_CREATE_SESSION → the session fd. */
export function createSession(proc: Process, devFd: number, name: string): number {
  const arg = uapi.createSessionArgs.encode({ size: uapi.createSessionArgs.size, fd: -1, name: nameBytes(name) });
  proc.ioctl(devFd, uapi.LIVEUPDATE_IOCTL_CREATE_SESSION, arg);
  return uapi.createSessionArgs.read(arg, 'fd');
}

/** LIVEUPDATE_IOCTL_RETRIEVE_SESSION → the session fd. */
export function retrieveSession(proc: Process, devFd: number, name: string): number {
  const arg = uapi.retrieveSessionArgs.encode({ size: uapi.retrieveSessionArgs.size, fd: -1, name: nameBytes(name) });
  proc.ioctl(devFd, uapi.LIVEUPDATE_IOCTL_RETRIEVE_SESSION, arg);
  return uapi.retrieveSessionArgs.read(arg, 'fd');
}

/** LIVEUPDATE_SESSION_PRESERVE_FD */
export function preserveFd(proc: Process, sessionFd: number, fd: number, token: bigint | number): void {
  const arg = uapi.preserveFdArgs.encode({ size: uapi.preserveFdArgs.size, fd, token: BigInt(token) });
  proc.ioctl(sessionFd, uapi.LIVEUPDATE_SESSION_PRESERVE_FD, arg);
}

/** LIVEUPDATE_SESSION_RETRIEVE_FD → a new fd (O_CLOEXEC) for the file preserved under token. */
export function retrieveFd(proc: Process, sessionFd: number, token: bigint | number): number {
  const arg = uapi.retrieveFdArgs.encode({ size: uapi.retrieveFdArgs.size, fd: -1, token: BigInt(token) });
  proc.ioctl(sessionFd, uapi.LIVEUPDATE_SESSION_RETRIEVE_FD, arg);
  return uapi.retrieveFdArgs.read(arg, 'fd');
}

/** LIVEUPDATE_SESSION_FINISH: EBUSY if a handler cannot finish yet (nothing changed; retry). */
export function finishSession(proc: Process, sessionFd: number): void {
  const arg = uapi.finishArgs.encode({ size: uapi.finishArgs.size, reserved: 0 });
  proc.ioctl(sessionFd, uapi.LIVEUPDATE_SESSION_FINISH, arg);
}

/** LIVEUPDATE_SESSION_GET_NAME (the name buffer must be zeroed: the kernel copies only 16 bytes in). */
export function getName(proc: Process, sessionFd: number): string {
  const arg = uapi.getNameArgs.encode({ size: uapi.getNameArgs.size, reserved: 0, name: new Uint8Array(64) });
  proc.ioctl(sessionFd, uapi.LIVEUPDATE_SESSION_GET_NAME, arg);
  const name = uapi.getNameArgs.read(arg, 'name');
  const end = name.indexOf(0);
  return new TextDecoder().decode(name.subarray(0, end < 0 ? name.length : end));
}
