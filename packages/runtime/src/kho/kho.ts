/**
 * Kexec HandOver, outgoing side (kernel/liveupdate/kexec_handover.c): the preservation API,
 * the live root FDT and its subtrees. There is no finalize: whatever the tracker and the root
 * FDT page hold at the moment of kexec is the handover.
 */
import { PAGE_SIZE, PfnRanges, unionRanges } from '@liveupdate/hw';
import {
  KHO_FDT_COMPATIBLE, KHO_FDT_MEMORY_MAP_PROP_NAME, KHO_SUB_TREE_PROP_NAME, KHO_SUB_TREE_SIZE_PROP_NAME, MAX_PAGE_ORDER,
} from '../abi/kho.js';
import { ErrnoError } from '../errno.js';
import { fdtCreate, fdtNode, FdtError, propString, propU64LE, type FdtNode } from '../lib/fdt.js';
import type { Mm } from '../mm/mm.js';
import { POW2, isAligned } from '../mm/bits.js';
import { KhoRadixTree, leafRuns, walkTracker } from './radix.js';
import type { ScratchArea } from './scratch.js';
import { scratchRanges } from './scratch.js';

/** A preserved block: 2^order pages starting at pfn. */
export interface Folio {
  readonly pfn: number;
  readonly order: number;
}

export const folioPhys = (f: Folio): number => f.pfn * PAGE_SIZE;

/** Orders of the maximal naturally aligned blocks of a run, lowered to stay on one NUMA node. */
export function splitRun(pfn: number, nrPages: number, nodeOf?: (pfn: number) => number): Folio[] {
  const out: Folio[] = [];
  const end = pfn + nrPages;
  let p = pfn;
  while (p < end) {
    // order = min(ctz(pfn), ilog2(end - pfn))
    let order = Math.floor(Math.log2(end - p));
    while (2 ** order > end - p) order--;
    while (order > 0 && p % 2 ** order !== 0) order--;
    if (nodeOf) while (order > 0 && nodeOf(p) !== nodeOf(p + 2 ** order - 1)) order--;
    out.push({ pfn: p, order });
    p += 2 ** order;
  }
  return out;
}

/** The root node's compatible property for writeFdt (fdtCreate only reads it; the root FDT is rewritten on every kho_add_subtree). */
const KHO_FDT_COMPATIBLE_PROP = propString(KHO_FDT_COMPATIBLE);

export interface Subtree {
  readonly name: string;
  readonly phys: number;
  readonly size: number;
}

export class KhoOut {
  private readonly tree: KhoRadixTree;
  readonly fdtPfn: number;
  private readonly subtrees: Subtree[] = [];
  /** Orders of kho_alloc_preserve allocations, for kho_unpreserve_free (the kernel reads folio_order). */
  private readonly allocOrders = new Map<number, number>();
  private readonly scratchSet: PfnRanges;
  private readonly pageCount: number;

  private constructor(
    private readonly mm: Mm,
    readonly scratch: readonly ScratchArea[],
    private readonly debugChecks: boolean,
    rootPfn: number,
  ) {
    this.tree = new KhoRadixTree(mm.memory, {
      allocZeroedPage: () => mm.allocZeroedPages(0),
      freePage: (p) => mm.freePages(p, 0),
    }, rootPfn);
    this.scratchSet = scratchRanges(scratch);
    this.pageCount = mm.pageCount;
    const fdt = this.allocPreserve(PAGE_SIZE);
    this.fdtPfn = fdt / PAGE_SIZE;
    this.writeFdt();
  }

  /** kho_init: the tracker root and the root FDT page (itself preserved). Null on -ENOMEM. */
  static create(mm: Mm, scratch: readonly ScratchArea[], debugChecks: boolean): KhoOut | null {
    const root = mm.allocZeroedPages(0);
    if (root === null) return null;
    try {
      return new KhoOut(mm, scratch, debugChecks, root);
    } catch (e) {
      mm.freePages(root, 0);
      if (e instanceof ErrnoError) return null;
      throw e;
    }
  }

  get trackerRootPhys(): number { return this.tree.rootPfn * PAGE_SIZE; }
  get fdtPhys(): number { return this.fdtPfn * PAGE_SIZE; }
  get subtreeList(): readonly Subtree[] { return this.subtrees; }

  // ---- folios and pages -----------------------------------------------------------------

  private checkBlock(fn: string, pfn: number, order: number): void {
    const size = POW2[order];
    if (!Number.isSafeInteger(pfn) || pfn < 0 || size === undefined || order > 52 || !isAligned(pfn, order) || pfn + size > this.pageCount) {
      throw new ErrnoError('EINVAL', fn, `pfn 0x${pfn.toString(16)} order ${order} is not a block of RAM`);
    }
    // KEXEC_HANDOVER_DEBUG: a preserved page inside scratch would be overwritten by the next kernel.
    if (this.debugChecks && this.scratchSet.overlaps(pfn, pfn + size)) {
      throw new ErrnoError('EINVAL', fn, `pfn 0x${pfn.toString(16)} order ${order} overlaps a scratch area`);
    }
  }

  /** kho_preserve_folio: add (pfn, order) to the tracker. A set: preserving twice is idempotent. */
  preserveFolio(pfn: number, order: number): void {
    this.checkBlock('kho_preserve_folio', pfn, order);
    if (!this.tree.add(pfn, order)) throw new ErrnoError('ENOMEM', 'kho_preserve_folio');
  }

  /** kho_unpreserve_folio: pfn and order must match the preserve exactly. */
  unpreserveFolio(pfn: number, order: number): void {
    this.tree.del(pfn, order);
  }

  isPreserved(pfn: number, order: number): boolean { return this.tree.has(pfn, order); }

