/**
 * Format negotiation with a third-party handler: a writer build that writes exactly one
 * ringbuf version against reader builds that read ^1, ^2 or >=1 <3. Each pair either
 * restores in the negotiated format or is refused before anything is frozen.
 */
import { describe, expect, it } from 'vitest';
import { createMachine } from '@liveupdate/hw';
import {
  boot, createSession, finishSession, FormatNegotiationError, getName, openLiveupdate, preflight, preserveFd, retrieveFd, retrieveSession,
  type Kernel, type Plugin,
} from '@liveupdate/sdk';
import { ringbuf, ringbufCreate, ringbufPeek, ringbufStat, ringbufWrite, type RingbufOptions, type RingbufTraceEvent } from '../src/index.js';

const CMDLINE = 'kho=on liveupdate=on';
const content = Uint8Array.from({ length: 9000 }, (_, i) => (i * 7 + 3) & 0xff);

interface Rig {
  readonly k1: Kernel;
  readonly events: RingbufTraceEvent[];
  /** Freeze calls seen by k1's LUO hooks (any handler). */
  readonly freezes: () => number;
  readonly proc: ReturnType<Kernel['spawn']>;
  readonly session: number;
  readonly fd: number;
}

/** k1 with a writer build, one 8 KiB ring (9000 bytes written: 808 dropped) preserved as token 1 of session 'rb'. */
function writerRig(writer: RingbufOptions): Rig {
  const events: RingbufTraceEvent[] = [];
  const k1 = boot(createMachine({ memory: '1GiB' }), { cmdline: CMDLINE, plugins: [ringbuf({ ...writer, trace: (e) => events.push(e) })], release: '7.1.0' });
  let freezes = 0;
  k1.luo.hooks.fileOp.tap('count-freezes', (ev) => { if (ev.op === 'freeze') freezes++; });
  const proc = k1.spawn('luod');
  const fd = ringbufCreate(proc, 8192);
  ringbufWrite(proc, fd, content);
  const session = createSession(proc, openLiveupdate(proc), 'rb');
  preserveFd(proc, session, fd, 1);
  return { k1, events, freezes: () => freezes, proc, session, fd };
}

function readerBuild(reads: string, events: RingbufTraceEvent[], extra: RingbufOptions = {}): Plugin {
  return ringbuf({ reads, ...extra, trace: (e) => events.push(e) });
}

/** In k2: the compatible string the file was handed over under, and the ring restored from it. */
function restoreIn(k2: Kernel): { compatible: string | undefined; stat: ReturnType<typeof ringbufStat>; unread: Uint8Array } {
  const q = k2.spawn('luod');
  const s = retrieveSession(q, openLiveupdate(q), 'rb');
  const compatible = k2.luo.sessions.incoming.find((x) => x.name === 'rb')?.fileSet.files[0]?.compatible;
  const fd = retrieveFd(q, s, 1);
  const result = { compatible, stat: ringbufStat(q, fd), unread: ringbufPeek(q, fd) };
  finishSession(q, s);
  return result;
}

/** Every pair, with its outcome spelled out: the compatible string handed over, or a refusal before freeze. */
const MATRIX: ReadonlyArray<readonly [writes: string, reads: string, outcome: string]> = [
  ['1.0.0', '^1.0.0', 'restored from ringbuf@1.0.0'],
  ['1.0.0', '^2.0.0', 'refused before freeze'],
  ['1.0.0', '>=1.0.0 <3.0.0', 'restored from ringbuf@1.0.0'],
  ['1.1.0', '^1.0.0', 'restored from ringbuf@1.1.0'],
  ['1.1.0', '^2.0.0', 'refused before freeze'],
  ['1.1.0', '>=1.0.0 <3.0.0', 'restored from ringbuf@1.1.0'],
  ['2.0.0', '^1.0.0', 'refused before freeze'],
  ['2.0.0', '^2.0.0', 'restored from ringbuf@2.0.0'],
  ['2.0.0', '>=1.0.0 <3.0.0', 'restored from ringbuf@2.0.0'],
];

