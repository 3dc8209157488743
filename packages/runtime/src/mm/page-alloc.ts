/**
 * The page allocator after memblock hands over. Free memory is a per-node frontier of runs
 * that have never been allocated (walked by a cursor, O(1) per allocation) plus per-order
 * stacks of freed blocks. No per-page state exists: a 64 TiB machine costs what its runs cost.
 * Freed blocks are not coalesced with their buddies; a higher order is split on demand.
 *
 * Cost must not follow machine size: on a 64 TiB machine pfns pass 2^31, where V8 stops
 * keeping numbers as small integers and boxes every double that crosses a call or lands in
 * an object field. So the per-node frontier lives in Float64Arrays, the common case (the
 * frontier or a freed block of the asked order) is small enough to inline into the caller,
 * and everything else is out of line.
 */
import type { NumaNode, PfnRanges } from '@liveupdate/hw';
import { POW2 } from './bits.js';

class PfnStack {
  private buf = new Float64Array(64);
  length = 0;
  push(pfn: number): void {
    if (this.length === this.buf.length) {
      const next = new Float64Array(this.buf.length * 2);
      next.set(this.buf);
      this.buf = next;
    }
    this.buf[this.length++] = pfn;
  }
  /** The last pushed pfn; the caller checks length first. */
  pop(): number {
    return this.buf[--this.length] as number;
  }
}

export const MAX_ORDER_SUPPORTED = 40;
/** Stacks per node: one per order 0..MAX_ORDER_SUPPORTED. */
const ORDERS = MAX_ORDER_SUPPORTED + 1;

export class PageAllocator {
  private readonly nodeCount: number;
  /** Per node: its free runs as (start, end) pairs, ascending. */
  private readonly runs: Float64Array[];
  /** Per node: index of the run the cursor is in (runs.length / 2 when the frontier is spent). */
  private readonly runAt: Int32Array;
  /** Per node: the next never-allocated pfn, and the end of its run (cursor === runEnd when spent). */
  private readonly cursor: Float64Array;
  private readonly runEnd: Float64Array;
  /** Freed blocks, stacks[nid * ORDERS + order]; created on first free. */
  private readonly stacks: Array<PfnStack | undefined>;
  /** [0] allocated pages, [1] free pages: doubles, as 64 TiB has more pages than a small integer holds. */
  private readonly counts = new Float64Array(2);

  constructor(private readonly numa: readonly NumaNode[], free: PfnRanges) {
    this.nodeCount = numa.length;
    this.runAt = new Int32Array(this.nodeCount);
    this.cursor = new Float64Array(this.nodeCount);
    this.runEnd = new Float64Array(this.nodeCount);
    this.stacks = new Array<PfnStack | undefined>(this.nodeCount * ORDERS).fill(undefined);
    this.runs = numa.map((n, nid) => {
      const pairs: number[] = [];
      for (const [s, e] of free.runs()) {
        const lo = Math.max(s, n.startPfn);
        const hi = Math.min(e, n.endPfn);
        if (hi > lo) { pairs.push(lo, hi); this.counts[1] = (this.counts[1] as number) + (hi - lo); }
      }
      const runs = Float64Array.from(pairs);
      this.cursor[nid] = runs.length > 0 ? (runs[0] as number) : 0;
      this.runEnd[nid] = runs.length > 0 ? (runs[1] as number) : 0;
      return runs;
    });
  }

  get allocatedPages(): number { return this.counts[0] as number; }
  get freePages(): number { return this.counts[1] as number; }

  /**
   * adjust_managed_page_count for pages that join the allocator already in use (a restored KHO
   * folio): counted as allocated, so freeing them later balances instead of going negative.
   */
  adoptAllocated(pages: number): void { this.counts[0] = (this.counts[0] as number) + pages; }

  /** A naturally aligned block of 2^order pages, preferring node `nid`; null is -ENOMEM. */
  alloc(order: number, nid = 0): number | null {
    // No block that large exists (MAX_PHYS_BITS): -ENOMEM, as for order > MAX_PAGE_ORDER.
    if (!(order >= 0 && order <= MAX_ORDER_SUPPORTED)) return null;
    const first = nid >= 0 && nid < this.nodeCount ? nid : 0;
    const pfn = this.allocOnNode(first, order);
    if (pfn < 0) return this.allocFallback(order, first);
    this.counts[0] = (this.counts[0] as number) + (POW2[order] as number);
    this.counts[1] = (this.counts[1] as number) - (POW2[order] as number);
    return pfn;
  }

