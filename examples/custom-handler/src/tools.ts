/**
 * The ringbuf plugin's surface for tools (`plugin.tools`), written only against the SDK: what
 * `liveupdate run`, `inspect`, `report`, `fuzz` and `matrix` need to handle rings with no change
 * to the CLI.
 *
 * - a scenario object kind 'ringbuf': { token, size, records, consumed } creates a ring, writes
 *   `records` lines, reads `consumed` bytes and preserves it; after the update the ring must hold
 *   the very unread bytes, with the same positions;
 * - a decoder of every header version this build knows, from bytes alone: the fields, what is
 *   wrong with them, the header page it owns (the fuzzer's target) and the ring folio it hands over;
 * - a scenario the plugin ships ('telemetry').
 */
import {
  defineDecoder, defineObjectKind, PAGE_SIZE,
  type Decoded, type ObjectCheck, type PluginTools, type ScenarioObjectSpec,
} from '@liveupdate/sdk';
import { ringbufSerV1_0, ringbufSerV1_1, ringbufSerV2, type RingbufLayout } from './abi.js';
import { decodeHeaderIn, layoutFor } from './plugin.js';
import { ringbufCreate, ringbufPeek, ringbufRead, ringbufStat, ringbufWrite, type RingbufStat } from './ringbuf.js';

export interface RingbufSpec extends ScenarioObjectSpec {
  readonly type: 'ringbuf';
  /** Ring size in bytes: a power of two, 4096 to 4 MiB. */
  readonly size: number;
  /** Lines "event NNNNNN\n" written (older ones are overwritten when the ring is full). */
  readonly records: number;
  /** Bytes read before the update. */
  readonly consumed?: number;
}

/** What the test remembers (plain data: another build of the plugin checks it). */
export interface RingbufExpect {
  readonly stat: RingbufStat;
  /** The unread bytes, base64. */
  readonly unread: string;
}

const record = (i: number): Uint8Array => new TextEncoder().encode(`event ${String(i).padStart(6, '0')}\n`);
const b64 = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.length).toString('base64');

const ringKind = defineObjectKind<RingbufSpec, RingbufExpect>({
  type: 'ringbuf',
  description: 'a /dev/ringbuf ring: size in bytes, records written, bytes consumed before the update',
  properties: {
    size: { type: 'integer', minimum: 4096, maximum: 4194304 },
    records: { type: 'integer', minimum: 0, maximum: 1000000 },
    consumed: { type: 'integer', minimum: 0 },
  },
  required: ['size', 'records'],
  validate: (spec) => ((spec.size & (spec.size - 1)) === 0 ? [] : [{ field: 'size', message: `size ${spec.size} is not a power of two` }]),
  units: (spec) => spec.records,
  create(ctx, spec) {
    const fd = ringbufCreate(ctx.vmm, spec.size);
    for (let i = 0; i < spec.records; i++) ringbufWrite(ctx.vmm, fd, record(i));
    ctx.tick(spec.records);
    if (spec.consumed) ringbufRead(ctx.vmm, fd, spec.consumed);
    const expect = { stat: ringbufStat(ctx.vmm, fd), unread: b64(ringbufPeek(ctx.vmm, fd)) };
    ctx.preserve(fd, spec.token);
    return { fd, preservedPages: spec.size / PAGE_SIZE, expect };
  },
  restore(ctx, spec, expect) {
    const fd = ctx.retrieve(spec.token);
    const stat = ringbufStat(ctx.vmm, fd);
    const unread = ringbufPeek(ctx.vmm, fd);
    const problems: string[] = [];
    const where = `session ${ctx.session} token ${spec.token}`;
    for (const k of ['size', 'head', 'tail', 'used', 'dropped'] as const) {
      // A 1.0 header does not carry `dropped`: a ring handed over in 1.0 comes back with 0.
      if (k === 'dropped' && stat.dropped === 0) continue;
      if (stat[k] !== expect.stat[k]) problems.push(`${where}: ${k} ${stat[k]}, expected ${expect.stat[k]}`);
    }
    if (b64(unread) !== expect.unread) problems.push(`${where}: the ${unread.length} unread bytes differ from the ${expect.stat.used} written`);
    ctx.tick(spec.records);
    const check: ObjectCheck = {
      ok: problems.length === 0,
      summary: `${stat.used} unread bytes compared`,
      problems,
      counts: { 'ring bytes compared': unread.length },
    };
    return { fd, restoredPages: stat.size / PAGE_SIZE, check };
  },
});

function decodeRing(memory: Parameters<typeof decodeHeaderIn>[0], data: bigint, version: string | null, layouts: readonly RingbufLayout[], label: string): Decoded {
  const problems: string[] = [];
  const phys = data <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(data) : -1;
  if (phys <= 0 || phys % PAGE_SIZE !== 0 || phys + PAGE_SIZE > memory.size) return { fields: {}, problems: [`header 0x${data.toString(16)} is not a page of RAM`], pages: [] };
  const layout = version === null ? null : layoutFor(version, layouts);
  const pages = [{ pfn: phys / PAGE_SIZE, structure: 'ringbuf header', role: `ringbuf header (${label})`, words: [{ offset: 8, size: 8 as const, kind: 'pointer' as const }] }];
  if (!layout) return { fields: {}, problems: [`ringbuf ${version ?? '?'}: this build has no reader for it`], pages };
  const codec = layout === '2.0.0' ? ringbufSerV2 : layout === '1.1.0' ? ringbufSerV1_1 : ringbufSerV1_0;
  const raw = codec.decode(memory.read(phys, codec.size)) as Record<string, bigint | number>;
  const fields = Object.fromEntries(Object.entries(raw).map(([k, v]) => [k, typeof v === 'bigint' ? `0x${v.toString(16)}` : v]));
  try {
    const h = decodeHeaderIn(memory, phys, layout);
    return { fields, problems, pages, dataRuns: [[h.dataPhys / PAGE_SIZE, h.dataPhys / PAGE_SIZE + 2 ** h.order]] };
  } catch (e) {
    problems.push(e instanceof Error ? e.message : String(e));
    return { fields, problems, pages };
  }
}

/** The tools of a ringbuf build that knows `layouts`. */
export function ringbufTools(layouts: readonly RingbufLayout[]): PluginTools {
  return {
    objects: [ringKind],
    decoders: [defineDecoder({ target: { kind: 'file', family: 'ringbuf' }, decode: (m, d, v, c) => decodeRing(m, d, v, layouts, c.label) })],
    scenarios: [{
      name: 'telemetry',
      description: 'one VM\'s telemetry ring (4 KiB, 500 records, 10 bytes consumed) and a larger 64 KiB ring, live updated',
      defaultFor: ['run', 'matrix', 'fuzz'],
      scenario: {
        name: 'telemetry',
        machine: { memory: '2GiB' },
        from: { release: '7.1.0', plugins: { '@example/ringbuf': '1.0.0' } },
        to: { release: '7.2.0', plugins: { '@example/ringbuf': '1.0.0' } },
        sessions: [{ name: 'telemetry', objects: [
          { type: 'ringbuf', token: 1, size: 4096, records: 500, consumed: 10 },
          { type: 'ringbuf', token: 2, size: 65536, records: 3000 },
        ] }],
      },
    }],
  };
}
