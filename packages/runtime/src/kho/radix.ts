/**
 * The KHO preserved-memory tracker (kho-v2 and later): one radix tree of page-sized nodes
 * linked by physical address, handed over in place. Five table levels of 512 u64 entries and
 * a leaf level of 32768-bit bitmaps; key = (1 << (52 - order)) | (phys >> (12 + order)).
 */
import { PAGE_SIZE, type PhysMemory } from '@liveupdate/hw';
import { KHO_BITMAP_SIZE_LOG2, KHO_ORDER_0_LOG2, KHO_TABLE_SIZE_LOG2, KHO_TREE_MAX_DEPTH } from '../abi/kho.js';
import { POW2, hashIndex, popcount32 } from '../mm/bits.js';

const LEAF_BITS = 2 ** KHO_BITMAP_SIZE_LOG2;
const TABLE_ENTRIES = 2 ** KHO_TABLE_SIZE_LOG2;
const TABLE_LEVELS = KHO_TREE_MAX_DEPTH - 1;
/** Keys are at most 53 bits: bit 52 is the order bit of order 0. */
const KEY_LIMIT = 2 ** (KHO_ORDER_0_LOG2 + 1);

/** kho_radix_encode_key, on page frame numbers: exact in doubles because keys stay below 2^53. */
export function encodeKey(pfn: number, order: number): number {
  return (POW2[KHO_ORDER_0_LOG2 - order] as number) + Math.floor(pfn / (POW2[order] as number));
}

/** The inverse; order -1 for a key no valid (pfn, order) encodes. */
export function decodeKey(key: number): { pfn: number; order: number } {
  if (!(key >= 1 && key < KEY_LIMIT) || !Number.isInteger(key)) return { pfn: 0, order: -1 };
  const fls = Math.floor(Math.log2(key)) + 1;
  // Math.log2 can round up just below a power of two; correct by one if needed.
  const top = 2 ** (fls - 1) > key ? fls - 1 : fls;
  const order = KHO_ORDER_0_LOG2 - top + 1;
  return { pfn: (key - 2 ** (top - 1)) * 2 ** order, order };
}

/** Index into the table at `level` (5 = root .. 1 = last table level). */
export const tableIndex = (key: number, level: number): number =>
  Math.floor(key / 2 ** ((level - 1) * KHO_TABLE_SIZE_LOG2 + KHO_BITMAP_SIZE_LOG2)) % TABLE_ENTRIES;
export const bitmapIndex = (key: number): number => (key >>> 0) & (LEAF_BITS - 1);

/** Page allocation the tracker needs from its kernel; nodes are zeroed pages. */
export interface TrackerPages {
  allocZeroedPage(): number | null; // pfn, or null on -ENOMEM
  freePage(pfn: number): void;
}

export type WalkResult = { ok: true; keys: number } | { ok: false; reason: string };

/**
 * Leaf views cached by leaf id: 2-way set-associative, the set chosen by a multiplicative hash
 * of the whole id. A direct-mapped cache indexed by the low bits of the id thrashes on
 * interleaved preserves whose leaves are a power of two apart, which is exactly what two NUMA
 * nodes of a large machine give (node 1's leaves sit 2^k leaves above node 0's). Within a set
 * the newest entry takes way 0 and the older moves to way 1, so two hot leaves in one set
 * both stay cached.
 */
const LEAF_CACHE_SETS_LOG2 = 5;
const LEAF_CACHE_WAYS = 2;
const LEAF_CACHE = LEAF_CACHE_WAYS << LEAF_CACHE_SETS_LOG2;

/**
 * The outgoing tracker, live in emulated memory. JavaScript keeps only views of node pages
 * (the kernel's phys_to_virt); the bytes in memory are the truth and the handover.
 */
