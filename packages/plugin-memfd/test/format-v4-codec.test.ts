/**
 * The memfd 4.x extent codec (abi/memfd-v4.ts) on its own: exact stream bytes for hand-chosen
 * extents, the checks a hostile stream meets, and properties: any extent set round-trips, and
 * any single corrupted byte of the header or the stream changes the CRC-32.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { memfdAbi } from '@liveupdate/plugin-memfd';

const {
  ExtentBuilder, checkExtents, decodeExtentStream, encodeExtentStream, memfdLuoSerV4, memfdV4Checksum, MEMFD_V4_CRC_OFFSET,
} = memfdAbi;

const ext = (rows: ReadonlyArray<readonly [index: number, pfn: number, len: number]>) => ({
  count: rows.length,
  index: Float64Array.from(rows.map((r) => r[0])),
  pfn: Float64Array.from(rows.map((r) => r[1])),
  len: Float64Array.from(rows.map((r) => r[2])),
});
const rowsOf = (e: { count: number; index: Float64Array; pfn: Float64Array; len: Float64Array }) =>
  Array.from({ length: e.count }, (_, i) => [e.index[i], e.pfn[i], e.len[i]]);

describe('the extent stream', () => {
  it('encodes (0, 0x1000, 3), (5, 0x2000, 1), (6, 0x1ffe, 1) as 11 hand-computed bytes', () => {
    // gap 0, zigzag(0x1000) = 0x2000 → 80 40, len-1 2; gap 2, zigzag(0x2000 - 0x1003) = 8186 → fa 3f, 0;
    // gap 0, zigzag(0x1ffe - 0x2001 = -3) = 5, 0.
    expect([...encodeExtentStream(ext([[0, 0x1000, 3], [5, 0x2000, 1], [6, 0x1ffe, 1]]), 0)])
      .toEqual([0x00, 0x80, 0x40, 0x02, 0x02, 0xfa, 0x3f, 0x00, 0x00, 0x05, 0x00]);
  });

  it('counts pfn steps in folios of the given order: one 2 MiB folio run at pfn 0x200 is 00 80 08 01', () => {
    expect([...encodeExtentStream(ext([[0, 0x200, 2]]), 9)]).toEqual([0x00, 0x80, 0x08, 0x01]);
  });

  it('is built by merging folios contiguous in the file and in memory', () => {
    const b = new ExtentBuilder(0);
    for (const [i, p] of [[0, 10], [1, 11], [2, 12], [3, 20], [5, 21], [6, 22]] as const) b.add(i, p);
    expect(rowsOf(b.finish())).toEqual([[0, 10, 3], [3, 20, 1], [5, 21, 2]]);
  });

  it.each([
    ['a truncated varint', [0x00, 0x80, 0x80], 1, 'stream truncated at byte 3'],
    ['a varint longer than 8 bytes', [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0, 0], 1, 'varint at byte 0 is longer than 8 bytes'],
    ['trailing bytes', [0x00, 0x02, 0x00, 0x00], 1, '1 byte(s) after extent 0'],
    ['nr_extents the stream cannot hold', [0x00, 0x02, 0x00], 2, 'nr_extents 2 does not fit a stream of 3 bytes'],
    ['a negative pfn', [0x00, 0x01, 0x00], 1, 'extent 0 starts at negative pfn -1'],
  ])('refuses %s', (_label, bytes, n, problem) => {
    expect(decodeExtentStream(Uint8Array.from(bytes), n, 0)).toBe(problem);
  });
});

describe('checkExtents', () => {
  const lim = { order: 0, fileFolios: 100, ramPages: 0x10000, metadataPfns: [0x500], nrFolios: 4 };
  it.each([
    ['an extent past i_size', [[98, 0x100, 3], [0, 0x200, 1]], 'extent 0 (index 98, 3 folios) is beyond i_size (100 folios)'],
    ['an extent past RAM', [[0, 0xfffe, 4]], 'extent 0 pfns [0xfffe, +4) are not RAM'],
    ['two extents overlapping in memory', [[0, 0x100, 2], [10, 0x101, 2]], 'extents 0 and 1 overlap in physical memory'],
    ['an extent over the header page', [[0, 0x4fe, 4]], 'extent 0 covers pfn 0x500, a page of the file\'s handover metadata'],
    ['a folio count that disagrees', [[0, 0x100, 3]], 'nr_folios 4 but the extents hold 3'],
    ['one run written as two', [[0, 0x100, 2], [2, 0x102, 2]], 'extents 0 and 1 are one run written as two'],
  ])('finds %s', (_label, rows, problem) => {
    expect(checkExtents(ext(rows as Array<[number, number, number]>), lim)).toBe(problem);
  });

  it('accepts what a writer produces', () => {
    expect(checkExtents(ext([[0, 0x100, 2], [10, 0x300, 1], [11, 0x200, 1]]), lim)).toBeNull();
  });
});

/** Extents as a writer makes them: ascending, non-overlapping in both spaces, maximal. */
const writtenExtents = fc.array(fc.tuple(fc.nat(1000), fc.integer({ min: 1, max: 64 }), fc.integer({ min: 1, max: 5000 }), fc.nat(1)), { maxLength: 40 })
  .map((runs) => {
    const b = new ExtentBuilder(0);
    let index = 0;
    let pfn = 0x100;
    for (const [gap, len, pgap, down] of runs) {
      index += gap;
      // Alternate upward and downward placement so pfn deltas take both signs without overlapping.
      const base = down === 1 ? pfn + 2 ** 20 + pgap : pfn + pgap;
      for (let k = 0; k < len; k++) b.add(index + k, base + k);
      index += len;
      pfn = base + len;
    }
    return b.finish();
  });

