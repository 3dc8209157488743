/**
 * /dev/liveupdate and session-fd uAPI in one kernel (upstream
 * tools/testing/selftests/liveupdate/liveupdate.c), plus the dispatch rules of
 * include/uapi/linux/liveupdate.h: validation order, extensible-struct sizes, errnos.
 */
import { describe, expect, it } from 'vitest';
import { createMachine } from '@liveupdate/hw';
import { abi, boot, ErrnoError, Inode, KFile, type Kernel } from '@liveupdate/runtime';
import {
  createSession, ensureNofile, errnoOf, finishSession, getName, nameBytes, openLuo, preserveFd, retrieveFd,
  retrieveSession,
} from './support/client.js';
import { bootLuo, CMDLINE, dec, enc, pattern } from './support/harness.js';
import { createTestFile, readTestFile, testFilePlugin, writeTestFile } from './support/testfile.js';

const { uapi } = abi;

/** A raw ioctl argument: `size` in the first u32, the rest as given. */
function rawArg(length: number, size: number, fill?: (b: Uint8Array, dv: DataView) => void): Uint8Array {
  const b = new Uint8Array(length);
  const dv = new DataView(b.buffer);
  if (length >= 4) dv.setUint32(0, size, true);
  fill?.(b, dv);
  return b;
}

/** A character device no handler claims (the selftests use /dev/null). */
function addDevNull(k: Kernel): void {
  k.registerDevice('/dev/null', () => new KFile({ kind: '/dev/null' }, new Inode(), null, uapi.O_RDWR, k.id));
}

describe('/dev/liveupdate', () => {
  it('opens and closes; a second opener gets EBUSY until the first closes', () => {
    const { k, proc, dev } = bootLuo();
    expect(dev).toBeGreaterThanOrEqual(3);
    expect(errnoOf(() => openLuo(proc))).toBe('EBUSY');
    const other = k.spawn('other');
    expect(errnoOf(() => openLuo(other))).toBe('EBUSY');
    proc.close(dev);
    const again = openLuo(other);
    expect(again).toBeGreaterThanOrEqual(3);
    expect(errnoOf(() => openLuo(proc))).toBe('EBUSY');
  });

  it('does not exist unless both kho=on and liveupdate=on (open → ENOENT)', () => {
    for (const cmdline of ['', 'kho=on', 'liveupdate=on', 'kho=on liveupdate=off', 'kho=off liveupdate=on']) {
      const k = boot(createMachine({ memory: '1GiB' }), { cmdline, plugins: [testFilePlugin()] });
      const p = k.spawn('t');
      expect(errnoOf(() => openLuo(p)), cmdline).toBe('ENOENT');
      expect(k.luo.enabled).toBe(false);
      // A disabled LUO refuses registration; the plugin swallowed EOPNOTSUPP.
      expect(errnoOf(() => k.luo.registerFileHandler({
        compatible: 'x', ops: { canPreserve: () => false, preserve: () => {}, unpreserve: () => {}, retrieve: () => {}, finish: () => {} },
      }))).toBe('EOPNOTSUPP');
    }
  });

  it('closing /dev/liveupdate does not touch sessions', () => {
    const { k, proc, dev, plugin } = bootLuo();
    const s = createSession(proc, dev, 'keep-me');
    const f = createTestFile(k, proc, enc('x'));
    preserveFd(proc, s, f, 1);
    proc.close(dev);
    expect(plugin.handlerOf(k).callsOf('unpreserve')).toHaveLength(0);
    expect(getName(proc, s)).toBe('keep-me');
    const dev2 = openLuo(proc);
    expect(errnoOf(() => createSession(proc, dev2, 'keep-me'))).toBe('EEXIST');
  });
});

