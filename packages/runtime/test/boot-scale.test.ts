/**
 * Scale: a 64 TiB machine with 2 NUMA nodes boots with KHO, preserves folios near the top of
 * memory and restores them after a kexec, while the host backs only the pages actually
 * touched (cost grows with what is preserved, not with the machine).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { PAGE_SIZE, createMachine, type Machine } from '@liveupdate/hw';
import type { Folio, Kernel, KhoIn, KhoOut } from '@liveupdate/runtime';
import { MiB, TiB, coldBoot, prng, randomBytes, sha256 } from './fixtures/kho-helpers.js';

let machine: Machine;
let k1: Kernel;
let k2: Kernel;
const folios: Array<Folio & { sha: string }> = [];
let residentAfterBoot = 0;
let residentBeforeKexec = 0;
let restored: Array<Folio | null> = [];
let contents: string[] = [];

beforeAll(() => {
  machine = createMachine({ memory: '64TiB', numaNodes: 2 });
  k1 = coldBoot(machine, 'kho=on liveupdate=on');
  residentAfterBoot = machine.memory.residentBytes;
  const out = k1.khoOut as KhoOut;
  // Move node 1's allocation frontier up with 4 TiB blocks (never touched, so free to hold),
  // so the folios below come from the top of node 1.
  for (;;) {
    const big = k1.mm.allocPages(30, 1);
    if (big === null) break;
    if (machine.nodeOfPfn(big) !== 1) { k1.mm.freePages(big, 30); break; }
  }
  const rand = prng(0x64);
  for (let order = 0; order <= 10; order++) {
    const pfn = k1.mm.allocPages(order, 1);
    if (pfn === null) throw new Error('test setup: out of memory');
    const bytes = randomBytes(rand, 2 ** order * PAGE_SIZE);
    machine.memory.write(pfn * PAGE_SIZE, bytes);
    out.preserveFolio(pfn, order);
    folios.push({ pfn, order, sha: sha256(bytes) });
  }
  residentBeforeKexec = machine.memory.residentBytes;
  k2 = k1.kexec({ cmdline: 'kho=on liveupdate=on' });
  const kin = k2.khoIn as KhoIn;
  restored = folios.map((f) => kin.restoreFolio(f.pfn * PAGE_SIZE));
  contents = folios.map((f) => sha256(machine.memory.read(f.pfn * PAGE_SIZE, 2 ** f.order * PAGE_SIZE)));
});

describe('a 64 TiB machine with 2 NUMA nodes', () => {
  it('boots with KHO on: nodes + 2 scratch areas, each per-node area inside its node', () => {
    expect(k1.khoEnabled).toBe(true);
    expect(k1.scratch).toHaveLength(4);
    expect(machine.nodeOfPfn((k1.scratch[2]?.addr ?? -1) / PAGE_SIZE)).toBe(0);
    expect(machine.nodeOfPfn((k1.scratch[3]?.addr ?? -1) / PAGE_SIZE)).toBe(1);
  });

  it('a cold boot backs one 64 KiB chunk of host memory', () => {
    // Measured: the tracker root, root FDT, kexec-metadata and LUO pages share one chunk.
    expect(residentAfterBoot).toBe(64 * 1024);
  });

  it('preserves folios of orders 0..10 above 60 TiB, on node 1', () => {
    expect(folios.every((f) => f.pfn * PAGE_SIZE >= 60 * TiB && machine.nodeOfPfn(f.pfn) === 1)).toBe(true);
  });

  it('the next kernel is a KHO boot on the same scratch areas', () => {
    expect(k2.isKhoBoot).toBe(true);
    expect(k2.scratch).toEqual(k1.scratch);
  });

  it('restores every folio at its order', () => {
    expect(restored).toEqual(folios.map((f) => ({ pfn: f.pfn, order: f.order })));
  });

  it('every restored folio holds the bytes k1 wrote', () => {
    expect(contents).toEqual(folios.map((f) => f.sha));
  });

  it('the host backs about the 8 MiB of preserved content, not the 64 TiB machine', () => {
    // 8 MiB - 4 KiB of folio content (2047 pages) plus tracker, FDT, LUO and metadata pages, in
    // 64 KiB chunks. Measured: 132 chunks (8.25 MiB) before the kexec, 133 after the new boot.
    expect(residentBeforeKexec).toBeLessThanOrEqual(8.25 * MiB);
    expect(machine.memory.residentBytes).toBeLessThanOrEqual(8.25 * MiB + 64 * 1024);
  });
});
