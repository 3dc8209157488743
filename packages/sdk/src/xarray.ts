/**
 * The KHO xarray: a sparse map from 54-bit keys to u64 values that lives in emulated memory
 * and is its own handover. Nodes are allocated and preserved on demand (kho_preserve_folio)
 * and freed when they empty; the root's physical address is all a format needs to store.
 * Occupancy counts are runtime-only (upstream keeps them in folio private data).
 */
import { PAGE_SIZE } from '@liveupdate/hw';
import { ErrnoError, type Kernel } from '@liveupdate/runtime';
import { KHO_XA_DEPTH, KHO_XA_KEY_BITS, KHO_XA_LEVEL_BITS, KHO_XA_SLOTS } from './abi/xarray.js';

const KEY_LIMIT = 2 ** KHO_XA_KEY_BITS;
const TWO32 = 0x1_0000_0000;
/** Leaf index covers the low 9 bits; the table levels above it, 9 bits each. */
const LEAF_SPAN = KHO_XA_SLOTS;

const slotAt = (key: number, level: number): number => Math.floor(key / 2 ** (level * KHO_XA_LEVEL_BITS)) % KHO_XA_SLOTS;

interface Node {
  readonly pfn: number;
  readonly words: Uint32Array;
  /** Non-empty slots. */
  used: number;
  readonly parent: Node | null;
  readonly parentSlot: number;
}

export type XarrayValue = number | bigint;

export class KhoXarray {
  private readonly root: Node;
  private readonly nodes = new Map<number, Node>(); // pfn -> node
  private readonly leaves = new Map<number, Node>(); // key / 512 -> leaf
  private lastLeafId = -1;
  private lastLeaf: Node | undefined;
  private live = 0;

  private constructor(private readonly kernel: Kernel, rootPfn: number, readonly incoming: boolean) {
    this.root = this.track(rootPfn, null, -1);
  }

  /** kho_xa_init: an empty map whose root page is allocated and preserved. */
  static create(kernel: Kernel): KhoXarray {
    const out = kernel.khoOut;
    if (!out) throw new ErrnoError('EOPNOTSUPP', 'kho_xa_init', 'KHO is disabled');
    const pfn = kernel.mm.allocZeroedPages(0);
    if (pfn === null) throw new ErrnoError('ENOMEM', 'kho_xa_init');
    try {
      out.preserveFolio(pfn, 0);
    } catch (e) {
      kernel.mm.freePages(pfn, 0);
      throw e;
    }
    return new KhoXarray(kernel, pfn, false);
  }

  /**
   * Restore an incoming map from its root: every node must be a page of RAM carrying the KHO
   * magic (so a pointer outside RAM, into a tail, or to a node reached twice fails), and the
   * depth is fixed. On failure every node restored so far is freed and EINVAL thrown.
   */
  static restore(kernel: Kernel, rootPhys: number): KhoXarray {
    const kin = kernel.khoIn;
    if (!kin) throw new ErrnoError('EINVAL', 'kho_xa_restore', 'not a KHO boot');
    const restored: number[] = [];
    const claim = (phys: number, what: string): number => {
      if (!Number.isSafeInteger(phys) || phys <= 0 || phys % PAGE_SIZE !== 0 || phys + PAGE_SIZE > kernel.machine.memory.size) {
        throw new ErrnoError('EINVAL', 'kho_xa_restore', `${what} 0x${phys.toString(16)} is not a page of RAM`);
      }
      const f = kin.restoreFolio(phys);
      if (!f || f.order !== 0) throw new ErrnoError('EINVAL', 'kho_xa_restore', `${what} 0x${phys.toString(16)} is not a preserved node (or is reached twice)`);
      restored.push(f.pfn);
      return f.pfn;
    };
    try {
      const xa = new KhoXarray(kernel, claim(rootPhys, 'root'), true);
      const walk = (node: Node, level: number): void => {
        for (let s = 0; s < KHO_XA_SLOTS; s++) {
          const lo = node.words[2 * s] as number;
          const hi = node.words[2 * s + 1] as number;
          if (lo === 0 && hi === 0) continue;
          node.used++;
          if (level === 0) { xa.live++; continue; }
          const child = xa.track(claim(hi * TWO32 + lo, `level-${level - 1} node`), node, s);
          walk(child, level - 1);
        }
      };
      walk(xa.root, KHO_XA_DEPTH - 1);
      return xa;
    } catch (e) {
      for (const pfn of restored) kernel.mm.freePages(pfn, 0);
      throw e;
    }
  }