describe('CREATE_SESSION and GET_NAME', () => {
  it('creates a session whose name GET_NAME returns; the fd is an anon inode, close-on-exec', () => {
    const { proc, dev } = bootLuo();
    const s = createSession(proc, dev, 'get-name-test-session');
    expect(getName(proc, s)).toBe('get-name-test-session');
    expect(proc.file(s, 'test').ops.kind).toBe('anon_inode:[luo_session] get-name-test-session');
    expect(proc.isCloexec(s)).toBe(true);
    expect(proc.isCloexec(dev)).toBe(false);
  });

  it('accepts a 63-byte name and returns it in full', () => {
    const { proc, dev } = bootLuo();
    const long = 'A'.repeat(63);
    const s = createSession(proc, dev, long);
    expect(getName(proc, s)).toBe(long);
  });

  it('distinct names succeed; a duplicate outgoing name is EEXIST', () => {
    const { proc, dev } = bootLuo();
    const a = createSession(proc, dev, 'distinct-session-1');
    const b = createSession(proc, dev, 'distinct-session-2');
    expect(a).not.toBe(b);
    expect(errnoOf(() => createSession(proc, dev, 'distinct-session-1'))).toBe('EEXIST');
    // After the first is closed the name is free again.
    proc.close(a);
    expect(createSession(proc, dev, 'distinct-session-1')).toBeGreaterThanOrEqual(3);
  });

  it('EEXIST does not shrink back the session block grown before the name check (upstream order)', () => {
    const { proc, dev, k } = bootLuo();
    const per = abi.luo.LUO_SESSIONS_PER_BLOCK;
    for (let i = 0; i < per; i++) createSession(proc, dev, `fill-${i}`);
    expect(k.luo.sessions.outBlocks.nblocks).toBe(1);
    expect(errnoOf(() => createSession(proc, dev, 'fill-0'))).toBe('EEXIST');
    expect(k.luo.sessions.outBlocks.nblocks).toBe(2);
    // The spare block is reused by the next create and released when sessions go.
    createSession(proc, dev, `fill-${per}`);
    expect(k.luo.sessions.outBlocks.nblocks).toBe(2);
  });

  it('an empty name or 64 bytes without a NUL is EINVAL', () => {
    const { proc, dev } = bootLuo();
    expect(errnoOf(() => createSession(proc, dev, ''))).toBe('EINVAL');
    const arg = uapi.createSessionArgs.encode({ size: 72, fd: 0, name: new Uint8Array(64).fill(0x58) });
    expect(errnoOf(() => proc.ioctl(dev, uapi.LIVEUPDATE_IOCTL_CREATE_SESSION, arg))).toBe('EINVAL');
    // Bytes after the first NUL are ignored: "ab\0cd" is the session "ab".
    const b = nameBytes('ab');
    b[3] = 0x63;
    const arg2 = uapi.createSessionArgs.encode({ size: 72, fd: 0, name: b });
    proc.ioctl(dev, uapi.LIVEUPDATE_IOCTL_CREATE_SESSION, arg2);
    expect(getName(proc, uapi.createSessionArgs.read(arg2, 'fd'))).toBe('ab');
  });

  it('writes the new fd back at offset 4 and leaves the name untouched', () => {
    const { proc, dev } = bootLuo();
    const arg = uapi.createSessionArgs.encode({ size: 72, fd: -1, name: nameBytes('fd-out') });
    expect(proc.ioctl(dev, uapi.LIVEUPDATE_IOCTL_CREATE_SESSION, arg)).toBe(0);
    const out = uapi.createSessionArgs.decode(arg);
    expect(out.size).toBe(72);
    expect(out.fd).toBeGreaterThanOrEqual(3);
    expect(out.name).toEqual(nameBytes('fd-out'));
    expect(proc.openFds).toContain(out.fd);
  });

  it('session names are bytes: a name that is not UTF-8 round-trips through GET_NAME', () => {
    const { proc, dev } = bootLuo();
    const name = new Uint8Array(64);
    name.fill(0xff, 0, 40);
    const arg = uapi.createSessionArgs.encode({ size: 72, fd: 0, name });
    proc.ioctl(dev, uapi.LIVEUPDATE_IOCTL_CREATE_SESSION, arg);
    const s = uapi.createSessionArgs.read(arg, 'fd');
    const g = uapi.getNameArgs.encode({ size: 72, reserved: 0 });
    proc.ioctl(s, uapi.LIVEUPDATE_SESSION_GET_NAME, g);
    expect(uapi.getNameArgs.read(g, 'name')).toEqual(name);
    // A different byte string that decodes to the same replacement characters is another name.
    const other = new Uint8Array(64);
    other.fill(0xfe, 0, 40);
    const arg2 = uapi.createSessionArgs.encode({ size: 72, fd: 0, name: other });
    expect(errnoOf(() => proc.ioctl(dev, uapi.LIVEUPDATE_IOCTL_CREATE_SESSION, arg2))).toBe(0);
    expect(errnoOf(() => proc.ioctl(dev, uapi.LIVEUPDATE_IOCTL_CREATE_SESSION, arg))).toBe('EEXIST');
  });

  it('GET_NAME: a non-zero name buffer is E2BIG, a non-zero reserved EINVAL, size 16 returns no name', () => {
    const { proc, dev } = bootLuo();
    const s = createSession(proc, dev, 'quirk');
    const dirty = uapi.getNameArgs.encode({ size: 72, reserved: 0, name: nameBytes('garbage-beyond-byte-16') });
    expect(errnoOf(() => proc.ioctl(s, uapi.LIVEUPDATE_SESSION_GET_NAME, dirty))).toBe('E2BIG');
    // Only bytes 16.. are checked (the slot's struct is 16 bytes): name[0..7] is inside it.
    const inside = uapi.getNameArgs.encode({ size: 72, reserved: 0, name: nameBytes('1234567') });
    expect(proc.ioctl(s, uapi.LIVEUPDATE_SESSION_GET_NAME, inside)).toBe(0);
    expect(dec(uapi.getNameArgs.read(inside, 'name').subarray(0, 5))).toBe('quirk');
    const reserved = uapi.getNameArgs.encode({ size: 72, reserved: 1 });
    expect(errnoOf(() => proc.ioctl(s, uapi.LIVEUPDATE_SESSION_GET_NAME, reserved))).toBe('EINVAL');
    // min_size is 16 (the slot is declared with struct liveupdate_session_retrieve_fd).
    expect(errnoOf(() => proc.ioctl(s, uapi.LIVEUPDATE_SESSION_GET_NAME, rawArg(72, 15)))).toBe('EINVAL');
    const short = rawArg(72, 16);
    short.fill(0x55, 16);
    // Bytes past `size` are not the kernel's business: not read, not written.
    expect(proc.ioctl(s, uapi.LIVEUPDATE_SESSION_GET_NAME, short)).toBe(0);
    expect([...short.subarray(16)].every((x) => x === 0x55)).toBe(true);
  });
});

