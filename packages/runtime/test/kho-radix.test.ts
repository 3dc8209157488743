/**
 * The tracker's key arithmetic against the published vectors: the key encoding and
 * index split of kernel/liveupdate/kexec_handover.c (kho_radix_encode_key and the per-level
 * index split) and kho_preserve_pages' block split.
 */
import { describe, expect, it } from 'vitest';
import { bitmapIndex, decodeKey, encodeKey, splitRun, tableIndex } from '@liveupdate/runtime';

// phys, order, key, L5, L4, L3, L2, L1, bit — worked from kho_radix_encode_key by hand.
const VECTORS: ReadonlyArray<readonly [phys: number, order: number, key: number, l5: number, l4: number, l3: number, l2: number, l1: number, bit: number]> = [
  [0x0, 0, 0x10000000000000, 2, 0, 0, 0, 0, 0],
  [0x10000000, 0, 0x10000000010000, 2, 0, 0, 0, 2, 0],
  [0x123456000, 0, 0x10000000123456, 2, 0, 0, 0, 36, 13398],
  [0x200000, 9, 0x80000000001, 0, 2, 0, 0, 0, 1],
  [0x40000000, 10, 0x40000000100, 0, 1, 0, 0, 0, 256],
  [0x2000, 1, 0x8000000000001, 1, 0, 0, 0, 0, 1],
  [0x40000000, 18, 0x400000001, 0, 0, 2, 0, 0, 1],
  [0x7fe00000, 9, 0x800000003ff, 0, 2, 0, 0, 0, 1023],
  [0xfffffffff000, 0, 0x10000fffffffff, 2, 0, 7, 511, 511, 32767],
];

const hex = (n: number): string => `0x${n.toString(16)}`;

describe('KHO radix key encoding (kho_radix_encode_key)', () => {
  describe.each(VECTORS)('phys %s order %i', (phys, order, key, l5, l4, l3, l2, l1, bit) => {
    const pfn = phys / 4096;

    it(`encodes to key ${hex(key)}`, () => {
      expect(hex(encodeKey(pfn, order))).toBe(hex(key));
    });

    it('decodes back to the same pfn and order', () => {
      expect(decodeKey(key)).toEqual({ pfn, order });
    });

    it(`splits into table indices L5..L1 = ${l5},${l4},${l3},${l2},${l1}`, () => {
      expect([5, 4, 3, 2, 1].map((level) => tableIndex(key, level))).toEqual([l5, l4, l3, l2, l1]);
    });

    it(`has leaf bit ${bit}`, () => {
      expect(bitmapIndex(key)).toBe(bit);
    });
  });

  it('puts the order bit at bit 52 - order for every order 0..52', () => {
    for (let order = 0; order <= 52; order++) {
      expect(encodeKey(0, order)).toBe(2 ** (52 - order));
      expect(decodeKey(2 ** (52 - order))).toEqual({ pfn: 0, order });
    }
  });

  it('uses only root indices 0..3 because keys are at most 53 bits wide', () => {
    expect(tableIndex(2 ** 53 - 1, 5)).toBe(3);
    expect(tableIndex(encodeKey(0, 0), 5)).toBe(2);
  });

  it('rejects keys that no (pfn, order) encodes: 0 and anything of 54 bits or more', () => {
    expect(decodeKey(0).order).toBe(-1);
    expect(decodeKey(2 ** 53).order).toBe(-1);
    expect(decodeKey(1.5).order).toBe(-1);
  });

  it('decodes the largest 53-bit key exactly (no Math.log2 rounding at the top)', () => {
    expect(decodeKey(2 ** 53 - 1)).toEqual({ pfn: 2 ** 52 - 1, order: 0 });
  });
});

describe('kho_preserve_pages block split', () => {
  it('splits (0x1003, 13) into (0x1003, 0), (0x1004, 2), (0x1008, 3)', () => {
    expect(splitRun(0x1003, 13)).toEqual([{ pfn: 0x1003, order: 0 }, { pfn: 0x1004, order: 2 }, { pfn: 0x1008, order: 3 }]);
  });

  it('keeps (0x200, 512) as the single block (0x200, 9)', () => {
    expect(splitRun(0x200, 512)).toEqual([{ pfn: 0x200, order: 9 }]);
  });

  it('splits (0x1ff, 3) into (0x1ff, 0), (0x200, 1)', () => {
    expect(splitRun(0x1ff, 3)).toEqual([{ pfn: 0x1ff, order: 0 }, { pfn: 0x200, order: 1 }]);
  });

  it('lowers a block that would straddle two NUMA nodes until both ends are on one node', () => {
    // Node boundary at pfn 0x400: the natural block (0x0, 11) would straddle it.
    const nodeOf = (pfn: number): number => (pfn < 0x400 ? 0 : 1);
    expect(splitRun(0x0, 0x800, nodeOf)).toEqual([{ pfn: 0x0, order: 10 }, { pfn: 0x400, order: 10 }]);
  });

  it('covers the run exactly, with naturally aligned blocks, for every start and length up to 300', () => {
    for (let pfn = 0; pfn < 300; pfn += 7) {
      for (let n = 1; n <= 300; n += 13) {
        const blocks = splitRun(pfn, n);
        let next = pfn;
        for (const b of blocks) {
          expect(b.pfn).toBe(next);
          expect(b.pfn % 2 ** b.order).toBe(0);
          next += 2 ** b.order;
        }
        expect(next).toBe(pfn + n);
      }
    }
  });
});
