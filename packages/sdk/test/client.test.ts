/**
 * The libliveupdate-style client: each call is one raw ioctl with the exact uAPI struct, and
 * the kernel's errors come back as ErrnoError with the errno name.
 */
import { describe, expect, it } from 'vitest';
import { createMachine } from '@liveupdate/hw';
import {
  abi, boot, createSession, ErrnoError, finishSession, getName, openLiveupdate, preserveFd, retrieveFd, retrieveSession,
  type Kernel,
} from '@liveupdate/sdk';

const CMDLINE = 'kho=on liveupdate=on';
const kernel = (): Kernel => boot(createMachine({ memory: '1GiB' }), { cmdline: CMDLINE });

function errnoOf(fn: () => unknown): ErrnoError {
  try { fn(); } catch (e) { if (e instanceof ErrnoError) return e; throw e; }
  throw new Error('no ErrnoError');
}

describe('liveupdate client', () => {
  it.each([
    ['vm0'],
    ['a'],
    ['x'.repeat(63)],
    ['séance-ünïcode-✓'],
  ])('getName returns the name a session was created with: %s', (name) => {
    const p = kernel().spawn('luod');
    const dev = openLiveupdate(p);
    expect(getName(p, createSession(p, dev, name))).toBe(name);
  });

  it('createSession returns a new close-on-exec fd per session', () => {
    const p = kernel().spawn('luod');
    const dev = openLiveupdate(p);
    const a = createSession(p, dev, 'a');
    const b = createSession(p, dev, 'b');
    expect([dev, a, b]).toEqual([3, 4, 5]);
    expect([p.isCloexec(a), p.isCloexec(b)]).toEqual([true, true]);
    expect([getName(p, a), getName(p, b)]).toEqual(['a', 'b']);
  });

  it('a second session with the same name is EEXIST, and the first one is untouched', () => {
    const p = kernel().spawn('luod');
    const dev = openLiveupdate(p);
    const first = createSession(p, dev, 'vm0');
    const e = errnoOf(() => createSession(p, dev, 'vm0'));
    expect([e.code, e.errno, e.syscall]).toEqual(['EEXIST', 17, 'ioctl']);
    expect(getName(p, first)).toBe('vm0');
    expect(p.openFds).toEqual([3, 4]);
  });

  it('an empty session name is EINVAL', () => {
    const p = kernel().spawn('luod');
    expect(errnoOf(() => createSession(p, openLiveupdate(p), '')).code).toBe('EINVAL');
  });

  it('a name longer than 63 bytes is cut to 63 by the client, as the selftests\' snprintf("%.*s", 63) does', () => {
    const p = kernel().spawn('luod');
    const s = createSession(p, openLiveupdate(p), `${'y'.repeat(63)}overflow`);
    expect(getName(p, s)).toBe('y'.repeat(63));
  });

  it('the kernel itself refuses a 64-byte name with no NUL (raw CREATE_SESSION: EINVAL)', () => {
    const p = kernel().spawn('luod');
    const dev = openLiveupdate(p);
    const arg = abi.uapi.createSessionArgs.encode({ size: 72, fd: -1, name: new TextEncoder().encode('z'.repeat(64)) });
    expect(errnoOf(() => p.ioctl(dev, abi.uapi.LIVEUPDATE_IOCTL_CREATE_SESSION, arg)).code).toBe('EINVAL');
  });

  it('/dev/liveupdate has one opener at a time: EBUSY until it is closed', () => {
    const k = kernel();
    const p = k.spawn('luod');
    const q = k.spawn('other');
    const dev = openLiveupdate(p);
    expect(errnoOf(() => openLiveupdate(q)).code).toBe('EBUSY');
    p.close(dev);
    expect(openLiveupdate(q)).toBe(3);
  });

  it('incoming-only commands on an outgoing session are EINVAL; a file no handler takes is ENOENT', () => {
    const p = kernel().spawn('luod');
    const dev = openLiveupdate(p);
    const s = createSession(p, dev, 'vm0');
    expect(errnoOf(() => retrieveFd(p, s, 1)).code).toBe('EINVAL');
    expect(errnoOf(() => finishSession(p, s)).code).toBe('EINVAL');
    expect(errnoOf(() => preserveFd(p, s, dev, 1)).code).toBe('ENOENT');
    expect(errnoOf(() => preserveFd(p, s, 99, 1)).code).toBe('EBADF');
  });

  it('after a kexec: the session is retrieved by name (once), an unknown name is ENOENT, and it finishes empty', () => {
    const k1 = kernel();
    const p = k1.spawn('luod');
    createSession(p, openLiveupdate(p), 'kept');
    const k2 = k1.kexec({ cmdline: CMDLINE });
    const q = k2.spawn('luod');
    const dev = openLiveupdate(q);
    expect(errnoOf(() => retrieveSession(q, dev, 'other')).code).toBe('ENOENT');
    const s = retrieveSession(q, dev, 'kept');
    expect(getName(q, s)).toBe('kept');
    expect(errnoOf(() => retrieveSession(q, dev, 'kept')).code).toBe('EINVAL');
    expect(errnoOf(() => retrieveFd(q, s, 1)).code).toBe('ENOENT');
    finishSession(q, s);
    expect(errnoOf(() => preserveFd(q, s, dev, 1)).code).toBe('EINVAL');
  });

  it('builds the exact uAPI structs: CREATE_SESSION is 0xba00 with a 72-byte argument', () => {
    expect(abi.uapi.LIVEUPDATE_IOCTL_CREATE_SESSION & 0xffff).toBe(0xba00);
    expect(abi.uapi.createSessionArgs.size).toBe(72);
    const p = kernel().spawn('luod');
    const dev = openLiveupdate(p);
    const arg = abi.uapi.createSessionArgs.encode({ size: 72, fd: -1, name: new TextEncoder().encode('raw') });
    p.ioctl(dev, abi.uapi.LIVEUPDATE_IOCTL_CREATE_SESSION, arg);
    const fd = abi.uapi.createSessionArgs.read(arg, 'fd');
    expect(getName(p, fd)).toBe('raw');
  });
});
