/**
 * kho_preserve_vmalloc / kho_restore_vmalloc: a vmalloc area handed over as a chain of
 * one-page chunks (u64 next + 511 u64 run addresses, zero-terminated) described by a
 * 16-byte struct kho_vmalloc that the caller embeds in its own ABI.
 */
import { PAGE_SIZE } from '@liveupdate/hw';
import {
  KHO_VMALLOC_ALLOC, KHO_VMALLOC_CHUNK_NEXT_OFFSET, KHO_VMALLOC_CHUNK_PHYS_OFFSET, KHO_VMALLOC_HUGE_VMAP, KHO_VMALLOC_SIZE,
  type khoVmalloc,
} from '../abi/kho.js';
import type { StructValue } from '../abi/struct.js';
import { ErrnoError } from '../errno.js';
import type { Mm } from '../mm/mm.js';
import { VmArea } from '../mm/vmalloc.js';
import type { KhoOut } from './kho.js';
import type { KhoIn } from './kho-in.js';

export type KhoVmallocDesc = StructValue<typeof khoVmalloc.fields>;

/** Preserve every run and the chunk pages; full rollback on error. */
export function khoPreserveVmalloc(kho: KhoOut, mm: Mm, area: VmArea): KhoVmallocDesc {
  const chunks: number[] = [];
  const runsDone: number[] = [];
  const runPages = 2 ** area.order;
  const rollback = (): void => {
    for (const pfn of runsDone) kho.unpreservePages(pfn, runPages);
    for (const c of chunks) { kho.unpreservePages(c, 1); mm.freePages(c, 0); }
  };
  try {
    let slot = KHO_VMALLOC_SIZE;
    for (const pfn of area.runs) {
      if (slot === KHO_VMALLOC_SIZE) {
        const c = mm.allocZeroedPages(0);
        if (c === null) throw new ErrnoError('ENOMEM', 'kho_preserve_vmalloc');
        kho.preservePages(c, 1);
        const prev = chunks[chunks.length - 1];
        if (prev !== undefined) mm.memory.writeU64(prev * PAGE_SIZE + KHO_VMALLOC_CHUNK_NEXT_OFFSET, c * PAGE_SIZE);
        chunks.push(c);
        slot = 0;
      }
      kho.preservePages(pfn, runPages);
      runsDone.push(pfn);
      const chunk = chunks[chunks.length - 1] as number;
      mm.memory.writeU64(chunk * PAGE_SIZE + KHO_VMALLOC_CHUNK_PHYS_OFFSET + 8 * slot, pfn * PAGE_SIZE);
      slot++;
    }
  } catch (e) {
    rollback();
    throw e;
  }
  return {
    first: BigInt((chunks[0] ?? 0) * PAGE_SIZE),
    total_pages: area.pageCount,
    flags: KHO_VMALLOC_ALLOC | (area.order > 0 ? KHO_VMALLOC_HUGE_VMAP : 0),
    order: area.order,
  };
}

/** Walk the chunk chain of a descriptor (outgoing or incoming), bounded by total_pages. */
function chunkChain(
  mm: Mm,
  desc: KhoVmallocDesc,
  isChunk: (pfn: number) => boolean = () => true,
): { chunks: number[]; runs: number[] } | null {
  const chunks: number[] = [];
  const seen = new Set<number>();
  const runs: number[] = [];
  const runPages = 2 ** desc.order;
  const maxRuns = Math.ceil(desc.total_pages / runPages);
  let next = Number(desc.first);
  while (next !== 0) {
    if (next % PAGE_SIZE !== 0 || next + PAGE_SIZE > mm.memory.size) return null;
    if (chunks.length > maxRuns / KHO_VMALLOC_SIZE + 1) return null; // a longer chain is garbage
    // Every chunk must be a preserved page, each visited once: a cycle stops at its first repeat.
    const pfn = next / PAGE_SIZE;
    if (seen.has(pfn) || !isChunk(pfn)) return null;
    seen.add(pfn);
    chunks.push(pfn);
    for (let i = 0; i < KHO_VMALLOC_SIZE; i++) {
      const phys = mm.memory.readU64Number(next + KHO_VMALLOC_CHUNK_PHYS_OFFSET + 8 * i);
      if (phys === 0) break;
      if (phys % PAGE_SIZE !== 0 || runs.length >= maxRuns) return null;
      runs.push(phys / PAGE_SIZE);
    }
    next = mm.memory.readU64Number(next + KHO_VMALLOC_CHUNK_NEXT_OFFSET);
  }
  return { chunks, runs };
}

/** kho_unpreserve_vmalloc: data runs and chunk pages unpreserved, chunks freed. */
export function khoUnpreserveVmalloc(kho: KhoOut, mm: Mm, desc: KhoVmallocDesc): void {
  const chain = chunkChain(mm, desc);
  if (!chain) return;
  for (const pfn of chain.runs) kho.unpreservePages(pfn, 2 ** desc.order);
  for (const c of chain.chunks) { kho.unpreservePages(c, 1); mm.freePages(c, 0); }
}

/**
 * kho_restore_vmalloc: null if the flags are unsupported, the count does not match
 * total_pages, or any run or chunk fails to restore.
 */
export function khoRestoreVmalloc(kin: KhoIn, mm: Mm, desc: KhoVmallocDesc): VmArea | null {
  if ((desc.flags & ~(KHO_VMALLOC_ALLOC | KHO_VMALLOC_HUGE_VMAP)) !== 0) return null;
  if (desc.order > 20) return null;
  const chain = chunkChain(mm, desc, (pfn) => kin.heads.peek(pfn) === 0);
  if (!chain) return null;
  const runPages = 2 ** desc.order;
  if (chain.runs.length * runPages !== desc.total_pages) return null;
  for (const pfn of chain.runs) if (!kin.restorePages(pfn * PAGE_SIZE, runPages)) return null;
  for (const c of chain.chunks) {
    if (!kin.restorePages(c * PAGE_SIZE, 1)) return null;
    mm.freePages(c, 0);
  }
  return new VmArea(mm, Float64Array.from(chain.runs), desc.order, desc.total_pages * PAGE_SIZE);
}
