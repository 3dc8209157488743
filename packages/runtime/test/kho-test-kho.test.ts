/**
 * The upstream lib/test_kho.c scenario: preserve ~8 MiB of folios of random orders filled with
 * random bytes, describe them in a preserved blob registered as the 'test_kho' subtree, kexec,
 * and in the new kernel find the blob from the handover FDT alone, restore every folio and
 * compare its content byte for byte.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { PAGE_SIZE, POISON_BYTE, createMachine, type Machine } from '@liveupdate/hw';
import { type Folio, type Kernel, type KhoIn, type KhoOut } from '@liveupdate/runtime';
import {
  MiB, coldBoot, decodeFolioRecords, encodeFolioRecords, prng, randomBytes, sha256, type FolioRecord,
} from './fixtures/kho-helpers.js';

const MAX_PAGE_ORDER = 10;
const TARGET_BYTES = 8 * MiB;

let machine: Machine;
let k1: Kernel;
let k2: Kernel;
/** What k1 wrote, kept by the test (not by the kernel) to compare against. */
const written: Array<{ phys: number; order: number; bytes: Uint8Array }> = [];
const notPreserved: Array<{ pfn: number; order: number }> = [];
let blobPhys = 0;
let blobSize = 0;
let blocksHandedOver = 0;

// Observations made in the new kernel, in this order.
let retrieved: { phys: number; size: number } | undefined;
let fromBlob: FolioRecord[] = [];
let tailRestores: Array<Folio | null> = [];
let unalignedRestores: Array<Folio | null> = [];
let leakedBeforeRestore = { blocks: 0, pages: 0 };
let firstRestores: Array<Folio | null> = [];
let contents: Uint8Array[] = [];
let secondRestores: Array<Folio | null> = [];
let leakedAfterRestore = { blocks: 0, pages: 0 };

beforeAll(() => {
  machine = createMachine({ memory: '4GiB' });
  k1 = coldBoot(machine, 'kho=on liveupdate=on');
  const out = k1.khoOut as KhoOut;
  const rand = prng(0x7e57);
  let total = 0;
  while (total < TARGET_BYTES) {
    const order = Math.floor(rand() * (MAX_PAGE_ORDER + 1));
    const pfn = k1.mm.allocPages(order);
    if (pfn === null) throw new Error('test setup: out of memory');
    const bytes = randomBytes(rand, 2 ** order * PAGE_SIZE);
    machine.memory.write(pfn * PAGE_SIZE, bytes);
    out.preserveFolio(pfn, order);
    written.push({ phys: pfn * PAGE_SIZE, order, bytes });
    total += bytes.length;
  }
  // Allocated and written, never preserved: these must not survive.
  for (const order of [0, 3, MAX_PAGE_ORDER]) {
    const pfn = k1.mm.allocPages(order);
    if (pfn === null) throw new Error('test setup: out of memory');
    machine.memory.fill(pfn * PAGE_SIZE, 2 ** order * PAGE_SIZE, 0x5a);
    notPreserved.push({ pfn, order });
  }
  const blob = encodeFolioRecords(written.map((w) => ({ phys: w.phys, order: w.order, sha: sha256(w.bytes) })));
  blobSize = blob.length;
  blobPhys = out.allocPreserve(blobSize);
  machine.memory.write(blobPhys, blob);
  out.addSubtree('test_kho', blobPhys, blobSize);
  blocksHandedOver = out.survivors().blocks;

  k2 = k1.kexec({ cmdline: 'kho=on liveupdate=on' });
  const kin = k2.khoIn as KhoIn;
  retrieved = kin.retrieveSubtree('test_kho');
  fromBlob = decodeFolioRecords(machine.memory.read(retrieved.phys, retrieved.size));
  const big = fromBlob.filter((r) => r.order > 0);
  tailRestores = big.flatMap((r) => [kin.restoreFolio(r.phys + PAGE_SIZE), kin.restoreFolio(r.phys + (2 ** r.order - 1) * PAGE_SIZE)]);
  unalignedRestores = fromBlob.flatMap((r) => [kin.restoreFolio(r.phys + 1), kin.restoreFolio(r.phys + 8), kin.restoreFolio(r.phys + 0x800)]);
  leakedBeforeRestore = kin.leaked();
  firstRestores = fromBlob.map((r) => kin.restoreFolio(r.phys));
  contents = fromBlob.map((r) => machine.memory.read(r.phys, 2 ** r.order * PAGE_SIZE));
  secondRestores = fromBlob.map((r) => kin.restoreFolio(r.phys));
  kin.restoreFree(retrieved.phys);
  leakedAfterRestore = kin.leaked();
});

