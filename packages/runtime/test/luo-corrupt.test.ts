/**
 * Hostile incoming LUO state. The outcomes upstream defines: a bad file block chain or an
 * unknown file handler makes every open('/dev/liveupdate') fail with EIO (sticky); a bad
 * luo_ser or session chain panics the new kernel at early boot. Never another exception, never
 * a hang. Corruption is applied between k1.kexecJump and the boot of k2, in memory only.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { PAGE_SIZE, type Machine } from '@liveupdate/hw';
import { abi, boot, ErrnoError, KernelPanic, type Kernel } from '@liveupdate/runtime';
import {
  createSession, errnoOf, finishSession, openLuo, preserveFd, retrieveFd, retrieveSession,
} from './support/client.js';
import { bootLuo, CMDLINE, outgoingLuoPhys, pattern, readLuoGraph, type LuoGraph } from './support/harness.js';
import { createTestFile, readTestFile, type TestFilePlugin } from './support/testfile.js';

const { luo, block } = abi;

interface Handover {
  readonly machine: Machine;
  readonly plugin: TestFilePlugin;
  readonly graph: LuoGraph;
}

/**
 * Stage 1: session 'small' (2 files), session 'big' (70 files: two file blocks), 60 empty
 * sessions (two session blocks); then kexecJump. Returns the handed-over graph.
 */
function handover(opts: { bigFiles?: number; emptySessions?: number } = {}): Handover {
  const { machine, k, proc, dev, plugin } = bootLuo();
  const small = createSession(proc, dev, 'small');
  preserveFd(proc, small, createTestFile(k, proc, pattern(1, 5000)), 1);
  preserveFd(proc, small, createTestFile(k, proc, pattern(2, 10)), 2);
  const big = createSession(proc, dev, 'big');
  for (let i = 0; i < (opts.bigFiles ?? 70); i++) {
    const fd = createTestFile(k, proc, pattern(100 + i, 1 + i));
    preserveFd(proc, big, fd, i);
    proc.close(fd);
  }
  for (let i = 0; i < (opts.emptySessions ?? 60); i++) createSession(proc, dev, `empty-${i}`);
  const phys = outgoingLuoPhys(k);
  k.kexecJump(CMDLINE);
  return { machine, plugin, graph: readLuoGraph(machine.memory, phys) };
}

const boot2 = (h: Handover, withPlugin = true): Kernel => boot(h.machine, { plugins: withPlugin ? [h.plugin] : [] });

/** open('/dev/liveupdate') fails with EIO, again and again, from any process. */
function expectStickyEio(k: Kernel): void {
  const p = k.spawn('vmm');
  expect(errnoOf(() => openLuo(p))).toBe('EIO');
  expect(errnoOf(() => openLuo(p))).toBe('EIO');
  expect(errnoOf(() => openLuo(k.spawn('other')))).toBe('EIO');
}

function expectPanic(h: Handover, pattern?: RegExp): void {
  let err: unknown;
  try { boot2(h); } catch (e) { err = e; }
  expect(err).toBeInstanceOf(KernelPanic);
  if (pattern) expect((err as Error).message).toMatch(pattern);
}

const HDR = block.khoBlockHeader.size;

describe('the graph handed over is the one expected', () => {
  it('has two session blocks and two file blocks for "big"', () => {
    const { graph } = handover();
    expect(graph.sessionBlocks.map((b) => b.count)).toEqual([51n, 11n]);
    const big = graph.sessions.find((s) => s.name === 'big')!;
    expect(big.fileBlocks.map((b) => b.count)).toEqual([63n, 7n]);
    expect(big.count).toBe(70n);
  });

  it('and an intact one boots, opens and restores', () => {
    const h = handover();
    const k2 = boot2(h);
    const p = k2.spawn('vmm');
    const d = openLuo(p);
    const s = retrieveSession(p, d, 'big');
    expect(readTestFile(k2, p, retrieveFd(p, s, 69))).toEqual(pattern(169, 70));
  });
});

