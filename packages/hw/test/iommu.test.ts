import { describe, it, expect } from 'vitest';
import {
  DMA_FAULT_NO_CONTEXT, DMA_FAULT_NOT_PRESENT, DMA_FAULT_PERMISSION, PAGE_SIZE, PfnRanges, attachMachine, attachPci, createMachine, dmarOf, dmarRemapper, vtdLayout,
  type Machine, type VtdIommu,
} from '../src/index.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const REG = 0xfed9_0000;
const { SL_PTE_READ, SL_PTE_WRITE, SL_PTE_LARGE_PAGE, ROOT_PRESENT, CONTEXT_PRESENT, FaultReason } = vtdLayout;

/**
 * Test-only: a bump allocator of zeroed table pages and a writer of VT-d entries, so each test
 * builds the exact tables a driver would (the driver itself lives in plugin-iommu).
 */
class Tables {
  private next: number;
  readonly pages: number[] = [];
  constructor(readonly m: Machine, firstPfn = 16) { this.next = firstPfn; }
  page(): number {
    const phys = this.next++ * PAGE_SIZE;
    this.m.memory.fill(phys, PAGE_SIZE, 0);
    this.pages.push(phys);
    return phys;
  }
  entry(phys: number, lo: number, addr: number, hi = 0): void {
    const b = new Uint8Array(16);
    const v = new DataView(b.buffer);
    v.setUint32(0, ((addr % 2 ** 32) | lo) >>> 0, true);
    v.setUint32(4, Math.floor(addr / 2 ** 32), true);
    v.setUint32(8, hi, true);
    this.m.memory.write(phys, b);
  }
  pte(phys: number, lo: number, addr: number): void {
    const b = new Uint8Array(8);
    const v = new DataView(b.buffer);
    v.setUint32(0, ((addr % 2 ** 32) | lo) >>> 0, true);
    v.setUint32(4, Math.floor(addr / 2 ** 32), true);
    this.m.memory.write(phys, b);
  }
}

interface Fixture { m: Machine; unit: VtdIommu; t: Tables; root: number; ctx: number; pml4: number }

/** A 4-level domain (DID 7) for requester 00:03.0 whose tables the test fills. */
function fixture(rid = 0x18): Fixture {
  const m = createMachine({ memory: '8GiB' });
  const unit = dmarOf(m).addUnit({ segment: 0, regBase: REG });
  const t = new Tables(m);
  const root = t.page();
  const ctx = t.page();
  const pml4 = t.page();
  t.entry(root + (rid >> 8) * 16, ROOT_PRESENT, ctx);
  t.entry(ctx + (rid & 0xff) * 16, CONTEXT_PRESENT, pml4, 2 | (7 << 8));
  unit.setRootTablePointer(root);
  unit.setTranslationEnabled(true);
  return { m, unit, t, root, ctx, pml4 };
}

/** Map iova → phys with a leaf at `leafLevel` (1: 4 KiB, 2: 2 MiB, 3: 1 GiB). */
function map(f: Fixture, iova: number, phys: number, leafLevel: number, prot = SL_PTE_READ | SL_PTE_WRITE): number[] {
  const tables = [f.pml4];
  let table = f.pml4;
  for (let level = 4; level > leafLevel; level--) {
    const idx = Math.floor(iova / 2 ** (12 + 9 * (level - 1))) % 512;
    const pteAddr = table + idx * 8;
    const lo = f.m.memory.readU32(pteAddr);
    let next: number;
    if (lo & 3) next = (lo & 0xfffff000) >>> 0;
    else { next = f.t.page(); f.t.pte(pteAddr, SL_PTE_READ | SL_PTE_WRITE, next); }
    tables.push(next);
    table = next;
  }
  const idx = Math.floor(iova / 2 ** (12 + 9 * (leafLevel - 1))) % 512;
  f.t.pte(table + idx * 8, prot | (leafLevel > 1 ? SL_PTE_LARGE_PAGE : 0), phys);
  return tables;
}

/** Test-only DMA writer: the engine's view (issues writes through the remapping hardware). */
function dmaWrite(m: Machine, rid: number, iova: number, bytes: Uint8Array): boolean {
  return dmarOf(m).dmaWrite(0, rid, iova, bytes);
}

