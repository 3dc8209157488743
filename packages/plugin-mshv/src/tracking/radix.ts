/**
 * The tracker of RFC 00/20 (2026-05-27): a KHO radix tree (include/linux/kho_radix_tree.h,
 * the node layout of include/linux/kho/abi/kexec_handover.h) whose keys are raw page frame
 * numbers, as mshv_register_preserve_page() passes page_to_pfn(pg) to kho_radix_add_key().
 * Five table levels of 512 u64 physical addresses over a leaf of 32768 bits; key bits
 * [0, 15) index the leaf, each table level takes the next 9. Nodes are zeroed kernel pages
 * that live in emulated memory; the bytes are the handover. kho_radix_tree_freeze() makes
 * add and del return -EBUSY; del of an absent path is -ENOENT; empty nodes are never freed.
 */
import { abi, PAGE_SIZE, type ErrnoCode } from '@liveupdate/sdk';
import type { PhysMemory } from '@liveupdate/hw';

const LEAF_BITS = 2 ** abi.kho.KHO_BITMAP_SIZE_LOG2;
const LEAF_WORDS = LEAF_BITS / 32;
const TABLE_BITS = abi.kho.KHO_TABLE_SIZE_LOG2;
const TABLE_ENTRIES = 2 ** TABLE_BITS;
const TABLE_LEVELS = abi.kho.KHO_TREE_MAX_DEPTH - 1;
const TWO32 = 0x1_0000_0000;
/** Keys above this would not be PFNs of a 52-bit physical address space. */
export const MSHV_RADIX_KEY_LIMIT = 2 ** 40;

export const radixTableIndex = (key: number, level: number): number =>
  Math.floor(key / 2 ** ((level - 1) * TABLE_BITS + abi.kho.KHO_BITMAP_SIZE_LOG2)) % TABLE_ENTRIES;

export interface NodePages {
  /** A zeroed page for a node, or null (-ENOMEM). */
  alloc(): number | null;
  free(pfn: number): void;
}

export interface RadixWalk {
  /** Ascending runs [start, end) of keys (PFNs); merged across leaves. */
  run?(start: number, end: number): string | undefined;
  /** Every node page (tables and leaves), a node before its children. */
  node?(pfn: number, level: number): string | undefined;
}

export type WalkOutcome = { ok: true; keys: number; nodes: number } | { ok: false; reason: string };

export class MshvRadixTree {
  private readonly views = new Map<number, Uint32Array>();
  private readonly leaves = new Map<number, Uint32Array>();
  private frozenFlag = false;
  private keyCount = 0;

  private constructor(private readonly memory: PhysMemory, private readonly pages: NodePages, readonly rootPfn: number, keys: number) {
    this.keyCount = keys;
  }

  /** kho_radix_tree_init(tree, 0): a fresh tree with a zeroed root. */
  static create(memory: PhysMemory, pages: NodePages): MshvRadixTree | null {
    const root = pages.alloc();
    return root === null ? null : new MshvRadixTree(memory, pages, root, 0);
  }

  /** kho_radix_tree_init(tree, root_pa) on a tree already validated by walkRadix(). */
  static adopt(memory: PhysMemory, pages: NodePages, rootPhys: number, keys: number): MshvRadixTree {
    return new MshvRadixTree(memory, pages, rootPhys / PAGE_SIZE, keys);
  }

  get rootPhys(): number { return this.rootPfn * PAGE_SIZE; }
  get frozen(): boolean { return this.frozenFlag; }
  /** Keys present (kept beside the tree: the bytes are the truth, this is a counter). */
  get size(): number { return this.keyCount; }

  /** kho_radix_tree_freeze: -EBUSY if already frozen. */
  freeze(): ErrnoCode | 0 {
    if (this.frozenFlag) return 'EBUSY';
    this.frozenFlag = true;
    return 0;
  }

  /** Undo a freeze (only a failed kexec before the tree was handed over does this). */
  thaw(): void { this.frozenFlag = false; }

  private view(pfn: number): Uint32Array {
    let v = this.views.get(pfn);
    if (!v) {
      const page = this.memory.mapPage(pfn);
      v = new Uint32Array(page.buffer, page.byteOffset, PAGE_SIZE >>> 2);
      this.views.set(pfn, v);
    }
    return v;
  }

