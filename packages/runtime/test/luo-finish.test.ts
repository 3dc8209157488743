/**
 * FINISH (luo_file_finish): can_finish on every file first, all-or-nothing; then finish newest
 * first, with unretrieved files released by their handler. RETRIEVE_FD errors are sticky.
 */
import { describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '@liveupdate/hw';
import { boot, type Kernel } from '@liveupdate/runtime';
import {
  createSession, errnoOf, finishSession, openLuo, preserveFd, retrieveFd, retrieveSession,
} from './support/client.js';
import { bootLuo, CMDLINE, nextKernel, outgoingLuoPhys, pattern, readLuoGraph } from './support/harness.js';
import { createTestFile, readTestFile, testfileSer, TESTFILE_COMPATIBLE, type TestFilePlugin } from './support/testfile.js';

const kexec = (k: Kernel, plugin: TestFilePlugin): Kernel => k.kexec({ cmdline: CMDLINE, plugins: [plugin] });

describe('FINISH', () => {
  it('is all-or-nothing on can_finish; then finishes newest first and releases unretrieved files', () => {
    let allow = false;
    const { k: k1, proc, dev, plugin } = bootLuo({ testfile: { canFinish: (a) => allow || a.token !== 2n } });
    const sizes = [100, 5000, 2 * PAGE_SIZE + 1, PAGE_SIZE];
    const s = createSession(proc, dev, 'finish');
    sizes.forEach((n, i) => preserveFd(proc, s, createTestFile(k1, proc, pattern(i, n)), i + 1));

    const { k2, p, d } = nextKernel(k1, plugin);
    const si = retrieveSession(p, d, 'finish');
    const fd1 = retrieveFd(p, si, 1);
    const fd2 = retrieveFd(p, si, 2);
    const h = plugin.handlerOf(k2);
    const leaked0 = k2.khoIn?.leaked().blocks ?? 0;

    expect(errnoOf(() => finishSession(p, si))).toBe('EBUSY');
    expect(h.callsOf('finish')).toHaveLength(0);
    // can_finish runs in preservation order and stops at the first "no".
    expect(h.callsOf('canFinish').map((c) => c.token)).toEqual([1n, 2n]);
    expect(k2.khoIn?.leaked().blocks).toBe(leaked0);
    // Nothing changed: the session still answers (files 3 and 4 are left unretrieved on purpose).
    expect(errnoOf(() => retrieveFd(p, si, 1))).toBe(0);

    allow = true;
    finishSession(p, si);
    expect(h.callsOf('finish').map((c) => [c.token, c.retrieveStatus])).toEqual([[4n, 0], [3n, 0], [2n, 1], [1n, 1]]);
    // Released: file 3 (3 pages + header), file 4 (1 page + header), the file block.
    expect(k2.khoIn?.leaked().blocks).toBe(leaked0 - (4 + 2 + 1));
    expect(k2.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
    expect(readTestFile(k2, p, fd1)).toEqual(pattern(0, 100));
    expect(readTestFile(k2, p, fd2)).toEqual(pattern(1, 5000));
    expect(errnoOf(() => retrieveFd(p, si, 3))).toBe('ENOENT');
    p.close(si);
    expect(errnoOf(() => retrieveSession(p, d, 'finish'))).toBe('ENOENT');
  });

  it('closing a retrieved session whose FINISH is refused leaves the session (retrieved, unreachable) until the next update', () => {
    const { k: k1, proc, dev, plugin } = bootLuo({ testfile: { canFinish: () => false } });
    const s = createSession(proc, dev, 'stuck');
    preserveFd(proc, s, createTestFile(k1, proc, pattern(1, 10)), 1);
    const { k2, p, d } = nextKernel(k1, plugin);
    const si = retrieveSession(p, d, 'stuck');
    const fd = retrieveFd(p, si, 1);
    p.close(si);
    expect(plugin.handlerOf(k2).callsOf('finish')).toHaveLength(0);
    expect(k2.dmesg.grep(/stuck.*finish on close failed/)).toHaveLength(1);
    expect(errnoOf(() => retrieveSession(p, d, 'stuck'))).toBe('EINVAL');
    // The file is still tracked: it cannot be preserved into a new session.
    const out = createSession(p, d, 'next');
    expect(errnoOf(() => preserveFd(p, out, fd, 1))).toBe('EBUSY');
  });

  it('an empty incoming session finishes at once', () => {
    const { k: k1, proc, dev, plugin } = bootLuo();
    createSession(proc, dev, 'empty');
    const k2 = kexec(k1, plugin);
    const p = k2.spawn('vmm');
    const si = retrieveSession(p, openLuo(p), 'empty');
    finishSession(p, si);
    finishSession(p, si);
    expect(plugin.handlerOf(k2).calls).toHaveLength(0);
  });
});

describe('sticky RETRIEVE_FD errors', () => {
  /** Stage 1 with three files, then kexecJump; returns the file entries as the next kernel will read them. */
  function stage1(): { machine: ReturnType<typeof bootLuo>['machine']; plugin: TestFilePlugin; entries: Array<{ data: bigint; token: bigint }> } {
    const { machine, k: k1, proc, dev, plugin } = bootLuo();
    const s = createSession(proc, dev, 'sticky');
    for (let i = 1; i <= 3; i++) preserveFd(proc, s, createTestFile(k1, proc, pattern(i, 6000)), i);
    const phys = outgoingLuoPhys(k1);
    k1.kexecJump(CMDLINE);
    const g = readLuoGraph(machine.memory, phys);
    const entries = g.sessions[0]!.fileEntries;
    expect(entries.map((e) => e.compatible)).toEqual([TESTFILE_COMPATIBLE, TESTFILE_COMPATIBLE, TESTFILE_COMPATIBLE]);
    return { machine, plugin, entries };
  }

  it('a corrupted header: the same errno twice, the handler called once; other files unaffected', () => {
    const { machine, plugin, entries } = stage1();
    // Corrupt file 2's header magic in the handed-over page.
    machine.memory.writeU64(Number(entries[1]!.data) + testfileSer.offsets.magic, 0xdeadbeefn);
    const k2 = boot(machine, { plugins: [plugin] });
    const p = k2.spawn('vmm');
    const si = retrieveSession(p, openLuo(p), 'sticky');
    expect(errnoOf(() => retrieveFd(p, si, 2))).toBe('EINVAL');
    expect(errnoOf(() => retrieveFd(p, si, 2))).toBe('EINVAL');
    const h = plugin.handlerOf(k2);
    expect(h.callsOf('retrieve').map((c) => c.token)).toEqual([2n]);
    expect(readTestFile(k2, p, retrieveFd(p, si, 1))).toEqual(pattern(1, 6000));
    expect(readTestFile(k2, p, retrieveFd(p, si, 3))).toEqual(pattern(3, 6000));
    // FINISH: the failed file's finish sees its saved error and does nothing.
    finishSession(p, si);
    expect(h.callsOf('finish').map((c) => [c.token, c.retrieveStatus])).toEqual([[3n, 1], [2n, -22], [1n, 1]]);
    // Its two content pages stay reserved (nobody can know them any more): a leak, not a crash.
    expect(k2.khoIn?.leaked()).toEqual({ blocks: 2, pages: 2 });
  });

  it('a content page that cannot be restored: EIO, sticky, handler called once', () => {
    const { machine, plugin, entries } = stage1();
    // Point file 3's first page at a page that was never preserved.
    machine.memory.writeU64(Number(entries[2]!.data) + testfileSer.size, 5n);
    const k2 = boot(machine, { plugins: [plugin] });
    const p = k2.spawn('vmm');
    const si = retrieveSession(p, openLuo(p), 'sticky');
    expect(errnoOf(() => retrieveFd(p, si, 3))).toBe('EIO');
    expect(errnoOf(() => retrieveFd(p, si, 3))).toBe('EIO');
    expect(plugin.handlerOf(k2).callsOf('retrieve')).toHaveLength(1);
    finishSession(p, si);
    // file 3's real first page was never referenced again; everything else is accounted for.
    expect(k2.khoIn?.leaked()).toEqual({ blocks: 1, pages: 1 });
  });
});