describe('VT-d translation walks the tables in memory', () => {
  it('a 4 KiB leaf translates to the page plus offset, with the bytes left in that page', () => {
    const f = fixture();
    map(f, 0x1234_5000, 0x4000_0000, 1);
    expect(dmarOf(f.m).translate(0, 0x18, 0x1234_5678, true)).toEqual({ ok: true, phys: 0x4000_0678, bytes: PAGE_SIZE - 0x678 });
  });

  it('a 2 MiB leaf (PS at level 2) covers its whole 2 MiB', () => {
    const f = fixture();
    map(f, 0x20_0000 * 5, 0x1_0000_0000, 2);
    expect(dmarOf(f.m).translate(0, 0x18, 0xa0_0000 + 0x12_3456, false)).toEqual({ ok: true, phys: 0x1_0012_3456, bytes: 2 * MiB - 0x12_3456 });
  });

  it('a 1 GiB leaf (PS at level 3) covers its whole GiB', () => {
    const f = fixture();
    map(f, 3 * GiB, GiB, 3);
    expect(dmarOf(f.m).translate(0, 0x18, 3 * GiB + 0x3456_7000, true)).toEqual({ ok: true, phys: GiB + 0x3456_7000, bytes: GiB - 0x3456_7000 });
  });

  it('every translation reads the tables again: a PTE changed in memory takes effect at once', () => {
    const f = fixture();
    const tables = map(f, 0x5000, 0x9000_0000, 1);
    expect(dmarOf(f.m).translate(0, 0x18, 0x5000, true)).toMatchObject({ ok: true, phys: 0x9000_0000 });
    f.t.pte((tables.at(-1) as number) + 5 * 8, SL_PTE_READ | SL_PTE_WRITE, 0xa000_0000);
    expect(dmarOf(f.m).translate(0, 0x18, 0x5000, true)).toMatchObject({ ok: true, phys: 0xa000_0000 });
  });
});

describe('a failed walk faults with the IOVA, the source ID and the reason, and writes nothing', () => {
  it('root entry not present: reason 1', () => {
    const f = fixture();
    expect(dmarOf(f.m).translate(0, 0x0218, 0x1000, true)).toEqual({ ok: false, reason: 'root entry not present (bus 2)', code: FaultReason.ROOT_NOT_PRESENT });
    expect(f.unit.faults.map((x) => [x.iova, x.sourceId, x.reason, x.write])).toEqual([[0x1000, 0x0218, FaultReason.ROOT_NOT_PRESENT, true]]);
  });

  it('context entry not present: reason 2', () => {
    const f = fixture();
    expect(dmarOf(f.m).translate(0, 0x20, 0x1000, false)).toEqual({ ok: false, reason: 'context entry not present (devfn 4.0)', code: FaultReason.CONTEXT_NOT_PRESENT });
    expect(f.unit.faults[0]).toMatchObject({ iova: 0x1000, sourceId: 0x20, reason: FaultReason.CONTEXT_NOT_PRESENT });
  });

  it('a non-present second-level entry faults as a write without permission (reason 5)', () => {
    const f = fixture();
    map(f, 0x5000, 0x9000_0000, 1);
    expect(dmaWrite(f.m, 0x18, 0x6000, new Uint8Array([1]))).toBe(false);
    expect(f.unit.faults[0]).toMatchObject({ iova: 0x6000, sourceId: 0x18, reason: FaultReason.WRITE_NOT_PERMITTED, detail: 'write through a read-only mapping (level 1 entry not present)' });
  });

  it('a write through a read-only mapping faults (reason 5) and leaves the target page untouched', () => {
    const f = fixture();
    map(f, 0x5000, 0x9000_0000, 1, SL_PTE_READ);
    f.m.memory.fill(0x9000_0000, PAGE_SIZE, 0x11);
    expect(dmaWrite(f.m, 0x18, 0x5000, new Uint8Array([0xee, 0xee]))).toBe(false);
    expect(f.m.memory.read(0x9000_0000, 2)).toEqual(new Uint8Array([0x11, 0x11]));
    expect(f.unit.faults).toHaveLength(1);
    expect(f.unit.faults[0]).toMatchObject({ iova: 0x5000, reason: FaultReason.WRITE_NOT_PERMITTED, detail: 'write through a read-only mapping (level 1 leaf)' });
    expect(dmarOf(f.m).translate(0, 0x18, 0x5000, false)).toMatchObject({ ok: true, phys: 0x9000_0000 });
  });

  it('an IOVA beyond the 48-bit width of a 4-level context faults with reason 4', () => {
    const f = fixture();
    expect(dmarOf(f.m).translate(0, 0x18, 2 ** 48, true)).toEqual({ ok: false, reason: 'address beyond the address width (48-bit)', code: FaultReason.ADDRESS_BEYOND_AW });
  });

  it('a DMA spanning a mapped and an unmapped page writes neither page', () => {
    const f = fixture();
    map(f, 0x5000, 0x9000_0000, 1);
    const data = new Uint8Array(PAGE_SIZE + 16).fill(0x5a);
    expect(dmaWrite(f.m, 0x18, 0x5000, data)).toBe(false);
    expect(f.m.memory.pageKind(0x9000_0000 / PAGE_SIZE)).toBe('zero');
    expect(f.unit.faults.map((x) => x.iova)).toEqual([0x6000]);
  });

  it('a DMA spanning two mapped pages lands in both physical pages', () => {
    const f = fixture();
    map(f, 0x5000, 0x9000_0000, 1);
    map(f, 0x6000, 0x7000_0000, 1);
    expect(dmaWrite(f.m, 0x18, 0x5ffe, new Uint8Array([1, 2, 3, 4]))).toBe(true);
    expect(f.m.memory.read(0x9000_0ffe, 2)).toEqual(new Uint8Array([1, 2]));
    expect(f.m.memory.read(0x7000_0000, 2)).toEqual(new Uint8Array([3, 4]));
    expect(f.unit.faults).toHaveLength(0);
  });
});

