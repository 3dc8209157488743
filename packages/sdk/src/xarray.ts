/**
 * The KHO xarray: a sparse map from 54-bit keys to u64 values that lives in emulated memory
 * and is its own handover. Nodes are allocated and preserved on demand (kho_preserve_folio)
 * and freed when they empty; the root's physical address is all a format needs to store.
 * Occupancy counts are runtime-only (upstream keeps them in folio private data).
 *
 * Keys are numbers (safe integers, below 2^53) or bigints (any 54-bit key). Internally a key
 * is split into its leaf id (the top 45 bits, always a safe integer) and its slot in the leaf
 * (the low 9 bits), so the hot paths never touch BigInt: a cached last leaf makes dense sets
 * a compare and two u32 stores.
 */
import { PAGE_SIZE } from '@liveupdate/hw';
import { ErrnoError, type Kernel } from '@liveupdate/runtime';
import * as xaAbi from './abi/xarray.js';

// Module-local copies: hot loops must not go through a loader's live-binding getters (tsx and
// vite-node compile imports to property reads on a namespace object).
const KHO_XA_DEPTH = xaAbi.KHO_XA_DEPTH;
const KHO_XA_KEY_BITS = xaAbi.KHO_XA_KEY_BITS;
const KHO_XA_LEVEL_BITS = xaAbi.KHO_XA_LEVEL_BITS;
const KHO_XA_SLOTS = xaAbi.KHO_XA_SLOTS;

const TWO32 = 0x1_0000_0000;
const SLOT_MASK = KHO_XA_SLOTS - 1;
const WORDS = PAGE_SIZE >>> 2;
/** Leaf ids are keys >> 9: below 2^45. */
const LEAF_ID_LIMIT = 2 ** (KHO_XA_KEY_BITS - KHO_XA_LEVEL_BITS);
const KEY_LIMIT_BIG = 1n << BigInt(KHO_XA_KEY_BITS);
const U64_LIMIT = 1n << 64n;
const LEVEL_BITS_BIG = BigInt(KHO_XA_LEVEL_BITS);
const SLOT_MASK_BIG = BigInt(KHO_XA_SLOTS - 1);
/** Leaf ids covered by one slot of a level-L table node (L >= 1): 512^(L-1). */
const LEAVES_PER_SLOT: readonly number[] = Array.from({ length: KHO_XA_DEPTH }, (_, l) => (l === 0 ? 0 : 2 ** (KHO_XA_LEVEL_BITS * (l - 1))));

/** x mod 512 for any non-negative integer-valued number (ToUint32 is exact modulo 2^32). */
const low9 = (x: number): number => (x >>> 0) & SLOT_MASK;
/** The slot of leaf `leafId` in its level-`level` ancestor. */
const slotOfLeaf = (leafId: number, level: number): number => low9(level === 1 ? leafId : Math.floor(leafId / (LEAVES_PER_SLOT[level] as number)));

class XaNode {
  /** Non-empty slots. */
  used = 0;
  /** A leaf's id once it is in the leaf cache; -1 otherwise. */
  leafId = -1;
  constructor(
    readonly pfn: number,
    readonly words: Uint32Array,
    readonly parent: XaNode | null,
    readonly parentSlot: number,
  ) {}
}

export type XarrayKey = number | bigint;
export type XarrayValue = number | bigint;

export class KhoXarray {
  private readonly root: XaNode;
  private readonly nodes = new Map<number, XaNode>(); // pfn -> node
  private readonly leaves = new Map<number, XaNode>(); // leaf id -> leaf
  private lastLeafId = -1;
  private lastLeaf: XaNode | null = null;
  private live = 0;
  private destroyed = false;
  /** The key being worked on, split (set by splitKey; avoids allocating a pair per call). */
  private kLeaf = 0;
  private kSlot = 0;

  private constructor(private readonly kernel: Kernel, rootPfn: number, readonly incoming: boolean) {
    this.root = this.track(rootPfn, null, -1);
  }

  /** kho_xa_init: an empty map whose root page is allocated and preserved. */
  static create(kernel: Kernel): KhoXarray {
    const out = kernel.khoOut;
    if (!out) throw new ErrnoError('EOPNOTSUPP', 'kho_xa_init', 'KHO is disabled');
    const pfn = kernel.mm.allocPages(0);
    if (pfn === null) throw new ErrnoError('ENOMEM', 'kho_xa_init');
    try {
      out.preserveFolio(pfn, 0);
    } catch (e) {
      kernel.mm.freePages(pfn, 0);
      throw e;
    }
    const xa = new KhoXarray(kernel, pfn, false);
    xa.root.words.fill(0);
    return xa;
  }

