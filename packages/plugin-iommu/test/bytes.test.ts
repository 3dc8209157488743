import { crc32 as zlibCrc32 } from 'node:zlib';
import { describe, it, expect } from 'vitest';
import { PAGE_SIZE } from '@liveupdate/hw';
import { finishSession, retrieveFd, retrieveSession } from '@liveupdate/sdk';
import { DEFAULT_WRITES } from '../src/index.js';
import { coreOf } from '../src/state.js';
import { DEV_A, REG_BASE, bind, bootNext, handedOverFiles, handedOverFlbs, ictxOf, passthrough, preserveAll, world, type World } from './support.js';

/** Little-endian bytes built by hand: [width, value] pairs. */
function le(...fields: ReadonlyArray<readonly [1 | 4 | 8, number | bigint]>): Uint8Array {
  const out = new Uint8Array(fields.reduce((n, [w]) => n + w, 0));
  const v = new DataView(out.buffer);
  let o = 0;
  for (const [w, x] of fields) {
    if (w === 1) v.setUint8(o, Number(x));
    else if (w === 4) v.setUint32(o, Number(x), true);
    else v.setBigUint64(o, BigInt(x), true);
    o += w;
  }
  return out;
}

function handover(variant: 'iommu-liveupdate' | 'iommu-liveupdate-v1'): { w: World; top: number; root: number; flb: bigint; iommufd: bigint } {
  const w = world({ iommu: { writes: ['1.0.0'], flb: variant } });
  const x = passthrough(w);
  const top = ictxOf(w.p, x.ifd).get(x.hwpt, 'hwpt', 't').domain?.table.topPhys ?? 0;
  const root = (coreOf(w.k1).units[0]?.rootPfn ?? 0) * PAGE_SIZE;
  preserveAll(w, x);
  w.k1.kexecJump(w.next);
  const flbs = handedOverFlbs(w);
  expect(flbs.map((f) => [f.name, f.count])).toEqual([[variant, 1n]]);
  const file = handedOverFiles(w).find((f) => f.token === 2n);
  expect(file?.compatible).toBe('iommufd-v1');
  return { w, top, root, flb: flbs[0]?.data ?? 0n, iommufd: file?.data ?? 0n };
}

const read = (w: World, phys: number | bigint, n: number): Uint8Array => w.machine.memory.read(Number(phys), n);
const u64 = (w: World, phys: number): number => w.machine.memory.readU64Number(phys);

describe('"iommu-liveupdate" (versioned header, generic records): bytes', () => {
  it('header, the three arrays and their records are the hand-computed bytes', () => {
    const { w, top, flb, iommufd } = handover('iommu-liveupdate');
    const hw = u64(w, Number(flb) + 8);
    const dom = u64(w, Number(flb) + 16);
    const dev = u64(w, Number(flb) + 24);
    expect(read(w, flb, 32)).toEqual(le([8, 1], [8, hw], [8, dom], [8, dev]));
    expect([hw, dom, dev].every((p) => p % PAGE_SIZE === 0 && p > 0)).toBe(true);
    expect(new Set([hw, dom, dev]).size).toBe(3);
    // iommu_domain_ser: ref 1, flags 0, top_table_phys, top_level 3 (4 levels), vasz 48, sign_extend 0, restored_domain 0
    expect(read(w, dom, 16 + 40)).toEqual(le([8, 0], [8, 1], [4, 1], [4, 0], [8, top], [8, 3], [4, 48], [4, 0], [8, 0]));
    // iommu_device_ser: devid 03:00.0, segment 0, DID 1, domain record, hw record
    expect(read(w, dev, 16 + 40)).toEqual(le([8, 0], [8, 1], [4, 1], [4, 0], [4, DEV_A.rid], [4, 0], [8, 1], [8, dom + 16], [8, hw + 16]));
    // iommu_hw_ser: ref 1 (one device), token = register base, type IOMMU_INTEL
    expect(read(w, hw, 16 + 24)).toEqual(le([8, 0], [8, 1], [4, 1], [4, 0], [8, REG_BASE], [8, 1]));
    // iommufd-v1: nr_hwpts 1; { domain_data, token, reclaimed 0, pad }
    expect(read(w, iommufd, 32)).toEqual(le([8, 1], [8, dom + 16], [8, 0x5eed], [8, 0]));
  });
});

