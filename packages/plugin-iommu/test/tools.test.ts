import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { createMachine, dmarOf, type Machine } from '@liveupdate/hw';
import { finishSession, retrieveFd, retrieveSession, type FormatDecoder, type ScenarioSection, type Decoded } from '@liveupdate/sdk';
import { liveUpdate } from '@liveupdate/sdk/testing';
import memfd from '@liveupdate/plugin-memfd';
import iommu from '../src/index.js';
import { CMDLINE, DEV_A, GUEST_IOVA, REG_BASE, bind, bootNext, dma, world, fakeVfio, handedOverFiles, handedOverFlbs, ictxOf, passthrough, preserveAll, type World } from './support.js';

const tools = iommu().tools;
const decoder = (compatible: string): FormatDecoder => {
  const d = tools.decoders?.find((x) => (x.target.kind === 'flb' && x.target.compatible === compatible) || (x.target.kind === 'file' && x.target.family === compatible));
  if (!d) throw new Error(`no decoder for ${compatible}`);
  return d;
};
const section = tools.sections?.[0] as unknown as ScenarioSection<{ units: Array<{ segment: number; regBase: number }> }, null>;

interface Seen { flb: Decoded; iommufd: Decoded; tablePages: number; flbData: bigint; flbVariant: string }

function run(variant: 'iommu-liveupdate' | 'iommu-liveupdate-v1', writes: string[] = ['1.0.0', '2.0.0'], afterJump?: (m: Machine, w: World) => void): { seen: Partial<Seen>; machine: Machine; result: ReturnType<typeof liveUpdate> } {
  const machine = createMachine({ memory: '4GiB' });
  section.machine?.(machine, { units: [{ segment: 0, regBase: REG_BASE }] });
  const unit = dmarOf(machine).units[0];
  if (!unit) throw new Error('no unit');
  const plugins = [memfd(), iommu({ flb: variant, writes }), fakeVfio([DEV_A])];
  const seen: Partial<Seen> = {};
  let world: World | undefined;
  const result = liveUpdate({ from: { plugins, release: '7.1.0', cmdline: CMDLINE }, to: { plugins, release: '7.2.0', cmdline: CMDLINE } }, {
    machine,
    before(k, t) {
      const p = t.spawn(k, 'vmm');
      world = { machine, unit, plugins, k1: k, p, dev: p.open('/dev/liveupdate'), next: { cmdline: CMDLINE, plugins, release: '7.2.0' } };
      const x = passthrough(world);
      seen.tablePages = ictxOf(p, x.ifd).get(x.hwpt, 'hwpt', 't').domain?.table.tablePageCount ?? 0;
      preserveAll(world, x);
      return null;
    },
    afterJump(m) {
      if (!world) return;
      const flb = handedOverFlbs(world)[0];
      const file = handedOverFiles(world).find((f) => f.token === 2n);
      seen.flbData = flb?.data ?? 0n;
      seen.flbVariant = flb?.name ?? "";
      seen.flb = decoder(variant).decode(m.memory, flb?.data ?? 0n, null, { label: 'flb' });
      seen.iommufd = decoder('iommufd').decode(m.memory, file?.data ?? 0n, writes.includes('2.0.0') ? '2.0.0' : '1.0.0', { label: 'iommufd' });
      afterJump?.(m, world);
    },
    after(k, _s, t) {
      const p = t.spawn(k, 'vmm');
      const s = retrieveSession(p, p.open('/dev/liveupdate'), 'vm0');
      retrieveFd(p, s, 1);
      const ifd = retrieveFd(p, s, 2);
      bind(p, retrieveFd(p, s, 3), ifd);
      finishSession(p, s);
    },
  });
  return { seen, machine, result };
}

