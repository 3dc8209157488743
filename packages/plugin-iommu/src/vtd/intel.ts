/**
 * The Intel VT-d driver's per-unit state in one kernel (drivers/iommu/intel/iommu.c and the
 * series' drivers/iommu/intel/liveupdate.c): the root table and the context tables it allocated,
 * the domain-ID allocator, context entries written at attach, and the live-update parts:
 * preserving the root and context tables, clearing what was not preserved at shutdown, and
 * adopting the preserved tables in place at the next boot.
 */
import { vtdLayout, type VtdIommu } from '@liveupdate/hw';
import { ErrnoError, PAGE_SIZE, type Kernel } from '@liveupdate/sdk';
import { contextTableBit } from '../abi/iommu.js';

const { ROOT_ENTRY_NR, ROOT_PRESENT, CONTEXT_PRESENT, CONTEXT_DID_SHIFT, entryAddress, awOfLevels } = vtdLayout;
/** cap_ndoms for a unit with CAP.ND = 2 (256 domains); DID 0 is reserved in legacy mode. */
export const VTD_NDOMS = 256;

export class IntelIommu {
  readonly hw: VtdIommu;
  rootPfn = 0;
  /** Context table pfn per bus (0: none). */
  readonly contextPfns = new Float64Array(ROOT_ENTRY_NR);
  /** domain_ida */
  readonly dids = new Set<number>();
  /** Preserved context tables (bits as CONTEXT_TABLE_PRESERVED_BIT; legacy mode uses the even bits). */
  readonly preservedContextBits = new Uint8Array(64);
  /** The outgoing hw record (iommu->outgoing_preserved_state), 0 if none. */
  outgoingRecord = 0;
  /** Adopted from a preserved handover at this boot. */
  restored = false;

  constructor(private readonly kernel: Kernel, hw: VtdIommu) {
    this.hw = hw;
  }

  get token(): number { return this.hw.regBase; }
  private get mem() { return this.kernel.machine.memory; }

  private allocTablePage(): number {
    const pfn = this.kernel.mm.allocZeroedPages(0);
    if (pfn === null) throw new ErrnoError('ENOMEM', 'intel_iommu');
    return pfn;
  }

  /** Cold init: a fresh root table, programmed and translation enabled. */
  initFresh(): void {
    this.rootPfn = this.allocTablePage();
    this.mem.fill(this.rootPfn * PAGE_SIZE, PAGE_SIZE, 0);
    this.hw.setRootTablePointer(this.rootPfn * PAGE_SIZE);
    this.hw.invalidateAll();
    this.hw.setTranslationEnabled(true);
  }

  /**
   * intel_iommu_liveupdate_restore_root_table: use the preserved root table where it is (no
   * reset: DMAR_RTADDR still points at it) and restore every context table it references once.
   * `restore(phys)` claims a preserved page; one that cannot be claimed is returned as an error.
   */
  adopt(rootPhys: number, restore: (phys: number) => boolean, alreadyRestored: boolean): string | null {
    if (!alreadyRestored && !restore(rootPhys)) return `root table 0x${rootPhys.toString(16)} was not preserved`;
    this.rootPfn = rootPhys / PAGE_SIZE;
    for (let bus = 0; bus < ROOT_ENTRY_NR; bus++) {
      const lo = this.mem.readU32(rootPhys + bus * 16);
      if (!(lo & ROOT_PRESENT)) continue;
      const ctx = entryAddress(lo, this.mem.readU32(rootPhys + bus * 16 + 4));
      if (ctx <= 0 || ctx >= this.mem.size || ctx % PAGE_SIZE) return `root entry ${bus} points outside memory`;
      if (!alreadyRestored && !restore(ctx)) return `context table of bus ${bus} (0x${ctx.toString(16)}) was not preserved`;
      this.contextPfns[bus] = ctx / PAGE_SIZE;
    }
    if (this.hw.rootTableAddress !== rootPhys) this.hw.setRootTablePointer(rootPhys);
    this.hw.setTranslationEnabled(true);
    this.restored = true;
    return null;
  }

  /** A DID for a domain on this unit (domain_id_iommu / ida_alloc_range(1, ndoms - 1)). */
  allocDid(): number {
    for (let d = 1; d < VTD_NDOMS; d++) if (!this.dids.has(d)) { this.dids.add(d); return d; }
    throw new ErrnoError('ENOSPC', 'domain_attach_iommu', 'no free domain ID');
  }

  private contextEntryPhys(rid: number, create: boolean): number {
    const bus = rid >>> 8;
    let pfn = this.contextPfns[bus] as number;
    if (pfn === 0) {
      if (!create) return 0;
      pfn = this.allocTablePage();
      this.mem.fill(pfn * PAGE_SIZE, PAGE_SIZE, 0);
      this.contextPfns[bus] = pfn;
      const e = new Uint8Array(16);
      const v = new DataView(e.buffer);
      v.setUint32(0, ((pfn * PAGE_SIZE) % 2 ** 32 | ROOT_PRESENT) >>> 0, true);
      v.setUint32(4, Math.floor((pfn * PAGE_SIZE) / 2 ** 32), true);
      this.mem.write(this.rootPfn * PAGE_SIZE + bus * 16, e);
    }
    return pfn * PAGE_SIZE + (rid & 0xff) * 16;
  }