describe('file block chain corruption → open(/dev/liveupdate) is EIO, sticky', () => {
  const big = (h: Handover) => h.graph.sessions.find((s) => s.name === 'big')!;

  it('a cycle (second block points back to the first)', () => {
    const h = handover();
    const b0 = big(h).fileBlocks[0]!;
    const b1 = big(h).fileBlocks[1]!;
    h.machine.memory.writeU64(b1.phys, BigInt(b0.phys));
    const k2 = boot2(h);
    expectStickyEio(k2);
    expect(k2.dmesg.grep('Block set is corrupted')).not.toHaveLength(0);
  });

  it('a self-loop', () => {
    const h = handover();
    const b0 = big(h).fileBlocks[0]!;
    h.machine.memory.writeU64(b0.phys, BigInt(b0.phys));
    expectStickyEio(boot2(h));
  });

  it('a block with count 0', () => {
    const h = handover();
    h.machine.memory.writeU64(big(h).fileBlocks[1]!.phys + 8, 0n);
    expectStickyEio(boot2(h));
  });

  it('a block with count > 63', () => {
    const h = handover();
    h.machine.memory.writeU64(big(h).fileBlocks[0]!.phys + 8, 64n);
    expectStickyEio(boot2(h));
  });

  it('next pointing outside RAM or at an unaligned address', () => {
    for (const bad of [1n << 50n, 0x1234n]) {
      const h = handover({ emptySessions: 0 });
      h.machine.memory.writeU64(big(h).fileBlocks[0]!.phys, bad);
      expectStickyEio(boot2(h));
    }
  });

  it('file_set count disagreeing with the blocks', () => {
    const h = handover();
    h.machine.memory.writeU64(big(h).phys + luo.luoSessionSer.offsets.count, 71n);
    expectStickyEio(boot2(h));
  });

  it('a file with an unknown compatible (k2 built without the plugin)', () => {
    const h = handover({ bigFiles: 1, emptySessions: 0 });
    const k2 = boot2(h, false);
    expectStickyEio(k2);
    expect(k2.dmesg.grep("No registered handler for compatible 'testfile-v1'")).not.toHaveLength(0);
  });

  it('a file whose compatible was altered in its entry', () => {
    const h = handover({ bigFiles: 1, emptySessions: 0 });
    const e = h.graph.sessions[0]!.fileEntries[1]!;
    h.machine.memory.write(e.phys, new TextEncoder().encode('testfile-v2'));
    expectStickyEio(boot2(h));
  });

  it('two incoming sessions with the same name', () => {
    const h = handover({ bigFiles: 1, emptySessions: 0 });
    const s0 = h.graph.sessions[0]!;
    const s1 = h.graph.sessions[1]!;
    h.machine.memory.write(s1.phys, h.machine.memory.read(s0.phys, 64));
    expectStickyEio(boot2(h));
  });

  it('a session entry with an empty name', () => {
    const h = handover({ bigFiles: 1, emptySessions: 0 });
    h.machine.memory.writeU8(h.graph.sessions[1]!.phys, 0);
    expectStickyEio(boot2(h));
  });
});

describe('luo_ser or session chain corruption → KernelPanic at boot', () => {
  it('a different luo_ser compatible', () => {
    const h = handover({ bigFiles: 1, emptySessions: 0 });
    h.machine.memory.write(h.graph.luoSerPhys, new TextEncoder().encode('luo-v4\0\0'));
    expectPanic(h, /incompatible LUO ABI 'luo-v4'/);
  });

  it('a compatible that only matches as a prefix ("luo-v5x")', () => {
    const h = handover({ bigFiles: 1, emptySessions: 0 });
    h.machine.memory.write(h.graph.luoSerPhys, new TextEncoder().encode('luo-v5x\0'));
    expectPanic(h);
  });

  it('a session chain with a cycle', () => {
    const h = handover();
    const b0 = h.graph.sessionBlocks[0]!;
    const b1 = h.graph.sessionBlocks[1]!;
    h.machine.memory.writeU64(b1.phys, BigInt(b0.phys));
    expectPanic(h, /Failed to restore incoming state/);
  });

  it('a session block with count 0 or > 51', () => {
    for (const count of [0n, 52n]) {
      const h = handover({ bigFiles: 1 });
      h.machine.memory.writeU64(h.graph.sessionBlocks[1]!.phys + 8, count);
      expectPanic(h);
    }
  });

  it('sessions_pa outside RAM, unaligned, or at a page that is not a block', () => {
    for (const bad of [1n << 50n, 8n, BigInt(PAGE_SIZE * 3)]) {
      const h = handover({ bigFiles: 1, emptySessions: 0 });
      h.machine.memory.writeU64(h.graph.luoSerPhys + luo.luoSer.offsets.sessions_pa, bad);
      expectPanic(h);
    }
  });

  it('a corrupt FLB header', () => {
    const h = handover({ bigFiles: 1, emptySessions: 0 });
    h.machine.memory.writeU64(Number(h.graph.ser.flbs_pa), 7n);
    expectPanic(h);
  });
});

