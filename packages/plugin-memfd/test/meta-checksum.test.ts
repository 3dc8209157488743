/**
 * memfd@3.2.0: the 3.1 header, then meta_crc32, a CRC-32 over the 64-byte header (meta_crc32 as
 * 0) and every xarray entry as (index u64, entry u64) in ascending index, and a zero pad. A
 * change anywhere in the file's handover metadata — header, xarray nodes or leaves — is a file
 * error (EINVAL), never served data.
 */
import { crc32 as zlibCrc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { retrieveTwice } from '../../../test-support/retrieve.js';
import fc from 'fast-check';
import { PAGE_SIZE } from '@liveupdate/hw';
import { retrieveFd, retrieveSession, xarrayAbi } from '@liveupdate/sdk';
import memfd, { memfdAbi } from '@liveupdate/plugin-memfd';
import {
  bootNext, errnoOf, handOverAs, handedOver, pattern, patternMemfd, readV3, sealedSparseMemfd, start, xarraySlotPhys, type Outgoing,
} from './support.js';


function handOver(): { o: Outgoing; header: number } {
  const o = start([memfd({ writes: ['3.2.0'] })]);
  handOverAs(o, [sealedSparseMemfd(o.p, 'a'), patternMemfd(o.p, 'b', 2, 2)]);
  return { o, header: Number(handedOver(o, 'vm', 1).data) };
}

describe('memfd@3.2.0: the 64-byte header', () => {
  it("is handed over under 'memfd@3.2.0' with the 3.1 header in its first 56 bytes", () => {
    const { o, header } = handOver();
    expect(handedOver(o, 'vm', 1).compatible).toBe('memfd@3.2.0');
    const raw = o.machine.memory.read(header, 56);
    expect(new DataView(raw.buffer, raw.byteOffset).getUint32(48, true)).toBe(zlibCrc32(raw.subarray(0, 48)));
  });

  it('has meta_crc32 at 56 over the header (meta_crc32 as 0) and (0, entry 0), (2, entry 2), then a zero pad', () => {
    const { o, header } = handOver();
    const raw = o.machine.memory.read(header, PAGE_SIZE);
    const root = readV3(o.machine, header).folios_xa;
    const covered = new Uint8Array(64 + 32);
    covered.set(raw.subarray(0, 64));
    covered.fill(0, 56, 60);
    const dv = new DataView(covered.buffer);
    dv.setBigUint64(64, 0n, true);
    dv.setBigUint64(72, o.machine.memory.readU64(xarraySlotPhys(o.machine, root, 0)), true);
    dv.setBigUint64(80, 2n, true);
    dv.setBigUint64(88, o.machine.memory.readU64(xarraySlotPhys(o.machine, root, 2)), true);
    const hv = new DataView(raw.buffer, raw.byteOffset);
    expect(hv.getUint32(56, true)).toBe(zlibCrc32(covered));
    expect(raw.subarray(60)).toEqual(new Uint8Array(PAGE_SIZE - 60));
  });
});

describe.each([
  { label: 'a leaf entry moved to an empty index', corrupt: (o: Outgoing, root: bigint) => {
    o.machine.memory.writeU64(xarraySlotPhys(o.machine, root, 1), o.machine.memory.readU64(xarraySlotPhys(o.machine, root, 2)));
    o.machine.memory.writeU64(xarraySlotPhys(o.machine, root, 2), 0n);
  } },
  { label: 'two leaf entries swapped', corrupt: (o: Outgoing, root: bigint) => {
    const a = o.machine.memory.readU64(xarraySlotPhys(o.machine, root, 0));
    o.machine.memory.writeU64(xarraySlotPhys(o.machine, root, 0), o.machine.memory.readU64(xarraySlotPhys(o.machine, root, 2)));
    o.machine.memory.writeU64(xarraySlotPhys(o.machine, root, 2), a);
  } },
  { label: 'a flipped flag bit of an entry', corrupt: (o: Outgoing, root: bigint) => {
    const at = xarraySlotPhys(o.machine, root, 0);
    o.machine.memory.writeU64(at, o.machine.memory.readU64(at) ^ (1n << 60n));
  } },
  { label: 'the meta_crc32 itself', corrupt: (o: Outgoing, _root: bigint, header: number) => o.machine.memory.writeU32(header + 56, o.machine.memory.readU32(header + 56) ^ 1) },
  { label: 'the meta pad', corrupt: (o: Outgoing, _root: bigint, header: number) => o.machine.memory.writeU32(header + 60, 1) },
])('memfd@3.2.0 with $label', ({ corrupt }) => {
  it('fails RETRIEVE_FD with EINVAL, stickily, and the other file keeps its data', () => {
    const { o, header } = handOver();
    corrupt(o, readV3(o.machine, header).folios_xa, header);
    const next = bootNext(o);
    const sfd = retrieveSession(next.p2, next.dev2, 'vm');
    expect(retrieveTwice(next.p2, sfd, 1)).toEqual(['EINVAL', 'EINVAL']);
    expect(next.p2.pread(retrieveFd(next.p2, sfd, 2), 2 * PAGE_SIZE, 0)).toEqual(pattern(2 * PAGE_SIZE, 2));
  });
});

it('memfdAbi describes the 3.2 header as 64 bytes with meta_crc32 at 56', () => {
  expect([memfdAbi.memfdLuoSerV3_2.size, memfdAbi.MEMFD_V3_2_META_CRC_OFFSET]).toEqual([64, 56]);
});

describe('memfd@3.2.0 under any single corrupted metadata byte (property)', () => {
  /** The header's 64 bytes and every byte of the six xarray nodes on the path to index 0. */
  function metadataBytes(o: Outgoing, header: number): number[] {
    const { KHO_XA_DEPTH } = xarrayAbi;
    const nodes: number[] = [];
    let node = Number(readV3(o.machine, header).folios_xa);
    for (let level = KHO_XA_DEPTH - 1; level >= 0; level--) {
      nodes.push(node);
      if (level > 0) node = o.machine.memory.readU64Number(node);
    }
    return [header, ...nodes];
  }

  it('RETRIEVE_FD of that file fails EINVAL; the other file gets its own bytes or a file error, never other data', () => {
    fc.assert(fc.property(fc.nat(6), fc.nat(PAGE_SIZE - 1), fc.integer({ min: 1, max: 255 }), (page, offset, flip) => {
      const { o, header } = handOver();
      const at = (metadataBytes(o, header)[page] as number) + (page === 0 ? offset % 64 : offset);
      o.machine.memory.writeU8(at, o.machine.memory.readU8(at) ^ flip);
      const next = bootNext(o);
      const sfd = retrieveSession(next.p2, next.dev2, 'vm');
      expect(errnoOf(() => retrieveFd(next.p2, sfd, 1))).toBe('EINVAL');
      let b = -1;
      const err = errnoOf(() => { b = retrieveFd(next.p2, sfd, 2); });
      if (b >= 0) expect(next.p2.pread(b, 2 * PAGE_SIZE, 0)).toEqual(pattern(2 * PAGE_SIZE, 2));
      else expect(['EIO', 'EINVAL']).toContain(err);
    }), { numRuns: 40 });
  }, 60_000);
});
