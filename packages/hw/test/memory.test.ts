import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { PAGE_SIZE, PfnRanges, PhysMemory, PhysAddrError, fillSyntheticPage } from '../src/index.js';

const KiB = 2 ** 10;
const MiB = 2 ** 20;
const GiB = 2 ** 30;
const TiB = 2 ** 40;
const CHUNK = 64 * KiB;

/** The bytes of the synthetic page with page seed `seed`, as the memory exposes them. */
function syntheticPage(seed: number): Uint8Array {
  const words = new Uint32Array(PAGE_SIZE / 4);
  fillSyntheticPage(words, seed);
  return new Uint8Array(words.buffer);
}

const bytes = (...b: number[]): Uint8Array => Uint8Array.from(b);

/** Index of the first differing byte, -1 when equal (toEqual is slow on arrays of many KiB). */
function firstDifference(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

function thrown(f: () => unknown): unknown {
  try { f(); } catch (e) { return e; }
  return undefined;
}

describe('PhysMemory: construction', () => {
  it('exposes size and pageCount', () => {
    const m = new PhysMemory(64 * TiB);
    expect(m.size).toBe(70368744177664);
    expect(m.pageCount).toBe(2 ** 34);
  });

  it.each([0, -4096, 4095, 4097, 1.5 * PAGE_SIZE, Number.NaN, 2 ** 60])('size %s is rejected with RangeError', (size) => {
    expect(() => new PhysMemory(size)).toThrow(RangeError);
  });
});

describe('PhysMemory: untouched memory', () => {
  it('reads zero everywhere and costs no chunk, even at 63 TiB of a 64 TiB memory', () => {
    const m = new PhysMemory(64 * TiB);
    const at = 63 * TiB;
    expect(m.read(at, 3 * PAGE_SIZE)).toEqual(new Uint8Array(3 * PAGE_SIZE));
    expect(m.readU8(at + 17)).toBe(0);
    expect(m.readU32(at + 4)).toBe(0);
    expect(m.readU64(at + 8)).toBe(0n);
    expect(m.readU64Number(at + 8)).toBe(0);
    expect(m.residentBytes).toBe(0);
    expect(m.chunkCount).toBe(0);
  });

  it("reports pageKind 'zero' and no synthetic seed", () => {
    const m = new PhysMemory(64 * TiB);
    expect(m.pageKind(0)).toBe('zero');
    expect(m.pageKind(2 ** 34 - 1)).toBe('zero');
    expect(m.syntheticSeed(5)).toBe(-1);
  });

  it('counts no poison reads', () => {
    const m = new PhysMemory(1 * MiB);
    m.read(0, 1 * MiB);
    expect(m.poisonReads).toBe(0);
  });
});

describe('PhysMemory: bytes', () => {
  it('a write allocates exactly one 64 KiB chunk and reads back', () => {
    const m = new PhysMemory(1 * GiB);
    m.write(3 * MiB + 100, bytes(1, 2, 3));
    expect(m.read(3 * MiB + 100, 3)).toEqual(bytes(1, 2, 3));
    expect(m.residentBytes).toBe(65536);
    expect(m.chunkCount).toBe(1);
  });

  it('a write across a page boundary reads back exactly, untouched neighbours stay zero', () => {
    const m = new PhysMemory(1 * MiB);
    const at = PAGE_SIZE - 3;
    m.write(at, bytes(0x11, 0x22, 0x33, 0x44, 0x55, 0x66));
    expect(m.read(at - 1, 8)).toEqual(bytes(0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0));
    expect(m.readU8(PAGE_SIZE - 1)).toBe(0x33);
    expect(m.readU8(PAGE_SIZE)).toBe(0x44);
    expect(m.residentBytes).toBe(65536);
  });

  it('a write across a 64 KiB chunk boundary lands in two chunks and reads back exactly', () => {
    const m = new PhysMemory(1 * MiB);
    const at = CHUNK - 5;
    const src = bytes(1, 2, 3, 4, 5, 6, 7, 8, 9, 10);
    m.write(at, src);
    expect(m.read(at, 10)).toEqual(src);
    expect(m.readU8(CHUNK - 1)).toBe(5);
    expect(m.readU8(CHUNK)).toBe(6);
    expect(m.residentBytes).toBe(2 * 65536);
  });

  it('a multi-chunk write and a read at a different offset see the same bytes', () => {
    const m = new PhysMemory(1 * MiB);
    const src = new Uint8Array(3 * CHUNK + 123);
    for (let i = 0; i < src.length; i++) src[i] = (i * 7 + 3) & 0xff;
    m.write(CHUNK / 2, src);
    const back = m.read(CHUNK / 2 + 1000, 2 * CHUNK);
    expect(firstDifference(back, src.subarray(1000, 1000 + 2 * CHUNK))).toBe(-1);
    expect(m.chunkCount).toBe(4);
  });

  it('readInto fills a caller buffer, including a subarray view', () => {
    const m = new PhysMemory(1 * MiB);
    m.write(PAGE_SIZE - 2, bytes(9, 8, 7, 6));
    const buf = new Uint8Array(8).fill(0xee);
    m.readInto(PAGE_SIZE - 2, buf.subarray(2, 6));
    expect(buf).toEqual(bytes(0xee, 0xee, 9, 8, 7, 6, 0xee, 0xee));
  });

  it('writeU8 stores the low 8 bits', () => {
    const m = new PhysMemory(1 * MiB);
    m.writeU8(10, 0x1ff);
    expect(m.readU8(10)).toBe(0xff);
  });

  it('fill sets a range to one byte across chunks', () => {
    const m = new PhysMemory(1 * MiB);
    m.fill(CHUNK - 2, 4, 0x5c);
    expect(m.read(CHUNK - 3, 6)).toEqual(bytes(0, 0x5c, 0x5c, 0x5c, 0x5c, 0));
  });

  it('mapPage returns a writable 4 KiB view of the page', () => {
    const m = new PhysMemory(1 * MiB);
    const page = m.mapPage(3);
    expect(page.length).toBe(PAGE_SIZE);
    page[0] = 0x42;
    page[PAGE_SIZE - 1] = 0x43;
    expect(m.readU8(3 * PAGE_SIZE)).toBe(0x42);
    expect(m.readU8(4 * PAGE_SIZE - 1)).toBe(0x43);
    expect(m.readU8(4 * PAGE_SIZE)).toBe(0);
    expect(m.pageKind(3)).toBe('data');
  });
});

describe('PhysMemory: little-endian integers', () => {
  it('writeU64(p, 0x0102030405060708n) stores bytes 08 07 06 05 04 03 02 01', () => {
    const m = new PhysMemory(1 * MiB);
    m.writeU64(0x100, 0x0102030405060708n);
    expect(m.read(0x100, 8)).toEqual(bytes(0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01));
  });

  it('readU64 reads those bytes back as 0x0102030405060708n and readU32 reads each half', () => {
    const m = new PhysMemory(1 * MiB);
    m.write(0x100, bytes(0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01));
    expect(m.readU64(0x100)).toBe(0x0102030405060708n);
    expect(m.readU32(0x100)).toBe(0x05060708);
    expect(m.readU32(0x104)).toBe(0x01020304);
  });

  it('writeU32(p, 0xdeadbeef) stores bytes ef be ad de, aligned or not', () => {
    const m = new PhysMemory(1 * MiB);
    m.writeU32(0x200, 0xdeadbeef);
    m.writeU32(0x301, 0xdeadbeef);
    expect(m.read(0x200, 4)).toEqual(bytes(0xef, 0xbe, 0xad, 0xde));
    expect(m.read(0x300, 6)).toEqual(bytes(0, 0xef, 0xbe, 0xad, 0xde, 0));
    expect(m.readU32(0x200)).toBe(0xdeadbeef);
    expect(m.readU32(0x301)).toBe(0xdeadbeef);
  });

  it('writeU32 takes the value modulo 2^32 (negative numbers too)', () => {
    const m = new PhysMemory(1 * MiB);
    m.writeU32(0, -1);
    m.writeU32(4, 2 ** 32 + 5);
    expect(m.readU32(0)).toBe(0xffffffff);
    expect(m.readU32(4)).toBe(5);
  });

  it('a u64 straddling a page and a chunk boundary round-trips', () => {
    const m = new PhysMemory(1 * MiB);
    const at = CHUNK - 3;
    m.writeU64(at, 0xfedcba9876543210n);
    expect(m.read(at, 8)).toEqual(bytes(0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0xdc, 0xfe));
    expect(m.readU64(at)).toBe(0xfedcba9876543210n);
    expect(m.readU32(at + 2)).toBe(0xba987654);
  });

  it('writeU64 accepts a number and stores it modulo 2^64 (-1n is all ones)', () => {
    const m = new PhysMemory(1 * MiB);
    m.writeU64(0, 2 ** 46 + 5);
    m.writeU64(8, -1n);
    expect(m.readU64(0)).toBe(70368744177669n);
    expect(m.readU64(8)).toBe(0xffffffffffffffffn);
  });

  it('readU64Number is exact below 2^53', () => {
    const m = new PhysMemory(1 * MiB);
    m.writeU64(0, 2 ** 46 + 5);
    m.writeU64(8, 2 ** 53 - 1);
    m.writeU64(17, 0x0102030405060708n);
    expect(m.readU64Number(0)).toBe(70368744177669);
    expect(m.readU64Number(8)).toBe(9007199254740991);
    expect(m.readU64Number(17)).toBe(Number(72623859790382856n));
  });

  it('readU64Number rounds values above 2^53 (2^64 - 1 reads as 2^64)', () => {
    const m = new PhysMemory(1 * MiB);
    m.writeU64(0, 0xffffffffffffffffn);
    expect(m.readU64Number(0)).toBe(2 ** 64);
  });

  it('property: writeU64 then readU64 returns the value and the bytes are little-endian', () => {
    const m = new PhysMemory(1 * MiB);
    fc.assert(fc.property(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), fc.integer({ min: 0, max: 1 * MiB - 8 }), (v, at) => {
      m.writeU64(at, v);
      expect(m.readU64(at)).toBe(v);
      const b = m.read(at, 8);
      let back = 0n;
      for (let i = 7; i >= 0; i--) back = (back << 8n) | BigInt(b[i] ?? 0);
      expect(back).toBe(v);
    }));
  });
});

