/**
 * The ringbuf handler end to end: a ring preserved through the liveupdate client survives a
 * kexec byte for byte, from the bytes of the handover alone.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { createMachine } from '@liveupdate/hw';
import {
  boot, createSession, ErrnoError, finishSession, openLiveupdate, PAGE_SIZE, preserveFd, retrieveFd, retrieveSession,
  type Kernel, type Process, type RuntimePlugin,
} from '@liveupdate/sdk';
import {
  decodeHeader, encodeHeader, headerSize, layoutFor, magic, Ringbuf, ringbuf, RINGBUF_MAGIC_V1, RINGBUF_MAGIC_V2,
  ringbufCreate, ringbufOf, ringbufPeek, ringbufRead, ringbufSerV1_0, ringbufSerV1_1, ringbufSerV2, ringbufStat, ringbufWrite,
  type RingbufTraceEvent,
} from '../src/index.js';

const CMDLINE = 'kho=on liveupdate=on';
const u64v = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });
const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);
const pattern = (n: number, seed = 1): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);

function k1With(...plugins: RuntimePlugin[]): Kernel {
  return boot(createMachine({ memory: '1GiB' }), { cmdline: CMDLINE, plugins, release: '7.1.0' });
}

describe('ringbuf file type', () => {
  it('is created sized and zeroed: stat reports size 8192, nothing written', () => {
    const k = k1With(ringbuf());
    const p = k.spawn('t');
    const fd = ringbufCreate(p, 8192);
    expect(ringbufStat(p, fd)).toEqual({ size: 8192, head: 0, tail: 0, used: 0, dropped: 0 });
    expect(ringbufPeek(p, fd)).toEqual(new Uint8Array(0));
  });

  it.each([0, 100, 4095, 12288, 8 << 20])('refuses size %i with EINVAL and leaves no fd behind', (size) => {
    const k = k1With(ringbuf());
    const p = k.spawn('t');
    const err = (() => { try { ringbufCreate(p, size); } catch (e) { return e; } return null; })();
    expect(err).toBeInstanceOf(ErrnoError);
    expect((err as ErrnoError).code).toBe('EINVAL');
    expect(p.openFds).toEqual([]);
  });

  it('without the plugin /dev/ringbuf does not exist (ENOENT)', () => {
    const k = k1With();
    expect(() => ringbufCreate(k.spawn('t'), 4096)).toThrow(expect.objectContaining({ code: 'ENOENT' }));
  });

  it('reads back what was written, in order, consuming it', () => {
    const k = k1With(ringbuf());
    const p = k.spawn('t');
    const fd = ringbufCreate(p, 4096);
    ringbufWrite(p, fd, bytes('hello '));
    ringbufWrite(p, fd, bytes('world'));
    expect(ringbufRead(p, fd, 6)).toEqual(bytes('hello '));
    expect(ringbufRead(p, fd)).toEqual(bytes('world'));
    expect(ringbufStat(p, fd)).toEqual({ size: 4096, head: 11, tail: 11, used: 0, dropped: 0 });
  });

  it('overwrites the oldest bytes when full and counts them as dropped', () => {
    const k = k1With(ringbuf());
    const p = k.spawn('t');
    const fd = ringbufCreate(p, 4096);
    const data = pattern(5000);
    ringbufWrite(p, fd, data);
    expect(ringbufStat(p, fd)).toEqual({ size: 4096, head: 5000, tail: 904, used: 4096, dropped: 904 });
    expect(ringbufPeek(p, fd)).toEqual(data.subarray(904));
  });

  it('behaves like a bounded FIFO model for any sequence of writes and reads', () => {
    fc.assert(fc.property(
      fc.array(fc.oneof(
        fc.record({ w: fc.uint8Array({ maxLength: 6000 }) }),
        fc.record({ r: fc.nat({ max: 5000 }) }),
      ), { maxLength: 30 }),
      (ops) => {
        const k = k1With(ringbuf());
        const p = k.spawn('t');
        const fd = ringbufCreate(p, 4096);
        let model: number[] = [];
        let dropped = 0;
        for (const op of ops) {
          if ('w' in op) {
            ringbufWrite(p, fd, op.w);
            model.push(...op.w);
            if (model.length > 4096) { dropped += model.length - 4096; model = model.slice(model.length - 4096); }
          } else {
            expect([...ringbufRead(p, fd, op.r)]).toEqual(model.slice(0, op.r));
            model = model.slice(op.r);
          }
        }
        expect([...ringbufPeek(p, fd)]).toEqual(model);
        expect(ringbufStat(p, fd).dropped).toBe(dropped);
      },
    ), { numRuns: 40 });
  });

  it('returns its folio to the page allocator on the last close', () => {
    const k = k1With(ringbuf());
    const p = k.spawn('t');
    const free0 = k.mm.allocator?.freePages ?? 0;
    const fd = ringbufCreate(p, 16384);
    expect(k.mm.allocator?.freePages).toBe(free0 - 4);
    p.close(fd);
    expect(k.mm.allocator?.freePages).toBe(free0);
  });
});

describe('ringbuf ABI', () => {
  it('declares 40-, 48- and 48-byte headers with the 1.1 field appended after the 1.0 ones', () => {
    expect([ringbufSerV1_0.size, ringbufSerV1_1.size, ringbufSerV2.size]).toEqual([40, 48, 48]);
    expect(ringbufSerV1_1.offsets).toEqual({ magic: 0, data_phys: 8, size: 16, head: 24, tail: 32, dropped: 40 });
    expect(ringbufSerV1_0.offsets).toEqual({ magic: 0, data_phys: 8, size: 16, head: 24, tail: 32 });
    expect(ringbufSerV2.offsets).toEqual({ magic: 0, data_pfn: 8, order: 16, flags: 20, tail: 24, used: 32, dropped: 40 });
    expect([headerSize('1.0.0'), headerSize('1.1.0'), headerSize('2.0.0')]).toEqual([40, 48, 48]);
  });

  it('spells its magics "RINGBUF1" and "RINGBUF2" in little-endian memory', () => {
    expect(ringbufSerV1_0.encode({ magic: RINGBUF_MAGIC_V1 }).subarray(0, 8)).toEqual(bytes('RINGBUF1'));
    expect(ringbufSerV2.encode({ magic: RINGBUF_MAGIC_V2 }).subarray(0, 8)).toEqual(bytes('RINGBUF2'));
    expect(magic('RINGBUF1')).toBe(0x31465542474e4952n);
  });

  it('a 1.0 decoder reads every 1.0 field of a 1.1 header unchanged (minor bumps only append)', () => {
    fc.assert(fc.property(
      fc.record({ data_phys: u64v, size: u64v, head: u64v, tail: u64v, dropped: u64v }),
      (v) => {
        const raw = ringbufSerV1_1.encode({ magic: RINGBUF_MAGIC_V1, ...v });
        const { dropped: _skipped, ...common } = v;
        expect(ringbufSerV1_0.decode(raw)).toEqual({ magic: RINGBUF_MAGIC_V1, ...common });
        expect(ringbufSerV1_1.decode(raw)).toEqual({ magic: RINGBUF_MAGIC_V1, ...v });
      },
    ));
  });

  it('round-trips any ring state through every layout; 1.0 loses only `dropped`', () => {
    const k = k1With(ringbuf());
    const out = k.khoOut;
    if (!out) throw new Error('KHO off');
    const hdr = out.allocPreserve(PAGE_SIZE);
    fc.assert(fc.property(
      fc.constantFrom('1.0.0', '1.1.0', '2.0.0' as const),
      fc.nat({ max: 4 }), fc.nat({ max: 2 ** 40 }), fc.nat({ max: 4096 * 16 }), fc.nat({ max: 2 ** 40 }),
      (layout, order, tail, usedRaw, dropped) => {
        const ring = new Ringbuf(k);
        const size = PAGE_SIZE * 2 ** order;
        const used = usedRaw % (size + 1);
        ring.adopt(2 ** order * 1024, order, tail + used, tail, dropped);
        k.machine.memory.write(hdr, encodeHeader(ring, layout));
        expect(decodeHeader(k, hdr, layout)).toEqual({
          dataPhys: ring.phys, order, head: tail + used, tail, dropped: layout === '1.0.0' ? 0 : dropped,
        });
      },
    ));
  });

  it.each([
    ['a v2 header read as 1.x', '2.0.0', '1.1.0', /bad v1 magic/],
    ['a v1 header read as 2.x', '1.1.0', '2.0.0', /bad v2 magic/],
  ] as const)('rejects %s with EINVAL', (_what, written, read, message) => {
    const k = k1With(ringbuf());
    const hdr = (k.khoOut as NonNullable<Kernel['khoOut']>).allocPreserve(PAGE_SIZE);
    const ring = new Ringbuf(k);
    ring.adopt(1024, 0, 10, 0, 0);
    k.machine.memory.write(hdr, encodeHeader(ring, written));
    expect(() => decodeHeader(k, hdr, read)).toThrow(expect.objectContaining({ code: 'EINVAL', message: expect.stringMatching(message) }));
  });

  it.each([
    ['size not a power of two', { size: 12288n }, /size 12288/],
    ['tail beyond head', { head: 5n, tail: 6n }, /head 5 tail 6/],
    ['more unread than the ring holds', { head: 5000n, tail: 0n }, /head 5000 tail 0 in a 4096-byte ring/],
    ['a ring outside RAM', { data_phys: 2n ** 31n }, /is not a folio of RAM/],
    ['an unaligned ring', { data_phys: 4096n + 512n }, /is not a folio of RAM/],
    ['a position beyond 2^53', { head: 2n ** 60n, tail: 2n ** 60n }, /head .* is out of range/],
  ] as const)('rejects a 1.1 header with %s (EINVAL)', (_what, patch, message) => {
    const k = k1With(ringbuf());
    const hdr = (k.khoOut as NonNullable<Kernel['khoOut']>).allocPreserve(PAGE_SIZE);
    k.machine.memory.write(hdr, ringbufSerV1_1.encode({ magic: RINGBUF_MAGIC_V1, data_phys: 1n << 22n, size: 4096n, head: 10n, tail: 0n, dropped: 0n, ...patch }));
    expect(() => decodeHeader(k, hdr, '1.1.0')).toThrow(expect.objectContaining({ code: 'EINVAL', message: expect.stringMatching(message) }));
  });

  it('picks the newest known layout of the same major that is not newer than the handed-over version', () => {
    expect(layoutFor('1.1.0', ['1.0.0', '1.1.0', '2.0.0'])).toBe('1.1.0');
    expect(layoutFor('1.1.0', ['1.0.0'])).toBe('1.0.0');
    expect(layoutFor('1.7.3', ['1.0.0', '1.1.0'])).toBe('1.1.0');
    expect(layoutFor('1.0.0', ['1.1.0', '2.0.0'])).toBeNull();
    expect(layoutFor('2.0.0', ['1.0.0', '1.1.0'])).toBeNull();
  });

  it('a build cannot claim to write a layout it does not know (TypeError at definition)', () => {
    expect(() => ringbuf({ writes: ['2.0.0'], layouts: ['1.0.0'] })).toThrow(/cannot write 2.0.0: this build knows layouts 1.0.0/);
  });
});

describe('ringbuf through a live update (liveupdate client)', () => {
  function preserveOne(k: Kernel, p: Process, content: Uint8Array, consume = 0): { dev: number; session: number; fd: number } {
    const fd = ringbufCreate(p, 16384);
    ringbufWrite(p, fd, content);
    ringbufRead(p, fd, consume);
    const dev = openLiveupdate(p);
    const session = createSession(p, dev, 'rings');
    preserveFd(p, session, fd, 7);
    return { dev, session, fd };
  }

  it('restores content, positions and dropped count byte for byte in a kernel booted from bytes', () => {
    const events: RingbufTraceEvent[] = [];
    const k1 = k1With(ringbuf({ trace: (e) => events.push(e) }));
    const p = k1.spawn('vmm');
    const content = pattern(20000, 9);
    const { fd } = preserveOne(k1, p, content, 1000);
    const stat1 = ringbufStat(p, fd);
    const unread1 = ringbufPeek(p, fd);
    expect(stat1).toEqual({ size: 16384, head: 20000, tail: 4616, used: 15384, dropped: 3616 });

    const k2 = k1.kexec({ cmdline: CMDLINE, plugins: [ringbuf({ trace: (e) => events.push(e) })], release: '7.2.0' });
    expect(k1.isDead).toBe(true);
    const q = k2.spawn('vmm');
    const dev2 = openLiveupdate(q);
    const s2 = retrieveSession(q, dev2, 'rings');
    const fd2 = retrieveFd(q, s2, 7);
    expect(ringbufStat(q, fd2)).toEqual(stat1);
    expect(ringbufPeek(q, fd2)).toEqual(unread1);
    expect(ringbufPeek(q, fd2)).toEqual(content.subarray(4616));
    finishSession(q, s2);

    expect(events.map((e) => `${e.kernel === k1.id ? 'k1' : 'k2'} ${e.op} ${e.version}`)).toEqual([
      'k1 preserve 2.0.0', 'k1 freeze 2.0.0', 'k2 retrieve 2.0.0', 'k2 finish 2.0.0',
    ]);
    expect(k2.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
    expect(k2.machine.memory.poisonReads).toBe(0);
  });

  it('keeps working as a ring after the update: the producer continues where it stopped', () => {
    const k1 = k1With(ringbuf());
    const p = k1.spawn('vmm');
    preserveOne(k1, p, bytes('before|'));
    const k2 = k1.kexec({ cmdline: CMDLINE, plugins: [ringbuf()] });
    const q = k2.spawn('vmm');
    const s2 = retrieveSession(q, openLiveupdate(q), 'rings');
    const fd2 = retrieveFd(q, s2, 7);
    ringbufWrite(q, fd2, bytes('after'));
    expect(ringbufRead(q, fd2)).toEqual(bytes('before|after'));
    expect(ringbufStat(q, fd2)).toEqual({ size: 16384, head: 12, tail: 12, used: 0, dropped: 0 });
  });

  it('the restored ring is the same folio: no copy was made', () => {
    const k1 = k1With(ringbuf());
    const p = k1.spawn('vmm');
    const { fd } = preserveOne(k1, p, bytes('x'));
    const phys = ringbufOf(p, fd).phys;
    const k2 = k1.kexec({ cmdline: CMDLINE, plugins: [ringbuf()] });
    const q = k2.spawn('vmm');
    const fd2 = retrieveFd(q, retrieveSession(q, openLiveupdate(q), 'rings'), 7);
    expect(ringbufOf(q, fd2).phys).toBe(phys);
  });

  it('a ring never retrieved is released by finish: nothing stays reserved', () => {
    const events: string[] = [];
    const k1 = k1With(ringbuf());
    const p = k1.spawn('vmm');
    preserveOne(k1, p, pattern(3000));
    const k2 = k1.kexec({ cmdline: CMDLINE, plugins: [ringbuf({ trace: (e) => events.push(e.op) })] });
    const q = k2.spawn('vmm');
    const s2 = retrieveSession(q, openLiveupdate(q), 'rings');
    const free0 = k2.mm.allocator?.freePages ?? 0;
    finishSession(q, s2);
    expect(events).toEqual(['finish']);
    expect(k2.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
    // The 4-page ring and its header page went back to the allocator (plus LUO's file-set block).
    expect((k2.mm.allocator?.freePages ?? 0) - free0).toBe(4 + 1 + 1);
  });

  it('closing the session before the kexec unpreserves the ring: the next kernel sees no session (ENOENT)', () => {
    const events: string[] = [];
    const k1 = k1With(ringbuf({ trace: (e) => events.push(e.op) }));
    const p = k1.spawn('vmm');
    const { session } = preserveOne(k1, p, bytes('gone'));
    const preserved0 = k1.khoOut?.survivors().blocks;
    p.close(session);
    expect(events).toEqual(['preserve', 'unpreserve']);
    // The ring, its header, the session's file-set block and the session block itself.
    expect(k1.khoOut?.survivors().blocks).toBe((preserved0 ?? 0) - 4);
    const k2 = k1.kexec({ cmdline: CMDLINE, plugins: [ringbuf()] });
    const q = k2.spawn('vmm');
    expect(() => retrieveSession(q, openLiveupdate(q), 'rings')).toThrow(expect.objectContaining({ code: 'ENOENT' }));
    expect(k2.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
  });

  it('a header corrupted after the jump fails that retrieve with a sticky EINVAL, not a wrong ring', () => {
    const m = createMachine({ memory: '1GiB' });
    const k1 = boot(m, { cmdline: CMDLINE, plugins: [ringbuf()] });
    const p = k1.spawn('vmm');
    preserveOne(k1, p, bytes('data'));
    const header = Number(k1.luo.sessions.outgoing[0]?.fileSet.files[0]?.serializedData);
    const config = { cmdline: CMDLINE, plugins: [ringbuf()] };
    k1.kexecJump(config);
    m.memory.writeU8(header, m.memory.readU8(header) ^ 0xff); // the magic
    const k2 = boot(m, config);
    const q = k2.spawn('vmm');
    const s2 = retrieveSession(q, openLiveupdate(q), 'rings');
    expect(() => retrieveFd(q, s2, 7)).toThrow(expect.objectContaining({ code: 'EINVAL', message: expect.stringMatching(/bad v2 magic/) }));
    expect(() => retrieveFd(q, s2, 7)).toThrow(expect.objectContaining({ code: 'EINVAL', message: expect.stringMatching(/sticky/) }));
  });
});
