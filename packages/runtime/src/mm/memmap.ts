/**
 * The part of struct page the model needs: page->private of the head page of each preserved
 * block, where the incoming kernel writes { order, KHO_PAGE_MAGIC }. Kept as sparse per-order
 * bitmaps (one bit per possible head), so 10 million preserved pages cost ~1.2 MiB, not
 * 10 million objects.
 */
const SEG_BITS = 32768;

export class KhoHeadMap {
  private readonly segs = new Map<number, Uint32Array>();
  private ordersPresent = 0n;
  private live = 0;

  get count(): number { return this.live; }

  /** Write { order, KHOP } into the head page's private word. */
  set(pfn: number, order: number): void {
    const idx = pfn / 2 ** order;
    const key = order * 2 ** 40 + Math.floor(idx / SEG_BITS);
    let seg = this.segs.get(key);
    if (!seg) { seg = new Uint32Array(SEG_BITS / 32); this.segs.set(key, seg); }
    const bit = idx % SEG_BITS;
    const w = seg[bit >>> 5] as number;
    const m = 1 << (bit & 31);
    if ((w & m) === 0) { seg[bit >>> 5] = (w | m) >>> 0; this.live++; }
    this.ordersPresent |= 1n << BigInt(order);
  }

  /**
   * kho_restore_folio's check: the head page carries the magic. Returns its order and clears
   * the word (a second restore fails), or -1 (unaligned, tail or never-preserved address).
   */
  take(pfn: number): number {
    for (let order = 0; order <= 63; order++) {
      if (((this.ordersPresent >> BigInt(order)) & 1n) === 0n) continue;
      if (pfn % 2 ** order !== 0) break;
      const idx = pfn / 2 ** order;
      const seg = this.segs.get(order * 2 ** 40 + Math.floor(idx / SEG_BITS));
      if (!seg) continue;
      const bit = idx % SEG_BITS;
      const w = seg[bit >>> 5] as number;
      const m = 1 << (bit & 31);
      if ((w & m) !== 0) { seg[bit >>> 5] = (w & ~m) >>> 0; this.live--; return order; }
    }
    return -1;
  }

  /** Blocks still carrying the magic (preserved, never restored): what leaks at this boot. */
  *remaining(): IterableIterator<{ pfn: number; order: number }> {
    for (const [key, seg] of this.segs) {
      const order = Math.floor(key / 2 ** 40);
      const base = (key % 2 ** 40) * SEG_BITS;
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
