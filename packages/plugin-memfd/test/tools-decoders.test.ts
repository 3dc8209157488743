/**
 * plugin.tools' memfd decoder (the one inspect, report, dumps and the fuzzer call) on the
 * project's checked formats: memfd@3.2.0 and memfd@4.0.0 handovers give their header fields,
 * every page they own under the names the tools group them by (with the words the fuzzer
 * mutates), the data runs, and a checksum mismatch as a problem.
 */
import { describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '@liveupdate/hw';
import type { FormatDecoder } from '@liveupdate/sdk';
import memfd, { memfdAbi } from '@liveupdate/plugin-memfd';
import { handOverAs, handedOver, patternMemfd, readV3, sealedSparseMemfd, start, xarraySlotPhys, type Outgoing } from './support.js';

const { memfdLuoSerV4 } = memfdAbi;
const decoder = (memfd().tools?.decoders ?? []).find((d) => d.target.kind === 'file' && d.target.family === 'memfd') as FormatDecoder;
const LABEL = 'session vm token 1';

function handOver(version: string): { o: Outgoing; header: number } {
  const o = start([memfd({ writes: [version] })]);
  handOverAs(o, [sealedSparseMemfd(o.p, 'a'), patternMemfd(o.p, 'b', 2, 2)]);
  return { o, header: Number(handedOver(o, 'vm', 1).data) };
}
const decode = (o: Outgoing, header: number, version: string) => decoder.decode(o.machine.memory, BigInt(header), version, { label: LABEL });

describe('plugin.tools decodes memfd@4.0.0', () => {
  const { o, header } = handOver('4.0.0');
  const h = memfdLuoSerV4.decode(o.machine.memory.read(header, memfdLuoSerV4.size));
  const d = decode(o, header, '4.0.0');

  it('with no problem and the header fields', () => {
    expect(d.problems).toEqual([]);
    expect(d.fields).toMatchObject({ size: BigInt(3 * PAGE_SIZE), pos: 777n, nr_folios: 2n, nr_extents: 2n, extents_total_pages: 1, order: 0, flags: '0x0' });
    expect(d.fields.crc32).toBe(`0x${h.crc32.toString(16)}`);
  });

  it('owning the header, the kho_vmalloc chunk and the extent-stream page, with the words to mutate', () => {
    const stream = o.machine.memory.readU64Number(Number(h.extents_first) + 8);
    expect(d.pages.map((p) => [p.pfn, p.structure, p.role])).toEqual([
      [header / PAGE_SIZE, 'memfd header', `memfd header (${LABEL})`],
      [Number(h.extents_first) / PAGE_SIZE, 'memfd vmalloc chunk', `memfd vmalloc chunk (${LABEL})`],
      [stream / PAGE_SIZE, 'memfd extent stream', `memfd extent stream (${LABEL})`],
    ]);
    expect(d.pages[0]?.words?.find((w) => w.offset === 48)).toEqual({ offset: 48, size: 8, kind: 'pointer' });
    expect(d.pages[1]?.words?.map((w) => w.kind)).toEqual(['pointer', 'pointer']);
  });

  it('and its two one-page data runs', () => {
    expect(d.dataRuns?.map(([s, e]) => e - s)).toEqual([1, 1]);
  });

  it('a flipped stream byte is a checksum problem', () => {
    const bad = handOver('4.0.0');
    const first = Number(memfdLuoSerV4.decode(bad.o.machine.memory.read(bad.header, memfdLuoSerV4.size)).extents_first);
    const page = bad.o.machine.memory.readU64Number(first + 8);
    bad.o.machine.memory.writeU8(page, bad.o.machine.memory.readU8(page) ^ 0x40);
    expect(decode(bad.o, bad.header, '4.0.0').problems[0]).toMatch(/^crc32 0x[0-9a-f]+, metadata 0x[0-9a-f]+ \(covers bytes 0\.\.67 and the stream\)$/);
  });
});

describe('plugin.tools decodes memfd@3.2.0', () => {
  it('with both checksums as fields, the header and the six xarray nodes, pointer words on the inner nodes', () => {
    const { o, header } = handOver('3.2.0');
    const d = decode(o, header, '3.2.0');
    expect(d.problems).toEqual([]);
    expect(Object.keys(d.fields)).toEqual(['size', 'pos', 'seals', 'flags', 'nr_folios', 'folios_xa', 'order', 'crc32', 'meta_crc32']);
    expect(d.pages.map((p) => p.structure)).toEqual(['memfd header', ...Array<string>(6).fill('memfd xarray node')]);
    expect(d.pages.map((p) => p.words !== undefined)).toEqual([true, true, true, true, true, true, false]);
    expect(d.dataRuns?.length).toBe(2);
  });

  it('a folio entry aimed at the header page: the metadata alias and the meta_crc32 mismatch', () => {
    const { o, header } = handOver('3.2.0');
    o.machine.memory.writeU64(xarraySlotPhys(o.machine, readV3(o.machine, header).folios_xa, 0), BigInt(header / PAGE_SIZE) | (3n << 52n));
    const p = decode(o, header, '3.2.0').problems;
    expect(p).toContain(`folio at index 0 is handover metadata (pfn 0x${(header / PAGE_SIZE).toString(16)})`);
    expect(p.some((x) => /^meta_crc32 0x[0-9a-f]+, metadata 0x[0-9a-f]+$/.test(x))).toBe(true);
  });
});
