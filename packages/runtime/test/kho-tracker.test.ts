/**
 * The outgoing preservation API and its tracker (kernel/liveupdate/kexec_handover.c:
 * kho_preserve_pages, kho_alloc_preserve, kho_add_subtree, kho_retrieve_subtree): a set
 * of (pfn, order) keys, rollback of a failed kho_preserve_pages, kho_alloc_preserve limits,
 * scratch protection, subtrees in the one-page root FDT, and kho_retrieve_subtree's checks.
 */
import { beforeEach, describe, expect, it } from 'vitest';
import { PAGE_SIZE, type Machine } from '@liveupdate/hw';
import { Kernel, fdtParse, propString, propU64LE, type KhoOut } from '@liveupdate/runtime';
import {
  MiB, coldKho, errnoOf, khoRootProps, rootFdt, subtreeNode, trackerNodeOnPath, writeFdtPage,
} from './fixtures/kho-helpers.js';

let machine: Machine;
let k1: Kernel;
let out: KhoOut;

beforeEach(() => {
  ({ machine, k1, out } = coldKho());
});

const keys = (): number => out.survivors().blocks;
const trackerPages = (): number => out.survivors().nodes;

function alloc(order: number): number {
  const pfn = k1.mm.allocPages(order);
  if (pfn === null) throw new Error('test setup: out of memory');
  return pfn;
}

describe('the tracker is a set of (pfn, order) keys', () => {
  it('preserving the same folio twice adds one key, and one unpreserve clears it', () => {
    const pfn = alloc(3);
    const before = keys();
    out.preserveFolio(pfn, 3);
    out.preserveFolio(pfn, 3);
    expect(keys()).toBe(before + 1);
    out.unpreserveFolio(pfn, 3);
    expect(out.isPreserved(pfn, 3)).toBe(false);
    expect(keys()).toBe(before);
  });

  it('unpreserving at another order leaves the original key set', () => {
    const pfn = alloc(3);
    out.preserveFolio(pfn, 3);
    out.unpreserveFolio(pfn, 2);
    out.unpreserveFolio(pfn, 0);
    expect(out.isPreserved(pfn, 3)).toBe(true);
  });

  it('unpreserving a key that was never added is silent (a WARN upstream) and changes nothing', () => {
    const before = keys();
    expect(() => out.unpreserveFolio(0x7000, 5)).not.toThrow();
    expect(keys()).toBe(before);
  });

  it('never frees a tracker node that became empty', () => {
    // pfn 0x80000 (2 GiB) shares no leaf with anything preserved at boot.
    const pfn = 0x80000;
    const nodesBefore = trackerPages();
    out.preserveFolio(pfn, 0);
    const leaf = trackerNodeOnPath(machine, out.trackerRootPhys, pfn, 0, 0);
    expect(leaf).not.toBe(0);
    expect(trackerPages()).toBeGreaterThan(nodesBefore);
    const nodesWithKey = trackerPages();
    out.unpreserveFolio(pfn, 0);
    expect(trackerPages()).toBe(nodesWithKey);
    expect(trackerNodeOnPath(machine, out.trackerRootPhys, pfn, 0, 0)).toBe(leaf);
  });

  it('tracker node pages are not keys: preserving one folio in a fresh leaf adds exactly one key', () => {
    const before = keys();
    out.preserveFolio(0x80000, 0);
    expect(keys()).toBe(before + 1);
  });
});

describe('kho_preserve_pages', () => {
  it('adds one key per maximal naturally aligned block', () => {
    const before = keys();
    out.preservePages(0x1003, 13);
    expect([out.isPreserved(0x1003, 0), out.isPreserved(0x1004, 2), out.isPreserved(0x1008, 3)]).toEqual([true, true, true]);
    expect(keys()).toBe(before + 3);
  });

  it('kho_unpreserve_pages with the same run removes every block', () => {
    const before = keys();
    out.preservePages(0x1003, 13);
    out.unpreservePages(0x1003, 13);
    expect(keys()).toBe(before);
  });

  it('fails with EINVAL on a block inside scratch and removes the keys it had already added', () => {
    const scratchPfn = Math.min(...k1.scratch.map((a) => a.addr)) / PAGE_SIZE;
    const start = scratchPfn - 3; // blocks (start, 0), (start + 1, 1), then (scratchPfn, 2) in scratch
    const before = keys();
    expect(errnoOf(() => out.preservePages(start, 8))).toBe('EINVAL');
    expect([out.isPreserved(start, 0), out.isPreserved(start + 1, 1)]).toEqual([false, false]);
    expect(keys()).toBe(before);
  });

  it('fails with EINVAL on a run that leaves RAM and removes the keys it had already added', () => {
    const last = k1.mm.pageCount - 1;
    const before = keys();
    expect(errnoOf(() => out.preservePages(last, 2))).toBe('EINVAL');
    expect(out.isPreserved(last, 0)).toBe(false);
    expect(keys()).toBe(before);
  });
});