describe('the kexec does not reset the IOMMU', () => {
  it('the root-table register still points at the old root table and surviving tables keep translating', () => {
    const f = fixture();
    const tables = map(f, 0x5000, 0x9000_0000, 1);
    const keep = [f.root, f.ctx, ...tables, 0x9000_0000].map((p) => [p / PAGE_SIZE, p / PAGE_SIZE + 1] as [number, number]);
    f.m.kexec({ survivors: PfnRanges.of(...keep), params: { cmdline: '' } });
    expect(f.unit.rootTableAddress).toBe(f.root);
    expect(f.unit.translationEnabled).toBe(true);
    expect(dmaWrite(f.m, 0x18, 0x5010, new Uint8Array([9, 9]))).toBe(true);
    expect(f.m.memory.read(0x9000_0010, 2)).toEqual(new Uint8Array([9, 9]));
  });

  it('a page-table page lost at the kexec reads as poison: the walk faults (reason 7) with the IOVA and nothing is written anywhere', () => {
    const f = fixture();
    const tables = map(f, 0x5000, 0x9000_0000, 1);
    const lost = tables.at(-1) as number;
    const keep = [f.root, f.ctx, ...tables.slice(0, -1), 0x9000_0000].map((p) => [p / PAGE_SIZE, p / PAGE_SIZE + 1] as [number, number]);
    f.m.kexec({ survivors: PfnRanges.of(...keep), params: { cmdline: '' } });
    const resident = f.m.memory.residentBytes;
    expect(dmaWrite(f.m, 0x18, 0x5000, new Uint8Array(64).fill(0x77))).toBe(false);
    expect(f.unit.faults).toEqual([expect.objectContaining({
      iova: 0x5000, sourceId: 0x18, write: true, reason: FaultReason.PAGING_ENTRY_ACCESS,
      detail: `paging-structure entry unreadable (poison) (level 1 table 0x${lost.toString(16)})`,
    })]);
    expect(f.m.memory.pageKind(lost / PAGE_SIZE)).toBe('poison');
    expect(f.m.memory.read(0x9000_0000, 64)).toEqual(new Uint8Array(64));
    expect(f.m.memory.residentBytes).toBe(resident);
  });

  it('a lost root table faults with reason 8 and a lost context table with reason 9', () => {
    const a = fixture();
    a.m.kexec({ survivors: PfnRanges.of([a.ctx / PAGE_SIZE, a.ctx / PAGE_SIZE + 1]), params: { cmdline: '' } });
    expect(dmaWrite(a.m, 0x18, 0, new Uint8Array(1))).toBe(false);
    expect(a.unit.faults[0]?.reason).toBe(FaultReason.ROOT_TABLE_ACCESS);
    const b = fixture();
    b.m.kexec({ survivors: PfnRanges.of([b.root / PAGE_SIZE, b.root / PAGE_SIZE + 1]), params: { cmdline: '' } });
    expect(dmaWrite(b.m, 0x18, 0, new Uint8Array(1))).toBe(false);
    expect(b.unit.faults[0]?.reason).toBe(FaultReason.CONTEXT_TABLE_ACCESS);
  });
});

describe('platform scope', () => {
  it('two units on one segment may not claim the same bus; the unit in scope translates', () => {
    const m = createMachine({ memory: '1GiB' });
    const d = dmarOf(m);
    const a = d.addUnit({ segment: 0, regBase: 0xfed9_0000, buses: [0, 127] });
    const b = d.addUnit({ segment: 0, regBase: 0xfed9_1000, buses: [128, 255] });
    expect(() => d.addUnit({ segment: 0, regBase: 0xfed9_2000, buses: [100, 130] })).toThrow(RangeError);
    expect(d.unitFor(0, 0x8000)).toBe(b);
    expect(d.unitFor(0, 0x0100)).toBe(a);
    expect(d.unitByToken(0xfed9_1000)).toBe(b);
    expect(m.attachedDevices).toEqual([a, b]);
  });
});