describe('PRESERVE_FD', () => {
  it('preserves a testfile; its content stays readable and writable', () => {
    const { k, proc, dev, plugin } = bootLuo();
    const s = createSession(proc, dev, 'preserve-memfd-test');
    const data = enc('hello liveupdate');
    const f = createTestFile(k, proc, data);
    preserveFd(proc, s, f, 0x1234);
    expect(readTestFile(k, proc, f)).toEqual(data);
    writeTestFile(proc, f, enc('H'));
    expect(dec(readTestFile(k, proc, f))).toBe('Hello liveupdate');
    const h = plugin.handlerOf(k);
    expect(h.callsOf('preserve')).toEqual([{ op: 'preserve', session: 'preserve-memfd-test', token: 0x1234n, retrieveStatus: 0 }]);
    expect(h.callsOf('freeze')).toHaveLength(0);
  });

  it('token 0 is a valid token', () => {
    const { k, proc, dev } = bootLuo();
    const s = createSession(proc, dev, 'zero');
    preserveFd(proc, s, createTestFile(k, proc, enc('z')), 0);
    expect(errnoOf(() => preserveFd(proc, s, createTestFile(k, proc, enc('y')), 0))).toBe('EEXIST');
  });

  it('an fd no handler supports is ENOENT (a device, a session fd, /dev/liveupdate)', () => {
    const { k, proc, dev, plugin } = bootLuo();
    addDevNull(k);
    const s = createSession(proc, dev, 'unsupported-fd-test');
    const nul = proc.open('/dev/null');
    expect(errnoOf(() => preserveFd(proc, s, nul, 0xdead))).toBe('ENOENT');
    expect(errnoOf(() => preserveFd(proc, s, s, 0xdead))).toBe('ENOENT');
    expect(errnoOf(() => preserveFd(proc, s, dev, 0xdead))).toBe('ENOENT');
    expect(plugin.handlerOf(k).callsOf('preserve')).toHaveLength(0);
    // Nothing was left behind: the token is still free and the block set empty again.
    expect(k.luo.sessions.outgoing[0]?.fileSet.blocks.nblocks).toBe(0);
    preserveFd(proc, s, createTestFile(k, proc, enc('ok')), 0xdead);
  });

  it('a bad fd is EBADF; the token check comes first (EEXIST)', () => {
    const { k, proc, dev } = bootLuo();
    const s = createSession(proc, dev, 'badf');
    expect(errnoOf(() => preserveFd(proc, s, 999, 1))).toBe('EBADF');
    expect(errnoOf(() => preserveFd(proc, s, -1, 1))).toBe('EBADF');
    preserveFd(proc, s, createTestFile(k, proc, enc('a')), 1);
    expect(errnoOf(() => preserveFd(proc, s, 999, 1))).toBe('EEXIST');
  });

  it('the same token twice in one session is EEXIST; the same token in another session is fine', () => {
    const { k, proc, dev } = bootLuo();
    const s1 = createSession(proc, dev, 's1');
    const s2 = createSession(proc, dev, 's2');
    preserveFd(proc, s1, createTestFile(k, proc, enc('a')), 7);
    expect(errnoOf(() => preserveFd(proc, s1, createTestFile(k, proc, enc('b')), 7))).toBe('EEXIST');
    preserveFd(proc, s2, createTestFile(k, proc, enc('c')), 7);
  });

  it('one file in two sessions (or twice in one) is EBUSY; so is a second fd of the same file', () => {
    const { k, proc, dev, plugin } = bootLuo();
    const s1 = createSession(proc, dev, 'double-preserve-session-1');
    const s2 = createSession(proc, dev, 'double-preserve-session-2');
    const f = createTestFile(k, proc, enc('once'));
    preserveFd(proc, s1, f, 0x1111);
    expect(errnoOf(() => preserveFd(proc, s2, f, 0x2222))).toBe('EBUSY');
    expect(errnoOf(() => preserveFd(proc, s1, f, 0x3333))).toBe('EBUSY');
    const dup = proc.fdInstall(proc.fget(f), false);
    expect(errnoOf(() => preserveFd(proc, s2, dup, 0x4444))).toBe('EBUSY');
    expect(plugin.handlerOf(k).callsOf('preserve')).toHaveLength(1);
  });

  it('closing the user fd does not unpreserve; LUO keeps its own reference', () => {
    const { k, proc, dev, plugin } = bootLuo();
    const s = createSession(proc, dev, 'user-close');
    const data = pattern(1, 5000);
    const f = createTestFile(k, proc, data);
    const file = proc.file(f, 'test');
    const tf = file.privateData as { pfns: number[] };
    preserveFd(proc, s, f, 1);
    proc.close(f);
    expect(file.isReleased).toBe(false);
    expect(plugin.handlerOf(k).callsOf('unpreserve')).toHaveLength(0);
    for (const pfn of tf.pfns) expect(k.khoOut?.isPreserved(pfn, 0)).toBe(true);
    // Closing the session drops the last reference.
    proc.close(s);
    expect(file.isReleased).toBe(true);
    for (const pfn of tf.pfns) expect(k.khoOut?.isPreserved(pfn, 0)).toBe(false);
  });

  it('closing the session unpreserves every file newest first; a new session can preserve them again', () => {
    const { k, proc, dev, plugin } = bootLuo();
    const before = k.khoOut?.survivors().blocks;
    const s = createSession(proc, dev, 'cancel');
    const fds = [0, 1, 2].map((i) => createTestFile(k, proc, pattern(i, 100 + i * 5000)));
    fds.forEach((fd, i) => preserveFd(proc, s, fd, 10 + i));
    expect(k.khoOut?.survivors().blocks).toBeGreaterThan(before ?? 0);
    proc.close(s);
    const h = plugin.handlerOf(k);
    expect(h.callsOf('unpreserve').map((c) => c.token)).toEqual([12n, 11n, 10n]);
    expect(k.khoOut?.survivors().blocks).toBe(before);
    expect(k.luo.sessions.outgoing).toHaveLength(0);
    expect(k.luo.sessions.outBlocks.nblocks).toBe(0);
    const s2 = createSession(proc, dev, 'cancel');
    fds.forEach((fd, i) => preserveFd(proc, s2, fd, 10 + i));
    expect(h.callsOf('preserve')).toHaveLength(6);
    fds.forEach((fd, i) => expect(readTestFile(k, proc, fd)).toEqual(pattern(i, 100 + i * 5000)));
  });

  it('a failing handler preserve undoes everything before it', () => {
    const { k, proc, dev, plugin } = bootLuo();
    const s = createSession(proc, dev, 'fail');
    const before = k.khoOut?.survivors().blocks;
    const h = plugin.handlerOf(k);
    const real = h.ops.preserve;
    (h.ops as { preserve: typeof real }).preserve = () => { throw new ErrnoError('ENOMEM', 'testfile_preserve'); };
    const f = createTestFile(k, proc, enc('x'));
    expect(errnoOf(() => preserveFd(proc, s, f, 1))).toBe('ENOMEM');
    (h.ops as { preserve: typeof real }).preserve = real;
    expect(k.khoOut?.survivors().blocks).toBe(before);
    expect(proc.file(f, 'test').refcount).toBe(1);
    // Neither the token nor the file is taken.
    preserveFd(proc, s, f, 1);
  });
});

