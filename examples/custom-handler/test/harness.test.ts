/**
 * The SDK test harness (liveUpdate) qualifying the ringbuf plugin: a clean update, injected
 * handler faults, corrupted handovers, and a scenario that forgets to finish its session.
 */
import { describe, expect, it } from 'vitest';
import {
  createSession, ErrnoError, finishSession, openLiveupdate, preserveFd, retrieveFd, retrieveSession, type Kernel,
} from '@liveupdate/sdk';
import { InvariantError, liveUpdate, type FaultSpec, type LiveUpdateScenario, type ScenarioTools } from '@liveupdate/sdk/testing';
import { ringbuf, ringbufCreate, ringbufOf, ringbufPeek, ringbufWrite, type RingbufTraceEvent } from '../src/index.js';

const fill = (n: number, seed: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 13 + seed) & 0xff);

interface Remembered {
  /** sha256 of each ring's unread bytes, by token. */
  readonly digests: Map<number, string>;
  /** Physical addresses in kernel A: ring folios, header pages (luo_file_ser.data) and the file-set block. */
  readonly rings: number[];
  readonly headers: number[];
  readonly fileSetBlock: number;
}

/** Two rings (8 KiB and 4 KiB) preserved as tokens 1 and 2 of session 'rb'. */
function before(k: Kernel, t: ScenarioTools): Remembered {
  const p = t.spawn(k, 'luod');
  const session = createSession(p, openLiveupdate(p), 'rb');
  const digests = new Map<number, string>();
  const rings: number[] = [];
  for (const [token, size, n] of [[1, 8192, 10000], [2, 4096, 1000]] as const) {
    const fd = ringbufCreate(p, size);
    ringbufWrite(p, fd, fill(n, token));
    preserveFd(p, session, fd, token);
    digests.set(token, t.digest(ringbufPeek(p, fd)));
    rings.push(ringbufOf(p, fd).phys);
  }
  const set = k.luo.sessions.outgoing[0]?.fileSet;
  return { digests, rings, headers: (set?.files ?? []).map((f) => Number(f.serializedData)), fileSetBlock: set?.blocks.headPa ?? 0 };
}

/** Retrieve both rings, check them, finish. */
function after(k: Kernel, state: Remembered, t: ScenarioTools): void {
  const q = t.spawn(k, 'luod');
  const s = retrieveSession(q, openLiveupdate(q), 'rb');
  for (const [token, digest] of state.digests) {
    const got = t.digest(ringbufPeek(q, retrieveFd(q, s, token)));
    if (got !== digest) throw new Error(`ring ${token}: content differs after the update`);
  }
  finishSession(q, s);
}

const sides = (events: RingbufTraceEvent[] = []) => ({
  from: { plugins: [ringbuf({ trace: (e) => events.push(e) })], release: '7.1.0' },
  to: { plugins: [ringbuf({ trace: (e) => events.push(e) })], release: '7.2.0' },
});
const scenario = (faults: FaultSpec[] = []): LiveUpdateScenario<Remembered> => ({ machine: { memory: '1GiB' }, before, after, faults });