describe('"iommu-liveupdate-v1" (VT-d variant): bytes', () => {
  it('no version field; the hw record carries the root table and the bitmap of preserved context tables; the device record the PASID table', () => {
    const { w, root, top, flb } = handover('iommu-liveupdate-v1');
    const hw = u64(w, Number(flb));
    const dom = u64(w, Number(flb) + 8);
    const dev = u64(w, Number(flb) + 16);
    expect(read(w, flb, 24)).toEqual(le([8, hw], [8, dom], [8, dev]));
    expect(read(w, dom, 16 + 40)).toEqual(le([8, 0], [8, 1], [4, 1], [4, 0], [8, top], [8, 3], [4, 48], [4, 0], [8, 0]));
    expect(read(w, dev, 16 + 56)).toEqual(le([8, 0], [8, 1], [4, 1], [4, 0], [4, DEV_A.rid], [4, 0], [8, 1], [8, dom + 16], [8, hw + 16], [8, 0], [8, 0]));
    // Bus 3's context table → CONTEXT_TABLE_PRESERVED_BIT(3, 0) = 6: byte 0 = 0x40.
    const bitmap = new Uint8Array(64);
    bitmap[0] = 0x40;
    const expected = new Uint8Array(16 + 112);
    expected.set(le([8, 0], [8, 1], [4, 1], [4, 0], [8, REG_BASE], [8, 1], [1, 0], [1, 0], [1, 0], [1, 0], [1, 0], [1, 0], [1, 0], [1, 0], [8, REG_BASE], [8, root]));
    expected.set(bitmap, 16 + 48);
    expect(read(w, hw, 16 + 112)).toEqual(expected);
  });

  it('the incoming kernel adopts the root table the record names and sets its restored byte', () => {
    const { w, root, flb } = handover('iommu-liveupdate-v1');
    const hw = u64(w, Number(flb));
    bootNext(w);
    expect(w.unit.rootTableAddress).toBe(root);
    expect(read(w, hw + 16 + 24, 1)).toEqual(new Uint8Array([1]));
  });

  it('a build that writes one variant reads the other, and releases its pages when the session finishes', () => {
    const w = world({ iommu: { flb: 'iommu-liveupdate-v1' }, nextIommu: { flb: 'iommu-liveupdate' } });
    const x = passthrough(w);
    preserveAll(w, x);
    w.k1.kexecJump(w.next);
    const { k2, p2, dev2 } = bootNext(w);
    expect(coreOf(k2).incoming?.variant).toBe('iommu-liveupdate-v1');
    expect(coreOf(k2).units[0]?.restored).toBe(true);
    const s = retrieveSession(p2, dev2, 'vm0');
    retrieveFd(p2, s, 1);
    bind(p2, retrieveFd(p2, s, 3), retrieveFd(p2, s, 2));
    finishSession(p2, s);
    expect(coreOf(k2).incoming).toBeNull();
    expect(k2.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
  });
});

describe('array pages chain when full; deleted slots are not reused', () => {
  it('103 domain records (102 per page) chain a second page; a deleted record keeps its slot', () => {
    const w = world();
    const x = passthrough(w);
    preserveAll(w, x);
    const core = coreOf(w.k1);
    const flb = core.flbOutgoing();
    if (!flb) throw new Error('no FLB');
    const first = flb.first.domain;
    for (let i = 0; i < 102; i++) flb.alloc('domain');
    expect(u64(w, first + 8)).toBe(102);
    const second = u64(w, first);
    expect(second % PAGE_SIZE).toBe(0);
    expect(u64(w, second + 8)).toBe(1);
    flb.markDeleted(first + 16);
    expect(w.machine.memory.readU32(first + 16 + 4)).toBe(1);
    flb.alloc('domain');
    expect(u64(w, second + 8)).toBe(2);
  });
});


/** A default-format (2.x) handover of the passthrough set-up: the iommufd file's data and the domain record it names. */
function handover2(writes: readonly string[]): { w: World; iommufd: number; dom: number; compatible: string } {
  const w = world({ iommu: { writes } });
  preserveAll(w, passthrough(w));
  w.k1.kexecJump(w.next);
  const file = handedOverFiles(w).find((f) => f.token === 2n);
  const dom = u64(w, Number(handedOverFlbs(w)[0]?.data ?? 0n) + 16);
  return { w, iommufd: Number(file?.data ?? 0n), dom, compatible: file?.compatible ?? '' };
}

// nr_hwpts 1; HWPT { domain_data, token 0x5eed, reclaimed 0, pad }; nr_areas 1;
// area { iova 0x100000, length 2 MiB, start 0, file_token 1 (the memfd), hwpt_index 0, flags FIXED_IOVA|WRITEABLE|READABLE = 7, reserved 0 }
const v2Body = (dom: number): Uint8Array => le([8, 1], [8, dom + 16], [8, 0x5eed], [8, 0], [8, 1], [8, 0x10_0000], [8, 0x20_0000], [8, 0], [8, 1], [4, 0], [4, 7], [8, 0]);

describe('iommufd 2.x: bytes', () => {
  it('2.0.0: the v1 header and HWPT, then nr_areas and one 48-byte area (88 bytes)', () => {
    const { w, iommufd, dom, compatible } = handover2(['2.0.0']);
    expect(compatible).toBe('iommufd@2.0.0');
    expect(read(w, iommufd, 88)).toEqual(v2Body(dom));
  });

  it('2.1.0 (written by default): the 2.0.0 bytes, then the CRC-32 of all 88 of them and a zero pad (96 bytes)', () => {
    const { w, iommufd, dom, compatible } = handover2(DEFAULT_WRITES);
    expect(compatible).toBe('iommufd@2.1.0');
    const body = v2Body(dom);
    expect(zlibCrc32(new TextEncoder().encode('123456789'))).toBe(0xcbf43926);
    expect(read(w, iommufd, 96)).toEqual(new Uint8Array([...body, ...le([4, zlibCrc32(body)], [4, 0])]));
  });
});