describe('ioctl dispatch', () => {
  it('session ioctls meant for the other direction are EINVAL on an outgoing session', () => {
    const { k, proc, dev } = bootLuo();
    const s = createSession(proc, dev, 'outgoing');
    preserveFd(proc, s, createTestFile(k, proc, enc('a')), 1);
    expect(errnoOf(() => retrieveFd(proc, s, 1))).toBe('EINVAL');
    expect(errnoOf(() => finishSession(proc, s))).toBe('EINVAL');
    // The session-type check comes before the size check.
    expect(errnoOf(() => proc.ioctl(s, uapi.LIVEUPDATE_SESSION_FINISH, rawArg(8, 4)))).toBe('EINVAL');
    expect(errnoOf(() => retrieveSession(proc, dev, 'outgoing'))).toBe('ENOENT');
  });

  it('an unknown nr is EINVAL; a known nr with the wrong type byte (or size bits) is ENOTTY', () => {
    const { proc, dev } = bootLuo();
    const s = createSession(proc, dev, 'dispatch');
    const arg = (): Uint8Array => rawArg(72, 72);
    // /dev/liveupdate: nr 0..1
    expect(errnoOf(() => proc.ioctl(dev, 0xba02, arg()))).toBe('EINVAL');
    expect(errnoOf(() => proc.ioctl(dev, 0xba40, arg()))).toBe('EINVAL');
    expect(errnoOf(() => proc.ioctl(dev, 0xbaff, arg()))).toBe('EINVAL');
    expect(errnoOf(() => proc.ioctl(dev, 0xab00, arg()))).toBe('ENOTTY');
    expect(errnoOf(() => proc.ioctl(dev, 0xc048ba00, arg()))).toBe('ENOTTY'); // _IOWR(0xBA, 0, 72 bytes)
    // session fd: nr 0x40..0x43
    expect(errnoOf(() => proc.ioctl(s, 0xba44, arg()))).toBe('EINVAL');
    expect(errnoOf(() => proc.ioctl(s, 0xba3f, arg()))).toBe('EINVAL');
    expect(errnoOf(() => proc.ioctl(s, 0xba00, arg()))).toBe('EINVAL');
    expect(errnoOf(() => proc.ioctl(s, 0xab43, arg()))).toBe('ENOTTY');
    expect(errnoOf(() => proc.ioctl(s, 0x0043, arg()))).toBe('ENOTTY');
    // The number check comes before the size check...
    expect(errnoOf(() => proc.ioctl(dev, 0xab00, rawArg(72, 1)))).toBe('ENOTTY');
    // ...but on /dev/liveupdate after reading the size word (get_user faults first).
    expect(errnoOf(() => proc.ioctl(dev, 0xab00, new Uint8Array(2)))).toBe('EFAULT');
    expect(errnoOf(() => proc.ioctl(dev, 0xba07, new Uint8Array(2)))).toBe('EINVAL');
  });

  it('size below min_size is EINVAL', () => {
    const { k, proc, dev } = bootLuo();
    const s = createSession(proc, dev, 'min');
    expect(errnoOf(() => proc.ioctl(dev, uapi.LIVEUPDATE_IOCTL_CREATE_SESSION, rawArg(72, 71, (b) => b.set(nameBytes('m2'), 8))))).toBe('EINVAL');
    expect(errnoOf(() => proc.ioctl(dev, uapi.LIVEUPDATE_IOCTL_RETRIEVE_SESSION, rawArg(72, 0)))).toBe('EINVAL');
    const f = createTestFile(k, proc, enc('x'));
    expect(errnoOf(() => proc.ioctl(s, uapi.LIVEUPDATE_SESSION_PRESERVE_FD, rawArg(16, 15, (_b, dv) => dv.setInt32(4, f, true))))).toBe('EINVAL');
    expect(errnoOf(() => proc.ioctl(s, uapi.LIVEUPDATE_SESSION_GET_NAME, rawArg(16, 8)))).toBe('EINVAL');
    expect(k.luo.sessions.outgoing).toHaveLength(1);
  });

  it('size beyond the kernel struct: a non-zero tail is E2BIG, a zero tail is accepted', () => {
    const { k, proc, dev, plugin } = bootLuo();
    const big = (tail: number): Uint8Array => rawArg(80, 80, (b) => { b.set(nameBytes('big'), 8); b[79] = tail; });
    expect(errnoOf(() => proc.ioctl(dev, uapi.LIVEUPDATE_IOCTL_CREATE_SESSION, big(1)))).toBe('E2BIG');
    expect(k.luo.sessions.outgoing).toHaveLength(0);
    const ok = big(0);
    expect(proc.ioctl(dev, uapi.LIVEUPDATE_IOCTL_CREATE_SESSION, ok)).toBe(0);
    const s = new DataView(ok.buffer).getInt32(4, true);
    expect(getName(proc, s)).toBe('big');
    const f = createTestFile(k, proc, enc('x'));
    const pf = (tail: number): Uint8Array => rawArg(24, 24, (b, dv) => { dv.setInt32(4, f, true); dv.setBigUint64(8, 5n, true); b[23] = tail; });
    expect(errnoOf(() => proc.ioctl(s, uapi.LIVEUPDATE_SESSION_PRESERVE_FD, pf(9)))).toBe('E2BIG');
    expect(plugin.handlerOf(k).callsOf('preserve')).toHaveLength(0);
    expect(proc.ioctl(s, uapi.LIVEUPDATE_SESSION_PRESERVE_FD, pf(0))).toBe(0);
    expect(plugin.handlerOf(k).callsOf('preserve')).toHaveLength(1);
  });

  it('a buffer shorter than its size (or than the size word) is EFAULT', () => {
    const { k, proc, dev } = bootLuo();
    expect(errnoOf(() => proc.ioctl(dev, uapi.LIVEUPDATE_IOCTL_CREATE_SESSION, rawArg(40, 72, (b) => b.set(nameBytes('f').subarray(0, 32), 8))))).toBe('EFAULT');
    expect(errnoOf(() => proc.ioctl(dev, uapi.LIVEUPDATE_IOCTL_CREATE_SESSION, new Uint8Array(2)))).toBe('EFAULT');
    expect(k.luo.sessions.outgoing).toHaveLength(0);
    const s = createSession(proc, dev, 'fault');
    expect(errnoOf(() => proc.ioctl(s, uapi.LIVEUPDATE_SESSION_PRESERVE_FD, rawArg(12, 16)))).toBe('EFAULT');
    expect(errnoOf(() => proc.ioctl(s, uapi.LIVEUPDATE_SESSION_GET_NAME, rawArg(20, 72)))).toBe('EFAULT');
  });

  it('ioctls on a closed fd are EBADF', () => {
    const { proc, dev } = bootLuo();
    const s = createSession(proc, dev, 'closed');
    proc.close(s);
    expect(errnoOf(() => getName(proc, s))).toBe('EBADF');
  });
});

