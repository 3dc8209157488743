/**
 * The ringbuf plugin on the plugin surface for tools: the SDK's generic scenario runner (the one
 * `liveupdate run` uses) creates, preserves, restores and checks rings through the plugin's own
 * object kind, and its decoder reads a header from bytes alone, with no help from the CLI.
 */
import { describe, expect, it } from 'vitest';
import { createMachine } from '@liveupdate/hw';
import { boot, PAGE_SIZE, parseScenario, type Scenario } from '@liveupdate/sdk';
import { runScenario } from '@liveupdate/sdk/testing';
import { encodeHeader, ringbuf, ringbufCreate, ringbufOf, ringbufWrite } from '../src/index.js';

const scenario = (): Scenario => {
  const built = ringbuf().tools.scenarios?.find((s) => s.name === 'telemetry');
  if (!built) throw new Error('no telemetry scenario');
  return parseScenario(JSON.stringify(built.scenario), 'telemetry', [ringbuf().tools]);
};

describe('ringbuf through the generic scenario runner', () => {
  it('its shipped scenario validates against its own object kind and updates with every byte checked', () => {
    const r = runScenario(scenario(), { from: [ringbuf()], to: [ringbuf()] });
    expect(r.outcome).toBe('updated');
    expect(r.violations).toEqual([]);
    expect(r.leaks).toEqual({ blocks: 0, pages: 0 });
    expect(r.formats).toEqual({ ringbuf: '2.0.0' });
    expect(r.objects.map((o) => [o.token, o.compatible, o.check?.ok, o.check?.counts])).toEqual([
      // A full 4 KiB ring less the 10 bytes consumed; 3,000 lines of 13 bytes in a 64 KiB ring.
      [1, 'ringbuf@2.0.0', true, { 'ring bytes compared': 4086 }],
      [2, 'ringbuf@2.0.0', true, { 'ring bytes compared': 39_000 }],
    ]);
  });

  it('into a 1.x-era build: negotiated down to 1.1.0, the same unread bytes come back', () => {
    const old = ringbuf({ version: '1.0.0', writes: ['1.0.0', '1.1.0'], reads: '^1.0.0', layouts: ['1.0.0', '1.1.0'] });
    const r = runScenario(scenario(), { from: [ringbuf()], to: [old] });
    expect(r.formats).toEqual({ ringbuf: '1.1.0' });
    expect(r.objects.every((o) => o.compatible === 'ringbuf@1.1.0' && o.check?.ok === true)).toBe(true);
  });

  it('into a build that reads no format it writes: refused before the jump, rolled back, nothing checked', () => {
    const r = runScenario(scenario(), { from: [ringbuf()], to: [ringbuf({ writes: ['2.0.0'], reads: '^3.0.0' })] });
    expect(r.outcome).toBe('rolled-back');
    expect(r.refusal).toMatchObject({ freezes: 0, fromAlive: true });
    expect(r.objects.every((o) => o.check === null)).toBe(true);
  });

  it('the decoder reads a header from bytes alone: fields, the header page it owns, the ring folio; bad bytes are problems', () => {
    const p = ringbuf();
    const k = boot(createMachine({ memory: '1GiB' }), { cmdline: 'kho=on liveupdate=on', plugins: [p], release: '7.1.0' });
    const vmm = k.spawn('vmm');
    const fd = ringbufCreate(vmm, 8192);
    ringbufWrite(vmm, fd, new TextEncoder().encode('hello'));
    const ring = ringbufOf(vmm, fd);
    const page = k.mm.allocPages(0) as number;
    k.machine.memory.write(page * PAGE_SIZE, encodeHeader(ring, '2.0.0'));
    const decoder = p.tools.decoders?.find((d) => d.target.kind === 'file' && d.target.family === 'ringbuf');
    const d = decoder?.decode(k.machine.memory, BigInt(page * PAGE_SIZE), '2.0.0', { label: 'token 1' });
    expect(d?.problems).toEqual([]);
    expect(d?.fields).toMatchObject({ data_pfn: `0x${ring.pfn.toString(16)}`, order: 1, tail: '0x0', used: '0x5' });
    expect(d?.pages).toEqual([{ pfn: page, structure: 'ringbuf header', role: 'ringbuf header (token 1)', words: [{ offset: 8, size: 8, kind: 'pointer' }] }]);
    expect(d?.dataRuns).toEqual([[ring.pfn, ring.pfn + 2]]);
    k.machine.memory.write(page * PAGE_SIZE, new Uint8Array(8)); // the magic
    const bad = decoder?.decode(k.machine.memory, BigInt(page * PAGE_SIZE), '2.0.0', { label: 'token 1' });
    expect(bad?.problems).toEqual(['ringbuf_restore: EINVAL (bad v2 magic 0x0)']);
    expect(decoder?.decode(k.machine.memory, 12345n, '2.0.0', { label: 'x' }).problems).toEqual(['header 0x3039 is not a page of RAM']);
  });
});
