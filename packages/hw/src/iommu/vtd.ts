/**
 * An Intel VT-d remapping unit (DRHD) attached to the machine. Its register base is its identity
 * (the kernel's iommu->reg_phys, the token the IOMMU persistence series hands over); its root-table
 * address register (DMAR_RTADDR_REG) is hardware state that no kexec resets. Every DMA of a
 * device in its scope is translated by walking root table → context table → second-level tables
 * in emulated physical memory, on every request: there is no IOTLB, so nothing cached can hide a
 * table that was lost at the kexec.
 *
 * A failed walk (entry not present, a table page that reads as poison, a write through a
 * read-only mapping, an address beyond the context's width) records a fault in the unit's fault
 * log (IOVA, source ID, reason) and yields no address; the caller writes nothing.
 */
import type { Device, Machine } from '../machine.js';
import type { PhysMemory } from '../memory.js';
import type { Restore } from '../state.js';
import { PAGE_SIZE } from '../units.js';
import {
  CONTEXT_AW_MASK, CONTEXT_DID_MASK, CONTEXT_DID_SHIFT, CONTEXT_ENTRY_SIZE, CONTEXT_PRESENT, FaultReason, ROOT_ENTRY_SIZE,
  ROOT_PRESENT, SL_PTE_LARGE_PAGE, SL_PTE_READ, SL_PTE_SIZE, SL_PTE_WRITE, entryAddress, faultReasonName, levelsOfAw,
} from './vtd-layout.js';

/** One recorded fault (a fault-recording register's contents). */
export interface DmaFault {
  readonly iova: number;
  /** Requester ID: bus << 8 | devfn. */
  readonly sourceId: number;
  readonly write: boolean;
  /** VT-d fault reason code. */
  readonly reason: number;
  /** The reason in words, with the level or table that failed. */
  readonly detail: string;
  /** Machine clock (ns) when it was recorded. */
  readonly atNs: number;
}

export type TranslateResult =
  | { readonly ok: true; readonly phys: number; /** Contiguous bytes from phys to the end of the mapping page. */ readonly bytes: number }
  | { readonly ok: false; readonly reason: string; /** The VT-d fault reason code (FaultReason). */ readonly code: number };

export interface VtdConfig {
  /** PCI segment (domain) this unit serves. */
  readonly segment: number;
  /** Register base (DRHD address): the unit's token. Page aligned. */
  readonly regBase: number;
  /** Buses in scope [first, last]; default every bus of the segment (INCLUDE_PCI_ALL). */
  readonly buses?: readonly [number, number];
  /** Fault-log capacity; later faults only count as overflow. Default 1024. */
  readonly faultLogSize?: number;
}

/** Maximum guest address width this unit supports (MGAW, 48 bits: 4-level tables). */
export const VTD_MGAW = 48;

export class VtdIommu implements Device {
  readonly name: string;
  readonly segment: number;
  readonly regBase: number;
  readonly buses: readonly [number, number];
  private rtaddr = 0;
  /** GCMD.TE / GSTS.TES: translation enabled. */
  private enabled = false;
  private readonly log: DmaFault[] = [];
  private overflow = 0;
  private readonly logSize: number;
  private readonly memory: PhysMemory;
  private readonly clockNow: () => number;
  /** Translations performed (for benches and reports). */
  translations = 0;

  constructor(machine: Machine, config: VtdConfig) {
    if (!Number.isSafeInteger(config.regBase) || config.regBase <= 0 || config.regBase % PAGE_SIZE !== 0) {
      throw new RangeError(`VT-d: register base ${config.regBase} must be a page-aligned address`);
    }
    if (!Number.isInteger(config.segment) || config.segment < 0 || config.segment > 0xffff) throw new RangeError(`VT-d: segment ${config.segment}`);
    const [first, last] = config.buses ?? [0, 255];
    if (!(Number.isInteger(first) && Number.isInteger(last) && first >= 0 && last <= 255 && first <= last)) throw new RangeError(`VT-d: bus range ${first}..${last}`);
    this.segment = config.segment;
    this.regBase = config.regBase;
    this.buses = [first, last];
    this.name = `dmar@0x${config.regBase.toString(16)}`;
    this.logSize = config.faultLogSize ?? 1024;
    this.memory = machine.memory;
    this.clockNow = () => machine.clock.now;
  }

  // ---- registers (what a driver programs) -------------------------------------------------

