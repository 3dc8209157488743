/**
 * Sessions and files across a kexec: upstream luo_kexec_simple.c, luo_multi_session.c and
 * the stress tests, as two-stage tests (stage 1 in k1, kexec, stage 2 in k2) in one test.
 * Nothing but memory crosses: every check in k2 is against bytes k1 wrote.
 */
import { describe, expect, it } from 'vitest';
import { abi, KernelDeadError, type Kernel } from '@liveupdate/runtime';
import {
  createSession, ensureNofile, errnoOf, finishSession, getName, openLuo, preserveFd, retrieveFd, retrieveSession,
} from './support/client.js';
import { bootLuo, CMDLINE, nextKernel, dec, enc, pattern } from './support/harness.js';
import { createTestFile, readTestFile, type TestFilePlugin } from './support/testfile.js';

const { uapi } = abi;

function kexec(k: Kernel, plugin: TestFilePlugin): Kernel {
  return k.kexec({ cmdline: CMDLINE, plugins: [plugin], release: '7.2.0' });
}

describe('luo_kexec_simple: one file across a kexec', () => {
  it('restores the content; retrieve rules; FINISH and close', () => {
    // ---- stage 1 ----
    const { k: k1, proc, dev, plugin } = bootLuo();
    expect(k1.luo.liveupdateNum).toBe(1);
    const s = createSession(proc, dev, 'test-session');
    const data = pattern(42, 3 * 4096 + 17);
    const f = createTestFile(k1, proc, data);
    preserveFd(proc, s, f, 0x1234);
    proc.close(f);
    const k2 = kexec(k1, plugin);

    // k1 is dead: every call on it throws.
    expect(k1.isDead).toBe(true);
    expect(() => proc.ioctl(s, uapi.LIVEUPDATE_SESSION_GET_NAME, new Uint8Array(72))).toThrow(KernelDeadError);
    expect(() => k1.spawn('late')).toThrow(KernelDeadError);
    expect(plugin.handlerOf(k1).callsOf('freeze')).toHaveLength(1);
    expect(plugin.handlerOf(k1).callsOf('unpreserve')).toHaveLength(0);

    // ---- stage 2 ----
    expect(k2.luo.liveupdateNum).toBe(2);
    expect(k2.isKhoBoot).toBe(true);
    const p = k2.spawn('vmm');
    const d = openLuo(p);
    expect(errnoOf(() => retrieveSession(p, d, 'no-such-session'))).toBe('ENOENT');
    const si = retrieveSession(p, d, 'test-session');
    expect(errnoOf(() => retrieveSession(p, d, 'test-session'))).toBe('EINVAL');
    expect(getName(p, si)).toBe('test-session');

    const fd1 = retrieveFd(p, si, 0x1234);
    expect(readTestFile(k2, p, fd1)).toEqual(data);
    // Idempotent: a new fd to the same open file; the handler ran once.
    const fd2 = retrieveFd(p, si, 0x1234);
    expect(fd2).not.toBe(fd1);
    expect(p.file(fd2, 't')).toBe(p.file(fd1, 't'));
    const h2 = plugin.handlerOf(k2);
    expect(h2.callsOf('retrieve')).toHaveLength(1);
    expect(errnoOf(() => retrieveFd(p, si, 0x9999))).toBe('ENOENT');

    // The new kernel's file lives in new-kernel objects.
    expect(p.file(fd1, 't').kernelId).toBe(k2.id);

    finishSession(p, si);
    expect(h2.callsOf('finish')).toEqual([{ op: 'finish', session: 'test-session', token: 0x1234n, retrieveStatus: 1 }]);
    // After FINISH LUO no longer tracks the file; it stays usable.
    expect(errnoOf(() => retrieveFd(p, si, 0x1234))).toBe('ENOENT');
    expect(readTestFile(k2, p, fd2)).toEqual(data);
    finishSession(p, si); // a second FINISH on an empty session succeeds
    p.close(si);
    expect(errnoOf(() => retrieveSession(p, d, 'test-session'))).toBe('ENOENT');
    // Everything handed over was either restored or released.
    expect(k2.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
    expect(k2.machine.memory.poisonReads).toBe(0);
  });

  it('k2 deserializes lazily: nothing is retrieved before the first open', () => {
    const { k: k1, proc, dev, plugin } = bootLuo();
    const s = createSession(proc, dev, 'lazy');
    preserveFd(proc, s, createTestFile(k1, proc, enc('lazy')), 1);
    const k2 = kexec(k1, plugin);
    expect(k2.luo.sessions.incoming).toHaveLength(0);
    const leakedBefore = k2.khoIn?.leaked().blocks ?? 0;
    const p = k2.spawn('vmm');
    openLuo(p);
    expect(k2.luo.sessions.incoming.map((x) => x.name)).toEqual(['lazy']);
    // The session block was restored and freed at deserialize.
    expect(k2.khoIn?.leaked().blocks).toBe(leakedBefore - 1);
  });

  it('closing a retrieved session without FINISH finishes it; retrieved fds stay usable', () => {
    const { k: k1, proc, dev, plugin } = bootLuo();
    const s = createSession(proc, dev, 'close-finishes');
    preserveFd(proc, s, createTestFile(k1, proc, enc('kept')), 1);
    preserveFd(proc, s, createTestFile(k1, proc, pattern(2, 9000)), 2);
    const { k2, p, d } = nextKernel(k1, plugin);
    const si = retrieveSession(p, d, 'close-finishes');
    const fd = retrieveFd(p, si, 1);
    p.close(si);
    const h2 = plugin.handlerOf(k2);
    expect(h2.callsOf('finish').map((c) => [c.token, c.retrieveStatus])).toEqual([[2n, 0], [1n, 1]]);
    expect(dec(readTestFile(k2, p, fd))).toBe('kept');
    expect(errnoOf(() => retrieveSession(p, d, 'close-finishes'))).toBe('ENOENT');
    expect(k2.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
  });

  it('a session name that is not UTF-8 crosses as bytes', () => {
    const { k: k1, proc, dev, plugin } = bootLuo();
    const name = new Uint8Array(64);
    name.fill(0xff, 0, 30);
    name[30] = 0x41;
    const arg = uapi.createSessionArgs.encode({ size: 72, fd: 0, name });
    proc.ioctl(dev, uapi.LIVEUPDATE_IOCTL_CREATE_SESSION, arg);
    preserveFd(proc, uapi.createSessionArgs.read(arg, 'fd'), createTestFile(k1, proc, enc('bytes')), 5);
    const { k2, p, d } = nextKernel(k1, plugin);
    const r = uapi.retrieveSessionArgs.encode({ size: 72, fd: 0, name });
    p.ioctl(d, uapi.LIVEUPDATE_IOCTL_RETRIEVE_SESSION, r);
    const si = uapi.retrieveSessionArgs.read(r, 'fd');
    expect(dec(readTestFile(k2, p, retrieveFd(p, si, 5)))).toBe('bytes');
    const g = uapi.getNameArgs.encode({ size: 72, reserved: 0 });
    p.ioctl(si, uapi.LIVEUPDATE_SESSION_GET_NAME, g);
    expect(uapi.getNameArgs.read(g, 'name')).toEqual(name);
  });

  it('a kexec with no sessions hands over an empty LUO; liveupdate_num still counts', () => {
    const { k: k1, plugin } = bootLuo();
    const k2 = kexec(k1, plugin);
    const p = k2.spawn('vmm');
    openLuo(p);
    expect(k2.luo.sessions.incoming).toHaveLength(0);
    expect(k2.luo.liveupdateNum).toBe(2);
    expect(k2.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
  });
});

describe('luo_multi_session: several sessions across a kexec', () => {
  const layout: ReadonlyArray<{ name: string; files: ReadonlyArray<{ token: bigint; size: number }> }> = [
    { name: 'multi-test-empty-1', files: [] },
    { name: 'multi-test-files-1', files: [{ token: 0x1001n, size: 24 }] },
    { name: 'multi-test-empty-2', files: [] },
    { name: 'multi-test-files-2', files: [{ token: 0x2002n, size: 31 }, { token: 0x3003n, size: 32 }] },
    { name: 'multi-test-mixed', files: [{ token: 0n, size: 0 }, { token: 1n, size: 4096 }, { token: 2n, size: 4097 }, { token: 3n, size: 20000 }] },
  ];
  const bytesOf = (si: number, token: bigint, size: number): Uint8Array => pattern(si * 1000 + Number(token), size);

  it('restores every session by name with its files; empty sessions too', () => {
    const { k: k1, proc, dev, plugin } = bootLuo();
    layout.forEach((l, si) => {
      const s = createSession(proc, dev, l.name);
      for (const f of l.files) {
        const fd = createTestFile(k1, proc, bytesOf(si, f.token, f.size));
        preserveFd(proc, s, fd, f.token);
        proc.close(fd);
      }
    });
    const { k2, p, d } = nextKernel(k1, plugin);
    expect(k2.luo.sessions.incoming.map((s) => s.name)).toEqual(layout.map((l) => l.name));
    // Retrieve in a different order than created.
    const order = [3, 0, 4, 1, 2];
    for (const si of order) {
      const l = layout[si]!;
      const sfd = retrieveSession(p, d, l.name);
      expect(getName(p, sfd)).toBe(l.name);
      for (const f of [...l.files].reverse()) {
        const fd = retrieveFd(p, sfd, f.token);
        expect(readTestFile(k2, p, fd)).toEqual(bytesOf(si, f.token, f.size));
        p.close(fd);
      }
      finishSession(p, sfd);
      p.close(sfd);
    }
    expect(k2.luo.sessions.incoming).toHaveLength(0);
    expect(k2.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
  });

  it('an outgoing session may reuse an incoming name; a retrieved file is EBUSY to preserve until FINISH', () => {
    const { k: k1, proc, dev, plugin } = bootLuo();
    const s = createSession(proc, dev, 'reuse');
    preserveFd(proc, s, createTestFile(k1, proc, enc('first life')), 1);
    const { k2, p, d } = nextKernel(k1, plugin);
    // Before retrieving the incoming 'reuse', create an outgoing 'reuse'.
    const out = createSession(p, d, 'reuse');
    expect(errnoOf(() => createSession(p, d, 'reuse'))).toBe('EEXIST');
    const si = retrieveSession(p, d, 'reuse');
    expect(si).not.toBe(out);
    expect(getName(p, si)).toBe('reuse');
    const fd = retrieveFd(p, si, 1);
    expect(errnoOf(() => preserveFd(p, out, fd, 1))).toBe('EBUSY');
    expect(plugin.handlerOf(k2).callsOf('preserve')).toHaveLength(0);
    finishSession(p, si);
    preserveFd(p, out, fd, 1);
    expect(plugin.handlerOf(k2).callsOf('preserve')).toHaveLength(1);
    // The incoming session (finished, still open) and the outgoing one coexist.
    expect(k2.luo.sessions.incoming.map((x) => x.name)).toEqual(['reuse']);
    expect(k2.luo.sessions.outgoing.map((x) => x.name)).toEqual(['reuse']);
  });

  it('unretrieved sessions are left alone; unretrieved files of a finished session are released', () => {
    const { k: k1, proc, dev, plugin } = bootLuo();
    for (const name of ['a', 'b']) {
      const s = createSession(proc, dev, name);
      preserveFd(proc, s, createTestFile(k1, proc, pattern(name.charCodeAt(0), 8192)), 1);
      preserveFd(proc, s, createTestFile(k1, proc, pattern(name.charCodeAt(0) + 1, 100)), 2);
    }
    const { k2, p, d } = nextKernel(k1, plugin);
    const leaked0 = k2.khoIn?.leaked().blocks ?? 0;
    const sa = retrieveSession(p, d, 'a');
    finishSession(p, sa); // nothing retrieved: finish releases both files and the file block
    const h2 = plugin.handlerOf(k2);
    expect(h2.callsOf('retrieve')).toHaveLength(0);
    expect(h2.callsOf('finish').map((c) => c.retrieveStatus)).toEqual([0, 0]);
    // file 1: 2 pages + header, file 2: 1 page + header, 1 file block
    expect(k2.khoIn?.leaked().blocks).toBe(leaked0 - 6);
    // Session 'b' was never retrieved: its state stays reserved for this boot.
    expect(k2.khoIn?.leaked().blocks).toBe(6);
  });
});

describe('stress: many sessions and many files across a kexec', () => {
  it('2000 sessions with one file each, and 500 files in one session, all restored', { timeout: 120_000 }, () => {
    const { k: k1, proc, dev, plugin } = bootLuo();
    ensureNofile(proc, 2000 + 600);
    for (let i = 0; i < 2000; i++) {
      const s = createSession(proc, dev, `stress-session-${i}`);
      const fd = createTestFile(k1, proc, pattern(i, 16 + (i % 64)));
      preserveFd(proc, s, fd, i);
      proc.close(fd);
    }
    const big = createSession(proc, dev, 'stress-files');
    for (let i = 0; i < 500; i++) {
      const fd = createTestFile(k1, proc, pattern(100000 + i, i % 3 === 0 ? 0 : 40 + i));
      preserveFd(proc, big, fd, 0xf000 + i);
      proc.close(fd);
    }
    expect(k1.luo.sessions.outBlocks.nblocks).toBe(Math.ceil(2001 / abi.luo.LUO_SESSIONS_PER_BLOCK));

    const k2 = kexec(k1, plugin);
    const p = k2.spawn('vmm');
    ensureNofile(p, 2000 + 600);
    const d = openLuo(p);
    expect(k2.luo.sessions.incoming).toHaveLength(2001);
    for (let i = 0; i < 2000; i++) {
      const sfd = retrieveSession(p, d, `stress-session-${i}`);
      const fd = retrieveFd(p, sfd, i);
      expect(readTestFile(k2, p, fd)).toEqual(pattern(i, 16 + (i % 64)));
      p.close(fd);
      finishSession(p, sfd);
      p.close(sfd);
    }
    const sb = retrieveSession(p, d, 'stress-files');
    for (let i = 499; i >= 0; i--) {
      const fd = retrieveFd(p, sb, 0xf000 + i);
      expect(readTestFile(k2, p, fd)).toEqual(pattern(100000 + i, i % 3 === 0 ? 0 : 40 + i));
      p.close(fd);
    }
    finishSession(p, sb);
    p.close(sb);
    expect(k2.luo.sessions.incoming).toHaveLength(0);
    expect(k2.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
  });
});

describe('chained kexecs', () => {
  it('k1 → k2 → k3: a retrieved file is re-preserved after FINISH; liveupdate_num 1, 2, 3', () => {
    const { k: k1, proc, dev, plugin } = bootLuo();
    const data = pattern(7, 10_000);
    const s1 = createSession(proc, dev, 'vm');
    const f1 = createTestFile(k1, proc, data);
    preserveFd(proc, s1, f1, 77);
    expect(k1.luo.liveupdateNum).toBe(1);

    const k2 = kexec(k1, plugin);
    expect(k2.luo.liveupdateNum).toBe(2);
    const p2 = k2.spawn('vmm');
    const d2 = openLuo(p2);
    const si2 = retrieveSession(p2, d2, 'vm');
    const f2 = retrieveFd(p2, si2, 77);
    expect(readTestFile(k2, p2, f2)).toEqual(data);
    const so2 = createSession(p2, d2, 'vm');
    expect(errnoOf(() => preserveFd(p2, so2, f2, 77))).toBe('EBUSY');
    finishSession(p2, si2);
    p2.close(si2);
    preserveFd(p2, so2, f2, 77);
    // The new kernel's copy of the pages is what gets preserved now.
    const pfns2 = (p2.file(f2, 't').privateData as { pfns: number[] }).pfns;
    for (const pfn of pfns2) expect(k2.khoOut?.isPreserved(pfn, 0)).toBe(true);

    const k3 = kexec(k2, plugin);
    expect(k2.isDead).toBe(true);
    expect(k3.luo.liveupdateNum).toBe(3);
    expect(k3.kexecCount).toBe(2);
    const p3 = k3.spawn('vmm');
    const d3 = openLuo(p3);
    const si3 = retrieveSession(p3, d3, 'vm');
    const f3 = retrieveFd(p3, si3, 77);
    expect(readTestFile(k3, p3, f3)).toEqual(data);
    finishSession(p3, si3);
    expect(k3.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
    expect(k3.machine.memory.poisonReads).toBe(0);
  });
});
