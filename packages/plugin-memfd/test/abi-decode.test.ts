/**
 * The pure decoders for tools (memfdAbi.decodeMemfdV3_2, decodeMemfdV4): from the bytes of a
 * handover alone they give the header fields, the metadata pages with their roles, the data runs,
 * and every problem of hostile bytes, without throwing and without claiming anything.
 */
import { describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '@liveupdate/hw';
import memfd, { memfdAbi } from '@liveupdate/plugin-memfd';
import { handOverAs, handedOver, patternMemfd, readV3, sealedSparseMemfd, start, xarraySlotPhys, type Outgoing } from './support.js';

const { decodeMemfdV3_2, decodeMemfdV4, memfdLuoSerV4 } = memfdAbi;

function handOver(version: string): { o: Outgoing; header: number } {
  const o = start([memfd({ writes: [version] })]);
  handOverAs(o, [sealedSparseMemfd(o.p, 'a'), patternMemfd(o.p, 'b', 2, 2)]);
  return { o, header: Number(handedOver(o, 'vm', 1).data) };
}

describe('decodeMemfdV3_2 of a clean memfd@3.2.0 handover', () => {
  const { o, header } = handOver('3.2.0');
  const d = decodeMemfdV3_2(o.machine.memory, header);
  const root = readV3(o.machine, header).folios_xa;
  const entryPfn = (i: number): number => Number(o.machine.memory.readU64(xarraySlotPhys(o.machine, root, i)) & ((1n << 52n) - 1n));

  it('reports no problem and the header fields, both checksums good', () => {
    expect(d.problems).toEqual([]);
    expect([d.fields.pos, d.fields.size, d.fields.nr_folios, d.fields.crc32_ok, d.fields.meta_crc32_ok, d.fields.folios_found])
      .toEqual([777n, BigInt(3 * PAGE_SIZE), 2n, true, true, 2]);
  });

  it('lists the header page and the six xarray nodes (one per level) as metadata', () => {
    expect(d.pages.map((p) => p.role)).toEqual(['header', 'node level 5', 'node level 4', 'node level 3', 'node level 2', 'node level 1', 'leaf']);
    expect(d.pages[0]?.pfn).toBe(header / PAGE_SIZE);
  });

  it('gives the two data folios as one-page runs in index order', () => {
    expect(d.dataRuns).toEqual([[entryPfn(0), entryPfn(0) + 1], [entryPfn(2), entryPfn(2) + 1]]);
  });
});

describe('decodeMemfdV3_2 of hostile bytes', () => {
  it('names a folio entry that is the header page, and the checksum it breaks', () => {
    const { o, header } = handOver('3.2.0');
    o.machine.memory.writeU64(xarraySlotPhys(o.machine, readV3(o.machine, header).folios_xa, 0), BigInt(header / PAGE_SIZE) | (3n << 52n));
    const d = decodeMemfdV3_2(o.machine.memory, header);
    expect(d.problems.filter((p) => !p.startsWith('meta_crc32'))).toEqual([`folio at index 0 is handover metadata (pfn 0x${(header / PAGE_SIZE).toString(16)})`]);
    expect(d.fields.meta_crc32_ok).toBe(false);
  });

  it('stops at an xarray node that points back at the root (a cycle)', () => {
    const { o, header } = handOver('3.2.0');
    const root = Number(readV3(o.machine, header).folios_xa);
    o.machine.memory.writeU64(root + 8, BigInt(root));
    expect(decodeMemfdV3_2(o.machine.memory, header).problems).toContain(`level-4 node 0x${root.toString(16)} is reached twice (a cycle or an alias)`);
  });

  it('answers a header outside RAM with a problem, not an exception', () => {
    const { o } = handOver('3.2.0');
    expect(decodeMemfdV3_2(o.machine.memory, o.machine.memory.size).problems).toEqual([`header 0x${o.machine.memory.size.toString(16)} is not a page of RAM`]);
  });
});

describe('decodeMemfdV4', () => {
  it('of a clean handover: no problem, header, chunk and stream pages, two one-page runs', () => {
    const { o, header } = handOver('4.0.0');
    const d = decodeMemfdV4(o.machine.memory, header);
    expect(d.problems).toEqual([]);
    expect([d.fields.nr_folios, d.fields.nr_extents, d.fields.crc32_ok, d.fields.extents_found]).toEqual([2n, 2n, true, 2]);
    expect(d.pages.map((p) => [p.structure, p.role])).toEqual([['memfd@4 header', 'header'], ['kho_vmalloc', 'chunk'], ['memfd@4 extent stream', 'data']]);
    expect(d.dataRuns.map(([s, e]) => e - s)).toEqual([1, 1]);
  });

  it('of a chunk chain that loops: names the cycle', () => {
    const { o, header } = handOver('4.0.0');
    const first = Number(memfdLuoSerV4.decode(o.machine.memory.read(header, memfdLuoSerV4.size)).extents_first);
    o.machine.memory.writeU64(first + 8, 0n); // no run in the first chunk: the walk follows next
    o.machine.memory.writeU64(first, BigInt(first));
    expect(decodeMemfdV4(o.machine.memory, header).problems).toContain(`kho_vmalloc chunk 0x${first.toString(16)} is reached twice (a cycle or an alias)`);
  });

  it('of a flipped stream byte: the checksum problem', () => {
    const { o, header } = handOver('4.0.0');
    const first = Number(memfdLuoSerV4.decode(o.machine.memory.read(header, memfdLuoSerV4.size)).extents_first);
    const page = o.machine.memory.readU64Number(first + 8);
    o.machine.memory.writeU8(page, o.machine.memory.readU8(page) ^ 0x40);
    const d = decodeMemfdV4(o.machine.memory, header);
    expect(d.fields.crc32_ok).toBe(false);
    expect(d.problems[0]).toMatch(/^crc32 0x[0-9a-f]+, metadata 0x[0-9a-f]+ \(covers bytes 0\.\.67 and the stream\)$/);
  });
});
