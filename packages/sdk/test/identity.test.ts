/**
 * The identity binding a project format folds into its header (crc32Identity, identityCrc32,
 * identityProblem): the token as a u64, then the session name as luo_session_ser holds it.
 */
import { crc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { createMachine } from '@liveupdate/hw';
import { identityCrc32, identityProblem } from '@liveupdate/sdk';

/** A 16-byte header bound to ('vm0', 7): id_crc32 at 16, pad at 20. */
function header(): Uint8Array {
  const h = new Uint8Array(24);
  h.set([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
  new DataView(h.buffer).setUint32(16, identityCrc32(h, 16, 'vm0', 7n), true);
  return h;
}

describe('identity binding', () => {
  it('id_crc32 = CRC-32 of the covered bytes, the token (8 bytes LE) and the name NUL-padded to 64 bytes', () => {
    const covered = new Uint8Array(16 + 8 + 64);
    covered.set(header().subarray(0, 16));
    covered[16] = 7;
    covered.set(new TextEncoder().encode('vm0'), 24);
    expect(new DataView(header().buffer).getUint32(16, true)).toBe(crc32(covered));
  });

  it('identityProblem: null for its own file; another session, another token, a changed byte or a non-zero pad is named', () => {
    const m = createMachine({ memory: '1GiB' });
    m.memory.write(0x10000, header());
    expect(identityProblem(m.memory, 0x10000, 16, 'vm0', 7n)).toBeNull();
    expect(identityProblem(m.memory, 0x10000, 16, 'vm1', 7n)).toMatch(/^fails its identity check for session vm1 token 7 \(id_crc32 0x[0-9a-f]+, computed 0x[0-9a-f]+\): corrupt, or another file's$/);
    expect(identityProblem(m.memory, 0x10000, 16, 'vm0', 8n)).toMatch(/^fails its identity check for session vm0 token 8/);
    m.memory.write(0x10003, new Uint8Array([0xff]));
    expect(identityProblem(m.memory, 0x10000, 16, 'vm0', 7n)).toMatch(/^fails its identity check/);
    m.memory.write(0x10000, header());
    m.memory.write(0x10014, new Uint8Array([1]));
    expect(identityProblem(m.memory, 0x10000, 16, 'vm0', 7n)).toMatch(/, id_pad 0x1\): corrupt, or another file's$/);
  });

  it('identityProblem: a header beyond RAM is named, not read', () => {
    const m = createMachine({ memory: '1GiB' });
    expect(identityProblem(m.memory, m.memory.size - 8, 16, 'vm0', 7n)).toBe('is not in RAM');
    expect(identityProblem(m.memory, 2 ** 60, 16, 'vm0', 7n)).toBe('is not in RAM');
  });
});
