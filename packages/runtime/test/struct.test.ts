import { describe, it, expect, expectTypeOf } from 'vitest';
import fc from 'fast-check';
import {
  defineStruct, StructError, u8, u16, u32, s32, u64, bytes, cstring,
  type FieldSpec, type StructValue,
} from '../src/abi/struct.js';

// Modelled on the kernel's struct luo_ser: a compatible string followed by three u64s.
const luoSer = defineStruct('luo_ser', {
  compatible: cstring(8),
  liveupdate_num: u64,
  sessions_pa: u64,
  flbs_pa: u64,
}, { size: 32 });

const luoFileSer = defineStruct('luo_file_ser', {
  compatible: cstring(48),
  data: u64,
  token: u64,
}, { size: 64 });

const createSession = defineStruct('liveupdate_ioctl_create_session', {
  size: u32,
  fd: s32,
  name: cstring(64),
}, { size: 72 });

/** Catch whatever `fn` throws so its fields can be asserted on. */
function thrown(fn: () => unknown): unknown {
  try { fn(); } catch (e) { return e; }
  throw new Error('expected a throw');
}

describe('kernel ABI layouts', () => {
  it('luo_ser is 32 bytes with offsets 0/8/16/24', () => {
    expect(luoSer.size).toBe(32);
    expect(luoSer.offsets).toEqual({ compatible: 0, liveupdate_num: 8, sessions_pa: 16, flbs_pa: 24 });
  });

  it('luo_ser encodes to the exact little-endian bytes', () => {
    const out = luoSer.encode({ compatible: 'luo-v5', liveupdate_num: 1n, sessions_pa: 0x1000n, flbs_pa: 0x2000n });
    expect(Array.from(out)).toEqual([
      0x6c, 0x75, 0x6f, 0x2d, 0x76, 0x35, 0x00, 0x00, // "luo-v5" NUL-padded
      0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // liveupdate_num = 1
      0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // sessions_pa = 0x1000
      0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // flbs_pa = 0x2000
    ]);
  });

  it('luo_file_ser is 64 bytes with offsets 0/48/56', () => {
    expect(luoFileSer.size).toBe(64);
    expect(luoFileSer.offsets).toEqual({ compatible: 0, data: 48, token: 56 });
  });

  it('liveupdate_ioctl_create_session is 72 bytes with offsets 0/4/8', () => {
    expect(createSession.size).toBe(72);
    expect(createSession.offsets).toEqual({ size: 0, fd: 4, name: 8 });
  });

  it('s32 -1 encodes as ff ff ff ff and decodes back to -1', () => {
    const out = createSession.encode({ size: 72, fd: -1, name: 'sess' });
    expect(Array.from(out.subarray(0, 13))).toEqual([
      0x48, 0x00, 0x00, 0x00, // size = 72
      0xff, 0xff, 0xff, 0xff, // fd = -1
      0x73, 0x65, 0x73, 0x73, 0x00, // "sess" NUL
    ]);
    expect(createSession.decode(out)).toEqual({ size: 72, fd: -1, name: 'sess' });
  });

  it('decoded values have the mapped TypeScript types', () => {
    expectTypeOf(createSession.decode(new Uint8Array(72))).toEqualTypeOf<{ size: number; fd: number; name: string }>();
    expectTypeOf(luoSer.read(new Uint8Array(32), 'flbs_pa')).toEqualTypeOf<bigint>();
  });
});

describe('declaration', () => {
  it('throws at declaration when the asserted size differs from the computed size', () => {
    const e = thrown(() => defineStruct('luo_ser', { compatible: cstring(8), liveupdate_num: u64 }, { size: 32 }));
    expect(e).toBeInstanceOf(StructError);
    expect(e).toMatchObject({ struct: 'luo_ser', field: undefined });
    expect((e as Error).message).toMatch(/declared size 32.*16 bytes/);
  });

  it('rejects integer-like field names, whose key order JS would not preserve', () => {
    expect(() => defineStruct('s', { a: u8, 1: u8 })).toThrow(StructError);
  });

  it('cstring(0) is rejected because it has no room for the NUL', () => {
    expect(() => cstring(0)).toThrow(RangeError);
  });
});