  /** The preferred node has nothing of this order: try the others in turn. */
  private allocFallback(order: number, first: number): number | null {
    for (let k = 1; k < this.nodeCount; k++) {
      const pfn = this.allocOnNode((first + k) % this.nodeCount, order);
      if (pfn >= 0) {
        this.counts[0] = (this.counts[0] as number) + (POW2[order] as number);
        this.counts[1] = (this.counts[1] as number) - (POW2[order] as number);
        return pfn;
      }
    }
    return null;
  }

  free(pfn: number, order: number): void {
    if (order > MAX_ORDER_SUPPORTED) this.releaseGap(this.nodeFor(pfn), pfn, pfn + (POW2[order] as number));
    else this.stack(this.nodeFor(pfn), order).push(pfn);
    const pages = POW2[order] as number;
    this.counts[0] = (this.counts[0] as number) - pages;
    this.counts[1] = (this.counts[1] as number) + pages;
  }

  private nodeFor(pfn: number): number {
    for (let i = 0; i < this.numa.length; i++) {
      const n = this.numa[i] as NumaNode;
      if (pfn >= n.startPfn && pfn < n.endPfn) return i;
    }
    return 0;
  }

  private stack(nid: number, order: number): PfnStack {
    let s = this.stacks[nid * ORDERS + order];
    if (!s) { s = new PfnStack(); this.stacks[nid * ORDERS + order] = s; }
    return s;
  }

  /** The hot path, kept small so it inlines: a freed block of this order, else the frontier; -1 if neither has one. */
  private allocOnNode(nid: number, order: number): number {
    const reused = this.stacks[nid * ORDERS + order];
    if (reused !== undefined && reused.length > 0) return reused.pop();
    const size = POW2[order] as number;
    const cur = this.cursor[nid] as number;
    const aligned = order === 0 ? cur : Math.ceil(cur / size) * size;
    if (aligned + size <= (this.runEnd[nid] as number)) {
      if (aligned !== cur) this.releaseGap(nid, cur, aligned);
      this.cursor[nid] = aligned + size;
      return aligned;
    }
    return this.allocSlow(nid, order);
  }

  /** The rest of the current run is too small for this order: move on, else split a freed higher-order block. */
  private allocSlow(nid: number, order: number): number {
    const size = POW2[order] as number;
    const runs = this.runs[nid] as Float64Array;
    for (;;) {
      const cur = this.cursor[nid] as number;
      const end = this.runEnd[nid] as number;
      const aligned = Math.ceil(cur / size) * size;
      if (aligned + size <= end) {
        if (aligned !== cur) this.releaseGap(nid, cur, aligned);
        this.cursor[nid] = aligned + size;
        return aligned;
      }
      // Keep the tail of this run for smaller requests.
      if (end > cur) this.releaseGap(nid, cur, end);
      const next = (this.runAt[nid] as number) + 1;
      if (2 * next >= runs.length) { this.cursor[nid] = end; break; }
      this.runAt[nid] = next;
      this.cursor[nid] = runs[2 * next] as number;
      this.runEnd[nid] = runs[2 * next + 1] as number;
    }
    // Frontier exhausted: split a freed higher-order block.
    for (let o = order + 1; o < ORDERS; o++) {
      const s = this.stacks[nid * ORDERS + o];
      if (s === undefined || s.length === 0) continue;
      const big = s.pop();
      for (let split = o - 1; split >= order; split--) this.stack(nid, split).push(big + (POW2[split] as number));
      return big;
    }
    return -1;
  }

  /** Split [start, end) into naturally aligned blocks on the freed stacks. */
  private releaseGap(nid: number, start: number, end: number): void {
    let pfn = start;
    while (pfn < end) {
      let order = 0;
      while (order < MAX_ORDER_SUPPORTED && pfn % 2 ** (order + 1) === 0 && pfn + 2 ** (order + 1) <= end) order++;
      this.stack(nid, order).push(pfn);
      pfn += 2 ** order;
    }
  }
}
