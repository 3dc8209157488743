/**
 * The handover bytes against hand-computed expectations: the one-page FDT of the
 * "mshv_prsv_pt" subtree (RFC 00/20 create_fdt), the radix tree path of a tracked PFN, the
 * mshv_prsv_pt partition id array, and the 48-byte mshv_track_ser header with its CRC and the
 * 64-page bitmap values of the 3.x tracking xarray.
 */
import { describe, expect, it } from 'vitest';
import { crc32 as zlibCrc32 } from 'node:zlib';
import { HV_PARTITION_ID_SELF, PAGE_SIZE } from '@liveupdate/hw';
import type { Kernel } from '@liveupdate/sdk';
import mshv, { mshvAbi, mshvSubtreeFdt, readTracking } from '@liveupdate/plugin-mshv';
import { bootWith, CMDLINE, depositedRuns, hvMachine } from './support.js';

const be32 = (v: number): number[] => [(v >>> 24) & 255, (v >>> 16) & 255, (v >>> 8) & 255, v & 255];
const le32 = (v: number): number[] => [v & 255, (v >>> 8) & 255, (v >>> 16) & 255, (v >>> 24) & 255];
const le64 = (v: number): number[] => [...le32(v >>> 0), ...le32(Math.floor(v / 2 ** 32))];
const str = (s: string): number[] => [...Buffer.from(s, 'latin1'), 0];
const pad4 = (b: number[]): number[] => [...b, ...new Array((4 - (b.length % 4)) % 4).fill(0)];

/** The subtree FDT by hand: header, one empty reserve entry, the root node's properties, the strings. */
function expectedFdt(rootTable: number, idsPhys: number, nr: number): Uint8Array {
  const strings = [...str('compatible'), ...str('root_table'), ...(nr ? [...str('partition_ids'), ...str('nr_partition_ids')] : [])];
  const struct = [
    ...be32(1), ...be32(0), // FDT_BEGIN_NODE ""
    ...be32(3), ...be32(12), ...be32(0), ...pad4(str('mshv_kho-v1')),
    ...be32(3), ...be32(8), ...be32(11), ...le64(rootTable),
    ...(nr ? [...be32(3), ...be32(8), ...be32(22), ...le64(idsPhys), ...be32(3), ...be32(4), ...be32(36), ...le32(nr)] : []),
    ...be32(2), ...be32(9), // FDT_END_NODE, FDT_END
  ];
  const offStruct = 0x28 + 16;
  const offStrings = offStruct + struct.length;
  const total = offStrings + strings.length;
  return Uint8Array.from([
    ...be32(0xd00dfeed), ...be32(total), ...be32(offStruct), ...be32(offStrings), ...be32(0x28),
    ...be32(17), ...be32(16), ...be32(0), ...be32(strings.length), ...be32(struct.length),
    ...new Array(16).fill(0), ...struct, ...strings,
  ]);
}

describe('the mshv_prsv_pt subtree (mshv 2.x)', () => {
  it('mshvSubtreeFdt writes exactly the hand-built FDT, with and without partition ids', () => {
    expect(mshvSubtreeFdt(0x1234000, 0x5678000, 3)).toEqual(expectedFdt(0x1234000, 0x5678000, 3));
    expect(mshvSubtreeFdt(0x9000, 0, 0)).toEqual(expectedFdt(0x9000, 0, 0));
    expect(mshvSubtreeFdt(0x1234000, 0x5678000, 3).length).toBe(205);
  });

  it('the page handed over holds that FDT (zero after it), root_table is the tracker root, the ids page the frozen ids', () => {
    const { machine, hv } = hvMachine(true);
    const { k, root } = bootWith(machine);
    const a = root.createPartition(); root.initializePartition(a);
    const b = root.createPartition(); root.initializePartition(b);
    const rootTable = root.tracker?.rootPhys as number;
    k.kexecJump({ cmdline: CMDLINE, plugins: [mshv({ writes: ['1.0.0', '2.0.0'] })] });
    const sub = k.khoOut?.subtreeList.find((s) => s.name === mshvAbi.FDT_SUBTREE_MSHV);
    expect(sub?.size).toBe(PAGE_SIZE);
    const page = machine.memory.read(sub?.phys as number, PAGE_SIZE);
    const idsPhys = Number(Buffer.from(page).readBigUInt64LE(0x38 + 8 + 24 + 20 + 12));
    const want = expectedFdt(rootTable, idsPhys, 2);
    expect(page.subarray(0, want.length)).toEqual(want);
    expect(page.subarray(want.length).every((x) => x === 0)).toBe(true);
    expect(idsPhys % PAGE_SIZE).toBe(0);
    expect(machine.memory.read(idsPhys, 16)).toEqual(Uint8Array.from([...le64(Number(a.id)), ...le64(Number(b.id))]));
    expect(hv.faultCount).toBe(0);
  });

  it('a tracked PFN is one set bit on its leaf, reached through table slots of 9 key bits each above bit 15', () => {
    const { machine, hv } = hvMachine(true);
    const { k, root } = bootWith(machine);
    root.depositPages(HV_PARTITION_ID_SELF, 1);
    const [[pfn]] = depositedRuns(hv) as [[number, number]];
    k.kexecJump({ cmdline: CMDLINE, plugins: [mshv({ writes: ['2.0.0'] })] });
    const mem = machine.memory;
    let node = root.tracker?.rootPhys as number;
    for (let level = 5; level >= 1; level--) {
      const slot = Math.floor(pfn / 2 ** (15 + 9 * (level - 1))) % 512;
      const next = mem.readU64Number(node + slot * 8);
      expect(next % PAGE_SIZE).toBe(0);
      node = next;
    }
    const leaf = mem.read(node, PAGE_SIZE);
    const bit = pfn % 32768;
    expect(leaf[bit >> 3]).toBe(1 << (bit & 7));
    expect(leaf.reduce((n, x) => n + (x === 0 ? 0 : 1), 0)).toBe(1);
  });
});

