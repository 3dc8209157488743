/**
 * CRC-32 as IEEE 802.3 / zlib compute it: reflected, polynomial 0xEDB88320, initial value and
 * final XOR 0xFFFFFFFF (crc32(ascii '123456789') = 0xCBF43926). Table-driven, one byte a step.
 * The streaming form (crc32Start / crc32Update / crc32U32 / crc32Final) lets a check value
 * cover a header and then a long run of entries without building one buffer of all of them.
 */
import type { PhysMemory } from '@liveupdate/hw';
import { abi } from '@liveupdate/runtime';

const TABLE: Uint32Array = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** The running state before any byte. */
export const CRC32_START = 0xffffffff;

/** Feed `bytes` into a running state. */
export function crc32Update(state: number, bytes: Uint8Array): number {
  let c = state;
  for (let i = 0; i < bytes.length; i++) c = (TABLE[(c ^ (bytes[i] as number)) & 0xff] as number) ^ (c >>> 8);
  return c;
}

/** Feed the four little-endian bytes of the u32 `w` into a running state. */
export function crc32U32(state: number, w: number): number {
  let c = state;
  c = (TABLE[(c ^ w) & 0xff] as number) ^ (c >>> 8);
  c = (TABLE[(c ^ (w >>> 8)) & 0xff] as number) ^ (c >>> 8);
  c = (TABLE[(c ^ (w >>> 16)) & 0xff] as number) ^ (c >>> 8);
  return (TABLE[(c ^ (w >>> 24)) & 0xff] as number) ^ (c >>> 8);
}

/** The check value of a running state, as an unsigned 32-bit number. */
export const crc32Final = (state: number): number => (state ^ 0xffffffff) >>> 0;

/** The CRC-32 of `bytes` as an unsigned 32-bit number; pass a previous CRC to continue it (as zlib's crc32()). */
export function crc32(bytes: Uint8Array, prev = 0): number {
  return crc32Final(crc32Update((prev ^ 0xffffffff) >>> 0, bytes));
}

/** Continue the CRC-32 `crc` over the four little-endian bytes of the u32 `word`. */
export function crc32Word(crc: number, word: number): number {
  return crc32Final(crc32U32((crc ^ 0xffffffff) >>> 0, word));
}

/** The streaming form as an object: `new Crc32().update(a).update(b).digest()`. */
export class Crc32 {
  private state = CRC32_START;
  update(bytes: Uint8Array): this {
    this.state = crc32Update(this.state, bytes);
    return this;
  }
  digest(): number { return crc32Final(this.state); }
}

const UTF8 = new TextEncoder();

/**
 * Feed the identity a file was preserved under into a running state: the token as a u64
 * (little-endian), then the session name as luo_session_ser.name holds it
 * (LIVEUPDATE_SESSION_NAME_LENGTH bytes, NUL-padded). LUO's session and file blocks (luo-v5)
 * carry no check value, so a rewired block serves one file's intact handover under another
 * session or token; a format whose check value folds this in refuses it instead.
 */
export function crc32Identity(state: number, session: string, token: bigint): number {
  const name = new Uint8Array(abi.luo.LIVEUPDATE_SESSION_NAME_LENGTH);
  name.set(UTF8.encode(session).subarray(0, name.length - 1));
  const lo = Number(BigInt.asUintN(32, token));
  const hi = Number(BigInt.asUintN(32, token >> 32n));
  return crc32Update(crc32U32(crc32U32(state, lo), hi), name);
}

/**
 * The id_crc32 of a header bound to its file: the CRC-32 of header bytes [0, idOffset), then
 * the identity (crc32Identity). The u32 id_crc32 sits at idOffset, a u32 pad (0) after it.
 */
export function identityCrc32(header: Uint8Array, idOffset: number, session: string, token: bigint): number {
  return crc32Final(crc32Identity(crc32Update(CRC32_START, header.subarray(0, idOffset)), session, token));
}

/**
 * Check an identity-bound header in place, before anything is claimed: null when the id_crc32
 * at `idOffset` of the header at `phys` matches (session, token) and its pad is 0, else the
 * problem as a phrase ("fails its identity check for session vm0 token 2 (...)").
 */
export function identityProblem(memory: PhysMemory, phys: number, idOffset: number, session: string, token: bigint): string | null {
  if (!Number.isSafeInteger(phys) || phys < 0 || phys + idOffset + 8 > memory.size) return 'is not in RAM';
  const raw = memory.read(phys, idOffset + 8);
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const stored = view.getUint32(idOffset, true);
  const pad = view.getUint32(idOffset + 4, true);
  const want = identityCrc32(raw, idOffset, session, token);
  if (stored === want && pad === 0) return null;
  return `fails its identity check for session ${session} token ${token} (id_crc32 0x${stored.toString(16)}, computed 0x${want.toString(16)}${pad === 0 ? '' : `, id_pad 0x${pad.toString(16)}`}): corrupt, or another file's`;
}