export class KhoRadixTree {
  readonly rootPfn: number;
  private readonly views = new Map<number, Uint32Array>(); // node pfn -> view
  private readonly leaves = new Map<number, Uint32Array>(); // key >> 15 -> leaf view
  private readonly cacheIds = new Float64Array(LEAF_CACHE).fill(-1);
  private readonly cacheLeaves: Array<Uint32Array | undefined> = new Array<Uint32Array | undefined>(LEAF_CACHE).fill(undefined);

  constructor(private readonly memory: PhysMemory, private readonly pages: TrackerPages, rootPfn: number) {
    this.rootPfn = rootPfn;
  }

  /** The leaf holding `key`, creating the path when asked; undefined if absent (or on -ENOMEM when creating). */
  private leafFor(key: number, create: boolean): Uint32Array | undefined {
    const leafId = Math.floor(key / LEAF_BITS);
    const set = hashIndex(leafId, LEAF_CACHE_SETS_LOG2) * LEAF_CACHE_WAYS;
    if (this.cacheIds[set] === leafId) return this.cacheLeaves[set];
    if (this.cacheIds[set + 1] === leafId) return this.cacheLeaves[set + 1];
    return this.leafMiss(key, leafId, set, create);
  }

  /** Out of line, so the hit path above stays small enough to inline into add/del/has. */
  private leafMiss(key: number, leafId: number, set: number, create: boolean): Uint32Array | undefined {
    let leaf = this.leaves.get(leafId);
    if (!leaf) {
      leaf = this.descend(key, create);
      if (!leaf) return undefined;
      this.leaves.set(leafId, leaf);
    }
    this.cacheIds[set + 1] = this.cacheIds[set] as number;
    this.cacheLeaves[set + 1] = this.cacheLeaves[set];
    this.cacheIds[set] = leafId;
    this.cacheLeaves[set] = leaf;
    return leaf;
  }

  /** Add (pfn, order). Returns false on allocation failure, with every node this call allocated freed. */
  add(pfn: number, order: number): boolean {
    const key = encodeKey(pfn, order);
    const leaf = this.leafFor(key, true);
    if (!leaf) return false;
    const bit = (key >>> 0) & (LEAF_BITS - 1);
    leaf[bit >>> 5] = ((leaf[bit >>> 5] as number) | (1 << (bit & 31))) >>> 0;
    return true;
  }

  /** Clear (pfn, order); false (the kernel WARNs) when a node on the path is missing. Empty nodes are never freed. */
  del(pfn: number, order: number): boolean {
    const key = encodeKey(pfn, order);
    const leaf = this.leafFor(key, false);
    if (!leaf) return false;
    const bit = (key >>> 0) & (LEAF_BITS - 1);
    leaf[bit >>> 5] = ((leaf[bit >>> 5] as number) & ~(1 << (bit & 31))) >>> 0;
    return true;
  }

  has(pfn: number, order: number): boolean {
    const key = encodeKey(pfn, order);
    const leaf = this.leafFor(key, false);
    if (!leaf) return false;
    const bit = (key >>> 0) & (LEAF_BITS - 1);
    return (((leaf[bit >>> 5] as number) >>> (bit & 31)) & 1) === 1;
  }

  private view(pfn: number): Uint32Array {
    let v = this.views.get(pfn);
    if (!v) {
      const page = this.memory.mapPage(pfn);
      v = new Uint32Array(page.buffer, page.byteOffset, PAGE_SIZE >>> 2);
      this.views.set(pfn, v);
    }
    return v;
  }

