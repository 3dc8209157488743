/**
 * Freeze failures on the reboot path (luo_session_serialize / luo_file_freeze): the kexec is
 * refused with the handler's error after a full rollback, the old kernel keeps running with
 * every session intact, and a retry succeeds once the fault is gone. Faults are injected two
 * ways: by the handler itself and through the LUO hooks.
 */
import { describe, expect, it } from 'vitest';
import { ErrnoError, type FileOpEvent, type Kernel, type KhoBlockSet } from '@liveupdate/runtime';
import {
  createSession, errnoOf, finishSession, getName, openLuo, preserveFd, retrieveFd, retrieveSession,
} from './support/client.js';
import { bootLuo, CMDLINE, outgoingLuoPhys, pattern, readLuoGraph, survivorSnapshot, type LuoWorld } from './support/harness.js';
import { createTestFile, readTestFile, type TestFilePlugin } from './support/testfile.js';

interface Case {
  readonly title: string;
  /** Files per session. */
  readonly layout: readonly number[];
  /** Global index (creation order) of the file whose freeze fails. */
  readonly failAt: number;
}

const CASES: readonly Case[] = [
  { title: 'a file in the middle of one session', layout: [5], failAt: 2 },
  { title: 'the very first file', layout: [5], failAt: 0 },
  { title: 'a file in the middle of the 2nd of 3 sessions', layout: [2, 3, 2], failAt: 3 },
  { title: 'the first file of the 2nd of 3 sessions', layout: [2, 3, 2], failAt: 2 },
  { title: 'the last file of the last session', layout: [2, 3, 2], failAt: 6 },
  { title: 'a file after empty sessions', layout: [0, 2, 0, 2], failAt: 3 },
];

const token = (s: number, f: number): bigint => BigInt(s * 100 + f);
const sizeOf = (s: number, f: number): number => 1 + ((s * 7 + f * 3) % 4) * 3000;

/** Stage 1: the layout's sessions and files; returns session fds and the files in creation order. */
function populate(w: LuoWorld, layout: readonly number[]): { sessions: number[]; files: Array<{ s: number; f: number; token: bigint }> } {
  const sessions: number[] = [];
  const files: Array<{ s: number; f: number; token: bigint }> = [];
  layout.forEach((n, s) => {
    const sfd = createSession(w.proc, w.dev, `session-${s}`);
    sessions.push(sfd);
    for (let f = 0; f < n; f++) {
      const fd = createTestFile(w.k, w.proc, pattern(s * 100 + f, sizeOf(s, f)));
      preserveFd(w.proc, sfd, fd, token(s, f));
      w.proc.close(fd);
      files.push({ s, f, token: token(s, f) });
    }
  });
  return { sessions, files };
}

/** Rollback order: the failing session's files before the failure (forward), then earlier sessions in reverse, each forward. */
function expectedUnfreeze(layout: readonly number[], failAt: number): bigint[] {
  let fs = 0;
  let ff = failAt;
  while (ff >= (layout[fs] ?? 0)) { ff -= layout[fs] ?? 0; fs++; }
  const out: bigint[] = [];
  for (let f = 0; f < ff; f++) out.push(token(fs, f));
  for (let s = fs - 1; s >= 0; s--) for (let f = 0; f < (layout[s] ?? 0); f++) out.push(token(s, f));
  return out;
}

function catchErr(fn: () => unknown): unknown {
  try { fn(); } catch (e) { return e; }
  throw new Error('expected a throw');
}

/** Everything the failed kexec must have left as it was. */
function expectRolledBack(w: LuoWorld, sessions: number[], layout: readonly number[], before: ReturnType<typeof survivorSnapshot>, bootCount: number): void {
  const { k, machine, proc } = w;
  expect(k.isDead).toBe(false);
  expect(machine.bootCount).toBe(bootCount);
  expect(survivorSnapshot(k)).toEqual(before);
  // Nothing was published: sessions_pa still 0, every block entry zeroed.
  const g = readLuoGraph(machine.memory, outgoingLuoPhys(k));
  expect(g.ser.sessions_pa).toBe(0n);
  const blockCounts = (set: KhoBlockSet): bigint[] => Array.from({ length: set.nblocks },
    // entry 0 of block i sits 16 bytes into the block; its header count 8 bytes in.
    (_, i) => machine.memory.readU64((set.entryPhys(i * set.countPerBlock) as number) - 8));
  expect(blockCounts(k.luo.sessions.outBlocks).every((n) => n === 0n)).toBe(true);
  for (const s of k.luo.sessions.outgoing) expect(blockCounts(s.fileSet.blocks).every((n) => n === 0n)).toBe(true);
  expect(k.luo.sessions.serialized).toBe(false);
  // Sessions are still usable and files still readable through LUO's own references.
  sessions.forEach((sfd, s) => expect(getName(proc, sfd)).toBe(`session-${s}`));
  expect(k.luo.sessions.outgoing.map((x) => x.fileSet.count)).toEqual([...layout]);
}