describe('scratch protection (KEXEC_HANDOVER_DEBUG)', () => {
  it.each([0, 1, 2])('preserving the first page of scratch area %i is EINVAL', (i) => {
    const area = k1.scratch[i];
    if (!area) throw new Error(`no scratch area ${i}`);
    expect(errnoOf(() => out.preserveFolio(area.addr / PAGE_SIZE, 0))).toBe('EINVAL');
  });

  it('preserving a folio that only ends inside scratch is EINVAL', () => {
    const scratchPfn = Math.min(...k1.scratch.map((a) => a.addr)) / PAGE_SIZE;
    expect(errnoOf(() => out.preserveFolio(scratchPfn - 512, 10))).toBe('EINVAL');
  });

  it('preserving a misaligned folio is EINVAL', () => {
    expect(errnoOf(() => out.preserveFolio(0x1001, 1))).toBe('EINVAL');
  });
});

describe('kho_alloc_preserve', () => {
  it('size 0 is EINVAL', () => {
    expect(() => out.allocPreserve(0)).toThrow(expect.objectContaining({ code: 'EINVAL', errno: 22 }));
  });

  it('a size above 4 MiB (order 11 > MAX_PAGE_ORDER) is E2BIG', () => {
    expect(() => out.allocPreserve(4 * MiB + 1)).toThrow(expect.objectContaining({ code: 'E2BIG', errno: 7 }));
  });

  it('4 MiB gives a zeroed, preserved order-10 folio', () => {
    const phys = out.allocPreserve(4 * MiB);
    expect(out.isPreserved(phys / PAGE_SIZE, 10)).toBe(true);
    expect(machine.memory.read(phys, 4 * MiB).every((b) => b === 0)).toBe(true);
  });

  it('rounds the size up to a power-of-two number of pages (3 pages → order 2)', () => {
    const phys = out.allocPreserve(3 * PAGE_SIZE);
    expect(out.isPreserved(phys / PAGE_SIZE, 2)).toBe(true);
  });

  it('kho_unpreserve_free removes the key', () => {
    const phys = out.allocPreserve(PAGE_SIZE);
    out.unpreserveFree(phys);
    expect(out.isPreserved(phys / PAGE_SIZE, 0)).toBe(false);
  });
});

describe('subtrees in the root FDT', () => {
  const childNames = (): string[] => fdtParse(k1.debugfs.read('kho/out/fdt')).children.map((c) => c.name);

  it('kho_add_subtree writes a child with preserved-data and blob-size as little-endian u64', () => {
    const phys = out.allocPreserve(100);
    out.addSubtree('blob', phys, 100);
    const node = fdtParse(k1.debugfs.read('kho/out/fdt')).children.find((c) => c.name === 'blob');
    expect(node?.props.get('preserved-data')).toEqual(propU64LE(BigInt(phys)));
    expect(node?.props.get('blob-size')).toEqual(propU64LE(100n));
  });

  it('adding the same name twice is EEXIST', () => {
    const phys = out.allocPreserve(8);
    out.addSubtree('dup', phys, 8);
    expect(() => out.addSubtree('dup', phys, 8)).toThrow(expect.objectContaining({ code: 'EEXIST', errno: 17 }));
    expect(childNames().filter((n) => n === 'dup')).toHaveLength(1);
  });

  it('filling the 4 KiB root FDT gives ENOMEM and leaves the FDT byte-for-byte unchanged', () => {
    const phys = out.allocPreserve(8);
    let added = 0;
    let before = k1.debugfs.read('kho/out/fdt');
    let code = 'no error';
    for (let i = 0; i < 200; i++) {
      before = k1.debugfs.read('kho/out/fdt');
      code = errnoOf(() => out.addSubtree(`sub-${String(i).padStart(3, '0')}`, phys, 8));
      if (code !== 'no error') break;
      added++;
    }
    expect(code).toBe('ENOMEM');
    // 233 bytes for the header, root and kexec-metadata, 56 per 'sub-NNN' node: 233 + 68 * 56 = 4041,
    // and a 69th node would need 4097 > 4096.
    expect(added).toBe(68);
    expect(k1.debugfs.read('kho/out/fdt')).toEqual(before);
    expect(out.subtreeList).toHaveLength(69);
  });

  it('kho_remove_subtree deletes the child whose preserved-data matches', () => {
    const a = out.allocPreserve(8);
    const b = out.allocPreserve(8);
    out.addSubtree('a', a, 8);
    out.addSubtree('b', b, 8);
    out.removeSubtree(a);
    expect(childNames()).toEqual(['kexec-metadata', 'b']);
    expect(k1.debugfs.list()).not.toContain('kho/out/sub_fdts/a');
  });

  it('kho_remove_subtree of an unknown address is silent and changes nothing', () => {
    const before = k1.debugfs.read('kho/out/fdt');
    expect(() => out.removeSubtree(0x12345000)).not.toThrow();
    expect(k1.debugfs.read('kho/out/fdt')).toEqual(before);
  });
});

