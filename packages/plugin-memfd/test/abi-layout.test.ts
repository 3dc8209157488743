/**
 * The bytes the next kernel receives, decoded with the plugin's own ABI structs after the
 * jump and before the next boot: the luo_file_ser compatible string, the 40-byte memfd-v1 and
 * 48-byte memfd-v2 / memfd@3.0.0 headers, the folio records of the vmalloc array and the
 * entries of the KHO xarray.
 */
import { describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '@liveupdate/hw';
import { abi, createSession, preserveFd } from '@liveupdate/sdk';
import memfd, { memfdAbi } from '@liveupdate/plugin-memfd';
import {
  folioRecordPhys, sealedSparseMemfd, handedOver, pattern, readV1, readV2, readV3, start, xarraySlotPhys, type Outgoing,
} from './support.js';

const { F_SEAL_SHRINK, F_SEAL_GROW, memfdLuoFolioSer } = memfdAbi;
const DIRTY_UPTODATE = BigInt(memfdAbi.MEMFD_LUO_FOLIO_DIRTY | memfdAbi.MEMFD_LUO_FOLIO_UPTODATE);
const PFN_BITS = BigInt(memfdAbi.MEMFD_LUO_FOLIO_PFN_BITS);

/** Three pages, only pages 0 and 2 written; pos 777; seals SHRINK | GROW. Preserved as vm/5, then the jump. */
function handOver(o: Outgoing): { serPhys: number; compatible: string } {
  const fd = sealedSparseMemfd(o.p, 'ram');
  preserveFd(o.p, createSession(o.p, o.dev, 'vm'), fd, 5);
  o.k1.kexecJump(o.cfg);
  const f = handedOver(o, 'vm', 5);
  return { serPhys: Number(f.data), compatible: f.compatible };
}

const page = (o: Outgoing, pfn: bigint): Uint8Array => o.machine.memory.read(Number(pfn) * PAGE_SIZE, PAGE_SIZE);

describe('luo_file_ser', () => {
  it.each([
    [['1.0.0'], 'memfd-v1'],
    [['2.0.0'], 'memfd-v2'],
    [['1.0.0', '2.0.0', '3.0.0'], 'memfd@3.0.0'],
  ])('a build writing %j names the format %s, with data = the header address and the token', (writes, compatible) => {
    const o = start([memfd({ writes })]);
    const { serPhys } = handOver(o);
    const f = handedOver(o, 'vm', 5);
    expect(f.compatible).toBe(compatible);
    expect(f.token).toBe(5n);
    expect(serPhys % PAGE_SIZE).toBe(0);
    expect(abi.luo.luoFileSer.size).toBe(64);
  });
});

describe('memfd-v1: 40-byte header', () => {
  it('holds pos, size, nr_folios and the kho_vmalloc of the folio array, and nothing after byte 40', () => {
    const o = start([memfd({ writes: ['1.0.0'] })]);
    const { serPhys } = handOver(o);
    expect(memfdAbi.memfdLuoSerV1.size).toBe(40);
    const h = readV1(o.machine, serPhys);
    expect({ ...h, folios_first: h.folios_first % BigInt(PAGE_SIZE) }).toEqual({
      pos: 777n, size: BigInt(3 * PAGE_SIZE), nr_folios: 3n,
      folios_first: 0n, folios_total_pages: 1, folios_flags: abi.kho.KHO_VMALLOC_ALLOC, folios_order: 0,
    });
    expect(h.folios_first).not.toBe(0n);
    expect(o.machine.memory.read(serPhys + 40, PAGE_SIZE - 40)).toEqual(new Uint8Array(PAGE_SIZE - 40));
  });

  it('a build that also writes 2.0.0 rewrites the header as v1 for a v1-only kernel, zeroing bytes 40..47', () => {
    const o = start([memfd({ writes: ['1.0.0', '2.0.0'] })], { next: [memfd({ writes: ['1.0.0'], reads: '^1.0.0' })] });
    const { serPhys, compatible } = handOver(o);
    expect(compatible).toBe('memfd-v1');
    expect(readV1(o.machine, serPhys).nr_folios).toBe(3n);
    expect(o.machine.memory.read(serPhys + 40, 8)).toEqual(new Uint8Array(8));
  });
});

describe('memfd-v2: 48-byte header', () => {
  it('holds pos, size, seals, flags 0, nr_folios and the kho_vmalloc of the folio array', () => {
    const o = start([memfd({ writes: ['2.0.0'] })]);
    const { serPhys } = handOver(o);
    expect(memfdAbi.memfdLuoSerV2.size).toBe(48);
    const h = readV2(o.machine, serPhys);
    expect({ ...h, folios_first: 0n }).toEqual({
      pos: 777n, size: BigInt(3 * PAGE_SIZE), seals: F_SEAL_SHRINK | F_SEAL_GROW, flags: 0, nr_folios: 3n,
      folios_first: 0n, folios_total_pages: 1, folios_flags: abi.kho.KHO_VMALLOC_ALLOC, folios_order: 0,
    });
  });

  it('records one memfd_luo_folio_ser per page below i_size, holes materialized, DIRTY | UPTODATE, by index', () => {
    const o = start([memfd({ writes: ['2.0.0'] })]);
    const { serPhys } = handOver(o);
    const h = readV2(o.machine, serPhys);
    const records = [0, 1, 2].map((i) => memfdLuoFolioSer.decode(o.machine.memory.read(folioRecordPhys(o.machine, h.folios_first, i), 16)));
    expect(records.map((r) => r.index)).toEqual([0n, 1n, 2n]);
    expect(records.map((r) => r.pfn_flags >> PFN_BITS)).toEqual([DIRTY_UPTODATE, DIRTY_UPTODATE, DIRTY_UPTODATE]);
    const pfns = records.map((r) => r.pfn_flags & ((1n << PFN_BITS) - 1n));
    expect(page(o, pfns[0] as bigint)).toEqual(pattern(PAGE_SIZE, 1));
    expect(page(o, pfns[1] as bigint)).toEqual(new Uint8Array(PAGE_SIZE));
    expect(page(o, pfns[2] as bigint)).toEqual(pattern(PAGE_SIZE, 3));
  });
});

/** Up to 3.1.0: the 3.0 fields are the first 48 bytes of the 3.1 header. */
const V3_1_BUILD = { writes: ['1.0.0', '2.0.0', '3.0.0', '3.1.0'] };

describe('memfd@3.0.0: 48-byte header and a KHO xarray', () => {
  it('holds pos, size, seals, flags 0, the count of present folios, the xarray root and order 0', () => {
    const o = start([memfd(V3_1_BUILD)]);
    const { serPhys } = handOver(o);
    expect(memfdAbi.memfdLuoSerV3.size).toBe(48);
    const h = readV3(o.machine, serPhys);
    expect(h.folios_xa % BigInt(PAGE_SIZE)).toBe(0n);
    expect({ ...h, folios_xa: 0n }).toEqual({
      pos: 777n, size: BigInt(3 * PAGE_SIZE), seals: F_SEAL_SHRINK | F_SEAL_GROW, flags: 0, nr_folios: 2n,
      folios_xa: 0n, order: 0, reserved: 0,
    });
  });

  it('maps each present index to pfn | (DIRTY | UPTODATE) << 52 and leaves the hole empty', () => {
    const o = start([memfd(V3_1_BUILD)]);
    const { serPhys } = handOver(o);
    const root = readV3(o.machine, serPhys).folios_xa;
    const entry = (i: number): bigint => o.machine.memory.readU64(xarraySlotPhys(o.machine, root, i));
    const mask = (1n << PFN_BITS) - 1n;
    expect([0, 1, 2].map((i) => entry(i) >> PFN_BITS)).toEqual([DIRTY_UPTODATE, 0n, DIRTY_UPTODATE]);
    expect(entry(1)).toBe(0n);
    expect(page(o, entry(0) & mask)).toEqual(pattern(PAGE_SIZE, 1));
    expect(page(o, entry(2) & mask)).toEqual(pattern(PAGE_SIZE, 3));
  });
});
