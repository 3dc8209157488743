/**
 * The kernel's view of memory: physical memory plus memblock during early boot, then the
 * page allocator. "Virtual addresses" are physical ones (the direct map).
 */
import { PAGE_SIZE, PfnRanges, subtractRanges, type Machine, type PhysMemory } from '@liveupdate/hw';
import { Memblock } from './memblock.js';
import { PageAllocator } from './page-alloc.js';

export class Mm {
  readonly memory: PhysMemory;
  readonly memblock: Memblock;
  private buddy: PageAllocator | null = null;

  constructor(readonly machine: Machine) {
    this.memory = machine.memory;
    this.memblock = new Memblock(this.memory.pageCount, machine.numaNodes);
  }

  get pageCount(): number { return this.memory.pageCount; }
  get allocator(): PageAllocator | null { return this.buddy; }

  /** mm_core_init: memblock hands every free page outside `exclude` (scratch/CMA) to the page allocator. */
  startPageAllocator(exclude: PfnRanges): void {
    const free = subtractRanges(subtractRanges(this.memblock.memory, this.memblock.reserved), exclude);
    this.buddy = new PageAllocator(this.machine.numaNodes, free);
  }

  /** alloc_pages(order) on node nid: a pfn, or null (-ENOMEM). Falls back to memblock before the page allocator is up. */
  allocPages(order: number, nid = 0): number | null {
    // Kept tiny so callers inline it: a pfn above 2^31 returned through a call is boxed.
    const buddy = this.buddy;
    return buddy !== null ? buddy.alloc(order, nid) : this.earlyAllocPages(order);
  }

  private earlyAllocPages(order: number): number | null {
    return this.memblock.alloc(2 ** order, 2 ** order, { nid: -1 });
  }

  allocZeroedPages(order: number, nid = 0): number | null {
    const pfn = this.allocPages(order, nid);
    if (pfn !== null) this.memory.fill(pfn * PAGE_SIZE, 2 ** order * PAGE_SIZE, 0);
    return pfn;
  }

  freePages(pfn: number, order: number): void {
    if (this.buddy) this.buddy.free(pfn, order);
    else this.memblock.free(pfn, pfn + 2 ** order);
  }

  nodeOf(pfn: number): number { return this.machine.nodeOfPfn(pfn); }
}

/** A set of page frames as runs; used for reservations that outlive memblock. */
export const emptyRanges = (): PfnRanges => new PfnRanges();
