/**
 * The part of struct page the model needs: page->private of the head page of each preserved
 * block, where the incoming kernel writes { order, KHO_PAGE_MAGIC }. Kept as sparse per-order
 * bitmaps (one bit per possible head), so 10 million preserved pages cost ~1.2 MiB, not
 * 10 million objects. A segment covers 32768 heads of one order, exactly the span of one
 * tracker leaf, so a whole leaf can be OR-ed in at once (setLeaf).
 */
import { POW2, hashIndex, isAligned, popcount32 } from './bits.js';

export const HEAD_SEG_BITS = 32768;
const SEG_WORDS = HEAD_SEG_BITS / 32;
const ORDERS = 64;
/**
 * Lookup cache per order: 2^SETS_LOG2 sets of 2 ways, the set a hash of the segment index. Restores
 * alternate between NUMA nodes whose segments sit a power of two apart; indexing by the low
 * bits of the segment index would put them all in one slot and miss on every lookup.
 */
const SETS_LOG2 = 3;
const CACHE_PER_ORDER = 2 << SETS_LOG2;

export class KhoHeadMap {
  /** Per order: segment index (head index / 32768) → bitmap of heads. */
  private segs: Array<Map<number, Uint32Array> | undefined> = [];
  /** Orders that have a segment, ascending: take() tries them in this order. */
  private orders: number[] = [];
  private readonly liveByOrder = new Float64Array(ORDERS);
  private live = 0;
  /** Segment lookup cache, CACHE_PER_ORDER entries per order (a miss is cached too): restores come in address order. */
  private readonly cacheIdx = new Float64Array(ORDERS * CACHE_PER_ORDER).fill(-1);
  private readonly cacheSeg: Array<Uint32Array | undefined> = new Array<Uint32Array | undefined>(ORDERS * CACHE_PER_ORDER).fill(undefined);

  get count(): number { return this.live; }

  /** Pages of the blocks still carrying the magic. */
  get pages(): number {
    let p = 0;
    for (const o of this.orders) p += (this.liveByOrder[o] as number) * 2 ** o;
    return p;
  }

  private segment(order: number, segIdx: number, create: boolean): Uint32Array | undefined {
    const slot = order * CACHE_PER_ORDER + hashIndex(segIdx, SETS_LOG2) * 2;
    if (this.cacheIdx[slot] === segIdx) {
      const cached = this.cacheSeg[slot];
      if (cached || !create) return cached;
    } else if (this.cacheIdx[slot + 1] === segIdx) {
      const cached = this.cacheSeg[slot + 1];
      if (cached || !create) return cached;
    }
    return this.segmentMiss(order, segIdx, create, slot);
  }

  /** Out of line, so the hit path stays small enough to inline. The newest entry takes way 0. */
  private segmentMiss(order: number, segIdx: number, create: boolean, slot: number): Uint32Array | undefined {
    let map = this.segs[order];
    if (!map) {
      if (!create) return undefined;
      map = new Map();
      this.segs[order] = map;
      this.orders.push(order);
      this.orders.sort((a, b) => a - b);
    }
    let seg = map.get(segIdx);
    if (!seg && create) {
      seg = new Uint32Array(SEG_WORDS);
      map.set(segIdx, seg);
    }
    if (this.cacheIdx[slot] !== segIdx) {
      this.cacheIdx[slot + 1] = this.cacheIdx[slot] as number;
      this.cacheSeg[slot + 1] = this.cacheSeg[slot];
    }
    this.cacheIdx[slot] = segIdx;
    this.cacheSeg[slot] = seg;
    return seg;
  }

