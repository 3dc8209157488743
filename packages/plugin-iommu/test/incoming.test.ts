import { describe, it, expect } from 'vitest';
import { KernelPanic, PAGE_SIZE } from '@liveupdate/sdk';
import { liveUpdate, type LiveUpdateScenario } from '@liveupdate/sdk/testing';
import { createMachine, dmarOf } from '@liveupdate/hw';
import memfd from '@liveupdate/plugin-memfd';
import iommu, { FLB_PANIC } from '../src/index.js';
import { coreOf } from '../src/state.js';
import {
  CMDLINE, DEV_A, GUEST_IOVA, REG_BASE, bootNext, dma, fakeVfio, handedOverFlbs, ictxOf, passthrough, preserveAll, world, type World,
} from './support.js';

function jumped(opts: Parameters<typeof world>[0] = {}): { w: World; flb: number } {
  const w = world({ iommu: { writes: ['1.0.0'] }, ...opts });
  preserveAll(w, passthrough(w));
  w.k1.kexecJump(w.next);
  return { w, flb: Number(handedOverFlbs(w)[0]?.data ?? 0n) };
}

const panicOf = (fn: () => unknown): string => {
  try { fn(); } catch (e) { if (e instanceof KernelPanic) return e.message; throw e; }
  return 'no panic';
};

describe('the FLB is retrieved at IOMMU init, and restore failure is fatal', () => {
  it('a stored version other than 1 panics with "Failed to restore IOMMU Live Update FLB"', () => {
    const { w, flb } = jumped();
    w.machine.memory.write(flb, new Uint8Array([2]));
    expect(panicOf(() => bootNext(w))).toBe(`${FLB_PANIC} (version 2)`);
  });

  it('a zero array address panics', () => {
    const { w, flb } = jumped();
    w.machine.memory.write(flb + 24, new Uint8Array(8));
    expect(panicOf(() => bootNext(w))).toBe(`${FLB_PANIC} (an array address is 0)`);
  });

  it('an array page that cannot be restored is a BUG', () => {
    const { w, flb } = jumped();
    const dev = w.machine.memory.readU64Number(flb + 24);
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, 0x1234_5000n, true);
    w.machine.memory.write(dev, b); // next_array_phys → a page nobody preserved
    expect(panicOf(() => bootNext(w))).toBe('kernel BUG at drivers/iommu/liveupdate.c: device array page 0x12345000 was not preserved');
  });

  it('an array linked to itself is refused, not walked forever', () => {
    const { w, flb } = jumped();
    const dom = w.machine.memory.readU64Number(flb + 16);
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt(dom), true);
    w.machine.memory.write(dom, b);
    expect(panicOf(() => bootNext(w))).toMatch(/domain array page 0x[0-9a-f]+ (is linked twice|was not preserved)/);
  });

  it('an allocation failure while retrieving (ENOMEM) is fatal at IOMMU init', () => {
    const { w } = jumped({ nextIommu: { writes: ['1.0.0'], failFlbRetrieveAlloc: true } });
    expect(panicOf(() => bootNext(w))).toMatch(new RegExp(`^${FLB_PANIC} \\(.*ENOMEM`));
  });

  it('with no FLB handed over every unit starts from a fresh root table', () => {
    const w = world();
    passthrough(w);
    const old = w.unit.rootTableAddress;
    w.k1.kexecJump(w.next);
    const { k2 } = bootNext(w);
    expect(coreOf(k2).incoming).toBeNull();
    expect(w.unit.rootTableAddress).not.toBe(old);
    expect(dma(w.machine, DEV_A, GUEST_IOVA, new Uint8Array([1]))).toBe(false);
  });

  it('the FLB is read before PCI enumeration: IOMMU init has the restored records when the probe phase starts', () => {
    const { w } = jumped();
    const { k2 } = bootNext(w);
    const core = coreOf(k2);
    expect(core.units[0]?.restored).toBe(true);
    expect(core.units[0]?.dids.has(1)).toBe(true);
    expect(core.devices.get(`0:${DEV_A.rid}`)?.restored?.did).toBe(1);
  });
});

describe('one page-table page left unpreserved on purpose', () => {
  it('the walk hits poison, the IOMMU records the IOVA, nothing is written to a wrong page, and the update fails', () => {
    const machine = createMachine({ memory: '4GiB' });
    const unit = dmarOf(machine).addUnit({ segment: 0, regBase: REG_BASE });
    const plugins = [memfd(), iommu({ writes: ['1.0.0'] }), fakeVfio([DEV_A])];
    let lostPfn = 0;
    let residentAfterJump = 0;
    let guestPhys = 0;
    // The harness must report the update failed: declared, so the harness (which by default
    // accepts only 'updated') classifies instead of throwing.
    const scenario: LiveUpdateScenario<null> & { readonly expect?: 'refused-incoming' } = {
      expect: 'refused-incoming',
      machine,
      before(k, t) {
        const p = t.spawn(k, 'vmm');
        const w: World = { machine, unit, plugins, k1: k, p, dev: p.open('/dev/liveupdate'), next: { cmdline: CMDLINE, plugins, release: '7.2.0' } };
        const x = passthrough(w);
        preserveAll(w, x);
        const table = ictxOf(p, x.ifd).get(x.hwpt, 'hwpt', 't').domain?.table;
        const pfns = [...(table?.tablePfns() ?? [])];
        guestPhys = table?.lookup(GUEST_IOVA + 0x40) ?? 0;
        lostPfn = pfns[3] ?? 0; // allocation order: top, level 3, level 2, then the level-1 table of GUEST_IOVA
        k.khoOut?.unpreserveFolio(lostPfn, 0);
        return null;
      },
      afterJump(m) {
        expect(m.memory.pageKind(lostPfn)).toBe('poison');
        residentAfterJump = m.memory.residentBytes;
        expect(dma(m, DEV_A, GUEST_IOVA + 0x40, new Uint8Array(32).fill(0xee))).toBe(false);
        expect(m.memory.residentBytes).toBe(residentAfterJump);
        expect(m.memory.read(guestPhys, 32)).toEqual(new Uint8Array(32).fill(0x11));
      },
      after() { /* not reached */ },
    };
    const result = liveUpdate({ from: { plugins, release: '7.1.0', cmdline: CMDLINE }, to: { plugins, release: '7.2.0', cmdline: CMDLINE } }, scenario);
    expect(result.outcome.kind).toBe('refused-incoming');
    expect(result.outcome.kind === 'refused-incoming' ? result.outcome.reason : '').toBe(
      `iommu: Failed to restore the domain of ${DEV_A.name}: level 1 table 0x${(lostPfn * PAGE_SIZE).toString(16)} was not preserved`);
    expect(unit.faults).toEqual([expect.objectContaining({ iova: GUEST_IOVA + 0x40, sourceId: DEV_A.rid, write: true, reason: 7 })]);
  });
});