  /** DMAR_RTADDR_REG; takes effect with setRootTablePointer (GCMD.SRTP). */
  get rootTableAddress(): number { return this.rtaddr; }
  setRootTablePointer(phys: number): void {
    if (!Number.isSafeInteger(phys) || phys < 0 || phys % PAGE_SIZE !== 0) throw new RangeError(`VT-d: root table 0x${phys.toString(16)} must be page aligned`);
    this.memory.check(phys, PAGE_SIZE);
    this.rtaddr = phys;
  }
  get translationEnabled(): boolean { return this.enabled; }
  /** GCMD.TE. With translation disabled DMA passes through untranslated (as VT-d does). */
  setTranslationEnabled(on: boolean): void { this.enabled = on; }
  /** Context-cache / IOTLB invalidation: this unit caches nothing, so there is nothing to drop. */
  invalidateAll(): void { /* no caches: every request walks the tables */ }

  inScope(segment: number, requesterId: number): boolean {
    const bus = requesterId >>> 8;
    return segment === this.segment && bus >= this.buses[0] && bus <= this.buses[1];
  }

  /** DMAR_RTADDR_REG, GSTS.TES, the fault-recording registers and the translation count. */
  save(): Restore {
    const { rtaddr, enabled, overflow, translations } = this;
    const log = this.log.slice();
    return () => {
      this.rtaddr = rtaddr;
      this.enabled = enabled;
      this.overflow = overflow;
      this.translations = translations;
      if (this.log.length !== log.length || this.log.some((f, i) => f !== log[i])) { this.log.length = 0; this.log.push(...log); }
    };
  }

  /** The unit is hardware: the kexec neither resets it nor clears its registers. */
  onKexec(): void { /* DMAR_RTADDR_REG and GSTS.TES survive: devices keep translating */ }

  // ---- the fault log ------------------------------------------------------------------------

  get faults(): readonly DmaFault[] { return this.log; }
  get faultOverflow(): number { return this.overflow; }
  /** Software clears the fault-recording registers. */
  clearFaults(): void { this.log.length = 0; this.overflow = 0; }

  private fault(iova: number, sourceId: number, write: boolean, reason: number, where: string): TranslateResult {
    const detail = `${faultReasonName(reason)}${where ? ` (${where})` : ''}`;
    if (this.log.length < this.logSize) this.log.push({ iova, sourceId, write, reason, detail, atNs: this.clockNow() });
    else this.overflow++;
    return { ok: false, reason: detail, code: reason };
  }

  private poisoned(phys: number): boolean {
    return this.memory.pageKind(Math.floor(phys / PAGE_SIZE)) === 'poison';
  }

  // ---- translation --------------------------------------------------------------------------

