/**
 * A file's page cache: page-cache index → pfn of the folio head, sparse. Indices are grouped in
 * chunks of 512 keyed by index / 512, so holes cost nothing. A chunk starts as a short sorted
 * list and becomes a 512-entry typed array once it holds SPARSE_MAX entries: a dense file costs
 * 8 bytes a page, and a scattered one (a page here and there, as a 1 TiB file 0.1% touched) a
 * few dozen bytes per resident page instead of 4 KiB per chunk it touches. Cost follows the
 * resident pages, never the file size.
 */
const CHUNK = 512;
/** Entries a chunk holds as a sorted list before it becomes a dense array (~1/16 of a chunk). */
const SPARSE_MAX = 32;

/** A chunk with few entries: slot offsets ascending, and pfn + 1 for each. */
interface SparseChunk {
  readonly slot: number[];
  readonly val: number[];
}
/** pfn + 1 per slot (0: hole), or a sparse list. */
type Chunk = Float64Array | SparseChunk;

/** The position of `slot` in a sparse chunk's sorted slots, or where it would go (~(position)). */
function find(c: SparseChunk, slot: number): number {
  const s = c.slot;
  let lo = 0;
  let hi = s.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const v = s[mid] as number;
    if (v === slot) return mid;
    if (v < slot) lo = mid + 1; else hi = mid;
  }
  return ~lo;
}

export class PageCache {
  private readonly chunks = new Map<number, Chunk>();
  /** Chunk keys in ascending order, rebuilt lazily after a chunk was added or removed. */
  private sortedKeys: Float64Array | null = null;
  /** No chunk was added below a larger key: the Map's insertion order is index order (no sort). */
  private inOrder = true;
  private maxKey = -1;
  private present = 0;
  /** The chunk of the last lookup: sequential walks stay off the Map. */
  private lastKey = -1;
  private lastChunk: Chunk | undefined;

  get count(): number { return this.present; }

  private chunkOf(key: number): Chunk | undefined {
    if (key === this.lastKey) return this.lastChunk;
    const c = this.chunks.get(key);
    this.lastKey = key;
    this.lastChunk = c;
    return c;
  }

  private put(key: number, c: Chunk | undefined): void {
    if (c) this.chunks.set(key, c); else this.chunks.delete(key);
    this.lastKey = key;
    this.lastChunk = c;
  }

  /** The pfn at index, or -1 for a hole. */
  get(index: number): number {
    const c = this.chunkOf(Math.floor(index / CHUNK));
    if (!c) return -1;
    const slot = index % CHUNK;
    if (c instanceof Float64Array) {
      const v = c[slot] as number;
      return v === 0 ? -1 : v - 1;
    }
    const at = find(c, slot);
    return at < 0 ? -1 : (c.val[at] as number) - 1;
  }

  /** The first present index in [from, end), or -1. A chunk with no entry is skipped whole. */
  nextPresent(from: number, end: number): number {
    let i = from;
    while (i < end) {
      const key = Math.floor(i / CHUNK);
      const base = key * CHUNK;
      const stop = Math.min(end, base + CHUNK);
      const c = this.chunkOf(key);
      if (c instanceof Float64Array) {
        for (let k = i - base; i < stop; i++, k++) if (c[k] !== 0) return i;
      } else if (c) {
        const at = find(c, i - base);
        const s = c.slot[at < 0 ? ~at : at];
        if (s !== undefined && base + s < stop) return base + s;
      }
      i = stop;
    }
    return -1;
  }

  set(index: number, pfn: number): void {
    const key = Math.floor(index / CHUNK);
    const slot = index % CHUNK;
    const c = this.chunkOf(key);
    if (!c) {
      if (key < this.maxKey) this.inOrder = false; else this.maxKey = key;
      this.put(key, { slot: [slot], val: [pfn + 1] });
      this.sortedKeys = null;
      this.present++;
      return;
    }
    if (c instanceof Float64Array) {
      if (c[slot] === 0) this.present++;
      c[slot] = pfn + 1;
      return;
    }
    const n = c.slot.length;
    // Folios usually arrive in index order (a file written or restored front to back): append.
    if (n < SPARSE_MAX && (n === 0 || (c.slot[n - 1] as number) < slot)) {
      c.slot.push(slot);
      c.val.push(pfn + 1);
      this.present++;
      return;
    }
    const at = find(c, slot);
    if (at >= 0) { c.val[at] = pfn + 1; return; }
    this.present++;
    if (c.slot.length < SPARSE_MAX) {
      c.slot.splice(~at, 0, slot);
      c.val.splice(~at, 0, pfn + 1);
      return;
    }
    const dense = new Float64Array(CHUNK);
    for (let k = 0; k < c.slot.length; k++) dense[c.slot[k] as number] = c.val[k] as number;
    dense[slot] = pfn + 1;
    this.put(key, dense);
  }

  /** Remove index; returns the pfn that was there, or -1. */
  delete(index: number): number {
    const key = Math.floor(index / CHUNK);
    const slot = index % CHUNK;
    const c = this.chunkOf(key);
    if (!c) return -1;
    let v: number;
    if (c instanceof Float64Array) {
      v = c[slot] as number;
      if (v === 0) return -1;
      c[slot] = 0;
      if (c.every((x) => x === 0)) { this.put(key, undefined); this.sortedKeys = null; }
    } else {
      const at = find(c, slot);
      if (at < 0) return -1;
      v = c.val[at] as number;
      c.slot.splice(at, 1);
      c.val.splice(at, 1);
      if (c.slot.length === 0) { this.put(key, undefined); this.sortedKeys = null; }
    }
    this.present--;
    return v - 1;
  }

  /** Present entries in ascending index order; return true from fn to stop. */
  forEach(fn: (index: number, pfn: number) => boolean | void): void {
    if (this.inOrder) {
      for (const [key, c] of this.chunks) if (this.visit(key, c, fn)) return;
      return;
    }
    if (!this.sortedKeys) this.sortedKeys = Float64Array.from(this.chunks.keys()).sort();
    for (const key of this.sortedKeys) {
      const c = this.chunks.get(key);
      if (c && this.visit(key, c, fn)) return;
    }
  }

  /** One chunk's entries in index order; true when fn asked to stop. */
  private visit(key: number, c: Chunk, fn: (index: number, pfn: number) => boolean | void): boolean {
    {
      const base = key * CHUNK;
      if (c instanceof Float64Array) {
        for (let i = 0; i < CHUNK; i++) {
          const v = c[i] as number;
          if (v !== 0 && fn(base + i, v - 1) === true) return true;
        }
      } else {
        for (let k = 0; k < c.slot.length; k++) if (fn(base + (c.slot[k] as number), (c.val[k] as number) - 1) === true) return true;
      }
    }
    return false;
  }

  /** Empty the cache, handing every (index, pfn) to fn first (the last put of the inode). */
  drain(fn: (index: number, pfn: number) => void): void {
    this.forEach((index, pfn) => { fn(index, pfn); });
    this.chunks.clear();
    this.sortedKeys = null;
    this.inOrder = true;
    this.maxKey = -1;
    this.present = 0;
    this.lastKey = -1;
    this.lastChunk = undefined;
  }
}
