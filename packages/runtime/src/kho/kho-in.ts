/**
 * Kexec HandOver, incoming side: kho_populate (validate the handover before trusting it),
 * kho_memory_init (reserve every preserved block, mark head pages with KHOP) and the restore
 * API. Any failure before the memory is reserved disables KHO revival and the boot goes on as
 * a cold one; the preserved memory is then ordinary free memory.
 */
import { PAGE_SHIFT, PAGE_SIZE, PfnRanges, unionRanges, type PhysMemory } from '@liveupdate/hw';
import {
  KHO_FDT_COMPATIBLE, KHO_FDT_MEMORY_MAP_PROP_NAME, KHO_SUB_TREE_PROP_NAME, KHO_SUB_TREE_SIZE_PROP_NAME, khoData,
} from '../abi/kho.js';
import { ErrnoError } from '../errno.js';
import type { Dmesg } from '../kernel/dmesg.js';
import { fdtCheckHeader, fdtParse, FdtError, readPropString, readPropU64LE, type FdtNode } from '../lib/fdt.js';
import { isAligned } from '../mm/bits.js';
import { HEAD_SEG_BITS, KhoHeadMap } from '../mm/memmap.js';
import type { Mm } from '../mm/mm.js';
import { splitRun, type Folio } from './kho.js';
import { leafRuns, walkTracker } from './radix.js';
import { decodeScratchArray, scratchRanges, type ScratchArea } from './scratch.js';

export interface KhoPopulated {
  readonly fdtPhys: number;
  readonly fdtSize: number;
  readonly root: FdtNode;
  readonly memoryMapPhys: number;
  readonly scratch: readonly ScratchArea[];
  readonly scratchArrayPhys: number;
  readonly scratchArraySize: number;
}

const hex = (n: number | bigint): string => `0x${n.toString(16)}`;

/**
 * kho_populate maps the FDT and the scratch array with early_memremap, which maps at most
 * NR_FIX_BTMAPS (64) pages: anything larger cannot be mapped and disables revival. Without this
 * bound a hostile fdt_size would make the boot read gigabytes.
 */
const EARLY_MEMREMAP_MAX = 64 * PAGE_SIZE;

/** kho_populate: every check that must pass before the handover is trusted; a string says why not. */
export function khoPopulate(memory: PhysMemory, khoDataBytes: Uint8Array): KhoPopulated | string {
  if (khoDataBytes.length < khoData.size) return `setup_data too short (${khoDataBytes.length} bytes)`;
  const d = khoData.decode(khoDataBytes);
  const fdtPhys = Number(d.fdt_addr);
  const fdtSize = Number(d.fdt_size);
  if (d.fdt_addr + d.fdt_size > BigInt(memory.size) || fdtSize === 0) return `FDT ${hex(d.fdt_addr)}+${hex(d.fdt_size)} is outside RAM`;
  if (fdtSize > EARLY_MEMREMAP_MAX) return `failed to memremap FDT ${hex(d.fdt_addr)}+${hex(d.fdt_size)}`;
  const bytes = memory.read(fdtPhys, fdtSize);
  const bad = fdtCheckHeader(bytes);
  if (bad) return `handover FDT at ${hex(fdtPhys)} is invalid: ${bad}`;
  let root: FdtNode;
  try {
    root = fdtParse(bytes);
  } catch (e) {
    if (e instanceof FdtError) return `handover FDT at ${hex(fdtPhys)} is invalid: ${e.code}`;
    throw e;
  }
  const compatible = readPropString(root, 'compatible');
  if (compatible !== KHO_FDT_COMPATIBLE) return `handover FDT is incompatible: '${compatible ?? ''}' (expected '${KHO_FDT_COMPATIBLE}')`;
  const map = readPropU64LE(root, KHO_FDT_MEMORY_MAP_PROP_NAME);
  if (map === undefined) return `handover FDT has no valid ${KHO_FDT_MEMORY_MAP_PROP_NAME}`;
  if (map === 0n) return `${KHO_FDT_MEMORY_MAP_PROP_NAME} is 0`;
  if (map % BigInt(PAGE_SIZE) !== 0n || map >= BigInt(memory.size)) return `${KHO_FDT_MEMORY_MAP_PROP_NAME} ${hex(map)} is not a page of RAM`;
  const sPhys = Number(d.scratch_addr);
  const sSize = Number(d.scratch_size);
  if (d.scratch_addr + d.scratch_size > BigInt(memory.size)) return `scratch array ${hex(d.scratch_addr)}+${hex(d.scratch_size)} is outside RAM`;
  if (sSize > EARLY_MEMREMAP_MAX) return `failed to memremap scratch array ${hex(d.scratch_addr)}+${hex(d.scratch_size)}`;
  const scratch = decodeScratchArray(memory.read(sPhys, sSize), memory.size);
  if (typeof scratch === 'string') return scratch;
  return { fdtPhys, fdtSize, root, memoryMapPhys: Number(map), scratch, scratchArrayPhys: sPhys, scratchArraySize: sSize };
}

export class KhoIn {
  readonly heads = new KhoHeadMap();
  /** Preserved blocks reserved at boot, for reports. */
  reservedBlocks = 0;
  reservedPages = 0;

  private readonly ramBytes: number;

  constructor(private readonly mm: Mm, private readonly dmesg: Dmesg, readonly populated: KhoPopulated) {
    this.ramBytes = mm.memory.size;
  }

  get fdtPhys(): number { return this.populated.fdtPhys; }
  get root(): FdtNode { return this.populated.root; }
  get scratch(): readonly ScratchArea[] { return this.populated.scratch; }