  /**
   * Translate one request. Walk order as the hardware does it: root entry (by bus), context
   * entry (by devfn), then the second-level tables from the top level down to a 4 KiB PTE or a
   * 2 MiB / 1 GiB leaf (PS = 1).
   */
  translate(requesterId: number, iova: number, write: boolean): TranslateResult {
    this.translations++;
    const rid = requesterId & 0xffff;
    if (!this.enabled) return { ok: true, phys: iova, bytes: PAGE_SIZE - (iova % PAGE_SIZE) };
    if (!Number.isSafeInteger(iova) || iova < 0) return this.fault(0, rid, write, FaultReason.ADDRESS_BEYOND_AW, `iova ${iova}`);
    const mem = this.memory;
    const bus = rid >>> 8;
    const devfn = rid & 0xff;

    const rootAddr = this.rtaddr + bus * ROOT_ENTRY_SIZE;
    if (this.poisoned(rootAddr)) return this.fault(iova, rid, write, FaultReason.ROOT_TABLE_ACCESS, `root table 0x${this.rtaddr.toString(16)}`);
    const rootLo = mem.readU32(rootAddr);
    const rootHi = mem.readU32(rootAddr + 4);
    if (!(rootLo & ROOT_PRESENT)) return this.fault(iova, rid, write, FaultReason.ROOT_NOT_PRESENT, `bus ${bus}`);
    const ctxTable = entryAddress(rootLo, rootHi);

    const ctxAddr = ctxTable + devfn * CONTEXT_ENTRY_SIZE;
    if (ctxAddr + CONTEXT_ENTRY_SIZE > mem.size) return this.fault(iova, rid, write, FaultReason.CONTEXT_TABLE_ACCESS, `context table 0x${ctxTable.toString(16)} outside memory`);
    if (this.poisoned(ctxAddr)) return this.fault(iova, rid, write, FaultReason.CONTEXT_TABLE_ACCESS, `context table 0x${ctxTable.toString(16)}`);
    const ctxLo = mem.readU32(ctxAddr);
    const ctxLoHi = mem.readU32(ctxAddr + 4);
    const ctxHi = mem.readU32(ctxAddr + 8);
    if (!(ctxLo & CONTEXT_PRESENT)) return this.fault(iova, rid, write, FaultReason.CONTEXT_NOT_PRESENT, `devfn ${devfn >> 3}.${devfn & 7}`);
    const levels = levelsOfAw(ctxHi & CONTEXT_AW_MASK);
    if (levels === null || levels > 4 || ((ctxLo >>> 2) & 3) !== 0) return this.fault(iova, rid, write, FaultReason.CONTEXT_INVALID, `aw ${ctxHi & CONTEXT_AW_MASK}`);
    const width = 12 + 9 * levels;
    if (iova >= 2 ** width) return this.fault(iova, rid, write, FaultReason.ADDRESS_BEYOND_AW, `${width}-bit`);

    let table = entryAddress(ctxLo, ctxLoHi);
    for (let level = levels; level >= 1; level--) {
      const shift = 12 + 9 * (level - 1);
      const index = Math.floor(iova / 2 ** shift) % 512;
      const pteAddr = table + index * SL_PTE_SIZE;
      if (pteAddr + SL_PTE_SIZE > mem.size) return this.fault(iova, rid, write, FaultReason.PAGING_ENTRY_ACCESS, `level ${level} table 0x${table.toString(16)} outside memory`);
      if (this.poisoned(pteAddr)) return this.fault(iova, rid, write, FaultReason.PAGING_ENTRY_ACCESS, `level ${level} table 0x${table.toString(16)}`);
      const lo = mem.readU32(pteAddr);
      const hi = mem.readU32(pteAddr + 4);
      if (!(lo & (SL_PTE_READ | SL_PTE_WRITE))) {
        return this.fault(iova, rid, write, write ? FaultReason.WRITE_NOT_PERMITTED : FaultReason.READ_NOT_PERMITTED, `level ${level} entry not present`);
      }
      const leaf = level === 1 || ((lo & SL_PTE_LARGE_PAGE) !== 0 && level <= 3);
      if (leaf) {
        if (write && !(lo & SL_PTE_WRITE)) return this.fault(iova, rid, write, FaultReason.WRITE_NOT_PERMITTED, `level ${level} leaf`);
        if (!write && !(lo & SL_PTE_READ)) return this.fault(iova, rid, write, FaultReason.READ_NOT_PERMITTED, `level ${level} leaf`);
        const size = 2 ** shift;
        const base = entryAddress(lo, hi) - (entryAddress(lo, hi) % size);
        const offset = iova % size;
        const phys = base + offset;
        if (phys >= mem.size) return this.fault(iova, rid, write, FaultReason.PAGING_ENTRY_ACCESS, `leaf 0x${base.toString(16)} outside memory`);
        return { ok: true, phys, bytes: Math.min(size - offset, mem.size - phys) };
      }
      table = entryAddress(lo, hi);
    }
    /* c8 ignore next */
    return this.fault(iova, rid, write, FaultReason.PAGING_ENTRY_ACCESS, 'walk ended without a leaf');
  }

  /** The domain ID the context entry of `requesterId` carries, or null if not present (for tests and reports). */
  contextDomainId(requesterId: number): number | null {
    const bus = (requesterId >>> 8) & 0xff;
    const rootAddr = this.rtaddr + bus * ROOT_ENTRY_SIZE;
    if (this.poisoned(rootAddr)) return null;
    const lo = this.memory.readU32(rootAddr);
    if (!(lo & ROOT_PRESENT)) return null;
    const ctx = entryAddress(lo, this.memory.readU32(rootAddr + 4)) + (requesterId & 0xff) * CONTEXT_ENTRY_SIZE;
    if (this.poisoned(ctx)) return null;
    if (!(this.memory.readU32(ctx) & CONTEXT_PRESENT)) return null;
    return (this.memory.readU32(ctx + 8) >>> CONTEXT_DID_SHIFT) & CONTEXT_DID_MASK;
  }
}