  get rootPhys(): number { return this.root.pfn * PAGE_SIZE; }
  /** Keys with a non-zero value. */
  get size(): number { return this.live; }
  /** Node pages (root included): the metadata this map costs. */
  get nodePages(): number { return this.nodes.size; }

  private track(pfn: number, parent: Node | null, parentSlot: number): Node {
    const page = this.kernel.machine.memory.mapPage(pfn);
    const node: Node = { pfn, words: new Uint32Array(page.buffer, page.byteOffset, PAGE_SIZE >>> 2), used: 0, parent, parentSlot };
    this.nodes.set(pfn, node);
    return node;
  }

  private checkKey(key: number, fn: string): void {
    if (!Number.isSafeInteger(key) || key < 0 || key >= KEY_LIMIT) throw new ErrnoError('EINVAL', fn, `key ${key} is not a 54-bit index`);
  }

  private leafFor(key: number, create: boolean): Node | undefined {
    const id = Math.floor(key / LEAF_SPAN);
    if (id === this.lastLeafId && this.lastLeaf) return this.lastLeaf;
    let leaf = this.leaves.get(id);
    if (!leaf) {
      let node = this.root;
      for (let level = KHO_XA_DEPTH - 1; level >= 1; level--) {
        const s = slotAt(key, level);
        const lo = node.words[2 * s] as number;
        const hi = node.words[2 * s + 1] as number;
        let child = lo === 0 && hi === 0 ? undefined : this.nodes.get((hi * TWO32 + lo) / PAGE_SIZE);
        if (!child) {
          if (!create) return undefined;
          child = this.allocNode(node, s);
        }
        node = child;
      }
      leaf = node;
      this.leaves.set(id, leaf);
    }
    this.lastLeafId = id;
    this.lastLeaf = leaf;
    return leaf;
  }

  private allocNode(parent: Node, slot: number): Node {
    const out = this.kernel.khoOut;
    if (this.incoming || !out) throw new ErrnoError('EINVAL', 'kho_xa_set', 'an incoming xarray is read-only');
    const pfn = this.kernel.mm.allocZeroedPages(0);
    if (pfn === null) throw new ErrnoError('ENOMEM', 'kho_xa_set');
    try {
      out.preserveFolio(pfn, 0);
    } catch (e) {
      this.kernel.mm.freePages(pfn, 0);
      throw e;
    }
    const phys = pfn * PAGE_SIZE;
    parent.words[2 * slot] = phys % TWO32;
    parent.words[2 * slot + 1] = Math.floor(phys / TWO32);
    parent.used++;
    return this.track(pfn, parent, slot);
  }

  /** kho_xa_set: value 0 clears (0 means empty in this format). */
  set(key: number, value: XarrayValue): void {
    this.checkKey(key, 'kho_xa_set');
    if (this.incoming) throw new ErrnoError('EINVAL', 'kho_xa_set', 'an incoming xarray is read-only');
    let lo: number;
    let hi: number;
    if (typeof value === 'number') {
      if (!Number.isSafeInteger(value) || value < 0) throw new ErrnoError('EINVAL', 'kho_xa_set', `value ${value}`);
      lo = value % TWO32;
      hi = Math.floor(value / TWO32);
    } else {
      if (value < 0n || value >= 1n << 64n) throw new ErrnoError('EINVAL', 'kho_xa_set', `value ${value}`);
      lo = Number(value & 0xffffffffn);
      hi = Number(value >> 32n);
    }
    if (lo === 0 && hi === 0) { this.clear(key); return; }
    const leaf = this.leafFor(key, true) as Node;
    const s = key % LEAF_SPAN;
    if (leaf.words[2 * s] === 0 && leaf.words[2 * s + 1] === 0) { leaf.used++; this.live++; }
    leaf.words[2 * s] = lo;
    leaf.words[2 * s + 1] = hi;
  }

