/**
 * kexec-metadata at the edges of its fields (kernel/liveupdate/kexec_handover.c,
 * kho_in_kexec_metadata / kho_out_kexec_metadata): the count is a u32 that wraps, and a
 * blob-size larger than the struct is not an error (only the struct is read).
 */
import { describe, expect, it } from 'vitest';
import { createMachine } from '@liveupdate/hw';
import type { Kernel, KhoOut } from '@liveupdate/runtime';
import { coldBoot } from './fixtures/kho-helpers.js';

const metaOf = (k: Kernel): { phys: number; size: number } => {
  const s = (k.khoOut as KhoOut).subtreeList.find((x) => x.name === 'kexec-metadata');
  if (!s) throw new Error('no kexec-metadata subtree');
  return s;
};
const COUNT_OFFSET = 69;

describe('incoming kexec_count 0xffffffff', () => {
  it('boots and writes count 0 for the next kernel (u32 arithmetic wraps)', () => {
    const machine = createMachine({ memory: '4GiB' });
    const k1 = coldBoot(machine, 'kho=on');
    machine.memory.writeU32(metaOf(k1).phys + COUNT_OFFSET, 0xffffffff);
    const k2 = k1.kexec({ cmdline: 'kho=on' });
    expect(k2.incomingMetadata?.kexecCount).toBe(0xffffffff);
    expect(machine.memory.readU32(metaOf(k2).phys + COUNT_OFFSET)).toBe(0);
  });

  it('the booted kernel\'s own count wraps to 0 as well', () => {
    const machine = createMachine({ memory: '4GiB' });
    const k1 = coldBoot(machine, 'kho=on');
    machine.memory.writeU32(metaOf(k1).phys + COUNT_OFFSET, 0xffffffff);
    expect(k1.kexec({ cmdline: 'kho=on' }).kexecCount).toBe(0);
  });
});

describe('incoming kexec-metadata with a blob-size far beyond the struct', () => {
  function boot2(size: number) {
    const machine = createMachine({ memory: '4GiB' });
    const k1 = coldBoot(machine, 'kho=on', { release: '7.1.0' });
    const out = k1.khoOut as KhoOut;
    const { phys } = metaOf(k1);
    out.removeSubtree(phys);
    out.addSubtree('kexec-metadata', phys, size);
    return k1.kexec({ cmdline: 'kho=on' });
  }

  it('is read as upstream reads it: the 73-byte struct, logged as exec from', () => {
    const k2 = boot2(2 ** 40);
    expect(k2.incomingMetadata).toEqual({ previousRelease: '7.1.0', kexecCount: 0 });
    expect(k2.dmesg.grep('KHO: exec from: 7.1.0 (count 0)')).toHaveLength(1);
  });

  it('says in dmesg that the bytes past the struct are ignored', () => {
    const k2 = boot2(2 ** 40);
    expect(k2.dmesg.grep('kexec-metadata blob-size')).toEqual([
      'KHO: kexec-metadata blob-size 1099511627776 is larger than the v1 struct (73 bytes): the rest is ignored',
    ]);
  });

  it('consumes the blob page: nothing stays reserved', () => {
    const k2 = boot2(2 ** 40);
    expect(k2.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
  });
});

describe('page accounting across a restore', () => {
  it('allocatedPages does not go negative when restored folios are freed', () => {
    const machine = createMachine({ memory: '1GiB' });
    const k1 = coldBoot(machine, 'kho=on');
    const out = k1.khoOut as KhoOut;
    const pfns: number[] = [];
    for (let i = 0; i < 8; i++) {
      const pfn = k1.mm.allocPages(0);
      if (pfn === null) throw new Error('test setup: out of memory');
      out.preserveFolio(pfn, 0);
      pfns.push(pfn);
    }
    const k2 = k1.kexec({ cmdline: 'kho=on' });
    const alloc = k2.mm.allocator;
    if (!alloc) throw new Error('no page allocator');
    const before = alloc.allocatedPages;
    for (const pfn of pfns) {
      const f = k2.khoIn?.restoreFolio(pfn * 4096);
      if (!f) throw new Error('restore failed');
      k2.mm.freePages(f.pfn, f.order);
    }
    expect(alloc.allocatedPages).toBe(before);
  });

  it('a restored folio counts as allocated until it is freed', () => {
    const machine = createMachine({ memory: '1GiB' });
    const k1 = coldBoot(machine, 'kho=on');
    const pfn = k1.mm.allocPages(2);
    if (pfn === null) throw new Error('test setup: out of memory');
    (k1.khoOut as KhoOut).preserveFolio(pfn, 2);
    const k2 = k1.kexec({ cmdline: 'kho=on' });
    const alloc = k2.mm.allocator;
    if (!alloc) throw new Error('no page allocator');
    const before = alloc.allocatedPages;
    k2.khoIn?.restoreFolio(pfn * 4096);
    expect(alloc.allocatedPages).toBe(before + 4);
  });
});
