/**
 * hugeTLB pools per kernel: `hugepagesz=2M hugepages=N hugepagesz=1G hugepages=M` (or a bare
 * `hugepages=N` for 2 MiB) reserve huge pages at boot. After a live update the pool is sized
 * minus the preserved pages the hugetlb FLB reports, so the new kernel does not over-allocate.
 */
import { remembered, type Kernel } from '@liveupdate/sdk';

export interface HugetlbPool {
  readonly order: number;
  /** Pages the pool holds in all: free + in use. */
  total: number;
  readonly free: number[];
  /** Huge pages that came back through the live update (in use, part of the pool). */
  preserved: number;
  /** Requested by the command line. */
  readonly configured: number;
}

const pools = new WeakMap<Kernel, Map<number, HugetlbPool>>();

/** hugepagesz=/hugepages= pairs: order → count. */
export function parseHugepages(cmdline: string): Map<number, number> {
  const out = new Map<number, number>();
  let order = 9;
  for (const word of cmdline.trim().split(/\s+/)) {
    const [k, v] = word.split('=');
    if (k === 'hugepagesz' && v) order = /^1G$/i.test(v) ? 18 : /^2M$/i.test(v) ? 9 : -1;
    else if (k === 'hugepages' && v && order > 0 && /^\d+$/.test(v)) out.set(order, Number(v));
  }
  return out;
}

/** parseHugepages per command line, kept read-only (every boot of a matrix parses the same one). */
const hugepagesOf: (cmdline: string) => ReadonlyMap<number, number> = remembered(parseHugepages, 256);

/** Boot-time pool allocation, reduced by the pages the previous kernel preserved. */
export function hugetlbInit(kernel: Kernel, preserved: ReadonlyMap<number, number>): Map<number, HugetlbPool> {
  const config = hugepagesOf(kernel.cmdline);
  const map = new Map<number, HugetlbPool>();
  for (const order of new Set([...config.keys(), ...preserved.keys()])) {
    const configured = config.get(order) ?? 0;
    const kept = preserved.get(order) ?? 0;
    const pool: HugetlbPool = { order, total: kept, free: [], preserved: kept, configured };
    for (let i = kept; i < configured; i++) {
      const pfn = kernel.mm.allocPages(order);
      if (pfn === null) break;
      pool.free.push(pfn);
      pool.total++;
    }
    // The free list is popped from its end: lowest pages first, so a file faulted in order gets
    // physically contiguous folios (one synthetic run, not one per folio).
    pool.free.reverse();
    map.set(order, pool);
    kernel.dmesg.log('info', 'hugetlb', `${(4 << order) >> 10} MiB pages: ${configured} configured, ${kept} preserved, ${pool.total - kept} allocated`);
  }
  pools.set(kernel, map);
  return map;
}

export function hugetlbPools(kernel: Kernel): ReadonlyMap<number, HugetlbPool> {
  return pools.get(kernel) ?? new Map();
}

export function hugetlbAlloc(kernel: Kernel, order: number): number | null {
  return pools.get(kernel)?.get(order)?.free.pop() ?? null;
}

export function hugetlbFree(kernel: Kernel, order: number, pfn: number): void {
  const pool = pools.get(kernel)?.get(order);
  if (pool) pool.free.push(pfn);
  else kernel.mm.freePages(pfn, order);
}

/** A restored huge folio joins its pool as a page in use. */
export function hugetlbAdopt(kernel: Kernel, order: number): void {
  let map = pools.get(kernel);
  if (!map) { map = new Map(); pools.set(kernel, map); }
  let pool = map.get(order);
  if (!pool) { pool = { order, total: 0, free: [], preserved: 0, configured: 0 }; map.set(order, pool); }
  if (pool.preserved === 0) pool.total++;
}