describe('test_kho: random folios through a kexec', () => {
  it('preserves at least 8 MiB in folios of orders 0..10, with several distinct orders', () => {
    expect(written.reduce((n, w) => n + w.bytes.length, 0)).toBeGreaterThanOrEqual(TARGET_BYTES);
    expect(written.every((w) => w.order >= 0 && w.order <= MAX_PAGE_ORDER)).toBe(true);
    expect(new Set(written.map((w) => w.order)).size).toBeGreaterThanOrEqual(8);
  });

  it('the new kernel is a KHO boot that reserved exactly the blocks handed over', () => {
    expect(k2.isKhoBoot).toBe(true);
    expect(k2.khoIn?.reservedBlocks).toBe(blocksHandedOver);
    expect(k2.dmesg.grep(`KHO: reserved ${blocksHandedOver} preserved blocks`)).toHaveLength(1);
  });

  it('kho_retrieve_subtree finds the blob from the incoming FDT', () => {
    expect(retrieved).toEqual({ phys: blobPhys, size: blobSize });
  });

  it('the blob lists every folio with its phys, order and digest', () => {
    expect(fromBlob).toEqual(written.map((w) => ({ phys: w.phys, order: w.order, sha: sha256(w.bytes) })));
  });

  it('a tail page of a preserved folio does not restore', () => {
    expect(tailRestores.length).toBeGreaterThan(0);
    expect(tailRestores.every((f) => f === null)).toBe(true);
  });

  it('an unaligned address inside a preserved head page does not restore', () => {
    expect(unalignedRestores).toHaveLength(3 * written.length);
    expect(unalignedRestores.every((f) => f === null)).toBe(true);
  });

  it('the failed restores consumed nothing: every folio plus the blob is still outstanding', () => {
    expect(leakedBeforeRestore).toEqual({
      blocks: written.length + 1,
      pages: written.reduce((n, w) => n + 2 ** w.order, 0) + 2 ** Math.ceil(Math.log2(Math.ceil(blobSize / PAGE_SIZE))),
    });
  });

  it('every folio restores with its preserved order', () => {
    expect(firstRestores).toEqual(written.map((w) => ({ pfn: w.phys / PAGE_SIZE, order: w.order })));
  });

  it('every restored folio holds exactly the bytes k1 wrote', () => {
    const mismatched = written.filter((w, i) => !Buffer.from(w.bytes).equals(contents[i] as Uint8Array)).map((w) => w.phys);
    expect(mismatched).toEqual([]);
  });

  it("every restored folio's digest matches the one recorded in the blob", () => {
    expect(contents.map(sha256)).toEqual(fromBlob.map((r) => r.sha));
  });

  it('a second restore of each folio returns null', () => {
    expect(secondRestores.every((f) => f === null)).toBe(true);
    expect(secondRestores).toHaveLength(written.length);
  });

  it('nothing preserved is left unclaimed once the folios and the blob are restored', () => {
    expect(leakedAfterRestore).toEqual({ blocks: 0, pages: 0 });
  });
});

describe('test_kho: memory that was allocated but not preserved', () => {
  it('reads as poison pages', () => {
    const kinds = notPreserved.flatMap((f) => Array.from({ length: 2 ** f.order }, (_, i) => machine.memory.pageKind(f.pfn + i)));
    expect(new Set(kinds)).toEqual(new Set(['poison']));
  });

  it('holds only the poison byte 0xaa, and each page read counts one poison read', () => {
    const pages = notPreserved.reduce((n, f) => n + 2 ** f.order, 0);
    machine.memory.resetPoisonReads();
    const bytes = notPreserved.map((f) => machine.memory.read(f.pfn * PAGE_SIZE, 2 ** f.order * PAGE_SIZE));
    expect(machine.memory.poisonReads).toBe(pages);
    expect(bytes.every((b) => b.every((x) => x === POISON_BYTE))).toBe(true);
    expect(POISON_BYTE).toBe(0xaa);
  });

  it('cannot be restored', () => {
    expect(notPreserved.map((f) => k2.khoIn?.restoreFolio(f.pfn * PAGE_SIZE))).toEqual([null, null, null]);
  });
});