describe('the tracking file (mshv 3.x)', () => {
  function handOver() {
    const { machine, hv } = hvMachine(true);
    const { k, root } = bootWith(machine);
    const a = root.createPartition(); root.initializePartition(a);
    root.depositPages(a.id, 200, { scattered: 9 });
    const runs = depositedRuns(hv);
    k.kexecJump({ cmdline: CMDLINE, plugins: [mshv()] });
    const f = (k as Kernel).luo.sessions.outgoing.find((s) => s.name === 'mshv_root')?.fileSet.files[0];
    return { machine, hv, k, a, runs, data: Number(f?.serializedData ?? 0), compatible: f?.compatible };
  }

  it('names mshv@3.0.0 and points at a page holding the 48-byte header, CRC-32 over header, nodes and ids', () => {
    const { machine, a, runs, data, compatible } = handOver();
    expect(compatible).toBe('mshv@3.0.0');
    expect(data % PAGE_SIZE).toBe(0);
    const mem = machine.memory;
    const h = Buffer.from(mem.read(data, 48));
    const xaRoot = Number(h.readBigUInt64LE(0));
    const nrPages = runs.reduce((n, [s, e]) => n + e - s, 0);
    const idsPhys = Number(h.readBigUInt64LE(24));
    const t = readTracking(mem, data);
    if (typeof t === 'string') throw new Error(t);
    expect(Number(h.readBigUInt64LE(8))).toBe(nrPages);
    expect(Number(h.readBigUInt64LE(16))).toBe(t.nodes.length);
    expect(h.readUInt32LE(32)).toBe(1);
    expect(h.readUInt32LE(36)).toBe(mshvAbi.MSHV_TRACK_FLAG_L1VH);
    expect(h.readUInt32LE(44)).toBe(0);
    expect(mem.read(idsPhys, 8)).toEqual(Uint8Array.from(le64(Number(a.id))));
    expect(t.nodes[0]).toBe(xaRoot / PAGE_SIZE);
    let crc = zlibCrc32(h.subarray(0, 40));
    for (const pfn of t.nodes) crc = zlibCrc32(mem.read(pfn * PAGE_SIZE, PAGE_SIZE), crc);
    crc = zlibCrc32(mem.read(idsPhys, 8), crc);
    expect(h.readUInt32LE(40)).toBe(crc >>> 0);
    expect(t.runs).toEqual(runs);
  });

  it('each value is the 64-page bitmap of key pfn >> 6, in the leaf slot key % 512', () => {
    const { machine, runs, data } = handOver();
    const mem = machine.memory;
    const t = readTracking(mem, data);
    if (typeof t === 'string') throw new Error(t);
    const leaf = t.nodes[t.nodes.length - 1] as number;
    const [first] = runs[0] as [number, number];
    const key = Math.floor(first / 64);
    let want = 0n;
    for (const [s, e] of runs) for (let p = s; p < e; p++) if (Math.floor(p / 64) === key) want |= 1n << BigInt(p % 64);
    expect(mem.readU64(leaf * PAGE_SIZE + (key % 512) * 8)).toBe(want);
  });
});