  /** Write { order, KHOP } into the head page's private word. */
  set(pfn: number, order: number): void {
    const idx = pfn / (POW2[order] as number);
    const seg = this.segment(order, Math.floor(idx / HEAD_SEG_BITS), true) as Uint32Array;
    const bit = (idx >>> 0) & (HEAD_SEG_BITS - 1);
    const w = seg[bit >>> 5] as number;
    const m = 1 << (bit & 31);
    if ((w & m) === 0) {
      seg[bit >>> 5] = (w | m) >>> 0;
      this.live++;
      this.liveByOrder[order] = (this.liveByOrder[order] as number) + 1;
    }
  }

  /**
   * Mark every head of one tracker leaf: `words` is the leaf bitmap of order `order` whose
   * bit 0 is head index segIdx * 32768. Returns the number of heads newly marked.
   */
  setLeaf(order: number, segIdx: number, words: Uint32Array): number {
    let seg: Uint32Array | undefined;
    let added = 0;
    for (let w = 0; w < SEG_WORDS; w++) {
      const bits = words[w] as number;
      if (bits === 0) continue;
      seg ??= this.segment(order, segIdx, true) as Uint32Array;
      const old = seg[w] as number;
      const fresh = (bits & ~old) >>> 0;
      if (fresh === 0) continue;
      seg[w] = (old | fresh) >>> 0;
      added += popcount32(fresh);
    }
    this.live += added;
    this.liveByOrder[order] = (this.liveByOrder[order] as number) + added;
    return added;
  }

  private hitSeg: Uint32Array | undefined;
  private hitWord = 0;
  private hitMask = 0;

  /** The order whose head bit is set for pfn (recording where), or -1. */
  private locate(pfn: number): number {
    const orders = this.orders;
    for (let i = 0; i < orders.length; i++) {
      const order = orders[i] as number;
      const size = POW2[order] as number;
      // Orders ascend: once pfn is not aligned to this one it is aligned to no higher one.
      if (!isAligned(pfn, order)) break;
      const idx = pfn / size;
      const seg = this.segment(order, Math.floor(idx / HEAD_SEG_BITS), false);
      if (seg === undefined) continue;
      const bit = (idx >>> 0) & (HEAD_SEG_BITS - 1);
      const m = 1 << (bit & 31);
      if (((seg[bit >>> 5] as number) & m) !== 0) {
        this.hitSeg = seg;
        this.hitWord = bit >>> 5;
        this.hitMask = m;
        return order;
      }
    }
    return -1;
  }

  /** The order of the preserved block whose head is pfn, without claiming it; -1 if none. */
  peek(pfn: number): number {
    return this.locate(pfn);
  }

  /**
   * kho_restore_folio's check: the head page carries the magic. Returns its order and clears
   * the word (a second restore fails), or -1 (unaligned, tail or never-preserved address).
   */
  take(pfn: number): number {
    const order = this.locate(pfn);
    const seg = this.hitSeg;
    if (order < 0 || !seg) return -1;
    seg[this.hitWord] = ((seg[this.hitWord] as number) & ~this.hitMask) >>> 0;
    this.live--;
    this.liveByOrder[order] = (this.liveByOrder[order] as number) - 1;
    return order;
  }

  /** Forget every head (a walk that failed half-way reserves nothing). */
  clear(): void {
    this.segs = [];
    this.orders = [];
    this.liveByOrder.fill(0);
    this.live = 0;
    this.cacheIdx.fill(-1);
    this.cacheSeg.fill(undefined);
  }

  /** Blocks still carrying the magic (preserved, never restored): what leaks at this boot. */
  *remaining(): IterableIterator<{ pfn: number; order: number }> {
    for (const order of this.orders) {
      const map = this.segs[order];
      if (!map) continue;
      for (const [segIdx, seg] of map) {
        const base = segIdx * HEAD_SEG_BITS;
        for (let w = 0; w < seg.length; w++) {
          let bits = seg[w] as number;
          while (bits !== 0) {
            const low = bits & -bits;
            bits = (bits ^ low) >>> 0;
            yield { pfn: (base + w * 32 + (31 - Math.clz32(low))) * 2 ** order, order };
          }
        }
      }
    }
  }
}