  private leafOf(key: number, create: boolean): Uint32Array | null | 'ENOMEM' {
    const id = Math.floor(key / LEAF_BITS);
    const cached = this.leaves.get(id);
    if (cached) return cached;
    let node = this.view(this.rootPfn);
    const made: number[] = [];
    let anchor: { node: Uint32Array; slot: number } | null = null;
    for (let level = TABLE_LEVELS; level >= 1; level--) {
      const slot = radixTableIndex(key, level);
      const phys = (node[2 * slot + 1] as number) * TWO32 + (node[2 * slot] as number);
      let child = phys / PAGE_SIZE;
      if (phys === 0) {
        if (!create) return null;
        const pfn = this.pages.alloc();
        if (pfn === null) {
          if (anchor) { anchor.node[2 * anchor.slot] = 0; anchor.node[2 * anchor.slot + 1] = 0; }
          for (const p of made) { this.views.delete(p); this.pages.free(p); }
          return 'ENOMEM';
        }
        anchor ??= { node, slot };
        made.push(pfn);
        const np = pfn * PAGE_SIZE;
        node[2 * slot] = np >>> 0;
        node[2 * slot + 1] = Math.floor(np / TWO32);
        child = pfn;
      }
      node = this.view(child);
    }
    this.leaves.set(id, node);
    return node;
  }

  private checkKey(key: number): ErrnoCode | 0 {
    return Number.isSafeInteger(key) && key >= 0 && key < MSHV_RADIX_KEY_LIMIT ? 0 : 'EINVAL';
  }

  /** kho_radix_add_key */
  add(key: number): ErrnoCode | 0 {
    const bad = this.checkKey(key);
    if (bad) return bad;
    if (this.frozenFlag) return 'EBUSY';
    const leaf = this.leafOf(key, true);
    if (leaf === 'ENOMEM' || leaf === null) return 'ENOMEM';
    const bit = key % LEAF_BITS;
    const w = leaf[bit >>> 5] as number;
    const m = 1 << (bit & 31);
    if ((w & m) === 0) { leaf[bit >>> 5] = (w | m) >>> 0; this.keyCount++; }
    return 0;
  }

  /** Set every key of [start, end) (word stores where whole words are covered). */
  addRun(start: number, end: number): ErrnoCode | 0 {
    if (this.frozenFlag) return 'EBUSY';
    let k = start;
    while (k < end) {
      const bad = this.checkKey(k);
      if (bad) return bad;
      const leaf = this.leafOf(k, true);
      if (leaf === 'ENOMEM' || leaf === null) return 'ENOMEM';
      const leafEnd = Math.min(end, (Math.floor(k / LEAF_BITS) + 1) * LEAF_BITS);
      while (k < leafEnd) {
        const bit = k % LEAF_BITS;
        if ((bit & 31) === 0 && k + 32 <= leafEnd) {
          const w = leaf[bit >>> 5] as number;
          if (w !== 0xffffffff) { this.keyCount += 32 - popcount(w); leaf[bit >>> 5] = 0xffffffff; }
          k += 32;
          continue;
        }
        const w = leaf[bit >>> 5] as number;
        const m = 1 << (bit & 31);
        if ((w & m) === 0) { leaf[bit >>> 5] = (w | m) >>> 0; this.keyCount++; }
        k++;
      }
    }
    return 0;
  }

  /** kho_radix_del_key: -EBUSY when frozen, -ENOENT when a node on the path is missing. */
  del(key: number): ErrnoCode | 0 {
    const bad = this.checkKey(key);
    if (bad) return bad;
    if (this.frozenFlag) return 'EBUSY';
    const leaf = this.leafOf(key, false);
    if (leaf === null || leaf === 'ENOMEM') return 'ENOENT';
    const bit = key % LEAF_BITS;
    const w = leaf[bit >>> 5] as number;
    const m = 1 << (bit & 31);
    if ((w & m) !== 0) { leaf[bit >>> 5] = (w & ~m) >>> 0; this.keyCount--; }
    return 0;
  }

  has(key: number): boolean {
    if (this.checkKey(key)) return false;
    const leaf = this.leafOf(key, false);
    if (leaf === null || leaf === 'ENOMEM') return false;
    const bit = key % LEAF_BITS;
    return (((leaf[bit >>> 5] as number) >>> (bit & 31)) & 1) === 1;
  }

