import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PhysMemory, PAGE_SIZE } from '../src/index.js';
import { PfnRanges } from '../src/ranges.js';

const SIZE = 64 * PAGE_SIZE; // 4 chunks of 64 KiB

type Op =
  | { kind: 'write'; phys: number; bytes: Uint8Array }
  | { kind: 'u32'; phys: number; value: number }
  | { kind: 'fill'; phys: number; length: number; byte: number }
  | { kind: 'map'; pfn: number; offset: number; byte: number }
  | { kind: 'synthetic'; pfn: number; pages: number; seed: number }
  | { kind: 'scrub'; start: number; end: number };

const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant('write' as const), phys: fc.integer({ min: 0, max: SIZE - 64 }), bytes: fc.uint8Array({ minLength: 1, maxLength: 64 }) }),
  fc.record({ kind: fc.constant('u32' as const), phys: fc.integer({ min: 0, max: SIZE / 4 - 1 }).map((w) => w * 4), value: fc.nat() }),
  fc.record({ kind: fc.constant('fill' as const), phys: fc.integer({ min: 0, max: SIZE - 8192 }), length: fc.integer({ min: 1, max: 8192 }), byte: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ kind: fc.constant('map' as const), pfn: fc.integer({ min: 0, max: 63 }), offset: fc.integer({ min: 0, max: PAGE_SIZE - 1 }), byte: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ kind: fc.constant('synthetic' as const), pfn: fc.integer({ min: 0, max: 60 }), pages: fc.integer({ min: 1, max: 4 }), seed: fc.nat() }),
  fc.record({ kind: fc.constant('scrub' as const), start: fc.integer({ min: 0, max: 40 }), end: fc.integer({ min: 41, max: 64 }) }),
);

function apply(m: PhysMemory, o: Op): void {
  switch (o.kind) {
    case 'write': m.write(o.phys, o.bytes); break;
    case 'u32': m.writeU32(o.phys, o.value); break;
    case 'fill': m.fill(o.phys, o.length, o.byte); break;
    case 'map': (m.mapPage(o.pfn))[o.offset] = o.byte; break;
    case 'synthetic': m.fillSynthetic(o.pfn * PAGE_SIZE, o.pages * PAGE_SIZE, o.seed); break;
    case 'scrub': m.scrub(PfnRanges.of([o.start, o.end])); break;
  }
}

/** Every byte and every page's kind: what a reader of the memory can observe. */
function image(m: PhysMemory): string {
  const kinds: string[] = [];
  for (let p = 0; p < SIZE / PAGE_SIZE; p++) kinds.push(m.pageKind(p));
  return `${kinds.join(',')} ${createHash('sha256').update(m.read(0, SIZE)).digest('hex')}`;
}

describe('PhysMemory copy-on-write snapshots', () => {
  it('restore puts back every byte and page kind after any sequence of writes, fills, maps, synthetic fills and scrubs', () => {
    fc.assert(fc.property(fc.array(op, { maxLength: 12 }), fc.array(op, { minLength: 1, maxLength: 12 }), fc.array(op, { maxLength: 6 }), (setup, after, again) => {
      const m = new PhysMemory(SIZE);
      for (const o of setup) apply(m, o);
      const want = image(m);
      const snap = m.snapshot();
      for (const o of after) apply(m, o);
      m.restore(snap);
      expect(image(m)).toBe(want);
      // The snapshot stays usable: a second round restores the same image.
      for (const o of again) apply(m, o);
      m.restore(snap);
      expect(image(m)).toBe(want);
    }), { numRuns: 150 });
  });

  it('copies only the chunks written since the snapshot', () => {
    const m = new PhysMemory(SIZE);
    m.fill(0, SIZE, 0x11); // 4 chunks
    const snap = m.snapshot();
    expect(m.dirtyChunks).toBe(0);
    m.writeU32(PAGE_SIZE * 17, 0xdeadbeef); // chunk 1
    m.writeU32(PAGE_SIZE * 18, 0xdeadbeef); // chunk 1 again: no second copy
    expect(m.dirtyChunks).toBe(1);
    expect(m.readU32(PAGE_SIZE * 17)).toBe(0xdeadbeef);
    m.restore(snap);
    expect(m.dirtyChunks).toBe(0);
    expect(m.readU32(PAGE_SIZE * 17)).toBe(0x11111111);
  });

  it('refuses a snapshot that is not the live one', () => {
    const m = new PhysMemory(SIZE);
    const old = m.snapshot();
    m.snapshot();
    expect(() => m.restore(old)).toThrow('memory: this snapshot is not the live one');
  });
});