describe('PhysMemory: bounds', () => {
  const size = 1 * MiB;

  it.each([
    ['readU8 at size', (m: PhysMemory) => m.readU8(size)],
    ['readU8 at -1', (m: PhysMemory) => m.readU8(-1)],
    ['readU8 at 0.5', (m: PhysMemory) => m.readU8(0.5)],
    ['readU8 at NaN', (m: PhysMemory) => m.readU8(Number.NaN)],
    ['readU8 at 2^53', (m: PhysMemory) => m.readU8(2 ** 53)],
    ['readU8 at -size (no wrap to 0)', (m: PhysMemory) => m.readU8(-size)],
    ['readU32 at size - 2', (m: PhysMemory) => m.readU32(size - 2)],
    ['readU64 at size - 4', (m: PhysMemory) => m.readU64(size - 4)],
    ['readU64Number at size - 7', (m: PhysMemory) => m.readU64Number(size - 7)],
    ['read 4 bytes at size - 2', (m: PhysMemory) => m.read(size - 2, 4)],
    ['read -1 bytes', (m: PhysMemory) => m.read(0, -1)],
    ['writeU8 at size', (m: PhysMemory) => m.writeU8(size, 1)],
    ['writeU8 at -1', (m: PhysMemory) => m.writeU8(-1, 1)],
    ['writeU8 at 1.5', (m: PhysMemory) => m.writeU8(1.5, 1)],
    ['writeU32 at size - 3', (m: PhysMemory) => m.writeU32(size - 3, 1)],
    ['writeU64 at size - 7', (m: PhysMemory) => m.writeU64(size - 7, 1n)],
    ['write 2 bytes at size - 1', (m: PhysMemory) => m.write(size - 1, bytes(1, 2))],
    ['fill 2 bytes at size - 1', (m: PhysMemory) => m.fill(size - 1, 2, 1)],
    ['fillSynthetic one page past the end', (m: PhysMemory) => m.fillSynthetic(size, PAGE_SIZE, 1)],
    ['pageKind of pfn pageCount', (m: PhysMemory) => m.pageKind(size / PAGE_SIZE)],
    ['pageKind of pfn -1', (m: PhysMemory) => m.pageKind(-1)],
    ['pageKind of pfn 1.5', (m: PhysMemory) => m.pageKind(1.5)],
    ['mapPage of pfn pageCount', (m: PhysMemory) => m.mapPage(size / PAGE_SIZE)],
    ['mapPage of pfn 1.5 (no view straddling two pages)', (m: PhysMemory) => m.mapPage(1.5)],
    ['isSyntheticRun past the end', (m: PhysMemory) => m.isSyntheticRun(size - PAGE_SIZE, 2 * PAGE_SIZE, 1)],
  ] as const)('%s throws PhysAddrError', (_name, access) => {
    const m = new PhysMemory(size);
    expect(() => access(m)).toThrow(PhysAddrError);
  });

  it('a rejected write changes nothing and allocates nothing', () => {
    const m = new PhysMemory(size);
    expect(() => m.write(size - 1, bytes(1, 2))).toThrow(PhysAddrError);
    expect(() => m.writeU64(size - 4, 0x0102030405060708n)).toThrow(PhysAddrError);
    expect(m.residentBytes).toBe(0);
    expect(m.readU8(size - 1)).toBe(0);
  });

  it('PhysAddrError is a RangeError carrying the address, length and limit', () => {
    const e = thrown(() => new PhysMemory(size).read(size - 2, 4));
    expect(e).toBeInstanceOf(RangeError);
    expect(e).toBeInstanceOf(PhysAddrError);
    const pe = e as PhysAddrError;
    expect(pe.name).toBe('PhysAddrError');
    expect(pe.phys).toBe(size - 2);
    expect(pe.length).toBe(4);
    expect(pe.limit).toBe(size);
    expect(pe.message).toBe('physical access [0xffffe, +0x4) is outside memory [0, 0x100000)');
  });

  it('the last byte of a 64 TiB memory is writable and costs one chunk; one byte past throws', () => {
    const m = new PhysMemory(64 * TiB);
    const last = 64 * TiB - 1;
    m.writeU8(last, 0x5a);
    expect(m.readU8(last)).toBe(0x5a);
    expect(m.read(last - 1, 2)).toEqual(bytes(0, 0x5a));
    expect(m.residentBytes).toBe(65536);
    expect(() => m.writeU8(last + 1, 0x5a)).toThrow(PhysAddrError);
    expect(() => m.readU8(last + 1)).toThrow(PhysAddrError);
  });

  it('the last u64 of a 64 TiB memory round-trips', () => {
    const m = new PhysMemory(64 * TiB);
    m.writeU64(64 * TiB - 8, 0x0102030405060708n);
    expect(m.readU64(64 * TiB - 8)).toBe(0x0102030405060708n);
    expect(m.readU8(64 * TiB - 1)).toBe(0x01);
  });

  it('an empty access exactly at the end is allowed', () => {
    const m = new PhysMemory(size);
    expect(m.read(size, 0)).toEqual(new Uint8Array(0));
  });
});

