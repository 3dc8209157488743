/**
 * A luod-style broker (the "delegation architecture" of googleprodkernel/luo-agent): it owns
 * /dev/liveupdate, creates one session per client, hands the client a copy of the session fd
 * over its UNIX socket and keeps its own copy open through the kexec — closing the last fd of
 * an outgoing session would unpreserve everything in it. After the kexec a new broker retrieves
 * the sessions by name and hands them back.
 */
import { createSession, openLiveupdate, retrieveSession, type Kernel, type Process } from '@liveupdate/sdk';

/** SCM_RIGHTS: the receiver gets its own fd on the same struct file. */
export function sendFd(from: Process, fd: number, to: Process): number {
  return to.fdInstall(from.fget(fd, 'sendmsg'), true);
}

export class Luod {
  readonly proc: Process;
  private readonly dev: number;
  /** Outgoing sessions this broker keeps open until the kexec: name → its own fd. */
  private readonly held = new Map<string, number>();

  constructor(kernel: Kernel) {
    this.proc = kernel.spawn('luod');
    // The single opener of /dev/liveupdate (a second open gets EBUSY).
    this.dev = openLiveupdate(this.proc);
  }

  /** LIVEUPDATE_IOCTL_CREATE_SESSION on the client's behalf; the client gets a copy of the fd. */
  createSessionFor(client: Process, name: string): number {
    const fd = createSession(this.proc, this.dev, name);
    this.held.set(name, fd);
    return sendFd(this.proc, fd, client);
  }

  /** After the kexec: LIVEUPDATE_IOCTL_RETRIEVE_SESSION, then the client owns the session. */
  retrieveSessionFor(client: Process, name: string): number {
    const fd = retrieveSession(this.proc, this.dev, name);
    const theirs = sendFd(this.proc, fd, client);
    this.proc.close(fd);
    return theirs;
  }

  get heldSessions(): string[] { return [...this.held.keys()]; }
}
