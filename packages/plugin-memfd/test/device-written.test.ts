/**
 * `contents: 'device-written'`: guest RAM that a passthrough device writes by DMA. A test
 * "device" (an object kind of a tiny test plugin) writes the memfd's physical pages behind the
 * page cache's back after creation, as a DMA engine does; the memfd check then leaves the bytes
 * to the device's owner and checks size, seals, placement (same pfn per file offset) and poison.
 */
import { describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '@liveupdate/hw';
import { checkScenarioData, defineObjectKind, definePlugin, type Plugin, type Scenario } from '@liveupdate/sdk';
import { runScenario } from '@liveupdate/sdk/testing';
import memfd, { memfdPagemap } from '@liveupdate/plugin-memfd';

const NAME = '@liveupdate/plugin-memfd';

/** Writes one 0xd5 byte per page of the memfd with token `ram`, straight into physical memory. */
const dmaWriter = defineObjectKind<{ type: string; token: number; ram: number; pages: number }, null>({
  type: 'test-dma',
  description: 'writes guest RAM by physical address, as a DMA engine does',
  properties: { ram: { type: 'integer' }, pages: { type: 'integer' } },
  required: ['ram', 'pages'],
  create(ctx, spec) {
    const fd = (ctx.peer(spec.ram) as { fd: number }).fd;
    for (let i = 0; i < spec.pages; i++) {
      const pfn = memfdPagemap(ctx.vmm.file(fd, 'pagemap'), i * PAGE_SIZE);
      ctx.machine.memory.write(pfn * PAGE_SIZE + 8, new Uint8Array([0xd5]));
    }
    return { fd: -1, expect: null };
  },
  restore() { return { fd: -1, check: { ok: true, summary: 'device', problems: [] } }; },
});
const device = (): Plugin => definePlugin({ name: '@test/dma', version: '1.0.0', sdk: '^0.1.0', tools: { objects: [dmaWriter as never] } });

const scenario = (ram: Record<string, unknown>): Scenario => checkScenarioData({
  name: 't', machine: { memory: '1GiB' },
  from: { release: '7.1.0', plugins: { [NAME]: '3.1.0', '@test/dma': '1.0.0' } }, to: { release: '7.2.0', plugins: { [NAME]: '3.1.0', '@test/dma': '1.0.0' } },
  sessions: [{ name: 'vm', objects: [{ type: 'memfd', token: 1, size: '256KiB', ...ram }, { type: 'test-dma', token: 2, ram: 1, pages: 64 }] }],
}, 't', [memfd().tools, device().tools]);

describe('memfd contents: device-written', () => {
  it('a device-written zero memfd: every page is populated, comes back at its pfn, and the device\'s bytes are not held against it', () => {
    const r = runScenario(scenario({ fill: 'zero', contents: 'device-written', seals: ['seal', 'grow', 'shrink'] }), { from: [memfd(), device()], to: [memfd(), device()] });
    expect(r.outcome).toBe('updated');
    const o = r.objects.find((x) => x.type === 'memfd');
    expect(o?.check).toEqual({
      ok: true, problems: [],
      summary: '64 device-written pages back at their physical pages, none poisoned (bytes checked by the device\'s section)',
      counts: { 'device-written pages back in place': 64 },
    });
    expect([o?.preservedPages, o?.restoredPages]).toEqual([64, 64]);
  }, 60_000);

  it('without the option a DMA target is held to its fill: the first device-written byte is reported', () => {
    const pattern = runScenario(scenario({ fill: 'pattern' }), { from: [memfd(), device()], to: [memfd(), device()] });
    const o = pattern.objects.find((x) => x.type === 'memfd');
    expect(o?.check?.ok).toBe(false);
    expect(o?.check?.problems[0]).toBe('session vm token 1: byte 0x8 differs (pattern)');
  }, 60_000);

  it('refuses a partly touched device-written file: a device pins every page', () => {
    const kind = memfd().tools.objects?.find((k) => k.type === 'memfd');
    expect(kind?.validate?.({ type: 'memfd', token: 1, size: '1MiB', fill: 'zero', contents: 'device-written', touched: 0.5 } as never)).toEqual([
      { field: 'touched', message: 'device-written memory is populated whole (a device pins every page): touched must be 1 or absent' },
    ]);
  });
});