describe('fuzz: random byte corruption of the LUO pages', () => {
  it('ends in an errno, EIO at open or a KernelPanic; never anything else', { timeout: 120_000 }, () => {
    const base = handover({ bigFiles: 3, emptySessions: 2 });
    // Every page of the LUO graph, plus the testfile headers.
    const g = base.graph;
    const targets: Array<{ phys: number; len: number }> = [
      { phys: g.luoSerPhys, len: luo.luoSer.size },
      { phys: Number(g.ser.flbs_pa), len: 16 + 64 },
      ...g.sessionBlocks.map((b) => ({ phys: b.phys, len: HDR + Number(b.count) * luo.luoSessionSer.size })),
      ...g.sessions.flatMap((s) => s.fileBlocks.map((b) => ({ phys: b.phys, len: HDR + Number(b.count) * luo.luoFileSer.size }))),
      ...g.sessions.flatMap((s) => s.fileEntries.map((e) => ({ phys: Number(e.data), len: 24 + 8 }))),
    ];
    const snapshot = targets.map((t) => base.machine.memory.read(t.phys, t.len));
    const names = g.sessions.map((s) => s.name);
    const outcomes = new Map<string, number>();
    const bump = (k: string): void => { outcomes.set(k, (outcomes.get(k) ?? 0) + 1); };

    fc.assert(fc.property(
      fc.array(fc.record({ t: fc.nat(targets.length - 1), off: fc.nat(4095), value: fc.integer({ min: 0, max: 255 }) }), { minLength: 1, maxLength: 6 }),
      (muts) => {
        const h = handover({ bigFiles: 3, emptySessions: 2 });
        // Same layout every time: the same addresses (a fresh machine allocates identically).
        targets.forEach((t, i) => expect(h.machine.memory.read(t.phys, t.len)).toEqual(snapshot[i]));
        for (const m of muts) {
          const t = targets[m.t]!;
          h.machine.memory.writeU8(t.phys + (m.off % t.len), m.value);
        }
        let k2: Kernel;
        try {
          k2 = boot2(h);
        } catch (e) {
          expect(e).toBeInstanceOf(KernelPanic);
          bump('panic');
          return;
        }
        const p = k2.spawn('vmm');
        let d: number;
        try {
          d = openLuo(p);
        } catch (e) {
          expect(e).toBeInstanceOf(ErrnoError);
          expect((e as ErrnoError).code).toBe('EIO');
          expect(errnoOf(() => openLuo(p))).toBe('EIO');
          bump('EIO');
          return;
        }
        // Whatever survived must behave: retrieve everything reachable, finish, close.
        for (const name of [...names, ...k2.luo.sessions.incoming.map((s) => s.name)]) {
          let sfd: number;
          try { sfd = retrieveSession(p, d, name); } catch (e) { expect(e).toBeInstanceOf(ErrnoError); continue; }
          for (const tok of [0n, 1n, 2n]) {
            const r = errnoOf(() => retrieveFd(p, sfd, tok));
            if (r !== 0) bump(`retrieve:${r}`);
          }
          expect(errnoOf(() => finishSession(p, sfd))).toBe(0);
          p.close(sfd);
        }
        bump('ok');
      },
    ), { numRuns: 150, seed: 0x10f5 });
    // The fuzzer exercised more than one outcome.
    expect(outcomes.size).toBeGreaterThan(1);
  });
});
