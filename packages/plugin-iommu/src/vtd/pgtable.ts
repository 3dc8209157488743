/**
 * A VT-d second-level I/O page table in emulated memory (drivers/iommu/generic_pt, format
 * vtdss): 4 levels of 512 × 8 B entries for a 48-bit IOVA space, 4 KiB leaves and 2 MiB / 1 GiB
 * leaves (PS = 1) where the IOVA and the physical range are aligned. The hardware walks exactly
 * these bytes; the table pages are listed in a typed array (no object per page), which is what
 * the domain preserves page by page (iommu_preserve_pages) and what the incoming kernel rebuilds
 * by walking the tables from the preserved top.
 */
import { vtdLayout, type PhysMemory } from '@liveupdate/hw';
import { ErrnoError, PAGE_SIZE } from '@liveupdate/sdk';

const { SL_PTE_READ, SL_PTE_WRITE, SL_PTE_LARGE_PAGE, entryAddress } = vtdLayout;
export const IOMMU_READ = 1;
export const IOMMU_WRITE = 2;
const MiB2 = 2 ** 21;
const GiB = 2 ** 30;

/** The allocator a table draws its pages from (the kernel's page allocator). */
export interface TablePageAllocator {
  /** A zeroed page; its pfn, or null when memory is exhausted. */
  alloc(): number | null;
  free(pfn: number): void;
}

export class IoPageTable {
  /** Levels below and including the top (4 for a 48-bit address width). */
  readonly levels: number;
  readonly topPfn: number;
  private pfns: Float64Array;
  private count = 0;
  private readonly views = new Map<number, Uint32Array>();

  private constructor(private readonly memory: PhysMemory, private readonly pages: TablePageAllocator | null, topPfn: number, levels: number) {
    this.levels = levels;
    this.topPfn = topPfn;
    this.pfns = new Float64Array(16);
  }

  /** A new, empty table (the domain's top-level page allocated now). */
  static create(memory: PhysMemory, pages: TablePageAllocator, levels = 4): IoPageTable {
    const top = pages.alloc();
    if (top === null) throw new ErrnoError('ENOMEM', 'iommu_domain_alloc');
    const t = new IoPageTable(memory, pages, top, levels);
    t.track(top);
    return t;
  }

  get topPhys(): number { return this.topPfn * PAGE_SIZE; }
  /** VT-d top_level as generic_pt numbers it (0 = the 4 KiB leaf level). */
  get topLevel(): number { return this.levels - 1; }
  /** Bits of IOVA space the table covers. */
  get vasz(): number { return 12 + 9 * this.levels; }
  get tablePageCount(): number { return this.count; }
  /** Table page frames, in allocation (or discovery) order. */
  tablePfns(): Float64Array { return this.pfns.subarray(0, this.count); }

  private track(pfn: number): void {
    if (this.count === this.pfns.length) {
      const grown = new Float64Array(this.pfns.length * 2);
      grown.set(this.pfns);
      this.pfns = grown;
    }
    this.pfns[this.count++] = pfn;
  }

  private view(pfn: number): Uint32Array {
    let v = this.views.get(pfn);
    if (!v) {
      const page = this.memory.mapPage(pfn);
      v = new Uint32Array(page.buffer, page.byteOffset, PAGE_SIZE / 4);
      this.views.set(pfn, v);
    }
    return v;
  }

  private static bits(prot: number): number {
    return ((prot & IOMMU_READ) ? SL_PTE_READ : 0) | ((prot & IOMMU_WRITE) ? SL_PTE_WRITE : 0);
  }

  /**
   * Map [iova, iova + length) to [phys, phys + length). Uses the largest leaf both addresses
   * are aligned to (1 GiB, 2 MiB, else 4 KiB) when `largePages`. An IOVA already mapped is EEXIST.
   */
  map(iova: number, phys: number, length: number, prot: number, largePages = true): void {
    if (iova % PAGE_SIZE || phys % PAGE_SIZE || length % PAGE_SIZE || length <= 0) throw new ErrnoError('EINVAL', 'iommu_map', 'unaligned');
    if (iova + length > 2 ** this.vasz) throw new ErrnoError('EINVAL', 'iommu_map', `beyond ${this.vasz}-bit IOVA space`);
    const pteBits = IoPageTable.bits(prot);
    let done = 0;
    while (done < length) {
      const va = iova + done;
      const pa = phys + done;
      const left = length - done;
      let leafLevel = 1;
      if (largePages && va % GiB === 0 && pa % GiB === 0 && left >= GiB) leafLevel = 3;
      else if (largePages && va % MiB2 === 0 && pa % MiB2 === 0 && left >= MiB2) leafLevel = 2;
      this.setLeaf(va, pa, leafLevel, pteBits);
      done += 2 ** (12 + 9 * (leafLevel - 1));
    }
  }

