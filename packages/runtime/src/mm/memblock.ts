/**
 * memblock: the early boot allocator. Ranges only; nothing here costs per page. On a KHO
 * boot it is restricted to the scratch areas (memblock_set_kho_scratch_only) until the
 * preserved memory has been reserved.
 */
import { PfnRanges, subtractRanges, type NumaNode } from '@liveupdate/hw';

export interface MemblockAllocOptions {
  /** Lowest and highest (exclusive) page frame allowed. */
  readonly minPfn?: number;
  readonly maxPfn?: number;
  /** Allocate on this node only (exact_nid). */
  readonly nid?: number;
  /** Counts toward memblock_reserved_kern_size (scratch sizing). Default true. */
  readonly kern?: boolean;
}

export class Memblock {
  readonly memory: PfnRanges;
  readonly reserved = new PfnRanges();
  /** Kernel reservations (MEMBLOCK_RSRV_KERN) for scratch sizing: few, kept as a list. */
  private readonly kern: Array<[start: number, end: number]> = [];
  private scratch: PfnRanges | null = null;
  private scratchOnly = false;

  constructor(pageCount: number, private readonly nodes: readonly NumaNode[]) {
    this.memory = PfnRanges.of([0, pageCount]);
  }

  /** memblock_mark_kho_scratch for each area, then memblock_set_kho_scratch_only. */
  setScratchOnly(scratch: PfnRanges): void {
    this.scratch = scratch;
    this.scratchOnly = true;
  }

  clearScratchOnly(): void { this.scratchOnly = false; }
  get isScratchOnly(): boolean { return this.scratchOnly; }

  reserve(start: number, end: number, kern = false): void {
    this.reserved.add(start, end);
    if (kern) this.kern.push([start, end]);
  }

  /** memblock_reserved_kern_size: kernel-reserved pages below maxPfn, on node nid (-1 any). */
  reservedKernPages(maxPfn: number, nid: number): number {
    let total = 0;
    for (const [s, e] of this.kern) {
      let lo = s;
      let hi = Math.min(e, maxPfn);
      if (nid >= 0) {
        const n = this.nodes[nid];
        if (!n) continue;
        lo = Math.max(lo, n.startPfn);
        hi = Math.min(hi, n.endPfn);
      }
      if (hi > lo) total += hi - lo;
    }
    return total;
  }

  /** Top-down allocation of `pages` aligned to `alignPages`; null when nothing fits. */
  alloc(pages: number, alignPages: number, opts: MemblockAllocOptions = {}): number | null {
    let lo = opts.minPfn ?? 0;
    let hi = opts.maxPfn ?? Number.MAX_SAFE_INTEGER;
    if (opts.nid !== undefined && opts.nid >= 0) {
      const n = this.nodes[opts.nid];
      if (!n) return null;
      lo = Math.max(lo, n.startPfn);
      hi = Math.min(hi, n.endPfn);
    }
    let free = subtractRanges(this.memory, this.reserved);
    if (this.scratchOnly && this.scratch) free = free.intersect(this.scratch);
    for (let i = free.runCount - 1; i >= 0; i--) {
      const s = Math.max(free.start(i), lo);
      const e = Math.min(free.end(i), hi);
      if (e - s < pages) continue;
      const start = Math.floor((e - pages) / alignPages) * alignPages;
      if (start >= s) {
        this.reserve(start, start + pages, opts.kern ?? true);
        return start;
      }
    }
    return null;
  }

  free(start: number, end: number): void {
    this.reserved.remove(start, end);
    for (let i = this.kern.length - 1; i >= 0; i--) {
      const k = this.kern[i];
      if (k && k[0] === start && k[1] === end) this.kern.splice(i, 1);
    }
  }
}
