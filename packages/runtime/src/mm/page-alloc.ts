/**
 * The page allocator after memblock hands over. Free memory is a per-node frontier of runs
 * that have never been allocated (walked by a cursor, O(1) per allocation) plus per-order
 * stacks of freed blocks. No per-page state exists: a 64 TiB machine costs what its runs cost.
 * Freed blocks are not coalesced with their buddies; a higher order is split on demand.
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
  pop(): number | undefined {
    return this.length > 0 ? (this.buf[--this.length] as number) : undefined;
  }
}

interface NodeFree {
  readonly runs: Array<[start: number, end: number]>;
  run: number;
  cursor: number;
  readonly stacks: PfnStack[];
}

export const MAX_ORDER_SUPPORTED = 40;

export class PageAllocator {
  private readonly nodes: NodeFree[];
  private allocated = 0;
  private freePageCount = 0;

  constructor(private readonly numa: readonly NumaNode[], free: PfnRanges) {
    this.nodes = numa.map((n) => {
      const runs: Array<[number, number]> = [];
      for (const [s, e] of free.runs()) {
        const lo = Math.max(s, n.startPfn);
        const hi = Math.min(e, n.endPfn);
        if (hi > lo) { runs.push([lo, hi]); this.freePageCount += hi - lo; }
      }
      return { runs, run: 0, cursor: runs[0]?.[0] ?? 0, stacks: [] };
    });
  }

  get allocatedPages(): number { return this.allocated; }
  get freePages(): number { return this.freePageCount; }

  /**
   * adjust_managed_page_count for pages that join the allocator already in use (a restored KHO
   * folio): counted as allocated, so freeing them later balances instead of going negative.
   */
  adoptAllocated(pages: number): void { this.allocated += pages; }

  /** A naturally aligned block of 2^order pages, preferring node `nid`; null is -ENOMEM. */
  alloc(order: number, nid = 0): number | null {
    const count = this.nodes.length;
    const first = nid >= 0 && nid < count ? nid : 0;
    for (let k = 0; k < count; k++) {
      const pfn = this.allocOnNode(this.nodes[(first + k) % count] as NodeFree, order);
      if (pfn !== null) {
        const pages = POW2[order] as number;
        this.allocated += pages;
        this.freePageCount -= pages;
        return pfn;
      }
    }
    return null;
  }

  free(pfn: number, order: number): void {
    const node = this.nodeFor(pfn);
    this.stack(node, order).push(pfn);
    const pages = POW2[order] as number;
    this.allocated -= pages;
    this.freePageCount += pages;
  }

  private nodeFor(pfn: number): NodeFree {
    for (let i = 0; i < this.numa.length; i++) {
      const n = this.numa[i] as NumaNode;
      if (pfn >= n.startPfn && pfn < n.endPfn) return this.nodes[i] as NodeFree;
    }
    return this.nodes[0] as NodeFree;
  }

  private stack(node: NodeFree, order: number): PfnStack {
    let s = node.stacks[order];
    if (!s) { s = new PfnStack(); node.stacks[order] = s; }
    return s;
  }

  private allocOnNode(node: NodeFree, order: number): number | null {
    const reused = node.stacks[order]?.pop();
    if (reused !== undefined) return reused;
    const size = POW2[order] as number;
    while (node.run < node.runs.length) {
      const [, end] = node.runs[node.run] as [number, number];
      const aligned = Math.ceil(node.cursor / size) * size;
      if (aligned + size <= end) {
        this.releaseGap(node, node.cursor, aligned);
        node.cursor = aligned + size;
        return aligned;
      }
      // The rest of this run is too small for this order: keep it for smaller requests.
      this.releaseGap(node, node.cursor, end);
      node.run++;
      node.cursor = node.runs[node.run]?.[0] ?? 0;
    }
    // Frontier exhausted: split a freed higher-order block.
    for (let o = order + 1; o < node.stacks.length; o++) {
      const big = node.stacks[o]?.pop();
      if (big === undefined) continue;
      for (let split = o - 1; split >= order; split--) this.stack(node, split).push(big + 2 ** split);
      return big;
    }
    return null;
  }

  /** Split [start, end) into naturally aligned blocks on the freed stacks. */
  private releaseGap(node: NodeFree, start: number, end: number): void {
    let pfn = start;
    while (pfn < end) {
      let order = 0;
      while (order < MAX_ORDER_SUPPORTED && pfn % 2 ** (order + 1) === 0 && pfn + 2 ** (order + 1) <= end) order++;
      this.stack(node, order).push(pfn);
      pfn += 2 ** order;
    }
  }
}
