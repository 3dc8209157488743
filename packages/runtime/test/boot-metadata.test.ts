/**
 * kexec-metadata (the kexec-metadata series: include/linux/kho/abi/kexec_metadata.h): the 73-byte "kexec-metadata" subtree tells the next
 * kernel which release it came from and how many kexecs happened since the cold boot.
 */
import { describe, expect, it } from 'vitest';
import { createMachine } from '@liveupdate/hw';
import type { Kernel, KhoOut } from '@liveupdate/runtime';
import { coldBoot } from './fixtures/kho-helpers.js';

const metaOf = (k: Kernel): { phys: number; size: number } => {
  const s = (k.khoOut as KhoOut).subtreeList.find((x) => x.name === 'kexec-metadata');
  if (!s) throw new Error('no kexec-metadata subtree');
  return s;
};

describe('kexec-metadata through a chain of kexecs', () => {
  const machine = createMachine({ memory: '4GiB' });
  const k1 = coldBoot(machine, 'kho=on', { release: '7.1.0' });
  const k1Blob = k1.debugfs.read('kho/out/sub_fdts/kexec-metadata');
  const k2 = k1.kexec({ cmdline: 'kho=on', release: '7.2.0' });
  const k2Blob = k2.debugfs.read('kho/out/sub_fdts/kexec-metadata');
  const k3 = k2.kexec({ cmdline: 'kho=on', release: '7.3.0-rc1' });

  it('a cold boot has no incoming metadata and a kexec count of 0', () => {
    expect([k1.incomingMetadata, k1.kexecCount]).toEqual([null, 0]);
  });

  it('the outgoing blob is 73 bytes: u32 version 1, char[65] release, u32 count', () => {
    const expected = new Uint8Array(73);
    const dv = new DataView(expected.buffer);
    dv.setUint32(0, 1, true);
    expected.set(new TextEncoder().encode('7.1.0'), 4);
    dv.setUint32(69, 0, true);
    expect(k1Blob).toEqual(expected);
  });

  it("the second kernel sees { previousRelease: '7.1.0', kexecCount: 0 } and logs it", () => {
    expect(k2.incomingMetadata).toEqual({ previousRelease: '7.1.0', kexecCount: 0 });
    expect(k2.dmesg.grep('KHO: exec from: 7.1.0 (count 0)')).toHaveLength(1);
    expect(k2.kexecCount).toBe(1);
  });

  it('the second kernel writes count 1 for the third', () => {
    expect(new DataView(k2Blob.buffer, k2Blob.byteOffset).getUint32(69, true)).toBe(1);
  });

  it("the third kernel sees { previousRelease: '7.2.0', kexecCount: 1 }", () => {
    expect(k3.incomingMetadata).toEqual({ previousRelease: '7.2.0', kexecCount: 1 });
    expect(k3.kexecCount).toBe(2);
  });

  it('the incoming blob is consumed: it is not left as a leak', () => {
    expect(k3.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
  });
});

describe('incoming kexec-metadata that does not pass the checks is ignored with a warning', () => {
  it('version 2', () => {
    const machine = createMachine({ memory: '4GiB' });
    const k1 = coldBoot(machine, 'kho=on');
    machine.memory.writeU32(metaOf(k1).phys, 2);
    const k2 = k1.kexec({ cmdline: 'kho=on' });
    expect(k2.incomingMetadata).toBeNull();
    expect(k2.dmesg.entries.filter((l) => l.text === 'kexec-metadata version 2 not supported')).toEqual([
      { level: 'warn', prefix: 'KHO', text: 'kexec-metadata version 2 not supported' },
    ]);
    expect(k2.dmesg.grep('exec from')).toEqual([]);
    expect(k2.isKhoBoot).toBe(true);
  });

  it('a blob-size under 73 bytes', () => {
    const machine = createMachine({ memory: '4GiB' });
    const k1 = coldBoot(machine, 'kho=on');
    const out = k1.khoOut as KhoOut;
    const { phys } = metaOf(k1);
    out.removeSubtree(phys);
    out.addSubtree('kexec-metadata', phys, 72);
    const k2 = k1.kexec({ cmdline: 'kho=on' });
    expect(k2.incomingMetadata).toBeNull();
    expect(k2.dmesg.grep('KHO: kexec-metadata too small (72 bytes)')).toHaveLength(1);
  });

  it('a blob-size under 4 bytes', () => {
    const machine = createMachine({ memory: '4GiB' });
    const k1 = coldBoot(machine, 'kho=on');
    const out = k1.khoOut as KhoOut;
    const { phys } = metaOf(k1);
    out.removeSubtree(phys);
    out.addSubtree('kexec-metadata', phys, 3);
    const k2 = k1.kexec({ cmdline: 'kho=on' });
    expect(k2.incomingMetadata).toBeNull();
    expect(k2.dmesg.grep('KHO: kexec-metadata too small (3 bytes)')).toHaveLength(1);
  });

  it('a missing blob is silently absent', () => {
    const machine = createMachine({ memory: '4GiB' });
    const k1 = coldBoot(machine, 'kho=on');
    (k1.khoOut as KhoOut).removeSubtree(metaOf(k1).phys);
    const k2 = k1.kexec({ cmdline: 'kho=on' });
    expect(k2.incomingMetadata).toBeNull();
    expect(k2.dmesg.grep('kexec-metadata')).toEqual([]);
  });
});