/** Retry after the fault is gone: kexec succeeds and every file comes back intact. */
function retryAndVerify(k1: Kernel, plugin: TestFilePlugin, layout: readonly number[]): Kernel {
  const k2 = k1.kexec({ cmdline: CMDLINE, plugins: [plugin] });
  expect(k1.isDead).toBe(true);
  const p = k2.spawn('vmm');
  const d = openLuo(p);
  layout.forEach((n, s) => {
    const sfd = retrieveSession(p, d, `session-${s}`);
    for (let f = 0; f < n; f++) {
      const fd = retrieveFd(p, sfd, token(s, f));
      expect(readTestFile(k2, p, fd)).toEqual(pattern(s * 100 + f, sizeOf(s, f)));
    }
    finishSession(p, sfd);
  });
  expect(k2.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
  return k2;
}

describe('freeze failure in the handler', () => {
  for (const c of CASES) {
    it(`rolls back and retries: ${c.title}`, () => {
      const w = bootLuo({ testfile: { failFreeze: ({ index }) => (index === c.failAt ? 'EAGAIN' : undefined) } });
      const { k: k1, plugin, machine } = w;
      const { sessions, files } = populate(w, c.layout);
      const before = survivorSnapshot(k1);
      const bootCount = machine.bootCount;
      const rebootPhases: string[] = [];
      k1.luo.hooks.reboot.tap('test', (e) => { rebootPhases.push(e.phase); });

      const err = catchErr(() => k1.kexec({ cmdline: CMDLINE, plugins: [plugin] }));
      expect(err).toBeInstanceOf(ErrnoError);
      expect((err as ErrnoError).code).toBe('EAGAIN');
      expect(rebootPhases).toEqual(['freeze', 'rollback']);

      const h = plugin.handlerOf(k1);
      // Frozen: every file up to and including the failing one, in creation order.
      expect(h.callsOf('freeze').map((x) => x.token)).toEqual(files.slice(0, c.failAt + 1).map((x) => x.token));
      // Unfrozen: each file frozen before the failure, exactly once; the failing one and later ones never.
      const unfrozen = h.callsOf('unfreeze').map((x) => x.token);
      expect(unfrozen).toEqual(expectedUnfreeze(c.layout, c.failAt));
      expect(new Set(unfrozen).size).toBe(c.failAt);
      expect(h.callsOf('unpreserve')).toHaveLength(0);
      expectRolledBack(w, sessions, c.layout, before, bootCount);

      // Fix the handler and retry.
      plugin.options.failFreeze = undefined;
      h.calls.length = 0;
      retryAndVerify(k1, plugin, c.layout);
      expect(h.callsOf('freeze')).toHaveLength(files.length);
      expect(h.callsOf('unfreeze')).toHaveLength(0);
    });
  }

  it('the old kernel really keeps running: new sessions, new files, then a successful kexec', () => {
    const w = bootLuo({ testfile: { failFreeze: ({ index }) => (index === 1 ? 'ENOMEM' : undefined) } });
    const { k: k1, proc, dev, plugin } = w;
    const { sessions } = populate(w, [3]);
    expect(errnoOf(() => k1.kexec({ cmdline: CMDLINE, plugins: [plugin] }))).toBe('ENOMEM');
    // A second failing attempt is just as harmless.
    plugin.options.failFreeze = ({ index }) => (index === 4 ? 'ENOMEM' : undefined);
    expect(errnoOf(() => k1.kexec({ cmdline: CMDLINE, plugins: [plugin] }))).toBe('ENOMEM');
    const extra = createSession(proc, dev, 'session-1');
    const fd = createTestFile(k1, proc, pattern(100, sizeOf(1, 0)));
    preserveFd(proc, extra, fd, token(1, 0));
    preserveFd(proc, sessions[0]!, createTestFile(k1, proc, pattern(3, sizeOf(0, 3))), token(0, 3));
    plugin.options.failFreeze = undefined;
    retryAndVerify(k1, plugin, [4, 1]);
  });
});

describe('freeze failure injected through the hooks', () => {
  for (const c of CASES) {
    it(`rolls back and retries: ${c.title}`, () => {
      const w = bootLuo();
      const { k: k1, plugin, machine } = w;
      const { sessions, files } = populate(w, c.layout);
      const before = survivorSnapshot(k1);
      const bootCount = machine.bootCount;
      const injected = new ErrnoError('EIO', 'fault-injection', `freeze #${c.failAt}`);
      let armed = true;
      let seen = 0;
      k1.luo.hooks.fileOp.tap('fault-injection', (ev: FileOpEvent) => {
        if (armed && ev.op === 'freeze' && seen++ === c.failAt) throw injected;
      });
      const done: Array<[string, bigint, ErrnoError | null]> = [];
      k1.luo.hooks.fileOpDone.tap('trace', (ev, e) => { done.push([ev.op, ev.token, e]); });

      const err = catchErr(() => k1.kexec({ cmdline: CMDLINE, plugins: [plugin] }));
      expect(err).toBe(injected);
      const failing = files[c.failAt]!.token;
      expect(done.find(([op, , e]) => op === 'freeze' && e !== null)).toEqual(['freeze', failing, injected]);

      const h = plugin.handlerOf(k1);
      // The hook fails the op before the handler runs: the handler saw only the earlier freezes.
      expect(h.callsOf('freeze').map((x) => x.token)).toEqual(files.slice(0, c.failAt).map((x) => x.token));
      expect(h.callsOf('unfreeze').map((x) => x.token)).toEqual(expectedUnfreeze(c.layout, c.failAt));
      expect(h.callsOf('unpreserve')).toHaveLength(0);
      expectRolledBack(w, sessions, c.layout, before, bootCount);

      armed = false;
      h.calls.length = 0;
      retryAndVerify(k1, plugin, c.layout);
      expect(h.callsOf('freeze')).toHaveLength(files.length);
    });
  }
});
