/**
 * vmalloc preservation (kernel/liveupdate/kexec_handover.c: kho_preserve_vmalloc,
 * kho_restore_vmalloc): a vzalloc'd area handed over as a chain of one-page
 * chunks of 511 run addresses, described by a 16-byte struct kho_vmalloc; restored in the new
 * kernel from the descriptor bytes alone.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { PAGE_SIZE, createMachine, type Machine } from '@liveupdate/hw';
import {
  abi, khoPreserveVmalloc, khoRestoreVmalloc, khoUnpreserveVmalloc, vzalloc,
  type Kernel, type KhoIn, type KhoOut, type KhoVmallocDesc, type VmArea,
} from '@liveupdate/runtime';
import { coldBoot, prng, randomBytes } from './fixtures/kho-helpers.js';

const PAGES = 1100; // 511 + 511 + 78 runs: three chunks
const SIZE = PAGES * PAGE_SIZE - 100; // not a whole number of pages

let machine: Machine;
let k1: Kernel;
let area: VmArea;
let content: Uint8Array;
let desc: KhoVmallocDesc;
let descBytes: Uint8Array;
const chunkChain: number[] = [];
let keysBefore = 0;
let keysAfterPreserve = 0;

let k2: Kernel;
let incomingDesc: KhoVmallocDesc;
let fewerPages: VmArea | null;
let morePages: VmArea | null;
let badFlags: VmArea | null;
let restored: VmArea | null;
let restoredContent: Uint8Array;
let secondRestore: VmArea | null;

beforeAll(() => {
  machine = createMachine({ memory: '4GiB' });
  k1 = coldBoot(machine, 'kho=on');
  const out = k1.khoOut as KhoOut;
  const a = vzalloc(k1.mm, SIZE);
  if (!a) throw new Error('test setup: vzalloc failed');
  area = a;
  content = randomBytes(prng(0x7a11), SIZE);
  area.write(0, content);
  keysBefore = out.survivors().blocks;
  desc = khoPreserveVmalloc(out, k1.mm, area);
  keysAfterPreserve = out.survivors().blocks;
  for (let c = Number(desc.first); c !== 0; c = machine.memory.readU64Number(c)) chunkChain.push(c);
  descBytes = abi.kho.khoVmalloc.encode(desc);
  const blob = out.allocPreserve(descBytes.length);
  machine.memory.write(blob, descBytes);
  out.addSubtree('vmalloc-test', blob, descBytes.length);

  k2 = k1.kexec({ cmdline: 'kho=on' });
  const kin = k2.khoIn as KhoIn;
  const sub = kin.retrieveSubtree('vmalloc-test');
  incomingDesc = abi.kho.khoVmalloc.decode(machine.memory.read(sub.phys, sub.size));
  fewerPages = khoRestoreVmalloc(kin, k2.mm, { ...incomingDesc, total_pages: incomingDesc.total_pages - 1 });
  morePages = khoRestoreVmalloc(kin, k2.mm, { ...incomingDesc, total_pages: incomingDesc.total_pages + 1 });
  badFlags = khoRestoreVmalloc(kin, k2.mm, { ...incomingDesc, flags: incomingDesc.flags | 0x4 });
  restored = khoRestoreVmalloc(kin, k2.mm, incomingDesc);
  restoredContent = restored ? restored.read(0, SIZE) : new Uint8Array(0);
  secondRestore = khoRestoreVmalloc(kin, k2.mm, incomingDesc);
});

describe('kho_preserve_vmalloc', () => {
  it('describes the area: first chunk, total_pages, flags VM_ALLOC, order 0', () => {
    expect(desc).toEqual({ first: BigInt(chunkChain[0] ?? -1), total_pages: PAGES, flags: 0x1, order: 0 });
  });

  it('uses ceil(1100 / 511) = 3 chunk pages, linked by next and ending in 0', () => {
    expect(chunkChain).toHaveLength(3);
    expect(machine.memory.readU64Number((chunkChain[2] as number))).toBe(0);
  });

  it('fills each chunk with run addresses in order, zero-terminated in the last one', () => {
    const runs = Array.from(area.runs, (pfn) => pfn * PAGE_SIZE);
    const inChunk = (c: number, n: number): number[] => Array.from({ length: n }, (_, i) => machine.memory.readU64Number(c + 8 + 8 * i));
    expect(inChunk(chunkChain[0] as number, 511)).toEqual(runs.slice(0, 511));
    expect(inChunk(chunkChain[1] as number, 511)).toEqual(runs.slice(511, 1022));
    expect(inChunk(chunkChain[2] as number, 79)).toEqual([...runs.slice(1022), 0]);
  });

  it('preserves every data page and every chunk page: 1100 + 3 keys', () => {
    expect(keysAfterPreserve - keysBefore).toBe(PAGES + 3);
  });

  it('the descriptor is 16 bytes: u64 first, u32 total_pages, u16 flags, u16 order', () => {
    const expected = Buffer.alloc(16);
    expected.writeBigUInt64LE(BigInt(chunkChain[0] ?? 0), 0);
    expected.writeUInt32LE(PAGES, 8);
    expected.writeUInt16LE(1, 12);
    expected.writeUInt16LE(0, 14);
    expect(descBytes).toEqual(new Uint8Array(expected));
  });
});

describe('kho_restore_vmalloc in the next kernel', () => {
  it('a total_pages one short of the chunk contents is rejected with null', () => {
    expect(fewerPages).toBeNull();
  });

  it('a total_pages one more than the chunk contents is rejected with null', () => {
    expect(morePages).toBeNull();
  });

  it('unsupported flags are rejected with null', () => {
    expect(badFlags).toBeNull();
  });

  it('after the rejections, the real descriptor still restores all 1100 pages', () => {
    expect(restored?.pageCount).toBe(PAGES);
  });

  it('the restored area holds exactly the bytes written before the kexec', () => {
    expect(Buffer.from(restoredContent).equals(Buffer.from(content))).toBe(true);
  });

  it('the restored area is backed by the same physical pages', () => {
    expect(Array.from(restored?.runs ?? [])).toEqual(Array.from(area.runs));
  });

  it('restoring twice fails: the pages were already claimed', () => {
    expect(secondRestore).toBeNull();
  });
});

describe('kho_unpreserve_vmalloc', () => {
  it('removes every data and chunk key and frees the chunks', () => {
    const m = createMachine({ memory: '4GiB' });
    const k = coldBoot(m, 'kho=on');
    const out = k.khoOut as KhoOut;
    const a = vzalloc(k.mm, 600 * PAGE_SIZE);
    if (!a) throw new Error('test setup: vzalloc failed');
    const before = out.survivors().blocks;
    const d = khoPreserveVmalloc(out, k.mm, a);
    expect(out.survivors().blocks).toBe(before + 602);
    khoUnpreserveVmalloc(out, k.mm, d);
    expect(out.survivors().blocks).toBe(before);
  });

  it('a failed preserve rolls back every key it added (a run inside scratch, KEXEC_HANDOVER_DEBUG)', () => {
    const m = createMachine({ memory: '4GiB' });
    const k = coldBoot(m, 'kho=on');
    const out = k.khoOut as KhoOut;
    const a = vzalloc(k.mm, 600 * PAGE_SIZE);
    if (!a) throw new Error('test setup: vzalloc failed');
    a.runs[550] = (k.scratch[0]?.addr ?? 0) / PAGE_SIZE; // a run the kernel must refuse
    const before = out.survivors().blocks;
    expect(() => khoPreserveVmalloc(out, k.mm, a)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(out.survivors().blocks).toBe(before);
  });
});

describe('a hostile chunk chain', () => {
  /** Preserve a 3-chunk area, then make the last chunk's next point back at the first. */
  function cyclicHandover(): { k: Kernel; desc: KhoVmallocDesc } {
    const m = createMachine({ memory: '2GiB' });
    const a1 = coldBoot(m, 'kho=on');
    const out = a1.khoOut as KhoOut;
    const v = vzalloc(a1.mm, PAGES * PAGE_SIZE);
    if (!v) throw new Error('test setup: vzalloc failed');
    const d = khoPreserveVmalloc(out, a1.mm, v);
    const chain: number[] = [];
    for (let c = Number(d.first); c !== 0; c = m.memory.readU64Number(c)) chain.push(c);
    m.memory.writeU64(chain[chain.length - 1] as number, chain[0] as number);
    const a2 = a1.kexec({ cmdline: 'kho=on' });
    return { k: a2, desc: d };
  }

  it('a chunk chain that loops back is refused at its first repeated chunk, with total_pages claiming 4 billion pages', () => {
    const { k, desc: d } = cyclicHandover();
    const kin = k.khoIn as KhoIn;
    const restoredBefore = kin.leaked().blocks;
    expect(khoRestoreVmalloc(kin, k.mm, { ...d, total_pages: 0xffffffff })).toBeNull();
    // Nothing was claimed on the way: every preserved block is still there to be restored.
    expect(kin.leaked().blocks).toBe(restoredBefore);
  });

  it('a chunk pointer to a page that was never preserved is refused before reading it', () => {
    const { k, desc: d } = cyclicHandover();
    const kin = k.khoIn as KhoIn;
    const notPreserved = (k.mm.allocPages(0) as number) * PAGE_SIZE;
    expect(khoRestoreVmalloc(kin, k.mm, { ...d, first: BigInt(notPreserved) })).toBeNull();
  });
});