describe('the platform description crosses to another mapping of the machine', () => {
  it('exportState/importState carry the units and their root-table registers: the copy translates the same way', () => {
    const f = fixture();
    map(f, 0x5000, 0x9000_0000, 1);
    // The machine handle carries the units (MachineHandle.dmar): attaching re-creates them.
    const copy = attachMachine(structuredClone(f.m.share()));
    expect(dmarOf(copy).exportState()).toEqual([{ segment: 0, regBase: REG, buses: [0, 255], rootTable: f.root, enabled: true }]);
    expect(dmarOf(copy).translate(0, 0x18, 0x5008, true)).toEqual({ ok: true, phys: 0x9000_0008, bytes: PAGE_SIZE - 8 });
    expect(() => dmarOf(copy).importState([])).toThrow(RangeError);
  });
});

describe('the VT-d units as the PCI host\'s DMA remapper (dmarRemapper)', () => {
  it('translates a mapped IOVA and classes faults: no context, not present, read-only; each fault is in the unit log', () => {
    const f = fixture();
    map(f, 0x5000, 0x9000_0000, 1);
    map(f, 0x6000, 0x9100_0000, 1, SL_PTE_READ);
    const r = dmarRemapper(dmarOf(f.m));
    expect(r.name).toBe('vt-d');
    expect(r.translate(0, 0x18, 0x5010, 8, true)).toBe(0x9000_0010);
    expect(r.translate(0, 0x20, 0x5010, 8, true)).toBe(DMA_FAULT_NO_CONTEXT);
    expect(r.translate(0, 0x18, 0x7000, 8, true)).toBe(DMA_FAULT_NOT_PRESENT);
    expect(r.translate(0, 0x18, 0x6000, 8, true)).toBe(DMA_FAULT_PERMISSION);
    expect(r.translate(0, 0x18, 0x6000, 8, false)).toBe(0x9100_0000);
    expect(f.unit.faults.map((x) => [x.sourceId, x.iova, x.reason])).toEqual([
      [0x20, 0x5010, FaultReason.CONTEXT_NOT_PRESENT], [0x18, 0x7000, FaultReason.WRITE_NOT_PERMITTED], [0x18, 0x6000, FaultReason.WRITE_NOT_PERMITTED],
    ]);
  });

  it('an access running into the next page needs it physically contiguous, else it is dropped', () => {
    const f = fixture();
    map(f, 0x5000, 0x9000_0000, 1);
    map(f, 0x6000, 0x9000_1000, 1);
    map(f, 0x7000, 0x9200_0000, 1);
    const r = dmarRemapper(dmarOf(f.m));
    expect(r.translate(0, 0x18, 0x5ff8, 16, true)).toBe(0x9000_0ff8);
    expect(r.translate(0, 0x18, 0x6ff8, 16, true)).toBe(DMA_FAULT_NOT_PRESENT);
  });

  it('a PCI host routes every DMA through the units, whether they were added before or after it', () => {
    const m = createMachine({ memory: '1GiB' });
    const host = attachPci(m, { segments: [{ domain: 0, devices: [{ kind: 'root-port', name: 'rp0', slot: 1, children: [{ kind: 'endpoint', name: 'dsa0', slot: 0, model: 'dsa' }] }] }] });
    expect(host.dma.remapper.name).toBe('vt-d');
    // No unit yet: untranslated (noiommu).
    expect(host.dma.writeU64(0, 0x0100, 0x10_0000, 7)).toBe(0x10_0000);
    const unit = dmarOf(m).addUnit({ segment: 0, regBase: REG });
    unit.setRootTablePointer(0x20_0000);
    unit.setTranslationEnabled(true);
    // The root table is empty: the write is dropped and logged in the unit and in the port.
    expect(host.dma.writeU64(0, 0x0100, 0x10_0008, 9)).toBe(-1);
    expect(m.memory.readU64Number(0x10_0008)).toBe(0);
    expect(unit.faults.map((x) => [x.sourceId, x.iova, x.reason])).toEqual([[0x0100, 0x10_0008, FaultReason.ROOT_NOT_PRESENT]]);
    expect(host.dma.faults).toEqual([{ segment: 0, requesterId: 0x0100, iova: 0x10_0008, write: true, code: DMA_FAULT_NO_CONTEXT }]);
  });
});