  /** domain_context_mapping_one: the device's context entry points at the domain's tables with `did`. */
  setContext(rid: number, topPhys: number, levels: number, did: number): void {
    const at = this.contextEntryPhys(rid, true);
    const e = new Uint8Array(16);
    const v = new DataView(e.buffer);
    v.setUint32(0, ((topPhys % 2 ** 32) | CONTEXT_PRESENT) >>> 0, true);
    v.setUint32(4, Math.floor(topPhys / 2 ** 32), true);
    v.setUint32(8, (awOfLevels(levels) | (did << CONTEXT_DID_SHIFT)) >>> 0, true);
    this.mem.write(at, e);
    this.hw.invalidateAll();
  }

  /** context_clear_entry + flush. */
  clearContext(rid: number): void {
    const at = this.contextEntryPhys(rid, false);
    if (at === 0) return;
    this.mem.fill(at, 16, 0);
    this.hw.invalidateAll();
  }

  /** The context entry as the hardware sees it: { top, did } or null. */
  readContext(rid: number): { top: number; did: number } | null {
    const at = this.contextEntryPhys(rid, false);
    if (at === 0) return null;
    const lo = this.mem.readU32(at);
    if (!(lo & CONTEXT_PRESENT)) return null;
    return { top: entryAddress(lo, this.mem.readU32(at + 4)), did: (this.mem.readU32(at + 8) >>> CONTEXT_DID_SHIFT) & 0xffff };
  }

  // ---- live update (outgoing) -----------------------------------------------------------------

  isContextTablePreserved(bus: number): boolean {
    const bit = contextTableBit(bus, 0);
    return ((this.preservedContextBits[bit >> 3] as number) & (1 << (bit & 7))) !== 0;
  }

  /** intel_iommu_preserve: the root table page. */
  preserveRoot(): void {
    this.kernel.khoOut?.preserveFolio(this.rootPfn, 0);
  }

  /**
   * preserve_iommu_context_tables: every currently allocated context table (aliases make a
   * per-bus choice unsafe), each once. Returns the pfns newly preserved (for rollback).
   */
  preserveContextTables(): number[] {
    const out = this.kernel.khoOut;
    const added: number[] = [];
    if (!out) return added;
    try {
      for (let bus = 0; bus < ROOT_ENTRY_NR; bus++) {
        const pfn = this.contextPfns[bus] as number;
        if (pfn === 0 || this.isContextTablePreserved(bus)) continue;
        out.preserveFolio(pfn, 0);
        const bit = contextTableBit(bus, 0);
        this.preservedContextBits[bit >> 3] = (this.preservedContextBits[bit >> 3] as number) | (1 << (bit & 7));
        added.push(bus);
      }
    } catch (e) {
      for (const bus of added) this.unpreserveContextTable(bus);
      throw e;
    }
    return added;
  }

  private unpreserveContextTable(bus: number): void {
    const bit = contextTableBit(bus, 0);
    this.kernel.khoOut?.unpreserveFolio(this.contextPfns[bus] as number, 0);
    this.preservedContextBits[bit >> 3] = (this.preservedContextBits[bit >> 3] as number) & ~(1 << (bit & 7));
  }

  /** intel_iommu_unpreserve: the context tables and the root table. */
  unpreserveAll(): void {
    for (let bus = 0; bus < ROOT_ENTRY_NR; bus++) if (this.isContextTablePreserved(bus)) this.unpreserveContextTable(bus);
    this.kernel.khoOut?.unpreserveFolio(this.rootPfn, 0);
  }

  /**
   * clear_unpreserved_context_entries (syscore shutdown before kexec): clear the context entry of
   * every device that is not preserved, clear root entries that point at unpreserved context
   * tables, then one global context-cache and IOTLB invalidation.
   */
  clearUnpreserved(unpreservedRids: readonly number[]): void {
    for (const rid of unpreservedRids) this.clearContext(rid);
    for (let bus = 0; bus < ROOT_ENTRY_NR; bus++) {
      if (this.isContextTablePreserved(bus)) continue;
      const at = this.rootPfn * PAGE_SIZE + bus * 16;
      if (this.mem.readU32(at) & ROOT_PRESENT) this.mem.fill(at, 8, 0);
    }
    this.hw.invalidateAll();
  }

  /** The bitmap as stored in iommu_intel_ser.context_tables_bitmap. */
  contextBitmapBytes(): Uint8Array { return this.preservedContextBits.slice(); }
}