describe('liveUpdate() with the ringbuf plugin', () => {
  it('a clean update: outcome updated, no violations, every op in its kernel', () => {
    const events: RingbufTraceEvent[] = [];
    const r = liveUpdate(sides(events), scenario());
    expect(r.outcome).toEqual({ kind: 'updated' });
    expect(r.violations).toEqual([]);
    expect(r.from.isDead).toBe(true);
    expect(r.to?.luo.liveupdateNum).toBe(2);
    expect(events.map((e) => `${e.kernel === r.from.id ? 'A' : 'B'} ${e.op} ${e.token}`)).toEqual([
      'A preserve 1', 'A preserve 2', 'A freeze 1', 'A freeze 2', 'B retrieve 1', 'B retrieve 2', 'B finish 2', 'B finish 1',
    ]);
    expect(r.timeline.map((p) => p.phase)).toEqual(['boot A', 'before', 'freeze + serialize + jump', 'boot B', 'after']);
  });

  it('a freeze failing at its 2nd call rolls back: outcome rolled-back with EIO, ring 1 unfrozen, no leak', () => {
    const events: RingbufTraceEvent[] = [];
    const r = liveUpdate(sides(events), scenario([{ kind: 'file-op', op: 'freeze', call: 2 }]));
    expect(r.outcome.kind).toBe('rolled-back');
    const error = (r.outcome as { error: Error }).error;
    expect(error).toBeInstanceOf(ErrnoError);
    expect((error as ErrnoError).code).toBe('EIO');
    expect(error.message).toBe('freeze: EIO (injected fault at call 2 of @example/ringbuf freeze)');
    expect(r.violations).toEqual([]);
    expect(r.faults[0]).toMatchObject({ seen: 2, fired: true });
    expect(r.to).toBeNull();
    expect(r.from.isDead).toBe(false);
    // Ring 1 froze and was unfrozen; ring 2's freeze never ran; closing the session unpreserved both.
    expect(events.map((e) => `${e.op} ${e.token}`)).toEqual([
      'preserve 1', 'preserve 2', 'freeze 1', 'unfreeze 1', 'unpreserve 2', 'unpreserve 1',
    ]);
  });

  it('a freeze fault with a chosen errno is reported with that errno', () => {
    const r = liveUpdate(sides(), scenario([{ kind: 'file-op', op: 'freeze', call: 1, owner: '@example/ringbuf', errno: 'ENOSPC' }]));
    expect(r.outcome.kind).toBe('rolled-back');
    expect((r.outcome as { error: ErrnoError }).error.code).toBe('ENOSPC');
    expect(r.violations).toEqual([]);
  });

  it('a retrieve failing at its 1st call is a file error (EIO) in kernel B', () => {
    const r = liveUpdate(sides(), scenario([{ kind: 'file-op', op: 'retrieve', call: 1 }]));
    expect(r.outcome.kind).toBe('file-error');
    const error = (r.outcome as { error: ErrnoError }).error;
    expect(error.code).toBe('EIO');
    expect(error.syscall).toBe('ioctl');
    expect(r.from.isDead).toBe(true);
    expect(r.to).not.toBeNull();
  });

  it("a corrupted LUO blob (luo_ser byte 0) is refused by kernel B's LUO: a panic, not a wrong restore", () => {
    const r = liveUpdate(sides(), scenario([{ kind: 'corrupt', target: 'luo_ser', offset: 0 }]));
    expect(r.outcome.kind).toBe('refused-incoming');
    expect((r.outcome as { reason: string }).reason).toMatch(/^liveupdate: Failed to restore incoming state \(EINVAL: luo_early_startup: EINVAL \(incompatible LUO ABI/);
    expect(r.to).toBeNull();
    expect(r.faults[0]).toMatchObject({ fired: true });
  });

  it('a corrupted root FDT (byte 0 of its magic) disables KHO revival in kernel B', () => {
    const r = liveUpdate(sides(), scenario([{ kind: 'corrupt', target: 'fdt', offset: 0 }]));
    expect(r.outcome.kind).toBe('refused-incoming');
    expect((r.outcome as { reason: string }).reason).toMatch(/^KHO: handover FDT at 0x[0-9a-f]+ is invalid: .*: disabling KHO revival$/);
    expect(r.to?.isKhoBoot).toBe(false);
  });

  it('a scenario that never finishes its session throws InvariantError naming the session and the leaked block', () => {
    let remembered: Remembered | undefined;
    const forgetful: LiveUpdateScenario<Remembered> = {
      machine: { memory: '1GiB' },
      before: (k, t) => (remembered = before(k, t)),
      after: (k, state, t) => {
        const q = t.spawn(k, 'luod');
        const s = retrieveSession(q, openLiveupdate(q), 'rb');
        for (const token of state.digests.keys()) retrieveFd(q, s, token);
        // no finishSession: LUO keeps both files and the session's file-set block
      },
    };
    let error: unknown;
    try { liveUpdate(sides(), forgetful); } catch (e) { error = e; }
    expect(error).toBeInstanceOf(InvariantError);
    expect((error as InvariantError).violations).toEqual([
      "incoming session 'rb' was never finished: token 1 (ringbuf@2.0.0), token 2 (ringbuf@2.0.0) still held by LUO",
      `1 preserved block(s) (1 pages) neither restored nor released: 0x${remembered?.fileSetBlock.toString(16)} order 0`,
    ]);
  });

  it('a scenario that neither retrieves nor finishes leaks both rings and their headers, each named', () => {
    let remembered: Remembered | undefined;
    const forgetful: LiveUpdateScenario<Remembered> = {
      machine: { memory: '1GiB' },
      before: (k, t) => (remembered = before(k, t)),
      after: (k, _state, t) => { const q = t.spawn(k, 'luod'); retrieveSession(q, openLiveupdate(q), 'rb'); },
    };
    let error: unknown;
    try { liveUpdate(sides(), forgetful); } catch (e) { error = e; }
    expect(error).toBeInstanceOf(InvariantError);
    const [unfinished, leak] = (error as InvariantError).violations;
    expect(unfinished).toMatch(/^incoming session 'rb' was never finished/);
    expect(leak).toMatch(/^5 preserved block\(s\) \(6 pages\) neither restored nor released: /);
    const r = remembered as Remembered;
    const named = (leak as string).split(': ')[1]?.split(', ').sort();
    expect(named).toEqual([
      `0x${r.rings[0]?.toString(16)} order 1`, `0x${r.rings[1]?.toString(16)} order 0`,
      `0x${r.headers[0]?.toString(16)} order 0`, `0x${r.headers[1]?.toString(16)} order 0`,
      `0x${r.fileSetBlock.toString(16)} order 0`,
    ].sort());
  });
});
