/**
 * guest_memfd@2.1.0: the 2.0 header plus id_crc32, binding it to the (session name, token) it
 * was preserved under. LUO's session and file blocks (luo-v5) carry no check value, so a rewired
 * file entry would hand one VM's intact guest_memfd to another; 2.1 refuses it (EINVAL, again on
 * retry) before claiming anything, and the VM the header belongs to still gets all of its memory.
 */
import { crc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { retrieveTwice } from '../../../test-support/retrieve.js';
import { PAGE_SIZE } from '@liveupdate/hw';
import { createSession, preserveFd, retrieveFd, retrieveSession } from '@liveupdate/sdk';
import { gmemLoad, gmemStore, kvmAbi, kvmCreateGuestMemfdFd, kvmCreateVm } from '../src/index.js';
import { bootNext, jumpOnly, setU64 } from './handover.js';
import { plugins, start } from './support.js';

const { GUEST_MEMFD_FLAG_MMAP: MMAP, GUEST_MEMFD_FLAG_INIT_SHARED: SHARED } = kvmAbi;

/** Sessions vm0 and vm1, each a VM (token 1) and a 2-page guest_memfd (token 2) whose byte 0 is 0x10 + n. */
function twoVms() {
  const o = start({ plugins: plugins(), next: plugins() });
  for (const n of [0, 1]) {
    const vm = kvmCreateVm(o.p, o.kvm, 0);
    const gmem = kvmCreateGuestMemfdFd(o.p, vm, 2 * PAGE_SIZE, MMAP | SHARED);
    gmemStore(o.p, gmem, new Uint8Array([0x10 + n]), 0);
    const s = createSession(o.p, o.dev, `vm${n}`);
    preserveFd(o.p, s, vm, 1);
    preserveFd(o.p, s, gmem, 2);
  }
  const entries = o.k1.luo.sessions.outgoing.map((s) => ({ name: s.name, gmem: Number(s.fileSet.files.find((f) => f.token === 2n)?.serializedData) }));
  jumpOnly(o);
  return { o, entries };
}

/** The luo_file_ser entry of `token` in session `name`, found by walking the luo-v5 blocks from bytes. */
function fileEntry(o: ReturnType<typeof start>, name: string, token: bigint): number {
  const m = o.machine.memory;
  const luo = o.k1.khoOut?.subtreeList.find((s) => s.name === 'LUO');
  if (!luo) throw new Error('no LUO subtree');
  for (let b = m.readU64Number(luo.phys + 16); b !== 0; b = m.readU64Number(b)) {
    for (let i = 0; i < m.readU64Number(b + 8); i++) {
      const sp = b + 16 + 80 * i;
      const sessionName = new TextDecoder().decode(m.read(sp, 64)).replace(/\0.*$/s, '');
      if (sessionName !== name) continue;
      for (let fb = m.readU64Number(sp + 64); fb !== 0; fb = m.readU64Number(fb)) {
        for (let k = 0; k < m.readU64Number(fb + 8); k++) if (m.readU64(fb + 16 + 64 * k + 56) === token) return fb + 16 + 64 * k;
      }
    }
  }
  throw new Error(`no file ${name}/${token}`);
}

describe('guest_memfd@2.1.0', () => {
  it('has id_crc32 at 48 = CRC-32 of header bytes 0..47, token 2 as a u64 and "vm0" NUL-padded to 64 bytes; id_pad 0 at 52', () => {
    const { o, entries } = twoVms();
    const ser = entries.find((e) => e.name === 'vm0')?.gmem as number;
    const raw = o.machine.memory.read(ser, 56);
    const covered = new Uint8Array(48 + 8 + 64);
    covered.set(raw.subarray(0, 48));
    new DataView(covered.buffer).setBigUint64(48, 2n, true);
    covered.set(new TextEncoder().encode('vm0'), 56);
    const dv = new DataView(raw.buffer, raw.byteOffset);
    expect(dv.getUint32(48, true)).toBe(crc32(covered));
    expect(dv.getUint32(52, true)).toBe(0);
  });

  it("vm0's guest_memfd entry aimed at vm1's header: vm0 token 2 is EINVAL (again on retry); vm1 token 2 keeps its memory", () => {
    const { o, entries } = twoVms();
    const vm1 = entries.find((e) => e.name === 'vm1')?.gmem as number;
    setU64(o.machine, fileEntry(o, 'vm0', 2n) + 48, BigInt(vm1));
    const i = bootNext(o);
    const s0 = retrieveSession(i.p2, i.dev2, 'vm0');
    expect(retrieveTwice(i.p2, s0, 2)).toEqual(['EINVAL', 'EINVAL']);
    const s1 = retrieveSession(i.p2, i.dev2, 'vm1');
    const fd = retrieveFd(i.p2, s1, 2);
    expect([...gmemLoad(i.p2, fd, 1, 0)]).toEqual([0x11]);
  });
});
