import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import {
  PAGE_SIZE, POISON_BYTE, PfnRanges, SizeError, createMachine, attachMachine, fillSyntheticPage,
  type Machine, type BootParams,
} from '../src/index.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const TiB = 2 ** 40;
const CHUNK = 64 * 1024;
const PAGES_PER_CHUNK = CHUNK / PAGE_SIZE;

function syntheticPage(seed: number): Uint8Array {
  const words = new Uint32Array(PAGE_SIZE / 4);
  fillSyntheticPage(words, seed);
  return new Uint8Array(words.buffer);
}

/** Index of the first differing byte, -1 when equal (toEqual on 200 KB arrays is far too slow inside a property). */
function firstDifference(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

const poisonPage = (): Uint8Array => new Uint8Array(PAGE_SIZE).fill(POISON_BYTE);
const zeroPage = (): Uint8Array => new Uint8Array(PAGE_SIZE);
const pageOf = (m: Machine, pfn: number): Uint8Array => m.memory.read(pfn * PAGE_SIZE, PAGE_SIZE);
const params = (cmdline: string): BootParams => ({ cmdline });

describe('createMachine', () => {
  it('a 64 GiB machine has one node covering every page by default', () => {
    const m = createMachine({ memory: '64GiB' });
    expect(m.memorySize).toBe(68719476736);
    expect(m.memory.pageCount).toBe(16777216);
    expect(m.numaNodes).toEqual([{ id: 0, startPfn: 0, endPfn: 16777216 }]);
  });

  it('64 GiB on 2 NUMA nodes splits at pfn 8388608 (32 GiB)', () => {
    const m = createMachine({ memory: '64GiB', numaNodes: 2 });
    expect(m.numaNodes).toEqual([
      { id: 0, startPfn: 0, endPfn: 8388608 },
      { id: 1, startPfn: 8388608, endPfn: 16777216 },
    ]);
  });

  it('nodeOfPfn maps each side of a node boundary to its node and pfns past the end to -1', () => {
    const m = createMachine({ memory: '64GiB', numaNodes: 2 });
    expect(m.nodeOfPfn(0)).toBe(0);
    expect(m.nodeOfPfn(8388607)).toBe(0);
    expect(m.nodeOfPfn(8388608)).toBe(1);
    expect(m.nodeOfPfn(16777215)).toBe(1);
    expect(m.nodeOfPfn(16777216)).toBe(-1);
  });

  it('an uneven split aligns inner boundaries down to 2 MiB and gives the last node the rest', () => {
    const m = createMachine({ memory: '64GiB', numaNodes: 3 });
    expect(m.numaNodes).toEqual([
      { id: 0, startPfn: 0, endPfn: 5592064 },
      { id: 1, startPfn: 5592064, endPfn: 11184128 },
      { id: 2, startPfn: 11184128, endPfn: 16777216 },
    ]);
  });

  it('property: 2..64 nodes are contiguous, 2 MiB aligned inside, cover all pages and are equal except the last', () => {
    fc.assert(fc.property(
      fc.integer({ min: 2, max: 64 }),
      fc.integer({ min: 1, max: 2 ** 22 }),
      (nodes, pagesPerNodeHint) => {
        const pages = nodes * 512 + pagesPerNodeHint; // always large enough for `nodes` nodes
        const m = createMachine({ memory: pages * PAGE_SIZE, numaNodes: nodes });
        expect(m.numaNodes.length).toBe(nodes);
        const first = m.numaNodes[0];
        expect(first?.startPfn).toBe(0);
        const per = first ? first.endPfn - first.startPfn : 0;
        expect(per % 512).toBe(0);
        m.numaNodes.forEach((n, i) => {
          expect(n.id).toBe(i);
          expect(n.startPfn).toBe(i * per);
          expect(n.startPfn % 512).toBe(0);
          expect(n.endPfn).toBe(i === nodes - 1 ? pages : (i + 1) * per);
        });
      },
    ), { numRuns: 200 });
  });

  it('memory may be given as a number of bytes or a bigint', () => {
    expect(createMachine({ memory: 64 * MiB }).memorySize).toBe(67108864);
    expect(createMachine({ memory: 64n * 1024n * 1024n }).memorySize).toBe(67108864);
  });

  it('a 64 TiB machine costs nothing until written', () => {
    const m = createMachine({ memory: '64TiB', numaNodes: 8 });
    expect(m.memorySize).toBe(64 * TiB);
    expect(m.memory.residentBytes).toBe(0);
    expect(m.numaNodes[7]).toEqual({ id: 7, startPfn: 7 * 2 ** 31, endPfn: 2 ** 34 });
  });

  it('a single-node machine may be smaller than 2 MiB', () => {
    const m = createMachine({ memory: '64KiB' });
    expect(m.numaNodes).toEqual([{ id: 0, startPfn: 0, endPfn: 16 }]);
  });

  it('starts powered off: bootCount 0, empty cmdline, no devices', () => {
    const m = createMachine({ memory: '1GiB' });
    expect(m.bootCount).toBe(0);
    expect(m.bootParams).toEqual({ cmdline: '' });
    expect(m.attachedDevices).toEqual([]);
  });

  it.each([
    ['unparseable memory', { memory: 'lots' }, SizeError],
    ['negative memory', { memory: -4096 }, SizeError],
    ['zero memory', { memory: 0 }, RangeError],
    ['memory not a multiple of 4 KiB', { memory: 4095 }, RangeError],
    ['memory of 1 GiB + 1 byte', { memory: GiB + 1 }, RangeError],
    ['0 NUMA nodes', { memory: '1GiB', numaNodes: 0 }, RangeError],
    ['65 NUMA nodes', { memory: '1GiB', numaNodes: 65 }, RangeError],
    ['1.5 NUMA nodes', { memory: '1GiB', numaNodes: 1.5 }, RangeError],
    ['NaN NUMA nodes', { memory: '1GiB', numaNodes: Number.NaN }, RangeError],
    ['2 nodes on 2 MiB (less than 2 MiB per node)', { memory: '2MiB', numaNodes: 2 }, RangeError],
  ] as const)('%s throws', (_name, config, error) => {
    expect(() => createMachine(config)).toThrow(error);
  });

  it('2 nodes on 4 MiB is the smallest two-node machine', () => {
    expect(createMachine({ memory: '4MiB', numaNodes: 2 }).numaNodes).toEqual([
      { id: 0, startPfn: 0, endPfn: 512 },
      { id: 1, startPfn: 512, endPfn: 1024 },
    ]);
  });
});

describe('Machine boots', () => {
  it('powerOn starts a kernel with the given cmdline and counts the boot', () => {
    const m = createMachine({ memory: '1GiB' });
    expect(m.powerOn('console=ttyS0')).toEqual({ cmdline: 'console=ttyS0' });
    expect(m.bootParams).toEqual({ cmdline: 'console=ttyS0' });
    expect(m.bootCount).toBe(1);
  });

  it('kexec increments bootCount and exposes the new params (KHO data included)', () => {
    const m = createMachine({ memory: '1GiB' });
    m.powerOn('first');
    const next: BootParams = { cmdline: 'second', khoData: Uint8Array.from([1, 2, 3, 4]) };
    expect(m.kexec({ survivors: new PfnRanges(), params: next })).toBe(next);
    expect(m.bootCount).toBe(2);
    expect(m.bootParams).toBe(next);
    expect(m.bootParams.khoData).toEqual(Uint8Array.from([1, 2, 3, 4]));
    m.kexec({ survivors: new PfnRanges(), params: params('third') });
    expect(m.bootCount).toBe(3);
    expect(m.bootParams).toEqual({ cmdline: 'third' });
  });

  it('an attached device sees the scrubbed memory before the new params are recorded', () => {
    const m = createMachine({ memory: '1MiB' });
    m.powerOn('old');
    m.memory.writeU8(0, 7);
    const seen: Array<{ byte: number; cmdline: string; boots: number }> = [];
    m.attach({ name: 'dma', onKexec: (machine) => { seen.push({ byte: machine.memory.readU8(0), cmdline: machine.bootParams.cmdline, boots: machine.bootCount }); } });
    m.attach({ name: 'passive' });
    m.kexec({ survivors: new PfnRanges(), params: params('new') });
    expect(seen).toEqual([{ byte: POISON_BYTE, cmdline: 'old', boots: 1 }]);
    expect(m.attachedDevices.map((d) => d.name)).toEqual(['dma', 'passive']);
  });
});

describe('the kexec boundary', () => {
  /**
   * 1 MiB = 256 pages = 16 chunks. pfn 0..15 written (chunk 0), pfn 32..47 synthetic seed 500,
   * everything else never touched. Survivors: pfn 2, 33, 100 (zero) and the whole chunk 5 (80..95).
   */
  function prepared(): Machine {
    const m = createMachine({ memory: '1MiB' });
    m.powerOn('first');
    for (let pfn = 0; pfn < 16; pfn++) m.memory.fill(pfn * PAGE_SIZE, PAGE_SIZE, pfn + 1);
    m.memory.fillSynthetic(32 * PAGE_SIZE, 16 * PAGE_SIZE, 500);
    return m;
  }
  const survivors = (): PfnRanges => PfnRanges.of([2, 3], [33, 34], [80, 96], [100, 101]);

  it('a written survivor page keeps its bytes', () => {
    const m = prepared();
    m.kexec({ survivors: survivors(), params: params('second') });
    expect(pageOf(m, 2)).toEqual(new Uint8Array(PAGE_SIZE).fill(3));
    expect(m.memory.pageKind(2)).toBe('data');
  });

  it('a synthetic survivor page keeps its synthetic content and stays synthetic', () => {
    const m = prepared();
    m.kexec({ survivors: survivors(), params: params('second') });
    expect(pageOf(m, 33)).toEqual(syntheticPage(501));
    expect(m.memory.pageKind(33)).toBe('synthetic');
    expect(m.memory.isSyntheticRun(33 * PAGE_SIZE, PAGE_SIZE, 501)).toBe(true);
  });

  it('a never-touched survivor page still reads zero', () => {
    const m = prepared();
    m.kexec({ survivors: survivors(), params: params('second') });
    expect(pageOf(m, 100)).toEqual(zeroPage());
    expect(m.memory.pageKind(100)).toBe('zero');
  });

  it('a written page that is not a survivor becomes poison, even next to a survivor in its chunk', () => {
    const m = prepared();
    m.kexec({ survivors: survivors(), params: params('second') });
    for (const pfn of [0, 1, 3, 15]) {
      expect(pageOf(m, pfn)).toEqual(poisonPage());
      expect(m.memory.pageKind(pfn)).toBe('poison');
    }
  });

  it('a synthetic page that is not a survivor becomes poison', () => {
    const m = prepared();
    m.kexec({ survivors: survivors(), params: params('second') });
    for (const pfn of [32, 34, 47]) {
      expect(pageOf(m, pfn)).toEqual(poisonPage());
      expect(m.memory.pageKind(pfn)).toBe('poison');
      expect(m.memory.syntheticSeed(pfn)).toBe(-1);
    }
  });

  it('a never-touched page that is not a survivor becomes poison, at no cost', () => {
    const m = prepared();
    m.kexec({ survivors: survivors(), params: params('second') });
    expect(pageOf(m, 200)).toEqual(poisonPage());
    expect(m.memory.pageKind(255)).toBe('poison');
    expect(m.memory.readU64(101 * PAGE_SIZE)).toBe(0xaaaaaaaaaaaaaaaan);
    expect(m.memory.residentBytes).toBe(65536);
  });

  it('chunks with no survivor page are released, the others kept', () => {
    const m = prepared();
    m.memory.writeU8(17 * PAGE_SIZE, 1); // chunk 1: no survivor
    m.memory.writeU8(81 * PAGE_SIZE, 1); // chunk 5: all survivors
    expect(m.memory.residentBytes).toBe(3 * 65536);
    m.kexec({ survivors: survivors(), params: params('second') });
    expect(m.memory.residentBytes).toBe(2 * 65536);
    expect(pageOf(m, 17)).toEqual(poisonPage());
    expect(m.memory.readU8(81 * PAGE_SIZE)).toBe(1);
  });

  it('with no survivors every chunk is released and every page is poison', () => {
    const m = prepared();
    m.kexec({ survivors: new PfnRanges(), params: params('second') });
    expect(m.memory.residentBytes).toBe(0);
    expect(firstDifference(m.memory.read(0, MiB), new Uint8Array(MiB).fill(POISON_BYTE))).toBe(-1);
  });

  it('when every page survives nothing changes and nothing is poison', () => {
    const m = prepared();
    const before = m.memory.read(0, MiB);
    m.kexec({ survivors: PfnRanges.of([0, 256]), params: params('second') });
    expect(firstDifference(m.memory.read(0, MiB), before)).toBe(-1);
    expect(m.memory.poisonReads).toBe(0);
    expect(m.memory.pageKind(100)).toBe('zero');
  });

  it('a read counts exactly one poison read per poisoned page it touches', () => {
    const m = prepared();
    m.kexec({ survivors: survivors(), params: params('second') });
    const mem = m.memory;
    mem.read(3 * PAGE_SIZE, 3 * PAGE_SIZE); // pfn 3, 4, 5: chunk-backed poison
    expect(mem.poisonReads).toBe(3);
    mem.read(200 * PAGE_SIZE + 10, PAGE_SIZE); // pfn 200, 201: background poison
    expect(mem.poisonReads).toBe(5);
    mem.read(PAGE_SIZE, 3 * PAGE_SIZE); // pfn 1 poison, 2 survivor, 3 poison
    expect(mem.poisonReads).toBe(7);
  });

  it('every read width counts one poison read for one poisoned page', () => {
    const m = prepared();
    m.kexec({ survivors: survivors(), params: params('second') });
    const mem = m.memory;
    const reads: Array<[string, () => unknown]> = [
      ['readU8', () => mem.readU8(PAGE_SIZE + 5)],
      ['readU32', () => mem.readU32(PAGE_SIZE + 8)],
      ['readU32 unaligned', () => mem.readU32(PAGE_SIZE + 9)],
      ['readU64', () => mem.readU64(PAGE_SIZE + 16)],
      ['readU64 unaligned', () => mem.readU64(PAGE_SIZE + 17)],
      ['readU64Number', () => mem.readU64Number(PAGE_SIZE + 24)],
      ['readU8 of background poison', () => mem.readU8(200 * PAGE_SIZE)],
      ['readU64 of background poison', () => mem.readU64(200 * PAGE_SIZE)],
      ['readU64Number of background poison', () => mem.readU64Number(200 * PAGE_SIZE + 4)],
    ];
    const counts = reads.map(([name, read]) => {
      mem.resetPoisonReads();
      read();
      return [name, mem.poisonReads];
    });
    expect(counts).toEqual(reads.map(([name]) => [name, 1]));
  });

  it('a u64 read straddling two pages counts one poison read per poisoned page', () => {
    const m = prepared();
    m.kexec({ survivors: survivors(), params: params('second') });
    m.memory.readU64(4 * PAGE_SIZE - 6); // pfn 3 and 4, both poisoned
    expect(m.memory.poisonReads).toBe(2);
    m.memory.resetPoisonReads();
    m.memory.readU64Number(201 * PAGE_SIZE - 2); // pfn 200 and 201, background poison
    expect(m.memory.poisonReads).toBe(2);
    m.memory.resetPoisonReads();
    m.memory.readU64(3 * PAGE_SIZE - 6); // pfn 1 poisoned, pfn 2 a survivor
    expect(m.memory.poisonReads).toBe(1);
  });

  it('reads of survivor pages count no poison reads, and resetPoisonReads clears the count', () => {
    const m = prepared();
    m.kexec({ survivors: survivors(), params: params('second') });
    m.memory.read(80 * PAGE_SIZE, 16 * PAGE_SIZE);
    m.memory.read(33 * PAGE_SIZE, PAGE_SIZE);
    m.memory.read(100 * PAGE_SIZE, PAGE_SIZE);
    expect(m.memory.poisonReads).toBe(0);
    m.memory.readU8(0);
    expect(m.memory.poisonReads).toBe(1);
    m.memory.resetPoisonReads();
    expect(m.memory.poisonReads).toBe(0);
  });

  it("a write to a poisoned page makes it 'data' again, its other bytes still 0xaa", () => {
    const m = prepared();
    m.kexec({ survivors: survivors(), params: params('second') });
    m.memory.writeU32(4 * PAGE_SIZE + 8, 0x01020304);
    expect(m.memory.pageKind(4)).toBe('data');
    const expected = poisonPage();
    expected.set([4, 3, 2, 1], 8);
    m.memory.resetPoisonReads();
    expect(pageOf(m, 4)).toEqual(expected);
    expect(m.memory.poisonReads).toBe(0);
  });

  it("a write to background poison makes that page 'data' and leaves its chunk neighbours poison", () => {
    const m = prepared();
    m.kexec({ survivors: survivors(), params: params('second') });
    m.memory.writeU8(200 * PAGE_SIZE, 0x11);
    expect(m.memory.pageKind(200)).toBe('data');
    expect(m.memory.pageKind(201)).toBe('poison');
    expect(m.memory.readU8(200 * PAGE_SIZE)).toBe(0x11);
    expect(m.memory.readU8(200 * PAGE_SIZE + 1)).toBe(POISON_BYTE);
    m.memory.resetPoisonReads();
    m.memory.readU8(201 * PAGE_SIZE);
    expect(m.memory.poisonReads).toBe(1);
  });

  it.each([
    ['write', (m: Machine) => m.memory.write(5 * PAGE_SIZE, Uint8Array.from([1]))],
    ['writeU8', (m: Machine) => m.memory.writeU8(5 * PAGE_SIZE, 1)],
    ['writeU64', (m: Machine) => m.memory.writeU64(5 * PAGE_SIZE, 1n)],
    ['fill', (m: Machine) => m.memory.fill(5 * PAGE_SIZE, 1, 1)],
    ['mapPage', (m: Machine) => { m.memory.mapPage(5); }],
  ] as const)("%s un-poisons the page it writes", (_name, write) => {
    const m = prepared();
    m.kexec({ survivors: survivors(), params: params('second') });
    write(m);
    expect(m.memory.pageKind(5)).toBe('data');
    expect(m.memory.pageKind(6)).toBe('poison');
  });

  it('fillSynthetic over a poisoned page makes it synthetic again', () => {
    const m = prepared();
    m.kexec({ survivors: survivors(), params: params('second') });
    m.memory.fillSynthetic(3 * PAGE_SIZE, PAGE_SIZE, 9);
    m.memory.fillSynthetic(200 * PAGE_SIZE, PAGE_SIZE, 9);
    expect(pageOf(m, 3)).toEqual(syntheticPage(9));
    expect(pageOf(m, 200)).toEqual(syntheticPage(9));
    expect(m.memory.pageKind(3)).toBe('synthetic'); // chunk-backed, but never written since the fill
    expect(m.memory.pageKind(200)).toBe('synthetic');
    m.memory.resetPoisonReads();
    pageOf(m, 3);
    pageOf(m, 200);
    expect(m.memory.poisonReads).toBe(0);
  });

  it('a second kexec intersects again: a page that survived the first but not the second becomes poison', () => {
    const m = prepared();
    m.kexec({ survivors: survivors(), params: params('second') });
    m.kexec({ survivors: PfnRanges.of([80, 81], [2, 3]), params: params('third') });
    expect(pageOf(m, 2)).toEqual(new Uint8Array(PAGE_SIZE).fill(3));
    expect(pageOf(m, 33)).toEqual(poisonPage());
    expect(m.memory.pageKind(33)).toBe('poison');
    expect(pageOf(m, 100)).toEqual(poisonPage());
    expect(m.memory.pageKind(100)).toBe('poison');
    expect(m.memory.pageKind(81)).toBe('poison');
    expect(m.memory.pageKind(80)).toBe('zero');
    expect(m.bootCount).toBe(3);
  });

  it('a page that was poison before the second kexec stays poison when it is a survivor', () => {
    const m = prepared();
    m.kexec({ survivors: survivors(), params: params('second') });
    m.kexec({ survivors: PfnRanges.of([0, 256]), params: params('third') });
    expect(pageOf(m, 3)).toEqual(poisonPage());
    expect(m.memory.pageKind(3)).toBe('poison');
    expect(m.memory.pageKind(200)).toBe('poison');
  });

  it('a page written between two kexecs and surviving the second keeps the new bytes', () => {
    const m = prepared();
    m.kexec({ survivors: survivors(), params: params('second') });
    m.memory.writeU64(150 * PAGE_SIZE, 0x1122334455667788n);
    m.kexec({ survivors: PfnRanges.of([150, 151]), params: params('third') });
    expect(m.memory.readU64(150 * PAGE_SIZE)).toBe(0x1122334455667788n);
    expect(m.memory.readU8(150 * PAGE_SIZE + 8)).toBe(POISON_BYTE);
  });

  it('a 1 TiB synthetic survivor run on a 64 TiB machine stays synthetic and free through kexec', () => {
    const m = createMachine({ memory: '64TiB', numaNodes: 4 });
    m.memory.fillSynthetic(TiB, TiB, 42);
    m.memory.fillSynthetic(3 * TiB, TiB, 43);
    const first = TiB / PAGE_SIZE;
    m.kexec({ survivors: PfnRanges.of([first, 2 * first]), params: params('second') });
    expect(m.memory.isSyntheticRun(TiB, TiB, 42)).toBe(true);
    expect(m.memory.isSyntheticRun(3 * TiB, TiB, 43)).toBe(false);
    expect(m.memory.pageKind(3 * first)).toBe('poison');
    expect(m.memory.residentBytes).toBe(0);
  });
});

describe('share and attachMachine in one thread', () => {
  it('an attached machine reads the same bytes, synthetic runs, nodes, params and boot count', () => {
    const m = createMachine({ memory: '64MiB', numaNodes: 2 });
    m.powerOn('first');
    m.memory.write(5 * MiB, Uint8Array.from([1, 2, 3]));
    m.memory.fillSynthetic(8 * MiB, 4 * PAGE_SIZE, 77);
    const a = attachMachine(m.share());
    expect(a.memorySize).toBe(64 * MiB);
    expect(a.numaNodes).toEqual(m.numaNodes);
    expect(a.bootParams).toEqual({ cmdline: 'first' });
    expect(a.bootCount).toBe(1);
    expect(a.memory.read(5 * MiB, 3)).toEqual(Uint8Array.from([1, 2, 3]));
    expect(a.memory.isSyntheticRun(8 * MiB, 4 * PAGE_SIZE, 77)).toBe(true);
    expect(a.memory.read(8 * MiB, PAGE_SIZE)).toEqual(syntheticPage(77));
  });

  it('writes to an existing chunk are shared both ways', () => {
    const m = createMachine({ memory: '64MiB' });
    m.memory.writeU8(5 * MiB, 1);
    const a = attachMachine(m.share());
    a.memory.writeU32(5 * MiB + 4, 0xcafef00d);
    m.memory.writeU8(5 * MiB + 1, 9);
    expect(m.memory.readU32(5 * MiB + 4)).toBe(0xcafef00d);
    expect(a.memory.readU8(5 * MiB + 1)).toBe(9);
  });

  it('an attached machine shares the poison state and the poison read counter', () => {
    const m = createMachine({ memory: '1MiB' });
    m.memory.writeU8(0, 1);
    m.kexec({ survivors: PfnRanges.of([0, 1]), params: params('second') });
    const a = attachMachine(m.share());
    expect(a.memory.pageKind(1)).toBe('poison');
    expect(a.memory.pageKind(100)).toBe('poison');
    expect(a.memory.readU8(0)).toBe(1);
    a.memory.readU8(PAGE_SIZE);
    a.memory.readU8(100 * PAGE_SIZE);
    expect(m.memory.poisonReads).toBe(2);
  });
});

// ---- the whole memory against a page-by-page model ------------------------------------------

const MODEL_PAGES = 3 * PAGES_PER_CHUNK; // 48 pages, 3 chunks
const MODEL_SIZE = MODEL_PAGES * PAGE_SIZE;

type MemOp =
  | { readonly kind: 'write'; readonly at: number; readonly length: number; readonly salt: number }
  | { readonly kind: 'u64'; readonly at: number; readonly value: bigint }
  | { readonly kind: 'synthetic'; readonly pfn: number; readonly pages: number; readonly seed: number }
  | { readonly kind: 'kexec'; readonly runs: ReadonlyArray<readonly [number, number]> }
  | { readonly kind: 'read'; readonly at: number; readonly length: number };

const memOpArb: fc.Arbitrary<MemOp> = fc.oneof(
  fc.record({ kind: fc.constant('write' as const), at: fc.integer({ min: 0, max: MODEL_SIZE - 1 }), length: fc.integer({ min: 1, max: 9000 }), salt: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ kind: fc.constant('u64' as const), at: fc.integer({ min: 0, max: MODEL_SIZE - 8 }), value: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }) }),
  fc.record({ kind: fc.constant('synthetic' as const), pfn: fc.integer({ min: 0, max: MODEL_PAGES - 1 }), pages: fc.integer({ min: 1, max: 20 }), seed: fc.nat() }),
  fc.record({ kind: fc.constant('kexec' as const), runs: fc.array(fc.tuple(fc.integer({ min: 0, max: MODEL_PAGES }), fc.integer({ min: 0, max: MODEL_PAGES })), { maxLength: 4 }) }),
  fc.record({ kind: fc.constant('read' as const), at: fc.integer({ min: 0, max: MODEL_SIZE - 1 }), length: fc.integer({ min: 0, max: 9000 }) }),
);