  /**
   * kho_memory_init on a KHO boot: walk the incoming tracker, validate all of it, then reserve
   * every block and write the head magic. All or nothing: a bad tree reserves nothing. Whole
   * leaves are taken at once (bitmap words, not keys), so the cost is per leaf page and per
   * run of adjacent blocks, not per key.
   */
  reservePreserved(): string | undefined {
    const scratch = scratchRanges(this.populated.scratch);
    const byOrder: Array<PfnRanges | undefined> = [];
    const rangesOf = (order: number): PfnRanges => (byOrder[order] ??= new PfnRanges(64));
    const heads = this.heads;
    const inScratch = (pfn: number, order: number): string =>
      `preserved block ${hex(pfn * PAGE_SIZE)} order ${order} is inside a scratch area`;
    const res = walkTracker(this.mm.memory, this.populated.memoryMapPhys, {
      key: (pfn, order) => {
        if (scratch.overlaps(pfn, pfn + 2 ** order)) return inScratch(pfn, order);
        rangesOf(order).add(pfn, pfn + 2 ** order);
        heads.set(pfn, order);
        return undefined;
      },
      leaf: (order, first, words) => {
        const size = 2 ** order;
        if (scratch.overlaps(first * size, (first + HEAD_SEG_BITS) * size)) {
          // Rare: the leaf's span touches scratch, so check its blocks one by one.
          let bad: string | undefined;
          leafRuns(words, first, order, (s, e) => {
            for (let pfn = s; bad === undefined && pfn < e; pfn += size) if (scratch.overlaps(pfn, pfn + size)) bad = inScratch(pfn, order);
          });
          if (bad) return bad;
        }
        const r = rangesOf(order);
        leafRuns(words, first, order, (s, e) => r.add(s, e));
        heads.setLeaf(order, first / HEAD_SEG_BITS, words);
        return undefined;
      },
    }, (pfn) => !scratch.has(pfn));
    if (!res.ok) {
      heads.clear();
      return res.reason;
    }
    let all = new PfnRanges();
    for (const r of byOrder) if (r) all = unionRanges(all, r);
    for (const [s, e] of all.runs()) this.mm.memblock.reserve(s, e);
    this.reservedBlocks = res.keys;
    this.reservedPages = all.pageCount;
    // The incoming root FDT page is KHO's own and is never freed: not a consumer's leak.
    this.heads.take(this.populated.fdtPhys / PAGE_SIZE);
    return undefined;
  }

  /** kho_retrieve_subtree, checks in upstream order. */
  retrieveSubtree(name: string): { phys: number; size: number } {
    const { phys, size } = this.lookupSubtree(name);
    if (phys + size > BigInt(this.mm.memory.size)) throw new ErrnoError('EINVAL', 'kho_retrieve_subtree', `${name}: blob outside RAM`);
    return { phys: Number(phys), size: Number(size) };
  }

  /**
   * kho_retrieve_subtree exactly as upstream: the u64 properties as they are, with no bound on
   * the blob (a consumer that reads a fixed struct checks its own bytes against RAM).
   */
  lookupSubtree(name: string): { phys: bigint; size: bigint } {
    const node = this.root.children.find((c) => c.name === name);
    if (!node) throw new ErrnoError('ENOENT', 'kho_retrieve_subtree', name);
    const phys = readPropU64LE(node, KHO_SUB_TREE_PROP_NAME);
    if (phys === undefined) throw new ErrnoError('EINVAL', 'kho_retrieve_subtree', `${name}: ${KHO_SUB_TREE_PROP_NAME}`);
    const size = readPropU64LE(node, KHO_SUB_TREE_SIZE_PROP_NAME);
    if (size === undefined) {
      this.dmesg.log('warn', 'KHO', `subtree ${name} has no valid ${KHO_SUB_TREE_SIZE_PROP_NAME}`);
      throw new ErrnoError('EINVAL', 'kho_retrieve_subtree', `${name}: ${KHO_SUB_TREE_SIZE_PROP_NAME}`);
    }
    return { phys, size };
  }

  /** kho_restore_folio: the head page must carry KHOP; clears it. Null on failure, as upstream. */
  restoreFolio(phys: number): Folio | null {
    if (!Number.isSafeInteger(phys) || phys < 0 || !isAligned(phys, PAGE_SHIFT) || phys >= this.ramBytes) return null;
    const pfn = phys / PAGE_SIZE;
    const order = this.heads.take(pfn);
    if (order < 0) {
      this.dmesg.log('warn', 'KHO', `restore of ${hex(phys)}: no KHO magic on the head page`);
      return null;
    }
    // kho_restore_page: adjust_managed_page_count(page, nr_pages); the folio is in use from here on.
    this.mm.allocator?.adoptAllocated(2 ** order);
    return { pfn, order };
  }

  /** kho_restore_pages: the preserve-time split; earlier blocks stay restored on failure. */
  restorePages(phys: number, nrPages: number): boolean {
    if (phys % PAGE_SIZE !== 0) return false;
    for (const b of splitRun(phys / PAGE_SIZE, nrPages, (p) => this.mm.nodeOf(p))) {
      const f = this.restoreFolio(b.pfn * PAGE_SIZE);
      if (!f || f.order !== b.order) return false;
    }
    return true;
  }

  /** kho_restore_free: restore and put; warns if the restore fails. */
  restoreFree(phys: number): void {
    const f = this.restoreFolio(phys);
    if (!f) { this.dmesg.log('warn', 'KHO', `kho_restore_free: ${hex(phys)} could not be restored`); return; }
    this.mm.freePages(f.pfn, f.order);
  }

  /** Preserved blocks never restored: they stay reserved for this boot (a leak, not an error). */
  leaked(): { blocks: number; pages: number } {
    return { blocks: this.heads.count, pages: this.heads.pages };
  }
}