describe('kho_retrieve_subtree on hand-made incoming FDTs (§10 check order)', () => {
  let k2: Kernel;
  let goodPhys: number;

  beforeEach(() => {
    goodPhys = out.allocPreserve(64);
    const pd = (v: number): Uint8Array => propU64LE(BigInt(v));
    const meta = out.subtreeList.find((s) => s.name === 'kexec-metadata');
    if (!meta) throw new Error('no kexec-metadata subtree');
    // The live root FDT page is the handover: overwrite it just before the jump.
    writeFdtPage(machine, out.fdtPhys, rootFdt(khoRootProps(out.trackerRootPhys), [
      subtreeNode('kexec-metadata', { 'preserved-data': pd(meta.phys), 'blob-size': pd(meta.size) }),
      subtreeNode('good', { 'preserved-data': pd(goodPhys), 'blob-size': pd(64) }),
      subtreeNode('no-data', { 'blob-size': pd(64) }),
      subtreeNode('short-data', { 'preserved-data': new Uint8Array(4), 'blob-size': pd(64) }),
      subtreeNode('no-size', { 'preserved-data': pd(goodPhys) }),
      subtreeNode('short-size', { 'preserved-data': pd(goodPhys), 'blob-size': propString('big') }),
      subtreeNode('no-data-no-size', {}),
    ]));
    k1.kexecJump('kho=on');
    k2 = Kernel.boot(machine);
  });

  const retrieve = (name: string): unknown => {
    try { return k2.khoIn?.retrieveSubtree(name); } catch (e) { return e; }
  };

  it('the hand-made FDT is accepted: the kernel is a KHO boot', () => {
    expect(k2.isKhoBoot).toBe(true);
  });

  it('a valid child gives its preserved-data and blob-size', () => {
    expect(retrieve('good')).toEqual({ phys: goodPhys, size: 64 });
  });

  it('a missing node is ENOENT', () => {
    expect(retrieve('absent')).toEqual(expect.objectContaining({ code: 'ENOENT', errno: 2 }));
  });

  it.each(['no-data', 'short-data'])('%s: preserved-data missing or not 8 bytes is EINVAL, without a warning', (name) => {
    expect(retrieve(name)).toEqual(expect.objectContaining({ code: 'EINVAL', message: expect.stringContaining('preserved-data') }));
    expect(k2.dmesg.grep(name)).toEqual([]);
  });

  it.each(['no-size', 'short-size'])('%s: blob-size missing or not 8 bytes is EINVAL, with a warning', (name) => {
    expect(retrieve(name)).toEqual(expect.objectContaining({ code: 'EINVAL', message: expect.stringContaining('blob-size') }));
    expect(k2.dmesg.grep(`subtree ${name} has no valid blob-size`)).toHaveLength(1);
  });

  it('preserved-data is checked before blob-size', () => {
    expect(retrieve('no-data-no-size')).toEqual(expect.objectContaining({ code: 'EINVAL', message: expect.stringContaining('preserved-data') }));
  });

  it('kho/in/sub_fdts lists only the valid children', () => {
    expect(k2.debugfs.list().filter((p) => p.startsWith('kho/in/'))).toEqual(['kho/in/fdt', 'kho/in/sub_fdts/good', 'kho/in/sub_fdts/kexec-metadata']);
  });
});