describe('properties of the 4.x codec', () => {
  it('decode(encode(extents)) gives the extents back', () => {
    fc.assert(fc.property(writtenExtents, (e) => {
      const back = decodeExtentStream(encodeExtentStream(e, 0), e.count, 0);
      expect(typeof back).toBe('object');
      if (typeof back === 'string') return;
      expect(rowsOf(back)).toEqual(rowsOf(e));
    }), { numRuns: 200 });
  });

  it('any single corrupted byte of the header or the stream changes the checksum', () => {
    fc.assert(fc.property(writtenExtents, fc.nat(), fc.integer({ min: 1, max: 255 }), (e, at, flip) => {
      const stream = encodeExtentStream(e, 0);
      const header = memfdLuoSerV4.encode({
        pos: 5n, size: 1n << 30n, seals: 2, flags: 0, nr_folios: 7n, nr_extents: BigInt(e.count), stream_bytes: BigInt(stream.length),
        extents_first: 0x1234000n, extents_total_pages: 1, extents_flags: 1, extents_order: 0, order: 0, crc32: 0,
      });
      const good = memfdV4Checksum(header, stream);
      const covered = MEMFD_V4_CRC_OFFSET + stream.length;
      const pos = at % covered;
      const h = header.slice();
      const s = stream.slice();
      if (pos < MEMFD_V4_CRC_OFFSET) h[pos] = (h[pos] as number) ^ flip;
      else s[pos - MEMFD_V4_CRC_OFFSET] = (s[pos - MEMFD_V4_CRC_OFFSET] as number) ^ flip;
      expect(memfdV4Checksum(h, s)).not.toBe(good);
    }), { numRuns: 500 });
  });

  it('a file without holes costs at most 8 bytes per folio wherever its folios sit on a 64 TiB machine', () => {
    fc.assert(fc.property(fc.array(fc.integer({ min: 1, max: 2 ** 34 - 1 }), { minLength: 1, maxLength: 200 }), (pfns) => {
      const b = new ExtentBuilder(0);
      pfns.forEach((p, i) => b.add(i, p));
      expect(encodeExtentStream(b.finish(), 0).length).toBeLessThanOrEqual(8 * pfns.length);
    }), { numRuns: 200 });
  });
});
