/**
 * File-Lifecycle-Bound objects (kernel/liveupdate/luo_flb.c) and handler registration
 * (liveupdate_register_file_handler / liveupdate_register_flb): the FLB is preserved with
 * the first dependent file, unpreserved with the last, serialized with its file count,
 * retrieved lazily after the kexec and finished once, after the last dependent file.
 */
import { describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '@liveupdate/hw';
import { abi, boot, type Kernel, type LiveupdateFileHandler, type LiveupdateFileOps } from '@liveupdate/runtime';
import { createSession, errnoOf, finishSession, openLuo, preserveFd, retrieveFd, retrieveSession } from './support/client.js';
import { bootLuo, CMDLINE, outgoingLuoPhys, pattern, readLuoGraph } from './support/harness.js';
import { createTestFile, TEST_FLB_COMPATIBLE, TestFileHandler, TestFlb, testFlbSer, TEST_FLB_MAGIC } from './support/testfile.js';

const { luo } = abi;

describe('FLB lifecycle in the outgoing kernel', () => {
  it('preserve runs once for many files; unpreserve when the last dependent file goes', () => {
    const { k, proc, dev, plugin } = bootLuo({ testfile: { flbs: 1 } });
    const flb = plugin.handlerOf(k).flbs[0]!;
    expect(flb.compatible).toBe('liveupdate-test-flb-v0');
    const a = createSession(proc, dev, 'a');
    const b = createSession(proc, dev, 'b');
    for (let i = 0; i < 2; i++) preserveFd(proc, a, createTestFile(k, proc, pattern(i, 10)), i);
    for (let i = 0; i < 3; i++) preserveFd(proc, b, createTestFile(k, proc, pattern(10 + i, 10)), i);
    expect(flb.callsOf('preserve')).toHaveLength(1);
    expect(k.luo.flbs.describe()).toEqual([{ compatible: 'liveupdate-test-flb-v0', outgoing: 5, incoming: 0, finished: false }]);
    const obj = k.luo.flbs.getOutgoing(flb) as { phys: number };
    expect(k.khoOut?.isPreserved(obj.phys / PAGE_SIZE, 0)).toBe(true);

    proc.close(a);
    expect(flb.callsOf('unpreserve')).toHaveLength(0);
    expect(k.luo.flbs.describe()[0]?.outgoing).toBe(3);
    proc.close(b);
    expect(flb.callsOf('unpreserve')).toHaveLength(1);
    expect(k.luo.flbs.describe()[0]?.outgoing).toBe(0);
    expect(k.luo.flbs.getOutgoing(flb)).toBeUndefined();
    expect(k.khoOut?.isPreserved(obj.phys / PAGE_SIZE, 0)).toBe(false);

    // The next first file preserves it again.
    const c = createSession(proc, dev, 'c');
    preserveFd(proc, c, createTestFile(k, proc, pattern(0, 1)), 0);
    expect(flb.callsOf('preserve')).toHaveLength(2);
  });

  it('a failed file preserve drops the FLB reference it took', () => {
    const { k, proc, dev, plugin } = bootLuo({ testfile: { flbs: 1 } });
    const h = plugin.handlerOf(k);
    const flb = h.flbs[0]!;
    const s = createSession(proc, dev, 's');
    const real = h.ops.preserve;
    // A handler bug (not an ErrnoError) is reported as EIO.
    (h.ops as LiveupdateFileOps<Kernel>).preserve = () => { throw new Error('boom'); };
    expect(errnoOf(() => preserveFd(proc, s, createTestFile(k, proc, pattern(0, 1)), 0))).toBe('EIO');
    (h.ops as LiveupdateFileOps<Kernel>).preserve = real;
    expect(flb.callsOf('preserve')).toHaveLength(1);
    expect(flb.callsOf('unpreserve')).toHaveLength(1);
    expect(k.luo.flbs.describe()[0]?.outgoing).toBe(0);
  });
});

describe('FLB across a kexec', () => {
  it('serializes count = files; retrieved lazily; finished once after the last dependent file', () => {
    const { machine, k: k1, proc, dev, plugin } = bootLuo({ testfile: { flbs: 2 } });
    const [flb0, flb1] = plugin.handlerOf(k1).flbs as [TestFlb, TestFlb];
    const a = createSession(proc, dev, 'a');
    const b = createSession(proc, dev, 'b');
    preserveFd(proc, a, createTestFile(k1, proc, pattern(1, 10)), 1);
    for (let i = 0; i < 2; i++) preserveFd(proc, b, createTestFile(k1, proc, pattern(2 + i, 10)), i);
    const flbData = (k1.luo.flbs.getOutgoing(flb0) as { phys: number }).phys;

    const luoPhys = outgoingLuoPhys(k1);
    k1.kexecJump(CMDLINE);
    // The FLB page, byte for byte: header { pgcnt 1, count 2 } + one entry per FLB in use.
    const ser = luo.luoSer.decode(machine.memory.read(luoPhys, luo.luoSer.size));
    const page = machine.memory.read(Number(ser.flbs_pa), PAGE_SIZE);
    expect(luo.luoFlbHeaderSer.decode(page)).toEqual({ pgcnt: 1n, count: 2n });
    const e0 = luo.luoFlbSer.decode(page, 16);
    const e1 = luo.luoFlbSer.decode(page, 16 + 64);
    expect(e0).toEqual({ name: 'liveupdate-test-flb-v0', data: BigInt(flbData), count: 3n });
    expect(e1.name).toBe('liveupdate-test-flb-v1');
    expect(e1.count).toBe(3n);
    expect(page.subarray(16 + 2 * 64).every((x) => x === 0)).toBe(true);
    expect(flb0.callsOf('unpreserve')).toHaveLength(0);
    void flb1;

    const k2 = boot(machine, { plugins: [plugin] });
    const h2 = plugin.handlerOf(k2);
    const [in0, in1] = h2.flbs as [TestFlb, TestFlb];
    expect(k2.luo.flbs.incomingList).toEqual([
      { name: 'liveupdate-test-flb-v0', data: BigInt(flbData), count: 3 },
      { name: 'liveupdate-test-flb-v1', data: e1.data, count: 3 },
    ]);
    // Lazy: nothing retrieved at boot or at the first open.
    const p = k2.spawn('vmm');
    const d = openLuo(p);
    expect(in0.calls).toEqual([]);
    const obj = k2.luo.flbs.getIncoming(in0) as { generation: number };
    expect(obj.generation).toBe(1);
    expect(k2.luo.flbs.getIncoming(in0)).toBe(obj);
    expect(in0.callsOf('retrieve')).toHaveLength(1);
    k2.luo.flbs.putIncoming(in0);
    k2.luo.flbs.putIncoming(in0);

    const trace: string[] = [];
    k2.luo.hooks.fileOp.tap('trace', (e) => { if (e.op === 'finish') trace.push(`file:${e.session}/${e.token}`); });
    k2.luo.hooks.flbOp.tap('trace', (e) => { trace.push(`flb:${e.op}:${e.compatible}`); });
    const sa = retrieveSession(p, d, 'a');
    retrieveFd(p, sa, 1);
    finishSession(p, sa);
    expect(in0.callsOf('finish')).toHaveLength(0);
    const sb = retrieveSession(p, d, 'b');
    retrieveFd(p, sb, 0);
    // FINISH of b finishes file 1 (unretrieved) then file 0: the FLB finish comes after the last one.
    finishSession(p, sb);
    expect(in0.callsOf('finish')).toHaveLength(1);
    expect(in1.callsOf('finish')).toHaveLength(1);
    // flb1 was never asked for: finish retrieved it first.
    expect(in1.calls.map((c) => c.op)).toEqual(['retrieve', 'finish']);
    // FLBs are dropped in reverse registration order after each file's finish.
    expect(trace).toEqual([
      'file:a/1', 'file:b/1', 'file:b/0',
      'flb:retrieve:liveupdate-test-flb-v1', 'flb:finish:liveupdate-test-flb-v1', 'flb:finish:liveupdate-test-flb-v0',
    ]);
    expect(errnoOf(() => k2.luo.flbs.getIncoming(in0))).toBe('ENODATA');
    expect(k2.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
  });

  it('an FLB the previous kernel did not hand over: ENOENT; a cold boot has no incoming FLB data: ENODATA', () => {
    const { k: k1, plugin, proc, dev } = bootLuo({ testfile: { flbs: 1 } });
    const flb = plugin.handlerOf(k1).flbs[0]!;
    expect(errnoOf(() => k1.luo.flbs.getIncoming(flb))).toBe('ENODATA');
    // Hand over FLB v0 only; k2 also registers a v1 that has no incoming data.
    preserveFd(proc, createSession(proc, dev, 's'), createTestFile(k1, proc, pattern(0, 1)), 0);
    plugin.options.flbs = 2;
    const k2 = k1.kexec({ cmdline: CMDLINE, plugins: [plugin] });
    const [in0, in1] = plugin.handlerOf(k2).flbs as [TestFlb, TestFlb];
    expect(errnoOf(() => k2.luo.flbs.getIncoming(in1))).toBe('ENOENT');
    expect(errnoOf(() => k2.luo.flbs.getIncoming(in0))).toBe(0);
  });

  it('hasIncoming is true exactly where getIncoming finds an object: not on a cold boot, not for an FLB not handed over, not after finish', () => {
    const { k: k1, plugin, proc, dev } = bootLuo({ testfile: { flbs: 1 } });
    const flb = plugin.handlerOf(k1).flbs[0]!;
    expect(k1.luo.flbs.hasIncoming(flb)).toBe(false);
    const s = createSession(proc, dev, 's');
    preserveFd(proc, s, createTestFile(k1, proc, pattern(0, 1)), 0);
    plugin.options.flbs = 2;
    const k2 = k1.kexec({ cmdline: CMDLINE, plugins: [plugin] });
    const [in0, in1] = plugin.handlerOf(k2).flbs as [TestFlb, TestFlb];
    expect([k2.luo.flbs.hasIncoming(in0), k2.luo.flbs.hasIncoming(in1)]).toEqual([true, false]);
    const p = k2.spawn('vmm');
    const d = openLuo(p);
    const sb = retrieveSession(p, d, 's');
    retrieveFd(p, sb, 0);
    finishSession(p, sb);
    expect(k2.luo.flbs.hasIncoming(in0)).toBe(false);
    expect(errnoOf(() => k2.luo.flbs.getIncoming(in0))).toBe('ENODATA');
  });
});

describe('registration', () => {
  const ops = (): LiveupdateFileOps<Kernel> => ({
    canPreserve: () => false, preserve: () => {}, unpreserve: () => {}, retrieve: () => {}, finish: () => {},
  });

  it('file handlers: a missing required op is EINVAL; a duplicate compatible EEXIST; compatible 1..47 bytes', () => {
    const { k } = bootLuo();
    for (const op of ['canPreserve', 'preserve', 'unpreserve', 'retrieve', 'finish'] as const) {
      const o: Partial<LiveupdateFileOps<Kernel>> = ops();
      delete o[op];
      expect(errnoOf(() => k.luo.registerFileHandler({ compatible: `missing-${op}`, ops: o as LiveupdateFileOps<Kernel> })), op).toBe('EINVAL');
    }
    // Optional ops may be missing.
    k.luo.registerFileHandler({ compatible: 'minimal-v1', ops: ops() });
    expect(errnoOf(() => k.luo.registerFileHandler({ compatible: 'testfile-v1', ops: ops() }))).toBe('EEXIST');
    expect(errnoOf(() => k.luo.registerFileHandler({ compatible: 'minimal-v1', ops: ops() }))).toBe('EEXIST');
    expect(errnoOf(() => k.luo.registerFileHandler({ compatible: 'x'.repeat(48), ops: ops() }))).toBe('EINVAL');
    expect(errnoOf(() => k.luo.registerFileHandler({ compatible: '', ops: ops() }))).toBe('EINVAL');
    k.luo.registerFileHandler({ compatible: 'y'.repeat(47), ops: ops() });
    expect(k.luo.handlers.map((h) => h.compatible)).toEqual(['testfile-v1', 'minimal-v1', 'y'.repeat(47)]);
  });

  it('FLBs: 63 at most (ENOSPC); duplicates EEXIST; an unregistered handler or a missing op EINVAL', () => {
    const { k, plugin } = bootLuo({ testfile: { flbs: 63 } });
    const h = plugin.handlerOf(k);
    expect(k.luo.flbs.describe()).toHaveLength(luo.LUO_FLB_MAX);
    expect(errnoOf(() => k.luo.registerFlb(h, new TestFlb(TEST_FLB_COMPATIBLE(63))))).toBe('ENOSPC');
    // Already linked to this handler; another FLB with the same compatible.
    expect(errnoOf(() => k.luo.registerFlb(h, h.flbs[5]!))).toBe('EEXIST');
    // An existing FLB may be linked to a second handler even when the table is full.
    const other = new TestFileHandler(k, { compatible: 'testfile-other-v1' });
    expect(errnoOf(() => k.luo.registerFlb(other, h.flbs[5]!))).toBe('EINVAL');
    k.luo.registerFileHandler(other);
    k.luo.registerFlb(other, h.flbs[5]!);
    expect(errnoOf(() => k.luo.registerFlb(other, new TestFlb(TEST_FLB_COMPATIBLE(5))))).toBe('EEXIST');
    expect(k.luo.flbs.describe()).toHaveLength(63);
    // Missing op.
    const fresh = bootLuo({ testfile: { flbs: 0 } });
    const fh = fresh.plugin.handlerOf(fresh.k);
    const bad = new TestFlb('liveupdate-test-flb-bad');
    delete (bad.ops as Partial<TestFlb['ops']>).finish;
    expect(errnoOf(() => fresh.k.luo.registerFlb(fh, bad))).toBe('EINVAL');
    expect(errnoOf(() => fresh.k.luo.registerFlb(fh, new TestFlb('z'.repeat(48))))).toBe('EINVAL');
    fresh.k.luo.registerFlb(fh, new TestFlb(TEST_FLB_COMPATIBLE(0)));
    expect(errnoOf(() => fresh.k.luo.registerFlb(fh, new TestFlb(TEST_FLB_COMPATIBLE(0))))).toBe('EEXIST');
  });

  it('unregistering a handler unlinks its FLBs', () => {
    const { k, plugin } = bootLuo({ testfile: { flbs: 3 } });
    const h = plugin.handlerOf(k);
    k.luo.unregisterFileHandler(h as LiveupdateFileHandler<Kernel>);
    expect(k.luo.handlers).toHaveLength(0);
    expect(k.luo.flbs.describe()).toHaveLength(0);
  });

  it('the test FLB page holds its magic and the generation that preserved it', () => {
    const { k, proc, dev, plugin } = bootLuo({ testfile: { flbs: 1 } });
    preserveFd(proc, createSession(proc, dev, 's'), createTestFile(k, proc, pattern(0, 1)), 0);
    const obj = k.luo.flbs.getOutgoing(plugin.handlerOf(k).flbs[0]!) as { phys: number };
    expect(testFlbSer.decode(k.machine.memory.read(obj.phys, testFlbSer.size))).toEqual({ magic: TEST_FLB_MAGIC, generation: 1n });
    expect(readLuoGraph(k.machine.memory, outgoingLuoPhys(k)).ser.flbs_pa).not.toBe(0n);
  });
});
