/**
 * The platform's DMA remapping hardware (the ACPI DMAR table's DRHD units): which VT-d unit
 * translates a requester, and the entry point a DMA engine calls for every transfer.
 */
import type { Machine } from '../machine.js';
import { saveArray, type Restore, type SavesState } from '../state.js';
import { PAGE_SIZE } from '../units.js';
import { VtdIommu, type TranslateResult, type VtdConfig } from './vtd.js';

/** What exportState returns: one entry per unit. */
export type DmarState = ReadonlyArray<{
  readonly segment: number;
  readonly regBase: number;
  readonly buses: readonly [number, number];
  readonly rootTable: number;
  readonly enabled: boolean;
}>;

export class DmaRemapping implements SavesState {
  private readonly list: VtdIommu[] = [];

  constructor(private readonly machine: Machine) {}

  /** Add a remapping unit (before the first kernel boots, as firmware describes it). */
  addUnit(config: VtdConfig): VtdIommu {
    if (this.list.some((u) => u.regBase === config.regBase)) throw new RangeError(`VT-d: a unit at 0x${config.regBase.toString(16)} exists`);
    const unit = new VtdIommu(this.machine, config);
    for (const u of this.list) {
      if (u.segment === unit.segment && !(unit.buses[1] < u.buses[0] || unit.buses[0] > u.buses[1])) {
        throw new RangeError(`VT-d: ${unit.name} and ${u.name} both claim buses of segment ${unit.segment}`);
      }
    }
    this.list.push(unit);
    this.machine.attach(unit);
    return unit;
  }

  get units(): readonly VtdIommu[] { return this.list; }

  /** Which units exist (each unit, a machine device, saves its registers). */
  save(): Restore { return saveArray(this.list); }

  /**
   * The units and their registers as structured-cloneable data, to describe the same platform to a
   * machine mapped in another worker (attachMachine): the units' register state is hardware state,
   * not memory, so it travels beside the MachineHandle. Fault logs stay with this copy.
   */
  exportState(): DmarState {
    return this.list.map((u) => ({ segment: u.segment, regBase: u.regBase, buses: u.buses, rootTable: u.rootTableAddress, enabled: u.translationEnabled }));
  }

  /** Recreate exported units on an empty platform (the other side of exportState). */
  importState(state: DmarState): void {
    if (this.list.length > 0) throw new RangeError('VT-d: importState on a platform that already has units');
    for (const s of state) {
      const u = this.addUnit({ segment: s.segment, regBase: s.regBase, buses: s.buses });
      if (s.rootTable) u.setRootTablePointer(s.rootTable);
      u.setTranslationEnabled(s.enabled);
    }
  }

  unitFor(segment: number, requesterId: number): VtdIommu | undefined {
    return this.list.find((u) => u.inScope(segment, requesterId));
  }

  unitByToken(regBase: number): VtdIommu | undefined {
    return this.list.find((u) => u.regBase === regBase);
  }

  /**
   * Translate one request of `requesterId` (bus << 8 | devfn) in `segment`. A requester no unit
   * covers is not remapped (as on a platform whose DMAR scope leaves it out).
   */
  translate(segment: number, requesterId: number, iova: number, write: boolean): TranslateResult {
    const unit = this.unitFor(segment, requesterId);
    if (!unit) return { ok: true, phys: iova, bytes: PAGE_SIZE - (iova % PAGE_SIZE) };
    return unit.translate(requesterId, iova, write);
  }

  /**
   * A DMA write of `bytes` at `iova`: every page is translated first; on any fault nothing at
   * all is written (the fault is in the unit's log) and the result is false.
   */
  dmaWrite(segment: number, requesterId: number, iova: number, bytes: Uint8Array): boolean {
    const pieces: Array<readonly [phys: number, from: number, to: number]> = [];
    let done = 0;
    while (done < bytes.length) {
      const t = this.translate(segment, requesterId, iova + done, true);
      if (!t.ok) return false;
      const n = Math.min(t.bytes, bytes.length - done);
      pieces.push([t.phys, done, done + n]);
      done += n;
    }
    for (const [phys, from, to] of pieces) this.machine.memory.write(phys, bytes.subarray(from, to));
    return true;
  }

  /** A DMA read: null on any fault. */
  dmaRead(segment: number, requesterId: number, iova: number, length: number): Uint8Array | null {
    const out = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const t = this.translate(segment, requesterId, iova + done, false);
      if (!t.ok) return null;
      const n = Math.min(t.bytes, length - done);
      this.machine.memory.readInto(t.phys, out.subarray(done, done + n));
      done += n;
    }
    return out;
  }
}

const platforms = new WeakMap<Machine, DmaRemapping>();

/** The machine's DMA remapping hardware (created empty on first use). */
export function dmarOf(machine: Machine): DmaRemapping {
  let d = platforms.get(machine);
  if (!d) {
    d = new DmaRemapping(machine);
    platforms.set(machine, d);
    machine.track(d);
  }
  return d;
}