  private setLeaf(iova: number, phys: number, leafLevel: number, pteBits: number): void {
    let pfn = this.topPfn;
    for (let level = this.levels; level > leafLevel; level--) {
      const v = this.view(pfn);
      const i = (Math.floor(iova / 2 ** (12 + 9 * (level - 1))) % 512) * 2;
      const lo = v[i] as number;
      if (lo & (SL_PTE_READ | SL_PTE_WRITE)) {
        if (lo & SL_PTE_LARGE_PAGE) throw new ErrnoError('EEXIST', 'iommu_map', `iova 0x${iova.toString(16)} inside a large leaf`);
        pfn = entryAddress(lo, v[i + 1] as number) / PAGE_SIZE;
        continue;
      }
      const next = this.pages?.alloc() ?? null;
      if (next === null) throw new ErrnoError('ENOMEM', 'iommu_map');
      this.track(next);
      v[i] = ((next * PAGE_SIZE) % 2 ** 32 | SL_PTE_READ | SL_PTE_WRITE) >>> 0;
      v[i + 1] = Math.floor((next * PAGE_SIZE) / 2 ** 32);
      pfn = next;
    }
    const v = this.view(pfn);
    const i = (Math.floor(iova / 2 ** (12 + 9 * (leafLevel - 1))) % 512) * 2;
    if ((v[i] as number) & (SL_PTE_READ | SL_PTE_WRITE)) throw new ErrnoError('EEXIST', 'iommu_map', `iova 0x${iova.toString(16)} already mapped`);
    v[i] = ((phys % 2 ** 32) | pteBits | (leafLevel > 1 ? SL_PTE_LARGE_PAGE : 0)) >>> 0;
    v[i + 1] = Math.floor(phys / 2 ** 32);
  }

  /** Clear the leaves of [iova, iova + length); table pages stay (freed with the domain). */
  unmap(iova: number, length: number): void {
    let done = 0;
    while (done < length) {
      const va = iova + done;
      let pfn = this.topPfn;
      let step = PAGE_SIZE;
      for (let level = this.levels; level >= 1; level--) {
        const v = this.view(pfn);
        const shift = 12 + 9 * (level - 1);
        const i = (Math.floor(va / 2 ** shift) % 512) * 2;
        const lo = v[i] as number;
        if (!(lo & (SL_PTE_READ | SL_PTE_WRITE))) { step = 2 ** shift - (va % 2 ** shift); break; }
        if (level === 1 || (lo & SL_PTE_LARGE_PAGE)) { v[i] = 0; v[i + 1] = 0; step = 2 ** shift - (va % 2 ** shift); break; }
        pfn = entryAddress(lo, v[i + 1] as number) / PAGE_SIZE;
      }
      done += step;
    }
  }

  /** Software walk (iommu_iova_to_phys): the physical address of `iova`, or null if unmapped. */
  lookup(iova: number): number | null {
    let pfn = this.topPfn;
    for (let level = this.levels; level >= 1; level--) {
      const shift = 12 + 9 * (level - 1);
      const at = pfn * PAGE_SIZE + (Math.floor(iova / 2 ** shift) % 512) * 8;
      if (this.memory.pageKind(pfn) === 'poison') return null;
      const lo = this.memory.readU32(at);
      if (!(lo & (SL_PTE_READ | SL_PTE_WRITE))) return null;
      const addr = entryAddress(lo, this.memory.readU32(at + 4));
      if (level === 1 || (lo & SL_PTE_LARGE_PAGE)) return addr - (addr % 2 ** shift) + (iova % 2 ** shift);
      pfn = addr / PAGE_SIZE;
    }
    return null;
  }

  /** Free every table page (domain free). */
  freeAll(): void {
    if (!this.pages) return;
    for (const pfn of this.tablePfns()) this.pages.free(pfn);
    this.count = 0;
    this.views.clear();
  }

  /**
   * The incoming kernel: rebuild the page list by walking the preserved tables from `topPhys`.
   * Hostile bytes: a table outside memory, a table reached twice (a cycle or aliasing) or a
   * leaf-level PS bit is refused with a message; `isRestorable(pfn)` says whether a page was
   * handed over (a table that was not is reported, never followed).
   */
  static adopt(memory: PhysMemory, topPhys: number, levels: number, isRestorable: (pfn: number) => boolean, pages: TablePageAllocator | null): IoPageTable | string {
    if (topPhys % PAGE_SIZE !== 0 || topPhys <= 0 || topPhys >= memory.size) return `top table 0x${topPhys.toString(16)} is not a page of RAM`;
    if (levels < 3 || levels > 5) return `top level ${levels - 1} is not a VT-d table depth`;
    const t = new IoPageTable(memory, pages, topPhys / PAGE_SIZE, levels);
    const seen = new Set<number>();
    const stack: Array<[pfn: number, level: number]> = [[t.topPfn, levels]];
    while (stack.length > 0) {
      const [pfn, level] = stack.pop() as [number, number];
      if (seen.has(pfn)) return `table page 0x${(pfn * PAGE_SIZE).toString(16)} is reached twice`;
      seen.add(pfn);
      if (!isRestorable(pfn)) return `level ${level} table 0x${(pfn * PAGE_SIZE).toString(16)} was not preserved`;
      t.track(pfn);
      if (level === 1) continue;
      for (let i = 0; i < 512; i++) {
        const lo = memory.readU32(pfn * PAGE_SIZE + i * 8);
        if (!(lo & (SL_PTE_READ | SL_PTE_WRITE))) continue;
        if (lo & SL_PTE_LARGE_PAGE) {
          if (level > 3) return `a large leaf at level ${level}`;
          continue;
        }
        const next = entryAddress(lo, memory.readU32(pfn * PAGE_SIZE + i * 8 + 4));
        if (next <= 0 || next >= memory.size) return `level ${level} entry ${i} points outside memory (0x${next.toString(16)})`;
        stack.push([next / PAGE_SIZE, level - 1]);
      }
    }
    return t;
  }
}
