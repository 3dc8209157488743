import { PAGE_SIZE } from './units.js';

/**
 * Synthetic page content: every page of a synthetic run is a pure function of its page seed,
 * so a 1 TiB guest can be modelled and verified without 1 TiB of host RAM. The content is a
 * xorshift32 stream seeded from a mix of the page seed; seed 0 is not special.
 */
export function fillSyntheticPage(dst: Uint32Array, pageSeed: number): void {
  // splitmix-style avalanche so neighbouring seeds give unrelated pages; never zero.
  let x = Math.imul((pageSeed >>> 0) ^ 0x9e3779b9, 0x85ebca6b) >>> 0;
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35) >>> 0;
  x = (x ^ (x >>> 16)) >>> 0;
  if (x === 0) x = 0x6d2b79f5;
  const words = PAGE_SIZE >>> 2;
  for (let i = 0; i < words; i++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    dst[i] = x >>> 0;
  }
}

/** Page seed of the page at offset `pageOffset` inside a run whose first page has `seed`. */
export const pageSeedAt = (seed: number, pageOffset: number): number => (seed + pageOffset) >>> 0;

/** Synthetic runs: sorted, non-overlapping [start, end) with the seed of their first page. */
export class SyntheticRuns {
  /** Triples (start, end, seed) in a Float64Array. */
  private buf: Float64Array;
  private n = 0;

  constructor(from?: Float64Array) {
    this.buf = from ? from.slice() : new Float64Array(12);
    this.n = from ? from.length / 3 : 0;
  }

  get runCount(): number { return this.n; }

  serialize(): Float64Array { return this.buf.slice(0, 3 * this.n); }

  *runs(): IterableIterator<[start: number, end: number, seed: number]> {
    for (let i = 0; i < this.n; i++) yield [this.buf[3 * i] as number, this.buf[3 * i + 1] as number, this.buf[3 * i + 2] as number];
  }

  /** The page seed of pfn, or -1 when pfn is not synthetic. */
  seedOf(pfn: number): number {
    let lo = 0;
    let hi = this.n;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((this.buf[3 * mid + 1] as number) <= pfn) lo = mid + 1; else hi = mid;
    }
    if (lo < this.n && (this.buf[3 * lo] as number) <= pfn) {
      return pageSeedAt(this.buf[3 * lo + 2] as number, pfn - (this.buf[3 * lo] as number));
    }
    return -1;
  }

  /** True when every page of [start, end) is synthetic and page i has seed (seed + i). */
  matches(start: number, end: number, seed: number): boolean {
    let pfn = start;
    while (pfn < end) {
      const i = this.indexOf(pfn);
      if (i < 0) return false;
      const runStart = this.buf[3 * i] as number;
      if (pageSeedAt(this.buf[3 * i + 2] as number, pfn - runStart) !== pageSeedAt(seed, pfn - start)) return false;
      pfn = Math.min(end, this.buf[3 * i + 1] as number);
    }
    return true;
  }

  /** Make [start, end) synthetic with first-page seed `seed`, replacing what was there. */
  set(start: number, end: number, seed: number): void {
    // Appending after the last run (a file filled front to back) is O(1) amortized, and a run
    // that continues the last one's seeds extends it instead of adding another.
    const n = this.n;
    if (n === 0 || start >= (this.buf[3 * n - 2] as number)) {
      const lastEnd = n > 0 ? (this.buf[3 * n - 2] as number) : -1;
      if (n > 0 && lastEnd === start && pageSeedAt(this.buf[3 * n - 1] as number, start - (this.buf[3 * n - 3] as number)) === seed >>> 0) {
        this.buf[3 * n - 2] = end;
        return;
      }
      if (3 * n + 3 > this.buf.length) {
        const next = new Float64Array(Math.max(12, this.buf.length * 2));
        next.set(this.buf.subarray(0, 3 * n));
        this.buf = next;
      }
      this.buf[3 * n] = start;
      this.buf[3 * n + 1] = end;
      this.buf[3 * n + 2] = seed >>> 0;
      this.n = n + 1;
      return;
    }
    this.clear(start, end);
    let at = 0;
    while (at < this.n && (this.buf[3 * at] as number) < start) at++;
    this.splice(at, 0, [start, end, seed >>> 0]);
  }

  /** Forget [start, end): those pages are no longer synthetic. */
  clear(start: number, end: number): void {
    const out: number[] = [];
    for (const [s, e, seed] of this.runs()) {
      if (e <= start || s >= end) { out.push(s, e, seed); continue; }
      if (s < start) out.push(s, start, seed);
      if (e > end) out.push(end, e, pageSeedAt(seed, end - s));
    }
    this.replaceAll(out);
  }

  /** Keep only the pages for which `keep` holds, given as sorted [start, end) runs. */
  intersect(keepRuns: Iterable<[number, number]>): void {
    const keep = [...keepRuns];
    const out: number[] = [];
    let j = 0;
    for (const [s, e, seed] of this.runs()) {
      while (j < keep.length && (keep[j] as [number, number])[1] <= s) j++;
      for (let k = j; k < keep.length; k++) {
        const [ks, ke] = keep[k] as [number, number];
        if (ks >= e) break;
        const is = Math.max(s, ks);
        const ie = Math.min(e, ke);
        if (ie > is) out.push(is, ie, pageSeedAt(seed, is - s));
      }
    }
    this.replaceAll(out);
  }

  private indexOf(pfn: number): number {
    let lo = 0;
    let hi = this.n;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((this.buf[3 * mid + 1] as number) <= pfn) lo = mid + 1; else hi = mid;
    }
    return lo < this.n && (this.buf[3 * lo] as number) <= pfn ? lo : -1;
  }

  private replaceAll(triples: number[]): void {
    this.buf = new Float64Array(Math.max(12, triples.length));
    this.buf.set(triples);
    this.n = triples.length / 3;
  }

  private splice(at: number, del: number, ins: number[]): void {
    const all = Array.from(this.buf.subarray(0, 3 * this.n));
    all.splice(3 * at, 3 * del, ...ins);
    this.replaceAll(all);
  }
}