  private descend(key: number, create: boolean): Uint32Array | undefined {
    const allocated: number[] = [];
    let node = this.view(this.rootPfn);
    let anchor: { node: Uint32Array; slot: number } | undefined;
    for (let level = TABLE_LEVELS; level >= 1; level--) {
      const slot = tableIndex(key, level);
      const lo = node[2 * slot] as number;
      const hi = node[2 * slot + 1] as number;
      let childPfn = (hi * 0x1_0000_0000 + lo) / PAGE_SIZE;
      if (childPfn === 0) {
        if (!create) return undefined;
        const pfn = this.pages.allocZeroedPage();
        if (pfn === null) {
          // Free every node allocated in this call and clear the entry that anchored them.
          if (anchor) { anchor.node[2 * anchor.slot] = 0; anchor.node[2 * anchor.slot + 1] = 0; }
          for (const p of allocated) { this.views.delete(p); this.pages.freePage(p); }
          return undefined;
        }
        if (!anchor) anchor = { node, slot };
        allocated.push(pfn);
        const phys = pfn * PAGE_SIZE;
        node[2 * slot] = phys % 0x1_0000_0000;
        node[2 * slot + 1] = Math.floor(phys / 0x1_0000_0000);
        childPfn = pfn;
      }
      node = this.view(childPfn);
    }
    return node;
  }
}

export interface WalkCallbacks {
  /** A key in ascending order; return a string to abort the walk with that reason. */
  key(pfn: number, order: number): string | undefined;
  /**
   * A whole leaf at once, when its keys all have one order (0..37, i.e. every leaf but the
   * first one of the key space) and all its blocks lie inside RAM: `words` is the leaf
   * bitmap, bit i being the block at pfn (firstIndex + i) << order; firstIndex is a multiple
   * of 32768. `words` is reused after the call returns. When given, it replaces key() for
   * such leaves: no per-key callback, no per-key object.
   */
  leaf?(order: number, firstIndex: number, words: Uint32Array): string | undefined;
  /** Every node page visited (tables and leaves), before its children. */
  node?(pfn: number, level: number): string | undefined;
}

/** Set bits of a leaf bitmap. */
export function leafPopcount(words: Uint32Array): number {
  let n = 0;
  for (let w = 0; w < words.length; w++) {
    const v = words[w] as number;
    if (v !== 0) n += popcount32(v);
  }
  return n;
}

/**
 * Runs of consecutive blocks in a leaf bitmap as page ranges [start, end), ascending: a run
 * of k set bits starting at bit i is [(first + i) << order, (first + i + k) << order).
 */
export function leafRuns(words: Uint32Array, firstIndex: number, order: number, emit: (start: number, end: number) => void): void {
  const size = 2 ** order;
  let runStart = -1;
  for (let w = 0; w < words.length; w++) {
    const v = words[w] as number;
    if (v === 0xffffffff) { if (runStart < 0) runStart = w * 32; continue; }
    if (v === 0) {
      if (runStart >= 0) { emit((firstIndex + runStart) * size, (firstIndex + w * 32) * size); runStart = -1; }
      continue;
    }
    for (let b = 0; b < 32; b++) {
      const set = ((v >>> b) & 1) === 1;
      if (set) { if (runStart < 0) runStart = w * 32 + b; }
      else if (runStart >= 0) { emit((firstIndex + runStart) * size, (firstIndex + w * 32 + b) * size); runStart = -1; }
    }
  }
  if (runStart >= 0) emit((firstIndex + runStart) * size, (firstIndex + words.length * 32) * size);
}

/**
 * The non-zero entries of a table node, in slot order, appended to `slots` / `children`
 * (child physical addresses); returns how many. Its own small function, as are leafPopcount
 * and nextSetBit: the walk below calls them once per node, so the per-entry and per-word loops
 * get optimized on their own, cheaply, while the walk itself (which calls the caller's
 * callbacks, different for every walker) never gets hot enough to be compiled with them inlined.
 */
function tableChildren(page: Uint32Array, slots: number[], children: number[]): number {
  let n = 0;
  for (let slot = 0; slot < TABLE_ENTRIES; slot++) {
    const lo = page[2 * slot] as number;
    const hi = page[2 * slot + 1] as number;
    if (lo !== 0 || hi !== 0) { slots.push(slot); children.push(hi * 0x1_0000_0000 + lo); n++; }
  }
  return n;
}