  /**
   * Restore an incoming map from its root: every node must be a page of RAM carrying the KHO
   * magic (so a pointer outside RAM, into a tail, or to a node reached twice fails), and the
   * depth is fixed. On failure every block restored so far is freed and EINVAL thrown.
   */
  static restore(kernel: Kernel, rootPhys: number): KhoXarray {
    const kin = kernel.khoIn;
    if (!kin) throw new ErrnoError('EINVAL', 'kho_xa_restore', 'not a KHO boot');
    const restored: Array<{ pfn: number; order: number }> = [];
    const limit = kernel.machine.memory.size;
    const claim = (phys: number, what: string): number => {
      if (!Number.isSafeInteger(phys) || phys <= 0 || phys % PAGE_SIZE !== 0 || phys + PAGE_SIZE > limit) {
        throw new ErrnoError('EINVAL', 'kho_xa_restore', `${what} 0x${phys.toString(16)} is not a page of RAM`);
      }
      const f = kin.restoreFolio(phys);
      if (f) restored.push(f); // whatever was claimed is given back on failure, whatever its order
      if (!f || f.order !== 0) throw new ErrnoError('EINVAL', 'kho_xa_restore', `${what} 0x${phys.toString(16)} is not a preserved node (or is reached twice)`);
      return f.pfn;
    };
    try {
      const xa = new KhoXarray(kernel, claim(rootPhys, 'root'), true);
      const walk = (node: XaNode, level: number): void => {
        const w = node.words;
        let used = 0;
        for (let i = 0; i < WORDS; i += 2) {
          const lo = w[i] as number;
          const hi = w[i + 1] as number;
          if ((lo | hi) === 0) continue;
          used++;
          if (level > 0) walk(xa.track(claim(hi * TWO32 + lo, `level-${level - 1} node`), node, i >>> 1), level - 1);
        }
        node.used = used;
        if (level === 0) xa.live += used;
      };
      walk(xa.root, KHO_XA_DEPTH - 1);
      return xa;
    } catch (e) {
      for (const f of restored) kernel.mm.freePages(f.pfn, f.order);
      throw e;
    }
  }

  get rootPhys(): number { return this.root.pfn * PAGE_SIZE; }
  /** Keys with a non-zero value. */
  get size(): number { return this.live; }
  /** Node pages (root included): the metadata this map costs. */
  get nodePages(): number { return this.nodes.size; }

  private track(pfn: number, parent: XaNode | null, parentSlot: number): XaNode {
    const page = this.kernel.machine.memory.mapPage(pfn);
    const node = new XaNode(pfn, new Uint32Array(page.buffer, page.byteOffset, WORDS), parent, parentSlot);
    this.nodes.set(pfn, node);
    return node;
  }

  /** Validate a key and split it into kLeaf/kSlot. */
  private splitKey(key: XarrayKey, fn: string): void {
    if (typeof key === 'number') {
      // A number above 2^53 may already have been rounded: such keys must be bigints.
      if (!(key >= 0 && key <= Number.MAX_SAFE_INTEGER && Number.isInteger(key))) {
        throw new ErrnoError('EINVAL', fn, `key ${key} is not a safe integer (pass keys >= 2^53 as bigint)`);
      }
      this.kLeaf = Math.floor(key / KHO_XA_SLOTS);
      this.kSlot = low9(key);
      return;
    }
    if (typeof key !== 'bigint' || key < 0n || key >= KEY_LIMIT_BIG) throw new ErrnoError('EINVAL', fn, `key ${String(key)} is not a 54-bit index`);
    this.kLeaf = Number(key >> LEVEL_BITS_BIG);
    this.kSlot = Number(key & SLOT_MASK_BIG);
  }

  /** The leaf holding leaf id `id`, walking (and, if `create`, allocating) from the root. */
  private leafOf(id: number, create: boolean): XaNode | null {
    if (id === this.lastLeafId) return this.lastLeaf;
    let leaf = this.leaves.get(id);
    if (!leaf) {
      let node = this.root;
      for (let level = KHO_XA_DEPTH - 1; level >= 1; level--) {
        const s = slotOfLeaf(id, level);
        const lo = node.words[2 * s] as number;
        const hi = node.words[2 * s + 1] as number;
        let child = (lo | hi) === 0 ? undefined : this.nodes.get((hi * TWO32 + lo) / PAGE_SIZE);
        if (!child) {
          if (!create) return null;
          try {
            child = this.allocNode(node, s);
          } catch (e) {
            this.prune(node); // nodes made on the way down would otherwise stay, empty, forever
            throw e;
          }
        }
        node = child;
      }
      leaf = node;
      leaf.leafId = id;
      this.leaves.set(id, leaf);
    }
    this.lastLeafId = id;
    this.lastLeaf = leaf;
    return leaf;
  }

