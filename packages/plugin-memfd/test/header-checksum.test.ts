/**
 * memfd@3.1.0: the 3.0 header plus a CRC-32 (IEEE 802.3) of its 48 bytes and a pad word, 56
 * bytes. A 3.1 reader refuses a header whose checksum does not match (EINVAL, sticky), so an
 * in-range corruption of `size` no longer restores a file of the wrong size; a build that writes
 * only up to 3.0.0 still writes the 48-byte header, without a checksum.
 */
import { crc32 as zlibCrc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '@liveupdate/hw';
import { retrieveFd, retrieveSession } from '@liveupdate/sdk';
import memfd, { crc32, memfdAbi, type MemfdPluginOptions } from '@liveupdate/plugin-memfd';
import { SEEK_END, bootNext, handOverAs, patternMemfd, sealedSparseMemfd, errnoOf, handedOver, pattern, start, type Outgoing } from './support.js';

const { F_SEAL_SHRINK, F_SEAL_GROW, memfdLuoSerV3, memfdLuoSerV3_1 } = memfdAbi;
const V3_0: MemfdPluginOptions = { writes: ['1.0.0', '2.0.0', '3.0.0'] };
/** A build that writes up to memfd@3.1.0 (the 3.1 release's defaults). */
const V3_1: MemfdPluginOptions = { writes: ['1.0.0', '2.0.0', '3.0.0', '3.1.0'] };


/**
 * Session 'vm': token 1 (3 pages, pages 0 and 2 written, pos 777, seals SHRINK | GROW) and
 * token 2 (2 pages, pattern 2). Jumps; returns token 1's header address.
 */
function handOver(options: MemfdPluginOptions = V3_1): { o: Outgoing; header: number; compatible: string } {
  const o = start([memfd(options)]);
  handOverAs(o, [sealedSparseMemfd(o.p, 'a'), patternMemfd(o.p, 'b', 2, 2)]);
  const f = handedOver(o, 'vm', 1);
  return { o, header: Number(f.data), compatible: f.compatible };
}

describe('CRC-32 (IEEE 802.3)', () => {
  it('gives the standard check value and the exact checksum of a known 48-byte 3.0 header', () => {
    expect(crc32(new TextEncoder().encode('123456789'))).toBe(0xcbf43926);
    expect(crc32(new Uint8Array(0))).toBe(0);
    const known = memfdLuoSerV3.encode({
      pos: 777n, size: BigInt(3 * PAGE_SIZE), seals: F_SEAL_SHRINK | F_SEAL_GROW, flags: 0, nr_folios: 2n,
      folios_xa: 0x12345000n, order: 0, reserved: 0,
    });
    expect(known.length).toBe(48);
    expect(crc32(known)).toBe(0x6e5b3441); // zlib.crc32 of the same bytes
    expect(zlibCrc32(known)).toBe(0x6e5b3441);
  });
});

describe('memfd@3.1.0: the 56-byte header', () => {
  it('is the default: the 3.0 fields, then crc32 of bytes 0..47 and a zero pad, and nothing after', () => {
    const { o, header, compatible } = handOver();
    expect(compatible).toBe('memfd@3.1.0');
    expect(memfdLuoSerV3_1.size).toBe(56);
    const raw = o.machine.memory.read(header, PAGE_SIZE);
    const h = memfdLuoSerV3_1.decode(raw);
    expect(h.folios_xa % BigInt(PAGE_SIZE)).toBe(0n);
    expect(h.folios_xa).not.toBe(0n);
    expect({ ...h, folios_xa: 0n, crc32: 0 }).toEqual({
      pos: 777n, size: BigInt(3 * PAGE_SIZE), seals: F_SEAL_SHRINK | F_SEAL_GROW, flags: 0, nr_folios: 2n,
      folios_xa: 0n, order: 0, reserved: 0, crc32: 0, pad: 0,
    });
    // The first 48 bytes are exactly the 3.0 header an older reader decodes.
    expect(memfdLuoSerV3.decode(raw.subarray(0, 48))).toEqual({
      pos: 777n, size: BigInt(3 * PAGE_SIZE), seals: F_SEAL_SHRINK | F_SEAL_GROW, flags: 0, nr_folios: 2n,
      folios_xa: h.folios_xa, order: 0, reserved: 0,
    });
    const expected = memfdLuoSerV3.encode({
      pos: 777n, size: BigInt(3 * PAGE_SIZE), seals: F_SEAL_SHRINK | F_SEAL_GROW, flags: 0, nr_folios: 2n,
      folios_xa: h.folios_xa, order: 0, reserved: 0,
    });
    expect(raw.subarray(0, 48)).toEqual(expected);
    expect(h.crc32).toBe(zlibCrc32(expected));
    expect(new DataView(raw.buffer, raw.byteOffset).getUint32(48, true)).toBe(zlibCrc32(expected));
    expect(raw.subarray(56)).toEqual(new Uint8Array(PAGE_SIZE - 56));
  });

  it('a flipped bit in size fails RETRIEVE_FD with EINVAL (header checksum mismatch), stickily, while the sibling memfd restores', () => {
    const { o, header } = handOver();
    // size 3 pages (0x3000) → 7 pages (0x7000): in range, and otherwise indistinguishable from a real size.
    o.machine.memory.write(header + 9, new Uint8Array([o.machine.memory.read(header + 9, 1)[0] as number ^ 0x40]));
    expect(o.machine.memory.readU64Number(header + 8)).toBe(7 * PAGE_SIZE);
    const next = bootNext(o);
    const sfd = retrieveSession(next.p2, next.dev2, 'vm');
    expect(() => retrieveFd(next.p2, sfd, 1)).toThrow(/header checksum mismatch/);
    let retrieves = 0;
    next.k2.luo.hooks.fileOp.tap('count', (ev) => { if (ev.op === 'retrieve') retrieves++; });
    expect(errnoOf(() => retrieveFd(next.p2, sfd, 1))).toBe('EINVAL');
    expect(errnoOf(() => retrieveFd(next.p2, sfd, 1))).toBe('EINVAL');
    expect(retrieves).toBe(0);
    const b = retrieveFd(next.p2, sfd, 2);
    expect(next.p2.lseek(b, 0, SEEK_END)).toBe(2 * PAGE_SIZE);
    expect(next.p2.pread(b, 2 * PAGE_SIZE, 0)).toEqual(pattern(2 * PAGE_SIZE, 2));
  });

  it('a flipped bit in the checksum itself is a mismatch too', () => {
    const { o, header } = handOver();
    o.machine.memory.writeU32(header + 48, (memfdLuoSerV3_1.decode(o.machine.memory.read(header, 56)).crc32 ^ 1) >>> 0);
    const next = bootNext(o);
    const sfd = retrieveSession(next.p2, next.dev2, 'vm');
    expect(errnoOf(() => retrieveFd(next.p2, sfd, 1))).toBe('EINVAL');
    expect(next.p2.pread(retrieveFd(next.p2, sfd, 2), 2 * PAGE_SIZE, 0)).toEqual(pattern(2 * PAGE_SIZE, 2));
  });
});

describe('a build that writes only up to 3.0.0', () => {
  it('still writes the 48-byte memfd@3.0.0 header, without a checksum', () => {
    const { o, header, compatible } = handOver(V3_0);
    expect(compatible).toBe('memfd@3.0.0');
    const raw = o.machine.memory.read(header, PAGE_SIZE);
    expect(memfdLuoSerV3.decode(raw)).toMatchObject({ pos: 777n, size: BigInt(3 * PAGE_SIZE), nr_folios: 2n, reserved: 0 });
    expect(raw.subarray(48)).toEqual(new Uint8Array(PAGE_SIZE - 48));
  });

  it('cannot tell the same flipped size bit from a real size: the file restores, 7 pages instead of 3 (why 3.1 exists)', () => {
    const { o, header } = handOver(V3_0);
    o.machine.memory.write(header + 9, new Uint8Array([o.machine.memory.read(header + 9, 1)[0] as number ^ 0x40]));
    const next = bootNext(o);
    const sfd = retrieveSession(next.p2, next.dev2, 'vm');
    const a = retrieveFd(next.p2, sfd, 1);
    expect(next.p2.lseek(a, 0, SEEK_END)).toBe(7 * PAGE_SIZE);
    expect(next.p2.pread(a, PAGE_SIZE, 2 * PAGE_SIZE)).toEqual(pattern(PAGE_SIZE, 3));
  });
});