describe('encode', () => {
  it('zero-fills missing fields', () => {
    expect(Array.from(createSession.encode({ fd: 3 }).subarray(0, 9))).toEqual([0, 0, 0, 0, 3, 0, 0, 0, 0]);
  });

  it.each([
    ['u32 of 2^32', defineStruct('t', { v: u32 }), 2 ** 32],
    ['u8 of 256', defineStruct('t', { v: u8 }), 256],
    ['u16 of -1', defineStruct('t', { v: u16 }), -1],
    ['s32 of 2^31', defineStruct('t', { v: s32 }), 2 ** 31],
    ['u32 of 1.5', defineStruct('t', { v: u32 }), 1.5],
    ['negative u64', defineStruct('t', { v: u64 }), -1n],
    ['u64 of 2^64', defineStruct('t', { v: u64 }), 1n << 64n],
    ['u64 given a number', defineStruct('t', { v: u64 }), 1],
    ['cstring(8) of exactly 8 bytes', defineStruct('t', { v: cstring(8) }), 'abcdefgh'],
    ['cstring(8) of 8 UTF-8 bytes in 7 chars', defineStruct('t', { v: cstring(8) }), 'abcdeé'.padEnd(7, 'x')],
    ['cstring with an embedded NUL', defineStruct('t', { v: cstring(8) }), 'a\0b'],
    ['bytes(4) given 5 bytes', defineStruct('t', { v: bytes(4) }), new Uint8Array(5)],
  ] as const)('rejects %s with a StructError naming struct and field', (_label, codec, bad) => {
    const e = thrown(() => codec.encode({ v: bad } as never));
    expect(e).toBeInstanceOf(StructError);
    expect(e).toMatchObject({ struct: 't', field: 'v' });
    expect((e as Error).message).toContain('t.v');
  });

  it('accepts a cstring of length-1 bytes, leaving exactly the NUL', () => {
    const out = defineStruct('t', { v: cstring(4) }).encode({ v: 'abc' });
    expect(Array.from(out)).toEqual([0x61, 0x62, 0x63, 0x00]);
  });

  it('accepts the extreme values of every integer kind', () => {
    const codec = defineStruct('t', { a: u8, b: u16, c: u32, d: s32, e: s32, f: u64 });
    const out = codec.encode({ a: 0xff, b: 0xffff, c: 0xffff_ffff, d: -0x8000_0000, e: 0x7fff_ffff, f: (1n << 64n) - 1n });
    expect(Array.from(out)).toEqual([
      0xff, // u8 max
      0xff, 0xff, // u16 max
      0xff, 0xff, 0xff, 0xff, // u32 max
      0x00, 0x00, 0x00, 0x80, // s32 min
      0xff, 0xff, 0xff, 0x7f, // s32 max
      0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // u64 max
    ]);
  });

  it('rejects unknown field names instead of silently zeroing them', () => {
    const e = thrown(() => luoSer.encode({ sessions_PA: 1n } as never));
    expect(e).toMatchObject({ struct: 'luo_ser', field: 'sessions_PA' });
  });

  it('encodeInto writes at the offset and leaves surrounding bytes alone', () => {
    const codec = defineStruct('t', { a: u16 });
    const dst = new Uint8Array([9, 9, 9, 9, 9]);
    codec.encodeInto(dst, 2, { a: 0x1234 });
    expect(Array.from(dst)).toEqual([9, 9, 0x34, 0x12, 9]);
  });

  it('encodeInto throws StructError when the struct does not fit', () => {
    expect(() => defineStruct('t', { a: u32 }).encodeInto(new Uint8Array(5), 2, { a: 1 })).toThrow(StructError);
  });

  it('encodeInto leaves dst untouched when a later field is invalid', () => {
    const dst = new Uint8Array(4).fill(7);
    expect(() => defineStruct('t', { a: u16, b: u8 }).encodeInto(dst, 0, { a: 1, b: 300 })).toThrow(StructError);
    expect(Array.from(dst)).toEqual([7, 7, 7, 7]);
  });
});

