/**
 * KHO serialization blocks (kernel/liveupdate/kho_block.c, include/linux/kho/abi/block.h): a
 * chain of preserved pages with a
 * { next, count } header and fixed-size entries. Growth, LIFO shrink, restore after a kexec,
 * and the corruption checks of kho_block_set_restore.
 */
import { beforeEach, describe, expect, it } from 'vitest';
import { PAGE_SIZE, type Machine } from '@liveupdate/hw';
import { KhoBlockSet, type Kernel, type KhoOut } from '@liveupdate/runtime';
import { coldKho, errnoOf } from './fixtures/kho-helpers.js';

const ENTRY = 32; // 127 entries per 4 KiB block
const PER_BLOCK = 127;

let machine: Machine;
let k1: Kernel;
let out: KhoOut;

beforeEach(() => {
  ({ machine, k1, out } = coldKho());
});

const outgoingSet = (k: Kernel, entry = ENTRY): KhoBlockSet => new KhoBlockSet(k.mm, entry, { out: k.khoOut, in: k.khoIn });
const entry = (i: number): Uint8Array => Uint8Array.from({ length: ENTRY }, (_, j) => (i * 7 + j) & 0xff);
const keys = (): number => out.survivors().blocks;
const nextOf = (phys: number): number => machine.memory.readU64Number(phys);

describe('kho_block_set_grow and shrink', () => {
  it('computes entries per block as (4096 - 16) / entry_size', () => {
    expect([outgoingSet(k1, 32).countPerBlock, outgoingSet(k1, 64).countPerBlock, outgoingSet(k1, 80).countPerBlock]).toEqual([127, 63, 51]);
  });

  it('grows by whole blocks until the capacity covers the count', () => {
    const bs = outgoingSet(k1);
    bs.grow(PER_BLOCK);
    expect([bs.nblocks, bs.capacity]).toEqual([1, 127]);
    bs.grow(PER_BLOCK + 1);
    expect([bs.nblocks, bs.capacity]).toEqual([2, 254]);
    bs.grow(3 * PER_BLOCK);
    expect(bs.nblocks).toBe(3);
  });

  it('links the blocks by physical address, the last next being 0, and every block is preserved', () => {
    const bs = outgoingSet(k1);
    const before = keys();
    bs.grow(3 * PER_BLOCK);
    const b0 = bs.headPa;
    const b1 = nextOf(b0);
    const b2 = nextOf(b1);
    expect([b0 % PAGE_SIZE, b1 % PAGE_SIZE, b2 % PAGE_SIZE, nextOf(b2)]).toEqual([0, 0, 0, 0]);
    expect(new Set([b0, b1, b2]).size).toBe(3);
    expect([b0, b1, b2].map((p) => out.isPreserved(p / PAGE_SIZE, 0))).toEqual([true, true, true]);
    expect(keys()).toBe(before + 3);
  });

  it('shrinks LIFO: drops last blocks while count <= (nblocks - 1) * per_block and re-terminates the chain', () => {
    const bs = outgoingSet(k1);
    bs.grow(3 * PER_BLOCK);
    const b0 = bs.headPa;
    const b1 = nextOf(b0);
    const b2 = nextOf(b1);
    bs.shrink(2 * PER_BLOCK + 1);
    expect(bs.nblocks).toBe(3);
    bs.shrink(PER_BLOCK + 1);
    expect(bs.nblocks).toBe(2);
    expect(nextOf(b1)).toBe(0);
    expect(out.isPreserved(b2 / PAGE_SIZE, 0)).toBe(false);
    bs.shrink(0);
    expect([bs.nblocks, bs.headPa, bs.isEmpty]).toEqual([0, 0, true]);
    expect([b0, b1].map((p) => out.isPreserved(p / PAGE_SIZE, 0))).toEqual([false, false]);
  });

  it('growing past 10000 blocks is ENOSPC and shrinks back to the original size, unpreserving the new blocks', () => {
    const bs = outgoingSet(k1);
    bs.grow(5 * PER_BLOCK);
    const head = bs.headPa;
    const before = keys();
    expect(() => bs.grow(10_000 * PER_BLOCK + 1)).toThrow(expect.objectContaining({ code: 'ENOSPC', errno: 28 }));
    expect([bs.nblocks, bs.headPa]).toEqual([5, head]);
    expect(keys()).toBe(before);
    let last = head;
    for (let i = 0; i < 4; i++) last = nextOf(last);
    expect(nextOf(last)).toBe(0);
  });

  it('exactly 10000 blocks can be grown', () => {
    const bs = outgoingSet(k1);
    bs.grow(10_000 * PER_BLOCK);
    expect(bs.nblocks).toBe(10_000);
  });
});

