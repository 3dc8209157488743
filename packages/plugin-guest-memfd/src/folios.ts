/**
 * The page cache of a guest_memfd inode: folio head page index → pfn, with per-folio flags
 * (uptodate, hwpoison, order). Sparse in 512-entry typed chunks keyed by index / 512, so holes
 * cost nothing and a 64 GiB guest with 1% touched costs a few hundred KiB. A 2 MiB folio has
 * one entry at its head (a multiple of 512).
 */
const CHUNK = 512;
export const FOLIO_UPTODATE = 1 << 0;
export const FOLIO_HWPOISON = 1 << 1;
const ORDER_SHIFT = 2;

interface Chunk {
  /** pfn + 1 (0 = hole). */
  readonly pfn: Float64Array;
  readonly meta: Uint8Array;
  used: number;
}

export class GmemFolios {
  private readonly chunks = new Map<number, Chunk>();
  private present = 0;
  private large = 0;

  get count(): number { return this.present; }
  /** Folios above order 0. */
  get largeCount(): number { return this.large; }

  private chunk(index: number, create: boolean): Chunk | undefined {
    const key = Math.floor(index / CHUNK);
    let c = this.chunks.get(key);
    if (!c && create) {
      c = { pfn: new Float64Array(CHUNK), meta: new Uint8Array(CHUNK), used: 0 };
      this.chunks.set(key, c);
    }
    return c;
  }

  /** The head index of the folio holding page `index`, or -1 for a hole. */
  headOf(index: number): number {
    const c = this.chunk(index, false);
    if (!c) return -1;
    if (c.pfn[index % CHUNK] !== 0) return index;
    const head = index - (index % CHUNK);
    return c.pfn[0] !== 0 && this.orderAt(head) === 9 ? head : -1;
  }

  /** The pfn of page `index` (inside its folio), or -1. */
  pfnOfPage(index: number): number {
    const head = this.headOf(index);
    return head < 0 ? -1 : this.pfnAt(head) + (index - head);
  }

  pfnAt(head: number): number {
    const c = this.chunk(head, false);
    return c ? (c.pfn[head % CHUNK] as number) - 1 : -1;
  }

  metaAt(head: number): number {
    return this.chunk(head, false)?.meta[head % CHUNK] ?? 0;
  }

  orderAt(head: number): number { return this.metaAt(head) >>> ORDER_SHIFT; }

  setMeta(head: number, meta: number): void {
    const c = this.chunk(head, false);
    if (c && c.pfn[head % CHUNK] !== 0) c.meta[head % CHUNK] = ((c.meta[head % CHUNK] as number) & ~(FOLIO_UPTODATE | FOLIO_HWPOISON)) | meta;
  }

  set(head: number, pfn: number, order: number, meta: number): void {
    const c = this.chunk(head, true) as Chunk;
    const at = head % CHUNK;
    if (c.pfn[at] === 0) { this.present++; c.used++; if (order > 0) this.large++; }
    c.pfn[at] = pfn + 1;
    c.meta[at] = (order << ORDER_SHIFT) | (meta & (FOLIO_UPTODATE | FOLIO_HWPOISON));
  }

  /** Remove the folio at head; returns its pfn or -1. */
  delete(head: number): number {
    const key = Math.floor(head / CHUNK);
    const c = this.chunks.get(key);
    if (!c) return -1;
    const at = head % CHUNK;
    const v = c.pfn[at] as number;
    if (v === 0) return -1;
    if ((c.meta[at] as number) >>> ORDER_SHIFT > 0) this.large--;
    c.pfn[at] = 0;
    c.meta[at] = 0;
    this.present--;
    if (--c.used === 0) this.chunks.delete(key);
    return v - 1;
  }

  /** Folios in ascending head index order; return true to stop. */
  forEach(fn: (head: number, pfn: number, order: number, meta: number) => boolean | void): void {
    const keys = [...this.chunks.keys()].sort((a, b) => a - b);
    for (const key of keys) {
      const c = this.chunks.get(key);
      if (!c) continue;
      for (let i = 0; i < CHUNK; i++) {
        const v = c.pfn[i] as number;
        if (v === 0) continue;
        const m = c.meta[i] as number;
        if (fn(key * CHUNK + i, v - 1, m >>> ORDER_SHIFT, m & (FOLIO_UPTODATE | FOLIO_HWPOISON)) === true) return;
      }
    }
  }

  /** Empty the cache, handing every folio to fn first. */
  drain(fn: (head: number, pfn: number, order: number) => void): void {
    this.forEach((head, pfn, order) => { fn(head, pfn, order); });
    this.chunks.clear();
    this.present = 0;
    this.large = 0;
  }
}
