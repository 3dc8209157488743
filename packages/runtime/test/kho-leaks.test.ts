/**
 * Preserved memory nobody claims (kernel/liveupdate/kexec_handover.c: kho_mem_deserialize reserves every
 * preserved page at boot): it stays reserved for the life of the
 * new kernel — a leak, reported by leaked(), never handed out by the allocator — and becomes
 * ordinary memory after the next kexec because nobody re-preserved it.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { PAGE_SIZE, PfnRanges, createMachine, type Machine } from '@liveupdate/hw';
import { Kernel, type Folio, type KhoIn, type KhoOut } from '@liveupdate/runtime';
import { coldBoot } from './fixtures/kho-helpers.js';

let machine: Machine;
let k2: Kernel;
const folios: Folio[] = [];
let run = { pfn: 0, pages: 13 };
let restored: Folio | null = null;
let leakedBeforeRestore = { blocks: 0, pages: 0 };
let leakedAfterRestore = { blocks: 0, pages: 0 };
const handedOut: number[] = [];

const ranges = (blocks: ReadonlyArray<{ pfn: number; pages: number }>): PfnRanges => {
  const r = new PfnRanges();
  for (const b of [...blocks].sort((x, y) => x.pfn - y.pfn)) r.add(b.pfn, b.pfn + b.pages);
  return r;
};

beforeAll(() => {
  machine = createMachine({ memory: '1GiB' });
  const k1 = coldBoot(machine, 'kho=on');
  const out = k1.khoOut as KhoOut;
  for (const order of [0, 2, 5, 9, 10]) {
    const pfn = k1.mm.allocPages(order);
    if (pfn === null) throw new Error('test setup: out of memory');
    out.preserveFolio(pfn, order);
    folios.push({ pfn, order });
  }
  const base = k1.mm.allocPages(4);
  if (base === null) throw new Error('test setup: out of memory');
  run = { pfn: base + 3, pages: 13 }; // kho_preserve_pages: blocks of 1, 4 and 8 pages
  out.preservePages(run.pfn, run.pages);

  k2 = k1.kexec({ cmdline: 'kho=on' });
  const kin = k2.khoIn as KhoIn;
  leakedBeforeRestore = kin.leaked();
  restored = kin.restoreFolio((folios[1] as Folio).pfn * PAGE_SIZE);
  leakedAfterRestore = kin.leaked();
  // Take every page the new kernel's allocator has.
  for (;;) {
    const pfn = k2.mm.allocPages(0);
    if (pfn === null) break;
    handedOut.push(pfn);
  }
});

describe('preserved folios nobody restores', () => {
  it('leaked() counts every preserved block of the consumer before any restore', () => {
    // 5 folios (1 + 4 + 32 + 512 + 1024 pages) and the run's 3 blocks (13 pages).
    expect(leakedBeforeRestore).toEqual({ blocks: 8, pages: 1586 });
  });

  it('leaked() drops exactly the restored folio', () => {
    expect(restored).toEqual(folios[1]);
    expect(leakedAfterRestore).toEqual({ blocks: 7, pages: 1582 });
  });

  it('the allocator hands out every other page, but none of a preserved block', () => {
    expect(handedOut.length).toBeGreaterThan(100_000);
    const preserved = ranges([...folios.map((f) => ({ pfn: f.pfn, pages: 2 ** f.order })), run]);
    expect(handedOut.filter((pfn) => preserved.has(pfn))).toEqual([]);
  });

  it('the allocator never hands out a page twice', () => {
    expect(new Set(handedOut).size).toBe(handedOut.length);
  });

  it('the unclaimed blocks stay reserved in memblock', () => {
    const unclaimed = folios.filter((f) => f !== folios[1]);
    expect(unclaimed.every((f) => k2.mm.memblock.reserved.covers(f.pfn, f.pfn + 2 ** f.order))).toBe(true);
    expect(k2.mm.memblock.reserved.covers(run.pfn, run.pfn + run.pages)).toBe(true);
  });
});

describe('after the next kexec', () => {
  it('leaked memory that nobody re-preserved is ordinary memory: not reserved, scrubbed to poison', () => {
    const k3 = k2.kexec({ cmdline: 'kho=on' });
    const leaked = folios.filter((f) => f !== folios[1]);
    expect(leaked.filter((f) => k3.mm.memblock.reserved.overlaps(f.pfn, f.pfn + 2 ** f.order))).toEqual([]);
    expect(k3.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
    expect(leaked.map((f) => machine.memory.pageKind(f.pfn + 2 ** f.order - 1))).toEqual(leaked.map(() => 'poison'));
  });
});

describe('the new kernel reserves exactly the preserved blocks', () => {
  it('page for page, for runs that start, end and cross inside 32-bit words of a tracker leaf', () => {
    const m = createMachine({ memory: '4GiB' });
    const k1 = coldBoot(m, 'kho=on');
    const out = k1.khoOut as KhoOut;
    const base = 0x48000; // leaf-aligned (32768 pages), nothing else preserved around it
    // Bits: a full word, single bits, a run across a word boundary, a run to the leaf's end.
    const picked = [
      ...Array.from({ length: 32 }, (_, i) => i), 33, 35, 62, 63, 64, 65, 100,
      ...Array.from({ length: 70 }, (_, i) => 200 + i), 32767 - 2, 32767 - 1, 32767,
    ];
    for (const i of picked) out.preserveFolio(base + i, 0);
    k1.kexecJump('kho=on');
    const k2 = Kernel.boot(m);
    const reserved = Array.from({ length: 32768 }, (_, i) => i).filter((i) => k2.mm.memblock.reserved.has(base + i));
    expect(reserved).toEqual(picked);
    expect(k2.khoIn?.leaked()).toEqual({ blocks: picked.length, pages: picked.length });
  });

  it('orders 0..10 side by side: each block reserved whole, neighbours untouched', () => {
    const m = createMachine({ memory: '4GiB' });
    const k1 = coldBoot(m, 'kho=on');
    const out = k1.khoOut as KhoOut;
    const blocks = Array.from({ length: 11 }, (_, order) => ({ pfn: 0x80000 + order * 0x1000, order }));
    for (const b of blocks) out.preserveFolio(b.pfn, b.order);
    k1.kexecJump('kho=on');
    const k2 = Kernel.boot(m);
    const r = k2.mm.memblock.reserved;
    expect(blocks.map((b) => [r.covers(b.pfn, b.pfn + 2 ** b.order), r.has(b.pfn - 1), r.has(b.pfn + 2 ** b.order)]))
      .toEqual(blocks.map(() => [true, false, false]));
    expect(blocks.map((b) => k2.khoIn?.restoreFolio(b.pfn * PAGE_SIZE))).toEqual(blocks);
  });
});