describe('kho_block_set_restore after a kexec', () => {
  const COUNT = 300; // 127 + 127 + 46
  let k2: Kernel;
  let head = 0;

  beforeEach(() => {
    const bs = outgoingSet(k1);
    bs.grow(COUNT);
    expect(bs.writeEntries(Array.from({ length: COUNT }, (_, i) => entry(i)))).toBe(COUNT);
    // The head travels in a preserved blob, as LUO's sessions_pa does.
    const blob = out.allocPreserve(8);
    machine.memory.writeU64(blob, bs.headPa);
    out.addSubtree('blocks', blob, 8);
    k2 = k1.kexec({ cmdline: 'kho=on' });
    const sub = k2.khoIn?.retrieveSubtree('blocks');
    head = machine.memory.readU64Number(sub?.phys ?? 0);
  });

  const incoming = (): KhoBlockSet => new KhoBlockSet(k2.mm, ENTRY, { out: k2.khoOut, in: k2.khoIn });
  const restoreCode = (headPa: number): string => errnoOf(() => incoming().restore(headPa, k2.dmesg));

  it('reads back every entry in order', () => {
    const bs = incoming();
    bs.restore(head, k2.dmesg);
    expect(bs.nblocks).toBe(3);
    expect([...bs.readEntries()]).toEqual(Array.from({ length: COUNT }, (_, i) => entry(i)));
  });

  it('restores a head of 0 as an empty set', () => {
    const bs = incoming();
    bs.restore(0, k2.dmesg);
    expect([bs.nblocks, [...bs.readEntries()].length, bs.incoming]).toEqual([0, 0, true]);
  });

  it('growing an incoming set is EINVAL', () => {
    const bs = incoming();
    bs.restore(head, k2.dmesg);
    expect(errnoOf(() => bs.grow(COUNT + 1))).toBe('EINVAL');
    expect(bs.nblocks).toBe(3);
  });

  it('destroying an incoming set restores and frees every block', () => {
    const bs = incoming();
    bs.restore(head, k2.dmesg);
    const leaked = k2.khoIn?.leaked().blocks ?? -1;
    bs.destroy();
    expect(k2.khoIn?.leaked().blocks).toBe(leaked - 3);
  });

  it('a cycle in the chain is EINVAL with "Block set is corrupted"', () => {
    const b2 = nextOf(nextOf(head));
    machine.memory.writeU64(b2, head);
    expect(restoreCode(head)).toBe('EINVAL');
    expect(k2.dmesg.grep('Block set is corrupted: cycle in the block chain')).toHaveLength(1);
  });

  it('a block pointing at itself is a cycle', () => {
    machine.memory.writeU64(head, head);
    expect(restoreCode(head)).toBe('EINVAL');
    expect(k2.dmesg.grep('Block set is corrupted: cycle')).toHaveLength(1);
  });

  it('a block with count 0 is EINVAL', () => {
    machine.memory.writeU64(nextOf(head) + 8, 0);
    expect(restoreCode(head)).toBe('EINVAL');
    expect(k2.dmesg.grep(/Block set is corrupted: block 0x[0-9a-f]+ count 0 outside 1\.\.127/)).toHaveLength(1);
  });

  it('a block with count > entries per block is EINVAL', () => {
    machine.memory.writeU64(head + 8, PER_BLOCK + 1);
    expect(restoreCode(head)).toBe('EINVAL');
    expect(k2.dmesg.grep(/Block set is corrupted: block 0x[0-9a-f]+ count 128 outside 1\.\.127/)).toHaveLength(1);
  });

  it('a next pointer outside RAM is EINVAL', () => {
    machine.memory.writeU64(head, machine.memory.size);
    expect(restoreCode(head)).toBe('EINVAL');
    expect(k2.dmesg.grep('Block set is corrupted')).toHaveLength(1);
  });

  it('a failed restore frees the chain: no block stays reserved as a leak', () => {
    const leaked = k2.khoIn?.leaked().blocks ?? -1;
    machine.memory.writeU64(nextOf(nextOf(head)) + 8, 0); // third block bad
    expect(restoreCode(head)).toBe('EINVAL');
    expect(k2.khoIn?.leaked().blocks).toBe(leaked - 3);
  });

  /** A chain of `n` fresh pages in k2, each with count 1. */
  function chain(n: number): number {
    const pages: number[] = [];
    for (let i = 0; i < n; i++) {
      const pfn = k2.mm.allocPages(0);
      if (pfn === null) throw new Error('test setup: out of memory');
      pages.push(pfn * PAGE_SIZE);
    }
    pages.forEach((p, i) => {
      machine.memory.writeU64(p, pages[i + 1] ?? 0);
      machine.memory.writeU64(p + 8, 1);
    });
    return pages[0] as number;
  }

  it('a chain of exactly 10000 blocks restores', () => {
    const bs = incoming();
    bs.restore(chain(10_000), k2.dmesg);
    expect(bs.nblocks).toBe(10_000);
  });

  it('a chain of 10001 blocks is EINVAL: more than KHO_MAX_BLOCKS', () => {
    expect(restoreCode(chain(10_001))).toBe('EINVAL');
    expect(k2.dmesg.grep('Block set is corrupted: more than 10000 blocks')).toHaveLength(1);
  });
});