describe('session lifetime', () => {
  it('process exit closes its sessions (unpreserving their files) and frees the device', () => {
    const { k, proc, dev, plugin } = bootLuo();
    const before = k.khoOut?.survivors().blocks;
    const s1 = createSession(proc, dev, 'exit-1');
    const s2 = createSession(proc, dev, 'exit-2');
    preserveFd(proc, s1, createTestFile(k, proc, pattern(1, 9000)), 1);
    preserveFd(proc, s2, createTestFile(k, proc, pattern(2, 10)), 2);
    preserveFd(proc, s2, createTestFile(k, proc, pattern(3, 10)), 3);
    proc.exit();
    expect(plugin.handlerOf(k).callsOf('unpreserve').map((c) => [c.session, c.token])).toEqual([
      ['exit-1', 1n], ['exit-2', 3n], ['exit-2', 2n],
    ]);
    expect(k.luo.sessions.outgoing).toHaveLength(0);
    expect(k.khoOut?.survivors().blocks).toBe(before);
    const p2 = k.spawn('next');
    const dev2 = openLuo(p2);
    expect(createSession(p2, dev2, 'exit-1')).toBeGreaterThanOrEqual(3);
  });

  it('manages 2000 sessions and 500 files in one session without a kexec; blocks grow and shrink', () => {
    const { k, proc, dev } = bootLuo();
    ensureNofile(proc, 2600);
    const before = k.khoOut?.survivors().blocks ?? 0;
    const sessions: number[] = [];
    for (let i = 0; i < 2000; i++) sessions.push(createSession(proc, dev, `many-session-${i}`));
    expect(k.luo.sessions.outBlocks.nblocks).toBe(Math.ceil(2000 / abi.luo.LUO_SESSIONS_PER_BLOCK));
    const s = createSession(proc, dev, 'many-files-test');
    const files: number[] = [];
    for (let i = 0; i < 500; i++) {
      const f = createTestFile(k, proc, new Uint8Array(0));
      preserveFd(proc, s, f, i);
      files.push(f);
    }
    expect(k.luo.sessions.outgoing[2000]?.fileSet.blocks.nblocks).toBe(Math.ceil(500 / abi.luo.LUO_FILES_PER_BLOCK));
    for (const f of files) proc.close(f);
    proc.close(s);
    for (const fd of sessions) proc.close(fd);
    expect(k.luo.sessions.outBlocks.nblocks).toBe(0);
    expect(k.khoOut?.survivors().blocks).toBe(before);
  });

  it('fd exhaustion (EMFILE) on CREATE_SESSION leaves no session behind', () => {
    const { proc, dev, k } = bootLuo();
    proc.nofile = proc.openFds.length + 3 + 1;
    createSession(proc, dev, 'fits');
    expect(errnoOf(() => createSession(proc, dev, 'does-not-fit'))).toBe('EMFILE');
    expect(k.luo.sessions.outgoing.map((x) => x.name)).toEqual(['fits']);
    proc.nofile = 1024;
    createSession(proc, dev, 'does-not-fit');
  });
});

describe('incoming sessions (after a kexec)', () => {
  it('PRESERVE_FD on an incoming session is EINVAL; session and retrieved fds are close-on-exec', () => {
    const { k: k1, proc, dev, plugin } = bootLuo();
    const s = createSession(proc, dev, 'incoming');
    preserveFd(proc, s, createTestFile(k1, proc, enc('in')), 1);
    const k2 = k1.kexec({ cmdline: CMDLINE, plugins: [plugin] });
    const p = k2.spawn('vmm');
    const d = openLuo(p);
    const si = retrieveSession(p, d, 'incoming');
    expect(p.isCloexec(si)).toBe(true);
    const fd = retrieveFd(p, si, 1);
    expect(p.isCloexec(fd)).toBe(true);
    expect(getName(p, si)).toBe('incoming');
    const other = createTestFile(k2, p, enc('other'));
    expect(errnoOf(() => preserveFd(p, si, other, 2))).toBe('EINVAL');
    expect(errnoOf(() => preserveFd(p, si, fd, 2))).toBe('EINVAL');
    finishSession(p, si);
    expect(errnoOf(() => preserveFd(p, si, other, 2))).toBe('EINVAL');
  });
});