describe('decoders read the handover from bytes alone', () => {
  it('the versioned FLB: records as fields, and every array page and page-table page as owned pages', () => {
    const { seen } = run('iommu-liveupdate');
    expect(seen.flbVariant).toBe('iommu-liveupdate');
    expect(seen.flb?.problems).toEqual([]);
    expect(seen.flb?.fields).toMatchObject({ variant: 'iommu-liveupdate', version: 1, iommus: 1, domains: 1, devices: 1, 'iommu[0].token': '0xfed90000', 'iommu[0].ref_count': 1, 'domain[0].top_level': 3, 'domain[0].vasz': 48, 'device[0]': '0000:03:00.0 did 1' });
    const structures = (seen.flb?.pages ?? []).map((p) => p.structure);
    expect(structures.filter((s) => s === 'iommu FLB header')).toHaveLength(1);
    expect(structures.filter((s) => s === 'iommu FLB array')).toHaveLength(3);
    expect(structures.filter((s) => s === 'iommu page table')).toHaveLength(seen.tablePages ?? -1);
    expect(seen.tablePages).toBe(5); // top, level 3, level 2 and two level-1 tables (the 2 MiB at 1 MiB straddles a 2 MiB boundary)
  });

  it('the VT-d variant: the root table and the context tables its hw record names are owned pages too', () => {
    const { seen } = run('iommu-liveupdate-v1');
    expect(seen.flb?.problems).toEqual([]);
    expect((seen.flb?.pages ?? []).filter((p) => p.structure === 'iommu root/context table').map((p) => p.role)).toEqual(['iommu[0] root table', 'iommu[0] bus 3 context table']);
  });

  it('iommufd-v1 and the 2.x areas', () => {
    const w = world({ iommu: { writes: ['1.0.0'] } });
    preserveAll(w, passthrough(w));
    w.k1.kexecJump(w.next);
    const file = handedOverFiles(w).find((f) => f.token === 2n);
    expect(file?.compatible).toBe('iommufd-v1');
    const v1 = decoder('iommufd').decode(w.machine.memory, file?.data ?? 0n, '1.0.0', { label: 'iommufd' });
    bootNext(w);
    expect(v1?.fields).toMatchObject({ nr_hwpts: 1 });
    expect(String(v1?.fields['hwpt[0]'])).toMatch(/^token 24301 domain 0x[0-9a-f]+$/);
    const v2 = run('iommu-liveupdate').seen.iommufd;
    expect(v2?.fields).toMatchObject({ nr_hwpts: 1, nr_areas: 1, 'area[0]': 'iova 0x100000 +0x200000 file token 1 @0x0 hwpt 0' });
    expect(v2?.problems).toEqual([]);
  });

  it('a corrupted count and a cycle are problems, never an exception', () => {
    const { seen } = run('iommu-liveupdate');
    const machine = createMachine({ memory: '1GiB' });
    const page = 0x10_0000;
    const b = new Uint8Array(32);
    const v = new DataView(b.buffer);
    v.setBigUint64(0, 1n, true); v.setBigUint64(8, BigInt(page + 4096), true); v.setBigUint64(16, BigInt(page + 4096), true); v.setBigUint64(24, 0n, true);
    machine.memory.write(page, b);
    const arr = new Uint8Array(16);
    new DataView(arr.buffer).setBigUint64(0, BigInt(page + 4096), true);
    new DataView(arr.buffer).setBigUint64(8, 5000n, true);
    machine.memory.write(page + 4096, arr);
    const d = decoder('iommu-liveupdate').decode(machine.memory, BigInt(page), null, { label: 'x' });
    expect(d.problems).toEqual([
      'device array address is 0 (the kernel panics)',
      'iommu array page 0x101000 holds 5000 objects (at most 170)',
      'iommu array page 0x101000 is linked twice (a cycle or two lists sharing it)',
      'domain array page 0x101000 is linked twice (a cycle or two lists sharing it)',
    ]);
    expect(seen.flb?.problems).toEqual([]);
  });

  it('hostile bytes: any header the decoders are handed answers with fields and problems', () => {
    const machine = createMachine({ memory: '64MiB' });
    fc.assert(fc.property(fc.uint8Array({ minLength: 64, maxLength: 64 }), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), (bytes, data) => {
      machine.memory.write(0x20_0000, bytes);
      for (const d of tools.decoders ?? []) {
        for (const version of ['2.0.0', '2.1.0']) {
          const r = d.decode(machine.memory, data % 2n === 0n ? 0x20_0000n : data, version, { label: 'fuzz' });
          expect(Array.isArray(r.problems)).toBe(true);
        }
      }
    }), { numRuns: 200 });
  });
});

describe('the "iommu" scenario section', () => {
  it('puts the units on the machine and reports an empty fault log as ok, a DMA fault as a problem', () => {
    const clean = run('iommu-liveupdate');
    expect(clean.result.outcome.kind).toBe('updated');
    const after = section.after?.({ kernel: clean.result.to as never, machine: clean.machine, spawn: () => { throw new Error('unused'); }, note: () => undefined }, { units: [] }, null);
    expect(after?.map((c) => c.ok)).toEqual([true]);
    expect(dma(clean.machine, { segment: 0, rid: 0x0700, name: 'x' }, GUEST_IOVA, new Uint8Array(1))).toBe(false);
    const again = section.after?.({ kernel: clean.result.to as never, machine: clean.machine, spawn: () => { throw new Error('unused'); }, note: () => undefined }, { units: [] }, null);
    expect(again?.[0]?.ok).toBe(false);
    expect(again?.[0]?.problems).toEqual(['DMA fault: source 0x700 iova 0x100000 write: root entry not present (bus 7)']);
  });
});