describe('PhysMemory against a page-by-page model', () => {
  it('property: writes, synthetic fills, kexecs and reads match the model bytes, poison kinds and poison counts', () => {
    fc.assert(fc.property(fc.array(memOpArb, { maxLength: 25 }), (ops) => {
      const m = createMachine({ memory: MODEL_SIZE });
      const mem = m.memory;
      const model = new Uint8Array(MODEL_SIZE);
      const poisoned = new Array<boolean>(MODEL_PAGES).fill(false);
      const pagesTouched = (at: number, length: number): number[] => {
        const out: number[] = [];
        if (length === 0) return out;
        for (let p = Math.floor(at / PAGE_SIZE); p <= Math.floor((at + length - 1) / PAGE_SIZE); p++) out.push(p);
        return out;
      };
      for (const op of ops) {
        if (op.kind === 'write') {
          const length = Math.min(op.length, MODEL_SIZE - op.at);
          const src = new Uint8Array(length);
          for (let i = 0; i < length; i++) src[i] = (i + op.salt) & 0xff;
          mem.write(op.at, src);
          model.set(src, op.at);
          for (const p of pagesTouched(op.at, length)) poisoned[p] = false;
        } else if (op.kind === 'u64') {
          mem.writeU64(op.at, op.value);
          for (let i = 0; i < 8; i++) model[op.at + i] = Number((op.value >> BigInt(8 * i)) & 0xffn);
          for (const p of pagesTouched(op.at, 8)) poisoned[p] = false;
        } else if (op.kind === 'synthetic') {
          const pages = Math.min(op.pages, MODEL_PAGES - op.pfn);
          mem.fillSynthetic(op.pfn * PAGE_SIZE, pages * PAGE_SIZE, op.seed);
          for (let i = 0; i < pages; i++) {
            model.set(syntheticPage((op.seed + i) >>> 0), (op.pfn + i) * PAGE_SIZE);
            poisoned[op.pfn + i] = false;
          }
        } else if (op.kind === 'kexec') {
          const survivors = new PfnRanges();
          for (const [s, e] of op.runs) survivors.add(s, e);
          m.kexec({ survivors, params: params('next') });
          for (let p = 0; p < MODEL_PAGES; p++) {
            if (survivors.has(p)) continue;
            model.fill(POISON_BYTE, p * PAGE_SIZE, (p + 1) * PAGE_SIZE);
            poisoned[p] = true;
          }
        } else {
          const length = Math.min(op.length, MODEL_SIZE - op.at);
          mem.resetPoisonReads();
          expect(firstDifference(mem.read(op.at, length), model.subarray(op.at, op.at + length))).toBe(-1);
          expect(mem.poisonReads).toBe(pagesTouched(op.at, length).filter((p) => poisoned[p]).length);
        }
      }
      mem.resetPoisonReads();
      expect(firstDifference(mem.read(0, MODEL_SIZE), model)).toBe(-1);
      expect(mem.poisonReads).toBe(poisoned.filter(Boolean).length);
      for (let p = 0; p < MODEL_PAGES; p++) {
        const kind = mem.pageKind(p);
        expect(kind === 'poison').toBe(poisoned[p]);
        if (kind === 'zero') expect(firstDifference(model.subarray(p * PAGE_SIZE, (p + 1) * PAGE_SIZE), zeroPage())).toBe(-1);
        if (kind === 'synthetic') expect(firstDifference(model.subarray(p * PAGE_SIZE, (p + 1) * PAGE_SIZE), syntheticPage(mem.syntheticSeed(p)))).toBe(-1);
      }
      expect(m.bootCount).toBe(ops.filter((o) => o.kind === 'kexec').length);
    }), { numRuns: 300 });
  });
});