/** The first set bit of a leaf bitmap at or after bit `from`, or -1. */
function nextSetBit(words: Uint32Array, from: number): number {
  let w = from >>> 5;
  if (w >= words.length) return -1;
  let bits = ((words[w] as number) >>> (from & 31)) << (from & 31);
  for (;;) {
    if (bits !== 0) return w * 32 + (31 - Math.clz32(bits & -bits));
    if (++w >= words.length) return -1;
    bits = words[w] as number;
  }
}

/**
 * Depth-first walk in ascending index order (leaf bits ascending), over bytes that may be
 * hostile: node pointers must be page-aligned pages inside RAM that `nodeOk` accepts, no node
 * may be reached twice (that is how a cycle or a shared subtree shows), and every key must
 * decode to a block inside RAM.
 */
export function walkTracker(
  memory: PhysMemory,
  rootPhys: number,
  cb: WalkCallbacks,
  nodeOk: (pfn: number) => boolean = () => true,
): WalkResult {
  const seen = new Set<number>();
  const page = new Uint32Array(PAGE_SIZE >>> 2);
  const pageBytes = new Uint8Array(page.buffer);
  const ramPages = memory.size / PAGE_SIZE;
  let keys = 0;

  const checkNode = (phys: number, level: number): string | undefined => {
    if (phys % PAGE_SIZE !== 0) return `node 0x${phys.toString(16)} at level ${level} is not page aligned`;
    const pfn = phys / PAGE_SIZE;
    if (pfn >= ramPages) return `node 0x${phys.toString(16)} at level ${level} is outside RAM`;
    if (!nodeOk(pfn)) return `node 0x${phys.toString(16)} at level ${level} is inside a scratch area`;
    if (seen.has(pfn)) return `node 0x${phys.toString(16)} is reached twice (cycle or shared node)`;
    seen.add(pfn);
    return cb.node?.(pfn, level);
  };

  const visitLeaf = (keyBase: number): string | undefined => {
    // Below order 38 the order bit sits above the leaf index, so one decode serves the leaf.
    const base = keyBase >= LEAF_BITS ? decodeKey(keyBase) : undefined;
    if (base && base.order >= 0) {
      const size = 2 ** base.order;
      const first = base.pfn / size;
      if (cb.leaf && (first + LEAF_BITS) * size <= ramPages) {
        const n = leafPopcount(page);
        if (n === 0) return undefined;
        keys += n;
        return cb.leaf(base.order, first, page);
      }
    }
    for (let bit = nextSetBit(page, 0); bit >= 0; bit = nextSetBit(page, bit + 1)) {
      let pfn: number;
      let order: number;
      if (base && base.order >= 0) {
        order = base.order;
        pfn = base.pfn + bit * (POW2[order] as number);
      } else {
        const d = decodeKey(keyBase + bit);
        order = d.order;
        pfn = d.pfn;
      }
      if (order < 0) return `invalid key 0x${(keyBase + bit).toString(16)}`;
      if (pfn + (POW2[order] as number) > ramPages) return `preserved block pfn 0x${pfn.toString(16)} order ${order} is outside RAM`;
      keys++;
      const stop = cb.key(pfn, order);
      if (stop) return stop;
    }
    return undefined;
  };

  const visit = (phys: number, level: number, keyBase: number): string | undefined => {
    const bad = checkNode(phys, level);
    if (bad) return bad;
    memory.readInto(phys, pageBytes);
    if (level === 0) return visitLeaf(keyBase);
    // Copy the entries: the recursion below reuses the page buffer.
    const slots: number[] = [];
    const children: number[] = [];
    const n = tableChildren(page, slots, children);
    const shift = 2 ** ((level - 1) * KHO_TABLE_SIZE_LOG2 + KHO_BITMAP_SIZE_LOG2);
    for (let i = 0; i < n; i++) {
      const bad2 = visit(children[i] as number, level - 1, keyBase + (slots[i] as number) * shift);
      if (bad2) return bad2;
    }
    return undefined;
  };

  const reason = visit(rootPhys, TABLE_LEVELS, 0);
  return reason ? { ok: false, reason } : { ok: true, keys };
}