  private allocNode(parent: XaNode, slot: number): XaNode {
    const out = this.kernel.khoOut as NonNullable<Kernel['khoOut']>;
    const pfn = this.kernel.mm.allocPages(0);
    if (pfn === null) throw new ErrnoError('ENOMEM', 'kho_xa_set');
    try {
      out.preserveFolio(pfn, 0);
    } catch (e) {
      this.kernel.mm.freePages(pfn, 0);
      throw e;
    }
    // Zeroed through the node's own u32 view: PhysMemory.fill goes byte-wise over shared memory.
    const node = this.track(pfn, parent, slot);
    node.words.fill(0);
    const phys = pfn * PAGE_SIZE;
    parent.words[2 * slot] = phys >>> 0;
    parent.words[2 * slot + 1] = Math.floor(phys / TWO32);
    parent.used++;
    return node;
  }

  private writable(fn: string): void {
    if (this.incoming) throw new ErrnoError('EINVAL', fn, 'an incoming xarray is read-only');
    if (this.destroyed) throw new ErrnoError('EINVAL', fn, 'the xarray was destroyed');
  }

  /** kho_xa_set: value 0 clears (0 means empty in this format). */
  set(key: XarrayKey, value: XarrayValue): void {
    this.splitKey(key, 'kho_xa_set');
    this.writable('kho_xa_set');
    let lo: number;
    let hi: number;
    if (typeof value === 'number') {
      if (!(value >= 0 && value <= Number.MAX_SAFE_INTEGER && Number.isInteger(value))) throw new ErrnoError('EINVAL', 'kho_xa_set', `value ${value}`);
      lo = value >>> 0;
      hi = (value - lo) / TWO32;
    } else {
      if (typeof value !== 'bigint' || value < 0n || value >= U64_LIMIT) throw new ErrnoError('EINVAL', 'kho_xa_set', `value ${String(value)}`);
      lo = Number(value & 0xffffffffn);
      hi = Number(value >> 32n);
    }
    if ((lo | hi) === 0) { this.clearSplit(); return; }
    const leaf = this.leafOf(this.kLeaf, true) as XaNode;
    const i = 2 * this.kSlot;
    const w = leaf.words;
    if (((w[i] as number) | (w[i + 1] as number)) === 0) { leaf.used++; this.live++; }
    w[i] = lo;
    w[i + 1] = hi;
  }

  /** kho_xa_clear: empties the slot and frees (unpreserves) nodes that become empty. */
  clear(key: XarrayKey): void {
    this.splitKey(key, 'kho_xa_clear');
    this.writable('kho_xa_clear');
    this.clearSplit();
  }

  private clearSplit(): void {
    const leaf = this.leafOf(this.kLeaf, false);
    if (!leaf) return;
    const i = 2 * this.kSlot;
    const w = leaf.words;
    if (((w[i] as number) | (w[i + 1] as number)) === 0) return;
    w[i] = 0;
    w[i + 1] = 0;
    this.live--;
    leaf.used--;
    this.prune(leaf);
  }

  /** Free `node` and its ancestors while they are empty (never the root). */
  private prune(node: XaNode): void {
    let n: XaNode | null = node;
    while (n && n !== this.root && n.used === 0) {
      const parent: XaNode | null = n.parent;
      if (parent) {
        parent.words[2 * n.parentSlot] = 0;
        parent.words[2 * n.parentSlot + 1] = 0;
        parent.used--;
      }
      this.releaseNode(n);
      n = parent;
    }
  }

  private releaseNode(node: XaNode): void {
    this.nodes.delete(node.pfn);
    if (node === this.lastLeaf) { this.lastLeafId = -1; this.lastLeaf = null; }
    if (node.leafId >= 0) this.leaves.delete(node.leafId);
    if (!this.incoming) this.kernel.khoOut?.unpreserveFolio(node.pfn, 0);
    this.kernel.mm.freePages(node.pfn, 0);
  }

  /** The value at key as a bigint (0n when empty). */
  get(key: XarrayKey): bigint {
    this.splitKey(key, 'kho_xa_load');
    const leaf = this.leafOf(this.kLeaf, false);
    if (!leaf) return 0n;
    const i = 2 * this.kSlot;
    return (BigInt(leaf.words[i + 1] as number) << 32n) | BigInt(leaf.words[i] as number);
  }