  /** kho_xa_clear: empties the slot and frees (unpreserves) nodes that become empty. */
  clear(key: number): void {
    this.checkKey(key, 'kho_xa_clear');
    if (this.incoming) throw new ErrnoError('EINVAL', 'kho_xa_clear', 'an incoming xarray is read-only');
    const leaf = this.leafFor(key, false);
    if (!leaf) return;
    const s = key % LEAF_SPAN;
    if (leaf.words[2 * s] === 0 && leaf.words[2 * s + 1] === 0) return;
    leaf.words[2 * s] = 0;
    leaf.words[2 * s + 1] = 0;
    this.live--;
    let node: Node | null = leaf;
    if (--leaf.used > 0) return;
    this.leaves.delete(Math.floor(key / LEAF_SPAN));
    this.lastLeafId = -1;
    this.lastLeaf = undefined;
    while (node && node !== this.root && node.used === 0) {
      const parent: Node | null = node.parent;
      if (parent) {
        parent.words[2 * node.parentSlot] = 0;
        parent.words[2 * node.parentSlot + 1] = 0;
        parent.used--;
      }
      this.releaseNode(node);
      node = parent;
    }
  }

  private releaseNode(node: Node): void {
    this.nodes.delete(node.pfn);
    if (!this.incoming) this.kernel.khoOut?.unpreserveFolio(node.pfn, 0);
    this.kernel.mm.freePages(node.pfn, 0);
  }

  /** The value at key as a bigint (0n when empty). */
  get(key: number): bigint {
    this.checkKey(key, 'kho_xa_load');
    const leaf = this.leafFor(key, false);
    if (!leaf) return 0n;
    const s = key % LEAF_SPAN;
    return (BigInt(leaf.words[2 * s + 1] as number) << 32n) | BigInt(leaf.words[2 * s] as number);
  }

  /** The value as a number (exact below 2^53: physical addresses, page frame numbers). */
  getNumber(key: number): number {
    this.checkKey(key, 'kho_xa_load');
    const leaf = this.leafFor(key, false);
    if (!leaf) return 0;
    const s = key % LEAF_SPAN;
    return (leaf.words[2 * s + 1] as number) * TWO32 + (leaf.words[2 * s] as number);
  }

  /** kho_xa_next: the first present key >= from, or null. */
  next(from: number): { key: number; value: bigint } | null {
    let found: { key: number; value: bigint } | null = null;
    this.scan(from, (key, lo, hi) => { found = { key, value: (BigInt(hi) << 32n) | BigInt(lo) }; return true; });
    return found;
  }

  /** kho_xa_for_each with the value split into its low and high 32 bits (exact for any u64). Return true to stop. */
  forEachWords(fn: (key: number, lo: number, hi: number) => boolean | void): void {
    this.scan(0, (key, lo, hi) => fn(key, lo, hi) === true);
  }

  /** kho_xa_for_each, ascending; `fn` gets the value as a number (exact below 2^53). Return true to stop. */
  forEach(fn: (key: number, value: number) => boolean | void): void {
    this.scan(0, (key, lo, hi) => fn(key, hi * TWO32 + lo) === true);
  }

  private scan(from: number, fn: (key: number, lo: number, hi: number) => boolean): void {
    const visit = (node: Node, level: number, base: number): boolean => {
      const span = 2 ** (level * KHO_XA_LEVEL_BITS);
      for (let s = 0; s < KHO_XA_SLOTS; s++) {
        const lo = node.words[2 * s] as number;
        const hi = node.words[2 * s + 1] as number;
        if (lo === 0 && hi === 0) continue;
        const key = base + s * span;
        if (key + span <= from) continue;
        if (level === 0) {
          if (fn(key, lo, hi)) return true;
          continue;
        }
        const child = this.nodes.get((hi * TWO32 + lo) / PAGE_SIZE);
        if (child && visit(child, level - 1, key)) return true;
      }
      return false;
    };
    visit(this.root, KHO_XA_DEPTH - 1, 0);
  }

  /** Unpreserve (outgoing) and free every node: the map is gone. */
  destroy(): void {
    for (const node of [...this.nodes.values()]) this.releaseNode(node);
    this.leaves.clear();
    this.lastLeafId = -1;
    this.lastLeaf = undefined;
    this.live = 0;
  }
}