describe('decode', () => {
  it('throws a StructError naming the struct, needed and available sizes for a short buffer', () => {
    const e = thrown(() => luoSer.decode(new Uint8Array(31)));
    expect(e).toBeInstanceOf(StructError);
    expect(e).toMatchObject({ struct: 'luo_ser', field: undefined });
    expect((e as Error).message).toMatch(/luo_ser.*needs 32 bytes.*only 31 available/);
  });

  it('reads the struct at the given offset', () => {
    const codec = defineStruct('t', { a: u16, b: u8 });
    expect(codec.decode(new Uint8Array([0xaa, 0xbb, 0x01, 0x02, 0x03]), 2)).toEqual({ a: 0x0201, b: 3 });
  });

  it('honours the byteOffset of a subarray view', () => {
    const backing = new Uint8Array([0xee, 0xee, 0x78, 0x56, 0x34, 0x12]);
    expect(defineStruct('t', { a: u32 }).decode(backing.subarray(2))).toEqual({ a: 0x1234_5678 });
  });

  it('decodes a cstring up to the first NUL, ignoring bytes after it', () => {
    const src = new Uint8Array([0x68, 0x69, 0x00, 0x7a, 0x7a, 0x00]);
    expect(defineStruct('t', { s: cstring(6) }).decode(src)).toEqual({ s: 'hi' });
  });

  it('decodes a cstring without a NUL as the whole array', () => {
    expect(defineStruct('t', { s: cstring(3) }).decode(new Uint8Array([0x61, 0x62, 0x63]))).toEqual({ s: 'abc' });
  });

  it('decodes invalid UTF-8 in a cstring to U+FFFD rather than throwing', () => {
    expect(defineStruct('t', { s: cstring(2) }).decode(new Uint8Array([0xff, 0x00]))).toEqual({ s: '\ufffd' });
  });

  it('returns bytes fields as a copy, not a view of the source', () => {
    const src = new Uint8Array([1, 2]);
    const { b } = defineStruct('t', { b: bytes(2) }).decode(src);
    src[0] = 99;
    expect(Array.from(b)).toEqual([1, 2]);
  });
});

describe('read and write', () => {
  it('read returns one field at its offset', () => {
    const buf = luoSer.encode({ sessions_pa: 0xdead_beefn });
    expect(luoSer.read(buf, 'sessions_pa')).toBe(0xdead_beefn);
  });

  it('write changes only the bytes of that field', () => {
    const dst = new Uint8Array(73);
    createSession.write(dst, 'fd', -2, 1);
    expect(Array.from(dst.subarray(0, 10))).toEqual([0, 0, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff, 0]);
  });

  it('read of an unknown field throws StructError, even for Object.prototype names', () => {
    expect(() => luoSer.read(new Uint8Array(32), 'toString' as never)).toThrow(StructError);
  });
});

describe('properties', () => {
  const mixed = defineStruct('mixed', {
    a: u8, b: u16, c: u32, d: s32, e: u64, f: bytes(5), g: cstring(24),
  });
  const fieldArb: { [K in keyof typeof mixed.fields]: fc.Arbitrary<StructValue<typeof mixed.fields>[K]> } = {
    a: fc.integer({ min: 0, max: 0xff }),
    b: fc.integer({ min: 0, max: 0xffff }),
    c: fc.integer({ min: 0, max: 0xffff_ffff }),
    d: fc.integer({ min: -0x8000_0000, max: 0x7fff_ffff }),
    e: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
    f: fc.uint8Array({ minLength: 5, maxLength: 5 }),
    // At most 5 code points = 20 UTF-8 bytes < 24; 'binary' covers multi-byte and astral chars.
    g: fc.oneof(
      fc.string({ unit: 'binary', maxLength: 5 }),
      fc.string({ minLength: 23, maxLength: 23 }),
    ).filter((s) => !s.includes('\0')),
  };

  it('decode(encode(v)) equals v for random values of a mixed layout', () => {
    fc.assert(fc.property(fc.record(fieldArb), (v) => {
      expect(mixed.decode(mixed.encode(v))).toEqual(v);
    }));
  });

  it('decode of arbitrary bytes either returns or throws StructError, never anything else', () => {
    const layouts: readonly { decode(src: Uint8Array, offset?: number): unknown; size: number }[] = [mixed, luoSer, createSession];
    fc.assert(fc.property(
      fc.constantFrom(...layouts),
      fc.uint8Array({ maxLength: 2 * 72 }),
      fc.nat({ max: 2 * 72 }),
      (codec, src, offset) => {
        const buf = src.subarray(0, Math.min(src.length, 2 * codec.size));
        try {
          codec.decode(buf, offset);
          expect(buf.length - offset).toBeGreaterThanOrEqual(codec.size);
        } catch (e) {
          expect(e).toBeInstanceOf(StructError);
          expect(buf.length - offset).toBeLessThan(codec.size);
        }
      },
    ));
  });
});

// Keep the FieldSpec union itself exercised at the type level: every helper is a FieldSpec.
const _specs: readonly FieldSpec[] = [u8, u16, u32, s32, u64, bytes(1), cstring(1)];
void _specs;