  /** The value as a number (exact below 2^53: physical addresses, page frame numbers). */
  getNumber(key: XarrayKey): number {
    this.splitKey(key, 'kho_xa_load');
    const leaf = this.leafOf(this.kLeaf, false);
    if (!leaf) return 0;
    const i = 2 * this.kSlot;
    return (leaf.words[i + 1] as number) * TWO32 + (leaf.words[i] as number);
  }

  /** kho_xa_next: the first present key >= from (key and value as exact u64s), or null. */
  next(from: XarrayKey): { key: bigint; value: bigint } | null {
    let startLeaf: number;
    let startSlot: number;
    if (typeof from === 'bigint') {
      if (from >= KEY_LIMIT_BIG) return null;
      const k = from > 0n ? from : 0n;
      startLeaf = Number(k >> LEVEL_BITS_BIG);
      startSlot = Number(k & SLOT_MASK_BIG);
    } else {
      if (from >= 2 ** KHO_XA_KEY_BITS) return null;
      const k = from > 0 ? Math.ceil(from) : 0;
      startLeaf = Math.floor(k / KHO_XA_SLOTS);
      startSlot = low9(k);
    }
    let found: { key: bigint; value: bigint } | null = null;
    this.eachLeaf(startLeaf, (leaf, id) => {
      const w = leaf.words;
      for (let s = id === startLeaf ? startSlot : 0; s < KHO_XA_SLOTS; s++) {
        const lo = w[2 * s] as number;
        const hi = w[2 * s + 1] as number;
        if ((lo | hi) === 0) continue;
        found = { key: (BigInt(id) << LEVEL_BITS_BIG) | BigInt(s), value: (BigInt(hi) << 32n) | BigInt(lo) };
        return true;
      }
      return false;
    });
    return found;
  }

  /** kho_xa_for_each, ascending; `fn` gets the value as a number (exact below 2^53), the key too. Return true to stop. */
  forEach(fn: (key: number, value: number) => boolean | void): void {
    this.forEachWords((key, lo, hi) => fn(key, hi * TWO32 + lo));
  }

  /** kho_xa_for_each with the value split into its low and high 32 bits (exact for any u64). Return true to stop. */
  forEachWords(fn: (key: number, lo: number, hi: number) => boolean | void): void {
    this.eachLeaf(0, (leaf, id) => {
      const w = leaf.words;
      const base = id * KHO_XA_SLOTS;
      for (let i = 0, left = leaf.used; left > 0 && i < WORDS; i += 2) {
        const lo = w[i] as number;
        const hi = w[i + 1] as number;
        if ((lo | hi) === 0) continue;
        left--;
        if (fn(base + (i >>> 1), lo, hi) === true) return true;
      }
      return false;
    });
  }

  /** Visit leaves with id >= fromLeaf in ascending order until `fn` returns true. */
  private eachLeaf(fromLeaf: number, fn: (leaf: XaNode, id: number) => boolean): void {
    if (fromLeaf >= LEAF_ID_LIMIT) return;
    const visit = (node: XaNode, level: number, base: number): boolean => {
      const span = LEAVES_PER_SLOT[level] as number;
      const w = node.words;
      const first = base + span * KHO_XA_SLOTS <= fromLeaf ? KHO_XA_SLOTS : Math.max(0, Math.floor((fromLeaf - base) / span));
      // From slot 0, stop after the node's last child (the count is exact); from later, scan to the end.
      let left = first === 0 ? node.used : KHO_XA_SLOTS;
      for (let s = first; left > 0 && s < KHO_XA_SLOTS; s++) {
        const lo = w[2 * s] as number;
        const hi = w[2 * s + 1] as number;
        if ((lo | hi) === 0) continue;
        left--;
        const child = this.nodes.get((hi * TWO32 + lo) / PAGE_SIZE);
        if (!child) continue;
        const childBase = base + s * span;
        if (level === 1 ? fn(child, childBase) : visit(child, level - 1, childBase)) return true;
      }
      return false;
    };
    visit(this.root, KHO_XA_DEPTH - 1, 0);
  }

  /** Unpreserve (outgoing) and free every node: the map is gone. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const node of this.nodes.values()) {
      if (!this.incoming) this.kernel.khoOut?.unpreserveFolio(node.pfn, 0);
      this.kernel.mm.freePages(node.pfn, 0);
    }
    this.nodes.clear();
    this.leaves.clear();
    this.lastLeafId = -1;
    this.lastLeaf = null;
    this.live = 0;
  }
}
