/**
 * Scratch areas: physically contiguous memory guaranteed to hold no preserved page. Count =
 * nodes + 2: [0] lowmem (below ARCH_LOW_ADDRESS_LIMIT), [1] global, [2..] one per node.
 * After a KHO kexec the very same areas are reused and kho_scratch= is ignored.
 */
import { PAGE_SIZE, PfnRanges } from '@liveupdate/hw';
import { ARCH_LOW_ADDRESS_LIMIT, CMA_MIN_ALIGNMENT_BYTES, khoScratch } from '../abi/kho.js';
import type { ScratchSizing } from '../kernel/cmdline.js';
import type { Memblock } from '../mm/memblock.js';

export interface ScratchArea {
  readonly addr: number;
  readonly size: number;
}

const ALIGN_PAGES = CMA_MIN_ALIGNMENT_BYTES / PAGE_SIZE;
/**
 * round_up(size, CMA_MIN_ALIGNMENT_BYTES). An area that computes to 0 (e.g. the global area
 * when all kernel memory is below 4 GiB) gets one pageblock, so every slot of the array is a
 * real area.
 */
const roundUpAlign = (bytes: number): number => Math.max(1, Math.ceil(bytes / CMA_MIN_ALIGNMENT_BYTES)) * CMA_MIN_ALIGNMENT_BYTES;

export function scratchRanges(areas: readonly ScratchArea[]): PfnRanges {
  const r = new PfnRanges(areas.length);
  for (const a of [...areas].sort((x, y) => x.addr - y.addr)) r.add(a.addr / PAGE_SIZE, (a.addr + a.size) / PAGE_SIZE);
  return r;
}

/** Sizes per area, from kho_scratch= or the scale applied to memblock_reserved_kern_size. */
export function scratchSizes(memblock: Memblock, sizing: ScratchSizing, nodes: number): number[] {
  const lowLimit = ARCH_LOW_ADDRESS_LIMIT / PAGE_SIZE;
  if (sizing.kind === 'explicit') {
    return [roundUpAlign(sizing.lowmem), roundUpAlign(sizing.global), ...Array.from({ length: nodes }, () => roundUpAlign(sizing.pernode))];
  }
  const scale = sizing.percent;
  const lowmem = roundUpAlign((memblock.reservedKernPages(lowLimit, -1) * PAGE_SIZE * scale) / 100);
  const all = (memblock.reservedKernPages(Number.MAX_SAFE_INTEGER, -1) * PAGE_SIZE * scale) / 100;
  const global = roundUpAlign(Math.max(all - lowmem, 0));
  const perNode = Array.from({ length: nodes }, (_, nid) =>
    roundUpAlign((memblock.reservedKernPages(Number.MAX_SAFE_INTEGER, nid) * PAGE_SIZE * scale) / 100));
  return [lowmem, global, ...perNode];
}

/**
 * kho_reserve_scratch on a cold boot. Returns the areas, or null after freeing whatever was
 * allocated (the caller logs and disables KHO).
 */
export function reserveScratch(memblock: Memblock, sizing: ScratchSizing, nodes: number): ScratchArea[] | null {
  const sizes = scratchSizes(memblock, sizing, nodes);
  const areas: ScratchArea[] = [];
  for (let i = 0; i < sizes.length; i++) {
    const pages = (sizes[i] as number) / PAGE_SIZE;
    const opts = i === 0 ? { maxPfn: ARCH_LOW_ADDRESS_LIMIT / PAGE_SIZE, kern: false }
      : i === 1 ? { kern: false } : { nid: i - 2, kern: false };
    const pfn = pages > 0 ? memblock.alloc(pages, ALIGN_PAGES, opts) : null;
    if (pfn === null) {
      for (const a of areas) memblock.free(a.addr / PAGE_SIZE, (a.addr + a.size) / PAGE_SIZE);
      return null;
    }
    areas.push({ addr: pfn * PAGE_SIZE, size: pages * PAGE_SIZE });
  }
  return areas;
}

export function encodeScratchArray(areas: readonly ScratchArea[]): Uint8Array {
  const out = new Uint8Array(areas.length * khoScratch.size);
  areas.forEach((a, i) => khoScratch.encodeInto(out, i * khoScratch.size, { addr: BigInt(a.addr), size: BigInt(a.size) }));
  return out;
}

/** Decode and validate an incoming scratch array; a string says why it is unusable. */
export function decodeScratchArray(bytes: Uint8Array, memorySize: number): ScratchArea[] | string {
  if (bytes.length === 0 || bytes.length % khoScratch.size !== 0) return `scratch array length ${bytes.length} is not a multiple of ${khoScratch.size}`;
  const areas: ScratchArea[] = [];
  for (let off = 0; off < bytes.length; off += khoScratch.size) {
    const { addr, size } = khoScratch.decode(bytes, off);
    if (size === 0n) return `scratch area ${areas.length} is empty`;
    if (addr % BigInt(PAGE_SIZE) !== 0n || size % BigInt(PAGE_SIZE) !== 0n) return `scratch area ${areas.length} is not page aligned`;
    if (addr + size > BigInt(memorySize)) return `scratch area ${areas.length} [0x${addr.toString(16)}, +0x${size.toString(16)}) is outside RAM`;
    areas.push({ addr: Number(addr), size: Number(size) });
  }
  const sorted = [...areas].sort((a, b) => a.addr - b.addr);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1] as ScratchArea;
    if ((sorted[i] as ScratchArea).addr < prev.addr + prev.size) return 'scratch areas overlap';
  }
  return areas;
}