describe('PhysMemory: synthetic runs', () => {
  it('a synthetic page reads as fillSyntheticPage of its page seed', () => {
    const m = new PhysMemory(1 * MiB);
    m.fillSynthetic(4 * PAGE_SIZE, 3 * PAGE_SIZE, 1000);
    expect(m.read(4 * PAGE_SIZE, PAGE_SIZE)).toEqual(syntheticPage(1000));
    expect(m.read(6 * PAGE_SIZE, PAGE_SIZE)).toEqual(syntheticPage(1002));
  });

  it('synthetic content reads back identical on repeated reads, whatever the read size', () => {
    const m = new PhysMemory(1 * MiB);
    m.fillSynthetic(0, 8 * PAGE_SIZE, 7);
    const first = m.read(0, 8 * PAGE_SIZE);
    const second = m.read(0, 8 * PAGE_SIZE);
    expect(firstDifference(second, first)).toBe(-1);
    const pieces = new Uint8Array(8 * PAGE_SIZE);
    for (let at = 0; at < pieces.length; at += 1000) pieces.set(m.read(at, Math.min(1000, pieces.length - at)), at);
    expect(firstDifference(pieces, first)).toBe(-1);
    for (let i = 0; i < 64; i++) expect(m.readU8(i * 509)).toBe(first[i * 509]);
  });

  it('page i of a run seeded s equals page 0 of a run seeded s + i', () => {
    const m = new PhysMemory(1 * MiB);
    m.fillSynthetic(0, 5 * PAGE_SIZE, 40);
    for (let i = 0; i < 5; i++) m.fillSynthetic((32 + i) * PAGE_SIZE, PAGE_SIZE, 40 + i);
    for (let i = 0; i < 5; i++) {
      expect(m.read(i * PAGE_SIZE, PAGE_SIZE)).toEqual(m.read((32 + i) * PAGE_SIZE, PAGE_SIZE));
    }
  });

  it('page seeds wrap modulo 2^32: page 1 of a run seeded 0xffffffff has seed 0', () => {
    const m = new PhysMemory(1 * MiB);
    m.fillSynthetic(0, 2 * PAGE_SIZE, 0xffffffff);
    expect(m.syntheticSeed(1)).toBe(0);
    expect(m.read(PAGE_SIZE, PAGE_SIZE)).toEqual(syntheticPage(0));
  });

  it('different seeds give different, non-zero pages', () => {
    const a = syntheticPage(0);
    const b = syntheticPage(1);
    expect(a).not.toEqual(b);
    expect(a.some((x) => x !== 0)).toBe(true);
  });

  it('readU32 of a synthetic page is the corresponding generated word', () => {
    const m = new PhysMemory(1 * MiB);
    m.fillSynthetic(PAGE_SIZE, PAGE_SIZE, 99);
    const words = new Uint32Array(PAGE_SIZE / 4);
    fillSyntheticPage(words, 99);
    expect(m.readU32(PAGE_SIZE)).toBe(words[0]);
    expect(m.readU32(PAGE_SIZE + 4 * 100)).toBe(words[100]);
  });

  it("an untouched synthetic page has pageKind 'synthetic' and reports its page seed", () => {
    const m = new PhysMemory(1 * MiB);
    m.fillSynthetic(10 * PAGE_SIZE, 4 * PAGE_SIZE, 500);
    expect(m.pageKind(12)).toBe('synthetic');
    expect(m.syntheticSeed(12)).toBe(502);
    expect(m.pageKind(14)).toBe('zero');
    expect(m.syntheticSeed(14)).toBe(-1);
  });

  it('isSyntheticRun is true for an untouched run, and for any aligned sub-run with its own seed', () => {
    const m = new PhysMemory(1 * MiB);
    m.fillSynthetic(16 * PAGE_SIZE, 32 * PAGE_SIZE, 1234);
    expect(m.isSyntheticRun(16 * PAGE_SIZE, 32 * PAGE_SIZE, 1234)).toBe(true);
    expect(m.isSyntheticRun(20 * PAGE_SIZE, 8 * PAGE_SIZE, 1238)).toBe(true);
  });

  it('isSyntheticRun is false for a different seed', () => {
    const m = new PhysMemory(1 * MiB);
    m.fillSynthetic(16 * PAGE_SIZE, 32 * PAGE_SIZE, 1234);
    expect(m.isSyntheticRun(16 * PAGE_SIZE, 32 * PAGE_SIZE, 1235)).toBe(false);
    expect(m.isSyntheticRun(20 * PAGE_SIZE, 8 * PAGE_SIZE, 1234)).toBe(false);
  });

  it('isSyntheticRun is false after writing one byte inside the run', () => {
    const m = new PhysMemory(1 * MiB);
    m.fillSynthetic(16 * PAGE_SIZE, 32 * PAGE_SIZE, 1234);
    m.writeU8(40 * PAGE_SIZE + 7, 1);
    expect(m.isSyntheticRun(16 * PAGE_SIZE, 32 * PAGE_SIZE, 1234)).toBe(false);
    expect(m.syntheticSeed(40)).toBe(-1);
  });

  it('isSyntheticRun is false for a range reaching past the run or not page aligned', () => {
    const m = new PhysMemory(1 * MiB);
    m.fillSynthetic(16 * PAGE_SIZE, 32 * PAGE_SIZE, 1234);
    expect(m.isSyntheticRun(16 * PAGE_SIZE, 33 * PAGE_SIZE, 1234)).toBe(false);
    expect(m.isSyntheticRun(15 * PAGE_SIZE, 2 * PAGE_SIZE, 1233)).toBe(false);
    expect(m.isSyntheticRun(16 * PAGE_SIZE + 1, PAGE_SIZE, 1234)).toBe(false);
    expect(m.isSyntheticRun(16 * PAGE_SIZE, PAGE_SIZE + 1, 1234)).toBe(false);
  });

  it('a 1 TiB synthetic run costs no chunk and isSyntheticRun over the whole TiB is true', () => {
    const m = new PhysMemory(64 * TiB);
    m.fillSynthetic(2 * TiB, 1 * TiB, 77);
    expect(m.residentBytes).toBe(0);
    expect(m.isSyntheticRun(2 * TiB, 1 * TiB, 77)).toBe(true);
    const mid = (2 * TiB + TiB / 2) / PAGE_SIZE;
    expect(m.read(mid * PAGE_SIZE, PAGE_SIZE)).toEqual(syntheticPage((77 + (mid - 2 * TiB / PAGE_SIZE)) >>> 0));
    expect(m.pageKind(mid)).toBe('synthetic');
    expect(m.residentBytes).toBe(0);
  });

  it('a write in the 1 TiB run makes only that run false and costs one chunk', () => {
    const m = new PhysMemory(64 * TiB);
    m.fillSynthetic(0, 1 * TiB, 77);
    m.fillSynthetic(1 * TiB, 1 * TiB, 88);
    m.writeU8(TiB / 2, 0);
    expect(m.isSyntheticRun(0, 1 * TiB, 77)).toBe(false);
    expect(m.isSyntheticRun(1 * TiB, 1 * TiB, 88)).toBe(true);
    expect(m.residentBytes).toBe(65536);
  });

  it("writing inside a synthetic page keeps the rest of that page's synthetic bytes", () => {
    const m = new PhysMemory(1 * MiB);
    m.fillSynthetic(0, 4 * PAGE_SIZE, 321);
    m.write(PAGE_SIZE + 100, bytes(1, 2, 3));
    const expected = syntheticPage(322).slice();
    expected.set(bytes(1, 2, 3), 100);
    expect(m.read(PAGE_SIZE, PAGE_SIZE)).toEqual(expected);
    expect(m.pageKind(1)).toBe('data');
  });

  it('writing inside a synthetic page keeps the other synthetic pages of its chunk intact', () => {
    const m = new PhysMemory(1 * MiB);
    m.fillSynthetic(0, 20 * PAGE_SIZE, 321);
    m.writeU8(PAGE_SIZE, 0);
    for (const pfn of [0, 2, 15, 16, 19]) expect(m.read(pfn * PAGE_SIZE, PAGE_SIZE)).toEqual(syntheticPage(321 + pfn));
    expect(m.read(20 * PAGE_SIZE, PAGE_SIZE)).toEqual(new Uint8Array(PAGE_SIZE));
  });

  it('fillSynthetic over written pages replaces their bytes (written pages do not hide the new content)', () => {
    const m = new PhysMemory(1 * MiB);
    m.fill(0, 2 * PAGE_SIZE, 0x33);
    m.fillSynthetic(PAGE_SIZE, 2 * PAGE_SIZE, 5);
    expect(m.read(0, PAGE_SIZE)).toEqual(new Uint8Array(PAGE_SIZE).fill(0x33));
    expect(m.read(PAGE_SIZE, PAGE_SIZE)).toEqual(syntheticPage(5));
    expect(m.read(2 * PAGE_SIZE, PAGE_SIZE)).toEqual(syntheticPage(6));
  });

  it('fillSynthetic over part of an earlier run re-seeds only that part', () => {
    const m = new PhysMemory(1 * MiB);
    m.fillSynthetic(0, 10 * PAGE_SIZE, 100);
    m.fillSynthetic(4 * PAGE_SIZE, 2 * PAGE_SIZE, 900);
    expect([0, 3, 4, 5, 6, 9].map((p) => m.syntheticSeed(p))).toEqual([100, 103, 900, 901, 106, 109]);
    expect(m.read(6 * PAGE_SIZE, PAGE_SIZE)).toEqual(syntheticPage(106));
  });

  it('fillSynthetic requires page alignment', () => {
    const m = new PhysMemory(1 * MiB);
    expect(() => m.fillSynthetic(1, PAGE_SIZE, 1)).toThrow(RangeError);
    expect(() => m.fillSynthetic(0, PAGE_SIZE - 1, 1)).toThrow(RangeError);
  });
});

