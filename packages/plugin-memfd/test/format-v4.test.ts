/**
 * memfd@4.0.0 handed over: a 72-byte header and an extent stream in a kho_vmalloc area, checked
 * by a CRC-32 over both. The header's bytes at their documented offsets; then hostile bytes
 * (a flipped byte anywhere, a stream that is well-formed and correctly checksummed but names
 * the header page, overlapping extents, counts that disagree, a vmalloc chunk chain that loops):
 * each fails RETRIEVE_FD of that file with EINVAL, stickily, and the other file keeps its data.
 */
import { crc32 as zlibCrc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { PAGE_SIZE } from '@liveupdate/hw';
import { finishSession, retrieveFd, retrieveSession } from '@liveupdate/sdk';
import memfd, { memfdAbi, memfdResidentPages } from '@liveupdate/plugin-memfd';
import {
  bootNext, errnoOf, handOverAs, handedOver, pattern, patternMemfd, sealedSparseMemfd, start, type Outgoing,
} from './support.js';

const { memfdLuoSerV4, decodeExtentStream, encodeExtentStream, memfdV4Checksum, MEMFD_V4_CRC_OFFSET } = memfdAbi;


/** A build whose newest format is 4.0 (the 4.1 identity check is test/format-v4-1.test.ts's). */
const UP_TO_4_0 = ['1.0.0', '2.0.0', '3.0.0', '3.1.0', '3.2.0', '4.0.0'];

/** Session 'vm': token 1 = `first(p)`, token 2 (2 pages, pattern 2). Jumps with a build that writes up to 4.0.0. */
function handOver(first: (o: Outgoing) => number): { o: Outgoing; header: number } {
  const o = start([memfd({ writes: UP_TO_4_0 })]);
  handOverAs(o, [first(o), patternMemfd(o.p, 'b', 2, 2)]);
  return { o, header: Number(handedOver(o, 'vm', 1).data) };
}

const headerOf = (o: Outgoing, header: number) => memfdLuoSerV4.decode(o.machine.memory.read(header, memfdLuoSerV4.size));
/** The stream's first (only) page: kho_vmalloc chunk → phys[0]. */
const streamPage = (o: Outgoing, header: number): number => o.machine.memory.readU64Number(Number(headerOf(o, header).extents_first) + 8);

describe('memfd@4.0.0: the handover of a 3-page file with pages 0 and 2 written, pos 777, seals SHRINK | GROW', () => {
  const { o, header } = handOver((x) => sealedSparseMemfd(x.p, 'a'));
  const compatible = handedOver(o, 'vm', 1).compatible;
  const raw = o.machine.memory.read(header, 80);
  const dv = new DataView(raw.buffer, raw.byteOffset);
  const h = headerOf(o, header);
  const stream = o.machine.memory.read(streamPage(o, header), Number(h.stream_bytes));

  it("is handed over under 'memfd@4.0.0'", () => {
    expect(compatible).toBe('memfd@4.0.0');
  });

  it('has pos, size, seals, flags, nr_folios, nr_extents, stream_bytes at 0, 8, 16, 20, 24, 32, 40; order at 64; nothing after 72', () => {
    expect([dv.getBigUint64(0, true), dv.getBigUint64(8, true), dv.getUint32(16, true), dv.getUint32(20, true)])
      .toEqual([777n, BigInt(3 * PAGE_SIZE), memfdAbi.F_SEAL_SHRINK | memfdAbi.F_SEAL_GROW, 0]);
    expect([dv.getBigUint64(24, true), dv.getBigUint64(32, true), dv.getBigUint64(40, true)]).toEqual([2n, 2n, BigInt(stream.length)]);
    expect(dv.getUint32(64, true)).toBe(0);
    expect(raw.subarray(72)).toEqual(new Uint8Array(8));
  });

  it('has a one-page kho_vmalloc descriptor at 48: total_pages 1, flags KHO_VMALLOC_ALLOC, order 0', () => {
    expect([dv.getUint32(56, true), dv.getUint16(60, true), dv.getUint16(62, true)]).toEqual([1, 1, 0]);
  });

  it('describes page 0 and page 2 as two one-folio extents whose pages hold the data', () => {
    const ext = decodeExtentStream(stream, 2, 0);
    if (typeof ext === 'string') throw new Error(ext);
    expect([...ext.index, ...ext.len]).toEqual([0, 2, 1, 1]);
    expect(o.machine.memory.read((ext.pfn[0] as number) * PAGE_SIZE, PAGE_SIZE)).toEqual(pattern(PAGE_SIZE, 1));
    expect(o.machine.memory.read((ext.pfn[1] as number) * PAGE_SIZE, PAGE_SIZE)).toEqual(pattern(PAGE_SIZE, 3));
    // By hand: (gap 0, zigzag(pA), len-1 0), (gap 1, zigzag(pB - (pA + 1)), len-1 0), LEB128.
    const leb = (v: number): number[] => { const out: number[] = []; let x = v; while (x >= 128) { out.push((x % 128) | 128); x = Math.floor(x / 128); } out.push(x); return out; };
    const zz = (d: number): number => (d >= 0 ? 2 * d : -2 * d - 1);
    const pA = ext.pfn[0] as number;
    const pB = ext.pfn[1] as number;
    expect([...stream]).toEqual([0, ...leb(zz(pA)), 0, 1, ...leb(zz(pB - pA - 1)), 0]);
  });

  it('ends with crc32 at 68: CRC-32 of bytes 0..67 followed by the stream', () => {
    const covered = new Uint8Array(68 + stream.length);
    covered.set(raw.subarray(0, 68));
    covered.set(stream, 68);
    expect(dv.getUint32(68, true)).toBe(zlibCrc32(covered));
  });

  it('costs a dense file one extent: 64 written pages make a stream of a few bytes', () => {
    const d = handOver((x) => patternMemfd(x.p, 'dense', 64, 7));
    expect(Number(headerOf(d.o, d.header).nr_extents)).toBe(1);
    expect(Number(headerOf(d.o, d.header).stream_bytes)).toBeLessThanOrEqual(8);
  });
});

describe('memfd@4.0.0 round trip', () => {
  it('restores content, size, holes, pos and seals; FINISH leaves nothing reserved', () => {
    const { o } = handOver((x) => sealedSparseMemfd(x.p, 'a'));
    const next = bootNext(o);
    const sfd = retrieveSession(next.p2, next.dev2, 'vm');
    const a = retrieveFd(next.p2, sfd, 1);
    expect(next.p2.pread(a, PAGE_SIZE, 0)).toEqual(pattern(PAGE_SIZE, 1));
    expect(next.p2.pread(a, PAGE_SIZE, 2 * PAGE_SIZE)).toEqual(pattern(PAGE_SIZE, 3));
    expect(memfdResidentPages(next.p2, a)).toBe(2);
    expect(next.p2.lseek(a, 0, 1)).toBe(777);
    expect(next.p2.fcntl(a, 1034 /* F_GET_SEALS */)).toBe(memfdAbi.F_SEAL_SHRINK | memfdAbi.F_SEAL_GROW);
    retrieveFd(next.p2, sfd, 2);
    finishSession(next.p2, sfd);
    expect(next.k2.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
  });
});

/** Rewrite token 1's stream with `rows` (and nr_extents/nr_folios/stream_bytes), recomputing the crc32: well-formed hostile metadata. */
function forge(o: Outgoing, header: number, rows: ReadonlyArray<readonly [number, number, number]>, counts: { nrExtents?: number; nrFolios?: number } = {}): void {
  const e = { count: rows.length, index: Float64Array.from(rows.map((r) => r[0])), pfn: Float64Array.from(rows.map((r) => r[1])), len: Float64Array.from(rows.map((r) => r[2])) };
  const stream = encodeExtentStream(e, 0);
  o.machine.memory.write(streamPage(o, header), stream);
  const raw = o.machine.memory.read(header, memfdLuoSerV4.size);
  const dv = new DataView(raw.buffer, raw.byteOffset);
  dv.setBigUint64(24, BigInt(counts.nrFolios ?? rows.reduce((n, r) => n + r[2], 0)), true);
  dv.setBigUint64(32, BigInt(counts.nrExtents ?? rows.length), true);
  dv.setBigUint64(40, BigInt(stream.length), true);
  dv.setUint32(MEMFD_V4_CRC_OFFSET, memfdV4Checksum(raw, stream), true);
  o.machine.memory.write(header, raw);
}

/** Token 1: 4 pages written (pattern 1). The real extent, read back from the stream. */
function fourPages(): { o: Outgoing; header: number; pfn: number } {
  const { o, header } = handOver((x) => patternMemfd(x.p, 'a', 4, 1));
  const ext = decodeExtentStream(o.machine.memory.read(streamPage(o, header), Number(headerOf(o, header).stream_bytes)), 1, 0);
  if (typeof ext === 'string') throw new Error(ext);
  return { o, header, pfn: ext.pfn[0] as number };
}

describe.each([
  { label: 'a flipped byte in size', corrupt: (o: Outgoing, header: number) => o.machine.memory.writeU8(header + 9, o.machine.memory.readU8(header + 9) ^ 0x10) },
  { label: 'a flipped byte in the stream', corrupt: (o: Outgoing, header: number) => o.machine.memory.writeU8(streamPage(o, header), 0x05) },
  { label: 'a flipped byte in crc32', corrupt: (o: Outgoing, header: number) => o.machine.memory.writeU8(header + 70, o.machine.memory.readU8(header + 70) ^ 1) },
  { label: 'extents_first aimed at a page that is not preserved', corrupt: (o: Outgoing, header: number) => o.machine.memory.writeU64(header + 48, BigInt(PAGE_SIZE)) },
  { label: 'a kho_vmalloc chunk whose next points at itself (a cycle)', corrupt: (o: Outgoing, header: number) => { const c = Number(headerOf(o, header).extents_first); o.machine.memory.writeU64(c, BigInt(c)); } },
  { label: 'a forged stream naming the header page', corrupt: (o: Outgoing, header: number) => forge(o, header, [[0, header / PAGE_SIZE, 1], [1, fourPagesPfn(o, header) + 1, 3]]) },
  { label: 'a forged stream whose extents overlap in memory', corrupt: (o: Outgoing, header: number) => forge(o, header, [[0, fourPagesPfn(o, header), 2], [2, fourPagesPfn(o, header) + 1, 2]]) },
  { label: 'a forged stream past i_size', corrupt: (o: Outgoing, header: number) => forge(o, header, [[1, fourPagesPfn(o, header), 4]]) },
  { label: 'nr_extents disagreeing with the stream', corrupt: (o: Outgoing, header: number) => forge(o, header, [[0, fourPagesPfn(o, header), 4]], { nrExtents: 2 }) },
  { label: 'nr_folios disagreeing with the extents', corrupt: (o: Outgoing, header: number) => forge(o, header, [[0, fourPagesPfn(o, header), 4]], { nrFolios: 5 }) },
])('memfd@4.0.0 with $label', ({ corrupt }) => {
  function corrupted() {
    const { o, header } = fourPages();
    corrupt(o, header);
    const next = bootNext(o);
    return { next, sfd: retrieveSession(next.p2, next.dev2, 'vm') };
  }

  it('fails RETRIEVE_FD of that file with EINVAL, stickily', () => {
    const { next, sfd } = corrupted();
    expect(errnoOf(() => retrieveFd(next.p2, sfd, 1))).toBe('EINVAL');
    expect(errnoOf(() => retrieveFd(next.p2, sfd, 1))).toBe('EINVAL');
  });

  it('leaves the other file its data', () => {
    const { next, sfd } = corrupted();
    errnoOf(() => retrieveFd(next.p2, sfd, 1));
    expect(next.p2.pread(retrieveFd(next.p2, sfd, 2), 2 * PAGE_SIZE, 0)).toEqual(pattern(2 * PAGE_SIZE, 2));
  });
});

/** The pfn of token 1's single 4-page extent, read from the untouched stream. */
function fourPagesPfn(o: Outgoing, header: number): number {
  const ext = decodeExtentStream(o.machine.memory.read(streamPage(o, header), Number(headerOf(o, header).stream_bytes)), Number(headerOf(o, header).nr_extents), 0);
  if (typeof ext === 'string') throw new Error(ext);
  return ext.pfn[0] as number;
}

describe('two memfd@4.0.0 files whose metadata name the same folio', () => {
  it('the retargeted extent fails the whole-metadata check (EINVAL); the other file keeps its data', () => {
    const { o, header } = fourPages();
    const other = Number(handedOver(o, 'vm', 2).data);
    // Token 1's stream, rewritten to name token 2's first folio, without fixing its crc32.
    const otherPfn = fourPagesPfn(o, other);
    const e = { count: 1, index: Float64Array.of(0), pfn: Float64Array.of(otherPfn), len: Float64Array.of(4) };
    const s = encodeExtentStream(e, 0);
    if (s.length === Number(headerOf(o, header).stream_bytes)) o.machine.memory.write(streamPage(o, header), s);
    else o.machine.memory.writeU8(streamPage(o, header) + 1, o.machine.memory.readU8(streamPage(o, header) + 1) ^ 0x04);
    const next = bootNext(o);
    const sfd = retrieveSession(next.p2, next.dev2, 'vm');
    expect(errnoOf(() => retrieveFd(next.p2, sfd, 1))).toBe('EINVAL');
    expect(next.p2.pread(retrieveFd(next.p2, sfd, 2), 2 * PAGE_SIZE, 0)).toEqual(pattern(2 * PAGE_SIZE, 2));
  });
});

describe('memfd@4.0.0 under any single corrupted metadata byte (property)', () => {
  it('RETRIEVE_FD of that file fails EINVAL; the other file gets its own bytes or a file error, never other data', () => {
    fc.assert(fc.property(fc.nat(), fc.integer({ min: 1, max: 255 }), (at, flip) => {
      const { o, header } = handOver((x) => sealedSparseMemfd(x.p, 'a'));
      const streamBytes = Number(headerOf(o, header).stream_bytes);
      const pos = at % (memfdLuoSerV4.size + streamBytes);
      const phys = pos < memfdLuoSerV4.size ? header + pos : streamPage(o, header) + pos - memfdLuoSerV4.size;
      o.machine.memory.writeU8(phys, o.machine.memory.readU8(phys) ^ flip);
      const next = bootNext(o);
      const sfd = retrieveSession(next.p2, next.dev2, 'vm');
      expect(errnoOf(() => retrieveFd(next.p2, sfd, 1))).toBe('EINVAL');
      let b = -1;
      const err = errnoOf(() => { b = retrieveFd(next.p2, sfd, 2); });
      if (b >= 0) expect(next.p2.pread(b, 2 * PAGE_SIZE, 0)).toEqual(pattern(2 * PAGE_SIZE, 2));
      else expect(['EIO', 'EINVAL']).toContain(err);
    }), { numRuns: 40 });
  }, 60_000);
});
