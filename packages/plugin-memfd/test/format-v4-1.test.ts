/**
 * memfd@4.1.0: the 4.0 header plus id_crc32, a CRC-32 binding it to the (session name, token)
 * the file was preserved under. LUO's session and file blocks (luo-v5) carry no check value: a
 * rewired block hands one file's intact handover to another session or token. 4.1 refuses that
 * file (EINVAL, sticky) and leaves the file the header belongs to untouched.
 */
import { crc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { retrieveTwice } from '../../../test-support/retrieve.js';
import { PAGE_SIZE } from '@liveupdate/hw';
import { abi, createSession, preserveFd, retrieveFd, retrieveSession } from '@liveupdate/sdk';
import memfd, { memfdAbi } from '@liveupdate/plugin-memfd';
import {
  SEEK_END, bootNext, errnoOf, handedOver, handedOverSessions, handOverAs, pattern, patternMemfd, sealedSparseMemfd, start, type Outgoing,
} from './support.js';

const { memfdLuoSerV4_1, MEMFD_V4_1_ID_OFFSET } = memfdAbi;

/** The identity as the SDK feeds it: token u64 little-endian, then the 64-byte NUL-padded session name. */
function identityBytes(session: string, token: bigint): Uint8Array {
  const out = new Uint8Array(8 + 64);
  new DataView(out.buffer).setBigUint64(0, token, true);
  out.set(new TextEncoder().encode(session), 8);
  return out;
}

const tokenField = abi.luo.luoFileSer.offsets.token;
const filesField = abi.luo.luoSessionSer.offsets.files;

/** Sessions vm-a and vm-b, each with token 1: vm-a 2 pages of pattern 1, vm-b 3 pages of pattern 2. Then the jump. */
function twoSessions(): Outgoing {
  const o = start([memfd()]);
  const a = createSession(o.p, o.dev, 'vm-a');
  preserveFd(o.p, a, patternMemfd(o.p, 'a', 2, 1), 1);
  const b = createSession(o.p, o.dev, 'vm-b');
  preserveFd(o.p, b, patternMemfd(o.p, 'b', 3, 2), 1);
  o.k1.kexecJump(o.cfg);
  return o;
}

describe('memfd@4.1.0: the header of a 3-page file (pages 0 and 2 written) preserved as session vm token 1', () => {
  const o = start([memfd()]);
  handOverAs(o, [sealedSparseMemfd(o.p, 'a'), patternMemfd(o.p, 'b', 2, 2)]);
  const f = handedOver(o, 'vm', 1);
  const raw = o.machine.memory.read(Number(f.data), memfdLuoSerV4_1.size);
  const dv = new DataView(raw.buffer, raw.byteOffset);

  it("is handed over under 'memfd@4.1.0'", () => {
    expect(f.compatible).toBe('memfd@4.1.0');
  });

  it('has id_crc32 at 72 = CRC-32 of header bytes 0..71, token 1 as a u64 and "vm" NUL-padded to 64 bytes; id_pad 0 at 76', () => {
    const covered = new Uint8Array(MEMFD_V4_1_ID_OFFSET + 72);
    covered.set(raw.subarray(0, MEMFD_V4_1_ID_OFFSET));
    covered.set(identityBytes('vm', 1n), MEMFD_V4_1_ID_OFFSET);
    expect(dv.getUint32(72, true)).toBe(crc32(covered));
    expect(dv.getUint32(76, true)).toBe(0);
  });

  it('keeps the 4.0 header in bytes 0..71: a 4.0 reader reads the same fields (the crc32 at 68 covers bytes 0..67 and the stream only)', () => {
    const h = memfdAbi.memfdLuoSerV4.decode(raw);
    expect([h.pos, h.size, h.nr_folios, h.order, h.flags]).toEqual([777n, BigInt(3 * PAGE_SIZE), 2n, 0, 0]);
  });
});

describe('memfd@4.1.0 behind rewired LUO blocks', () => {
  it("vm-a's file set pointer aimed at vm-b's: vm-a token 1 is EINVAL (again on retry), vm-b token 1 keeps its 3 pages", () => {
    const o = twoSessions();
    const [a, b] = ['vm-a', 'vm-b'].map((n) => handedOverSessions(o).find((s) => s.name === n));
    if (!a || !b) throw new Error('sessions not found');
    o.machine.memory.writeU64(a.entryPhys + filesField, b.files);
    const n = bootNext(o);
    const sa = retrieveSession(n.p2, n.dev2, 'vm-a');
    expect(retrieveTwice(n.p2, sa, 1)).toEqual(['EINVAL', 'EINVAL']);
    const sb = retrieveSession(n.p2, n.dev2, 'vm-b');
    const fd = retrieveFd(n.p2, sb, 1);
    expect(n.p2.lseek(fd, 0, SEEK_END)).toBe(3 * PAGE_SIZE);
    expect(n.p2.pread(fd, 3 * PAGE_SIZE, 0)).toEqual(pattern(3 * PAGE_SIZE, 2));
  });

  it('a file entry whose token was changed from 2 to 5: token 5 is EINVAL, token 2 is ENOENT, token 1 keeps its data', () => {
    const o = start([memfd()]);
    handOverAs(o, [patternMemfd(o.p, 'a', 2, 1), patternMemfd(o.p, 'b', 2, 2)]);
    o.machine.memory.writeU64(handedOver(o, 'vm', 2).entryPhys + tokenField, 5n);
    const n = bootNext(o);
    const s = retrieveSession(n.p2, n.dev2, 'vm');
    expect(errnoOf(() => retrieveFd(n.p2, s, 5))).toBe('EINVAL');
    expect(errnoOf(() => retrieveFd(n.p2, s, 2))).toBe('ENOENT');
    expect(n.p2.pread(retrieveFd(n.p2, s, 1), 2 * PAGE_SIZE, 0)).toEqual(pattern(2 * PAGE_SIZE, 1));
  });

  it("the decoder, told the file is vm-a token 1, names vm-b's header as written for another file; told vm-b token 1, finds nothing wrong", () => {
    const o = twoSessions();
    const data = handedOver(o, 'vm-b', 1).data;
    const decoder = (memfd().tools.decoders ?? []).find((d) => d.target.kind === 'file' && d.target.family === 'memfd');
    if (!decoder) throw new Error('no memfd decoder');
    const wrong = decoder.decode(o.machine.memory, data, '4.1.0', { label: 'x', file: { session: 'vm-a', token: 1n } });
    expect(wrong.problems.filter((p) => p.includes('written for another file'))).toHaveLength(1);
    const right = decoder.decode(o.machine.memory, data, '4.1.0', { label: 'x', file: { session: 'vm-b', token: 1n } });
    expect(right.problems).toEqual([]);
  });
});