  /** kho_radix_walk_tree over this (trusted) tree. */
  walk(cb: RadixWalk): WalkOutcome {
    return walkRadix(this.memory, this.rootPhys, cb);
  }

  /** Free every node (the tree is dropped). */
  destroy(): void {
    walkRadix(this.memory, this.rootPhys, { node: (pfn) => { this.pages.free(pfn); return undefined; } });
    this.views.clear();
    this.leaves.clear();
    this.keyCount = 0;
  }
}

function popcount(v: number): number {
  v -= (v >>> 1) & 0x55555555;
  v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
  return (((v + (v >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}

/**
 * Depth-first walk in ascending key order over bytes that may be hostile: every node must be
 * a page-aligned page of RAM that `nodeOk` accepts and is reached once (a cycle or a shared
 * subtree shows as a second visit); keys must be PFNs inside RAM. Runs are merged across
 * leaves, so a dense range costs one callback.
 */
export function walkRadix(memory: PhysMemory, rootPhys: number, cb: RadixWalk, nodeOk: (pfn: number) => boolean = () => true): WalkOutcome {
  const ramPages = memory.pageCount;
  const seen = new Set<number>();
  const page = new Uint32Array(PAGE_SIZE >>> 2);
  const bytes = new Uint8Array(page.buffer);
  let keys = 0;
  let runStart = -1;
  let runEnd = -1;
  const emit = (s: number, e: number): string | undefined => {
    keys += e - s;
    if (s === runEnd) { runEnd = e; return undefined; }
    const bad = runStart >= 0 ? cb.run?.(runStart, runEnd) : undefined;
    runStart = s;
    runEnd = e;
    return bad;
  };
  const visit = (phys: number, level: number, base: number): string | undefined => {
    if (!Number.isSafeInteger(phys) || phys % PAGE_SIZE !== 0) return `node 0x${phys.toString(16)} at level ${level} is not page aligned`;
    const pfn = phys / PAGE_SIZE;
    if (pfn >= ramPages) return `node 0x${phys.toString(16)} at level ${level} is outside RAM`;
    if (!nodeOk(pfn)) return `node 0x${phys.toString(16)} at level ${level} is not a preserved page`;
    if (seen.has(pfn)) return `node 0x${phys.toString(16)} is reached twice (cycle or shared node)`;
    seen.add(pfn);
    const nbad = cb.node?.(pfn, level);
    if (nbad) return nbad;
    memory.readInto(phys, bytes);
    if (level === 0) {
      for (let w = 0; w < LEAF_WORDS; w++) {
        const v = page[w] as number;
        if (v === 0) continue;
        const first = base + w * 32;
        if (v === 0xffffffff) {
          if (first + 32 > ramPages) return `tracked page 0x${first.toString(16)}.. is outside RAM`;
          const bad = emit(first, first + 32);
          if (bad) return bad;
          continue;
        }
        for (let b = 0; b < 32; b++) {
          if (((v >>> b) & 1) === 0) continue;
          const key = first + b;
          if (key >= ramPages) return `tracked page 0x${key.toString(16)} is outside RAM`;
          const bad = emit(key, key + 1);
          if (bad) return bad;
        }
      }
      return undefined;
    }
    const slots: number[] = [];
    const children: number[] = [];
    for (let s = 0; s < TABLE_ENTRIES; s++) {
      const lo = page[2 * s] as number;
      const hi = page[2 * s + 1] as number;
      if ((lo | hi) !== 0) { slots.push(s); children.push(hi * TWO32 + lo); }
    }
    const span = 2 ** ((level - 1) * TABLE_BITS + abi.kho.KHO_BITMAP_SIZE_LOG2);
    for (let i = 0; i < slots.length; i++) {
      const bad = visit(children[i] as number, level - 1, base + (slots[i] as number) * span);
      if (bad) return bad;
    }
    return undefined;
  };
  const reason = visit(rootPhys, TABLE_LEVELS, 0);
  if (reason) return { ok: false, reason };
  if (runStart >= 0) {
    const bad = cb.run?.(runStart, runEnd);
    if (bad) return { ok: false, reason: bad };
  }
  return { ok: true, keys, nodes: seen.size };
}