describe('PhysMemory: zeroing costs what it changes', () => {
  it('zeroing never-written pages stores nothing and makes no chunk; they read zero', () => {
    const m = new PhysMemory(1 * GiB);
    m.fill(5 * MiB, 3 * CHUNK + PAGE_SIZE, 0);
    expect(m.chunkCount).toBe(0);
    expect(m.read(5 * MiB, 8)).toEqual(new Uint8Array(8));
    expect(m.pageKind(5 * MiB / PAGE_SIZE)).toBe('zero');
  });

  it('zeroing a synthetic page makes its chunk and the page reads zero', () => {
    const m = new PhysMemory(1 * MiB);
    m.fillSynthetic(4 * PAGE_SIZE, PAGE_SIZE, 7);
    m.fill(4 * PAGE_SIZE, PAGE_SIZE, 0);
    expect(m.chunkCount).toBe(1);
    expect(m.read(4 * PAGE_SIZE, PAGE_SIZE)).toEqual(new Uint8Array(PAGE_SIZE));
  });

  it('zeroing a page scrubbed at a kexec (poison) makes its chunk and the page reads zero, not 0xaa', () => {
    const m = new PhysMemory(1 * MiB);
    m.scrub(PfnRanges.of([0, 16]));
    m.fill(20 * PAGE_SIZE, PAGE_SIZE, 0);
    expect(m.chunkCount).toBe(1);
    expect(Array.from(m.read(20 * PAGE_SIZE - 2, 4))).toEqual([0xaa, 0xaa, 0, 0]);
    expect(m.poisonReads).toBe(1);
  });

  it('zeroing a written page clears it in its chunk', () => {
    const m = new PhysMemory(1 * MiB);
    m.write(PAGE_SIZE + 10, bytes(1, 2, 3));
    m.fill(PAGE_SIZE, PAGE_SIZE, 0);
    expect(m.chunkCount).toBe(1);
    expect(m.read(PAGE_SIZE + 10, 3)).toEqual(new Uint8Array(3));
  });
});