  /** kho_preserve_pages: maximal naturally aligned blocks; on failure the keys already added are removed. */
  preservePages(pfn: number, nrPages: number): void {
    const blocks = splitRun(pfn, nrPages, (p) => this.mm.nodeOf(p));
    const done: Folio[] = [];
    try {
      for (const b of blocks) {
        this.checkBlock('kho_preserve_pages', b.pfn, b.order);
        if (!this.tree.add(b.pfn, b.order)) throw new ErrnoError('ENOMEM', 'kho_preserve_pages');
        done.push(b);
      }
    } catch (e) {
      for (const b of done) this.tree.del(b.pfn, b.order);
      throw e;
    }
  }

  /** kho_unpreserve_pages: the same split; must match the original call. */
  unpreservePages(pfn: number, nrPages: number): void {
    for (const b of splitRun(pfn, nrPages, (p) => this.mm.nodeOf(p))) this.tree.del(b.pfn, b.order);
  }

  /** kho_alloc_preserve: a zeroed, preserved folio of get_order(size); returns its physical address. */
  allocPreserve(size: number): number {
    if (size <= 0) throw new ErrnoError('EINVAL', 'kho_alloc_preserve', 'size 0');
    const order = Math.max(0, Math.ceil(Math.log2(Math.ceil(size / PAGE_SIZE))));
    if (order > MAX_PAGE_ORDER) throw new ErrnoError('E2BIG', 'kho_alloc_preserve', `order ${order} > MAX_PAGE_ORDER`);
    const pfn = this.mm.allocZeroedPages(order);
    if (pfn === null) throw new ErrnoError('ENOMEM', 'kho_alloc_preserve');
    try {
      this.preserveFolio(pfn, order);
    } catch (e) {
      this.mm.freePages(pfn, order);
      throw e;
    }
    this.allocOrders.set(pfn, order);
    return pfn * PAGE_SIZE;
  }

  /** kho_unpreserve_free: unpreserve and free a kho_alloc_preserve allocation; 0 (NULL) is accepted. */
  unpreserveFree(phys: number): void {
    if (phys === 0) return;
    const pfn = phys / PAGE_SIZE;
    const order = this.allocOrders.get(pfn);
    if (order === undefined) return;
    this.allocOrders.delete(pfn);
    this.unpreserveFolio(pfn, order);
    this.mm.freePages(pfn, order);
  }

  // ---- subtrees ---------------------------------------------------------------------------

  /** kho_add_subtree: a root-FDT child `name` with preserved-data and blob-size. */
  addSubtree(name: string, phys: number, size: number): void {
    if (this.subtrees.some((s) => s.name === name)) throw new ErrnoError('EEXIST', 'kho_add_subtree', name);
    this.subtrees.push({ name, phys, size });
    try {
      this.writeFdt();
    } catch (e) {
      // The fixed kernel deletes the half-built node and reports -ENOMEM for any FDT error.
      this.subtrees.pop();
      this.writeFdt();
      if (e instanceof FdtError) throw new ErrnoError('ENOMEM', 'kho_add_subtree', e.code);
      throw e;
    }
  }

  /** kho_remove_subtree: deletes the first child whose preserved-data equals phys; silent if none. */
  removeSubtree(phys: number): void {
    const i = this.subtrees.findIndex((s) => s.phys === phys);
    if (i < 0) return;
    this.subtrees.splice(i, 1);
    this.writeFdt();
  }

  /** The root FDT as it stands in its page now. */
  fdtTree(): FdtNode {
    return this.rootNode(propString(KHO_FDT_COMPATIBLE));
  }

  private rootNode(compatible: Uint8Array): FdtNode {
    return fdtNode('', {
      compatible,
      [KHO_FDT_MEMORY_MAP_PROP_NAME]: propU64LE(BigInt(this.trackerRootPhys)),
    }, this.subtrees.map((s) => fdtNode(s.name, {
      [KHO_SUB_TREE_PROP_NAME]: propU64LE(BigInt(s.phys)),
      [KHO_SUB_TREE_SIZE_PROP_NAME]: propU64LE(BigInt(s.size)),
    })));
  }

  private writeFdt(): void {
    const bytes = fdtCreate(this.rootNode(KHO_FDT_COMPATIBLE_PROP), { maxSize: PAGE_SIZE });
    const page = this.mm.memory.mapPage(this.fdtPfn);
    page.fill(0);
    page.set(bytes);
  }

  // ---- handover -------------------------------------------------------------------------

  /**
   * Pages the next kernel needs intact: every preserved block and every tracker node. Built
   * by walking the tracker in memory, so what survives is exactly what the bytes say.
   */
  survivors(): { ranges: PfnRanges; blocks: number; nodes: number } {
    const byOrder: Array<PfnRanges | undefined> = [];
    const rangesOf = (order: number): PfnRanges => (byOrder[order] ??= new PfnRanges(64));
    const nodes = new PfnRanges();
    const res = walkTracker(this.mm.memory, this.trackerRootPhys, {
      key: (pfn, order) => { rangesOf(order).add(pfn, pfn + 2 ** order); return undefined; },
      leaf: (order, first, words) => {
        const r = rangesOf(order);
        leafRuns(words, first, order, (s, e) => r.add(s, e));
        return undefined;
      },
      node: (pfn) => { nodes.add(pfn, pfn + 1); return undefined; },
    });
    if (!res.ok) throw new Error(`outgoing KHO tracker is corrupt: ${res.reason}`);
    let all = nodes;
    for (const r of byOrder) if (r) all = unionRanges(all, r);
    return { ranges: all, blocks: res.keys, nodes: nodes.pageCount };
  }
}