describe('negotiation matrix: writer writes one version × reader range', () => {
  it.each(MATRIX)("writer %s → reader '%s': %s", (writes, reads, outcome) => {
    const rig = writerRig({ writes: [writes] });
    const stat1 = ringbufStat(rig.proc, rig.fd);
    const unread1 = ringbufPeek(rig.proc, rig.fd);
    const readerEvents: RingbufTraceEvent[] = [];
    const target = { cmdline: CMDLINE, plugins: [readerBuild(reads, readerEvents)], release: '7.2.0' };

    if (outcome.startsWith('restored from ')) {
      const k2 = rig.k1.kexec(target);
      const r = restoreIn(k2);
      expect(r.compatible).toBe(outcome.slice('restored from '.length));
      expect(r.unread).toEqual(unread1);
      // 1.0 has no `dropped` field: that count (and only that) does not survive a 1.0 handover.
      expect(r.stat).toEqual({ ...stat1, dropped: writes === '1.0.0' ? 0 : stat1.dropped });
      expect(rig.events.filter((e) => e.op === 'freeze').map((e) => e.version)).toEqual([writes]);
      expect(readerEvents.map((e) => `${e.op} ${e.version}`)).toEqual([`retrieve ${writes}`, `finish ${writes}`]);
      expect(k2.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
      return;
    }

    expect(outcome).toBe('refused before freeze');
    let error: unknown;
    try { rig.k1.kexec(target); } catch (e) { error = e; }
    expect(error).toBeInstanceOf(FormatNegotiationError);
    const e = error as FormatNegotiationError;
    expect(e.refusals).toEqual([{ family: 'ringbuf', owner: '@example/ringbuf', offered: [writes], accepted: reads }]);
    expect(e.message).toBe(`@example/ringbuf: format 'ringbuf' writes ${writes} but kernel 7.2.0 reads '${reads}'`);
    // Refused before freeze: no handler was frozen, the old kernel runs on, its session is intact.
    expect(rig.freezes()).toBe(0);
    expect(rig.events.map((x) => x.op)).toEqual(['preserve']);
    expect(rig.k1.isDead).toBe(false);
    expect(rig.k1.machine.bootCount).toBe(1);
    expect(getName(rig.proc, rig.session)).toBe('rb');
    const second = ringbufCreate(rig.proc, 4096);
    ringbufWrite(rig.proc, second, new Uint8Array([1, 2, 3]));
    preserveFd(rig.proc, rig.session, second, 2);

    // Retry toward a kernel whose build reads what this one writes: both rings arrive.
    const retryEvents: RingbufTraceEvent[] = [];
    const k2 = rig.k1.kexec({ cmdline: CMDLINE, plugins: [readerBuild('>=1.0.0 <3.0.0', retryEvents)], release: '7.2.1' });
    expect(rig.k1.isDead).toBe(true);
    const q = k2.spawn('luod');
    const s = retrieveSession(q, openLiveupdate(q), 'rb');
    expect(k2.luo.sessions.incoming[0]?.fileSet.files.map((f) => f.compatible)).toEqual([`ringbuf@${writes}`, `ringbuf@${writes}`]);
    expect(ringbufPeek(q, retrieveFd(q, s, 1))).toEqual(unread1);
    expect(ringbufPeek(q, retrieveFd(q, s, 2))).toEqual(new Uint8Array([1, 2, 3]));
    finishSession(q, s);
    expect(rig.freezes()).toBe(2);
    expect(retryEvents.filter((x) => x.op === 'retrieve').map((x) => x.version)).toEqual([writes, writes]);
    expect(k2.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
  });

  it.each([
    ['^1.0.0', '1.1.0'],
    ['^2.0.0', '2.0.0'],
    ['>=1.0.0 <3.0.0', '2.0.0'],
  ])('a writer offering 1.0.0, 1.1.0, 2.0.0 to a reader of %s hands over the highest it accepts: %s', (reads, chosen) => {
    const rig = writerRig({ writes: ['1.0.0', '1.1.0', '2.0.0'] });
    const readerEvents: RingbufTraceEvent[] = [];
    const k2 = rig.k1.kexec({ cmdline: CMDLINE, plugins: [readerBuild(reads, readerEvents)], release: '7.2.0' });
    const r = restoreIn(k2);
    expect(r.compatible).toBe(`ringbuf@${chosen}`);
    expect(rig.events.find((e) => e.op === 'freeze')?.version).toBe(chosen);
    expect(readerEvents.find((e) => e.op === 'retrieve')?.version).toBe(chosen);
    expect(r.stat.dropped).toBe(808);
  });

  it('preflight agrees with the kexec: it lists ringbuf with the version that would travel', () => {
    const writer = ringbuf();
    const cases = ['^1.0.0', '^2.0.0', '>=1.0.0 <3.0.0', '^3.0.0'].map((reads) => {
      const report = preflight({ plugins: [writer], release: '7.1.0' }, { plugins: [ringbuf({ reads })], release: '7.2.0' });
      return [reads, report.entries.find((e) => e.family === 'ringbuf')?.chosen, report.ok];
    });
    expect(cases).toEqual([
      ['^1.0.0', '1.1.0', true],
      ['^2.0.0', '2.0.0', true],
      ['>=1.0.0 <3.0.0', '2.0.0', true],
      ['^3.0.0', null, false],
    ]);
  });
});

describe('minor versions: a reader built before 1.1 reads a 1.1 handover', () => {
  it('decodes the 1.0 prefix, skips `dropped`, and restores identical content', () => {
    const rig = writerRig({});
    const unread1 = ringbufPeek(rig.proc, rig.fd);
    const readerEvents: RingbufTraceEvent[] = [];
    const legacy = ringbuf({ version: '0.9.0', writes: ['1.0.0'], reads: '^1.0.0', layouts: ['1.0.0'], trace: (e) => readerEvents.push(e) });
    const k2 = rig.k1.kexec({ cmdline: CMDLINE, plugins: [legacy], release: '6.19.0' });
    const r = restoreIn(k2);
    expect(r.compatible).toBe('ringbuf@1.1.0');
    expect(readerEvents.find((e) => e.op === 'retrieve')).toMatchObject({ version: '1.1.0', layout: '1.0.0' });
    expect(r.unread).toEqual(unread1);
    expect(r.stat).toEqual({ size: 8192, head: 9000, tail: 808, used: 8192, dropped: 0 });
  });

  it('a build that claims to read 1.x but knows only the 2.0 layout fails that retrieve with EINVAL', () => {
    const rig = writerRig({ writes: ['1.1.0'] });
    const k2 = rig.k1.kexec({ cmdline: CMDLINE, plugins: [ringbuf({ writes: ['2.0.0'], reads: '>=1.0.0 <3.0.0', layouts: ['2.0.0'] })], release: '7.2.0' });
    const q = k2.spawn('luod');
    const s = retrieveSession(q, openLiveupdate(q), 'rb');
    expect(() => retrieveFd(q, s, 1)).toThrow(expect.objectContaining({ code: 'EINVAL', message: expect.stringMatching(/no reader for ringbuf 1\.1\.0/) }));
  });
});
