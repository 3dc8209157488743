import { PfnRanges } from './ranges.js';
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

/** Levels of the skip list: with p = 1/4 that serves 4^16 runs at O(log n). */
const MAX_LEVEL = 16;
/** Node 0 is the head sentinel; NIL ends a list. */
const HEAD = 0;
const NIL = -1;

/**
 * Synthetic runs: sorted, non-overlapping [start, end) with the seed of their first page.
 *
 * A skip list in typed arrays (no object per run, none per page): set, clear and lookups
 * cost O(log n) expected whatever order runs arrive in, so a guest filled back to front or
 * at random costs what one filled front to back does. Appending after the last run is O(1)
 * expected through the per-level tail pointers, and a run that continues the last one's
 * seeds extends it instead of adding a node; so is a run before the first (back to front).
 */
export class SyntheticRuns {
  private startOf = new Float64Array(16);
  private endOf = new Float64Array(16);
  private seedAt = new Float64Array(16);
  private heightOf = new Uint8Array(16);
  /** Forward links: node x's link on level l is links[linkAt[x] + l]; a node has heightOf[x] of them (1.33 on average). */
  private linkAt = new Int32Array(16);
  private links = new Int32Array(64).fill(NIL);
  private linksUsed = MAX_LEVEL;
  /** Last node on each level (HEAD when the level is empty): O(1) appends. */
  private readonly tail = new Int32Array(MAX_LEVEL);
  /** Scratch for a search: the last node before the key on each level. */
  private readonly update = new Int32Array(MAX_LEVEL);
  private level = 1;
  private n = 0;
  /** Nodes made so far, counting the head; freed nodes are reused from `free`, by height. */
  private used = 1;
  private free: number[][] = Array.from({ length: MAX_LEVEL + 1 }, () => []);
  private rng = 0x2545f491;
  /** The node of the last successful seedOf: reads walk pages in order. */
  private hit = NIL;

  constructor(from?: Float64Array) {
    // serialize() gives sorted triples, so each set() is an O(1) append; any other order still works.
    if (from) for (let i = 0; i + 2 < from.length; i += 3) this.set(from[i] as number, from[i + 1] as number, from[i + 2] as number);
  }

  get runCount(): number { return this.n; }

  serialize(): Float64Array {
    const out = new Float64Array(3 * this.n);
    let k = 0;
    for (let x = this.links[this.linkAt[HEAD] as number] as number; x !== NIL; x = this.links[this.linkAt[x] as number] as number) {
      out[k++] = this.startOf[x] as number;
      out[k++] = this.endOf[x] as number;
      out[k++] = this.seedAt[x] as number;
    }
    return out;
  }

  *runs(): IterableIterator<[start: number, end: number, seed: number]> {
    for (let x = this.links[this.linkAt[HEAD] as number] as number; x !== NIL; x = this.links[this.linkAt[x] as number] as number) {
      yield [this.startOf[x] as number, this.endOf[x] as number, this.seedAt[x] as number];
    }
  }

  /** The page seed of pfn, or -1 when pfn is not synthetic. */
  seedOf(pfn: number): number {
    const x = this.nodeAt(pfn);
    return x === NIL ? -1 : pageSeedAt(this.seedAt[x] as number, pfn - (this.startOf[x] as number));
  }

  /** True when some page of [start, end) is synthetic. O(log n) expected. */
  overlaps(start: number, end: number): boolean {
    if (end <= start || this.n === 0) return false;
    // Runs are sorted and disjoint: if any run meets [start, end), the last one starting before `end` does.
    let x = HEAD;
    for (let l = this.level - 1; l >= 0; l--) {
      let nx = this.links[(this.linkAt[x] as number) + l] as number;
      while (nx !== NIL && (this.startOf[nx] as number) < end) { x = nx; nx = this.links[(this.linkAt[x] as number) + l] as number; }
    }
    return x !== HEAD && (this.endOf[x] as number) > start;
  }

  /** True when every page of [start, end) is synthetic and page i has seed (seed + i). */
  matches(start: number, end: number, seed: number): boolean {
    if (end <= start) return true;
    let x = this.nodeAt(start);
    let pfn = start;
    while (x !== NIL) {
      const runStart = this.startOf[x] as number;
      if (runStart > pfn) return false;
      if (pageSeedAt(this.seedAt[x] as number, pfn - runStart) !== pageSeedAt(seed, pfn - start)) return false;
      pfn = this.endOf[x] as number;
      if (pfn >= end) return true;
      x = this.links[this.linkAt[x] as number] as number;
    }
    return false;
  }

  /** Make [start, end) synthetic with first-page seed `seed`, replacing what was there. */
  set(start: number, end: number, seed: number): void {
    if (end <= start) return;
    const last = this.tail[0] as number;
    if (last === HEAD || start >= (this.endOf[last] as number)) {
      this.append(start, end, seed);
      return;
    }
    const first = this.links[this.linkAt[HEAD] as number] as number;
    if (end <= (this.startOf[first] as number)) {
      // Before the first run (a guest filled back to front): the head is the node before it on
      // every level, so no search, O(1) expected like an append.
      this.hit = NIL;
      const x = this.node(start, end, seed >>> 0);
      this.update.fill(HEAD, 0, this.heightOf[x] as number);
      this.link(x);
      return;
    }
    // clear() leaves `update` holding the last node before `start` on each level: the new run links in there.
    this.clear(start, end);
    this.link(this.node(start, end, seed >>> 0));
  }

  /** Forget [start, end): those pages are no longer synthetic. O(log n + runs removed). */
  clear(start: number, end: number): void {
    if (end <= start || this.n === 0) return;
    this.hit = NIL;
    const before = this.search(start);
    // A run that starts before `start` and reaches into the range keeps its head; if it also
    // reaches past `end`, its tail becomes a run of its own.
    if (before !== HEAD && (this.endOf[before] as number) > start) {
      const runEnd = this.endOf[before] as number;
      this.endOf[before] = start;
      if (runEnd > end) {
        // The tail links in after `before`, which stays the last node before `start` on every level.
        this.link(this.node(end, runEnd, pageSeedAt(this.seedAt[before] as number, end - (this.startOf[before] as number))));
        return;
      }
    }
    for (let x = this.links[this.linkAt[before] as number] as number; x !== NIL && (this.startOf[x] as number) < end; x = this.links[this.linkAt[before] as number] as number) {
      if ((this.endOf[x] as number) > end) {
        // Only the first pages go: the start moves up, the order of runs stays.
        this.seedAt[x] = pageSeedAt(this.seedAt[x] as number, end - (this.startOf[x] as number));
        this.startOf[x] = end;
        return;
      }
      this.unlink(x);
    }
  }

  /**
   * Keep only the pages inside `keepRuns` (sorted [start, end) runs, as a PfnRanges or any
   * iterable of pairs). O(n + keep runs + pieces). Plain indexed loops over the typed arrays
   * (no generator, no destructuring): this runs at every kexec, and code built on iterators
   * costs many times more to run cold and to optimize.
   */
  intersect(keepRuns: PfnRanges | Iterable<readonly [number, number]>): void {
    let keep: Float64Array | number[];
    let nk: number;
    if (keepRuns instanceof PfnRanges) {
      nk = keepRuns.runCount;
      keep = new Float64Array(2 * nk);
      for (let i = 0; i < nk; i++) { keep[2 * i] = keepRuns.start(i); keep[2 * i + 1] = keepRuns.end(i); }
    } else {
      const flat: number[] = [];
      for (const r of keepRuns) flat.push(r[0], r[1]);
      keep = flat;
      nk = flat.length / 2;
    }
    const out: number[] = [];
    let j = 0;
    for (let x = this.links[this.linkAt[HEAD] as number] as number; x !== NIL; x = this.links[this.linkAt[x] as number] as number) {
      const s = this.startOf[x] as number;
      const e = this.endOf[x] as number;
      const seed = this.seedAt[x] as number;
      while (j < nk && (keep[2 * j + 1] as number) <= s) j++;
      for (let k = j; k < nk; k++) {
        const ks = keep[2 * k] as number;
        if (ks >= e) break;
        const is = Math.max(s, ks);
        const ie = Math.min(e, keep[2 * k + 1] as number);
        if (ie > is) out.push(is, ie, pageSeedAt(seed, is - s));
      }
    }
    this.reset();
    for (let i = 0; i < out.length; i += 3) this.append(out[i] as number, out[i + 1] as number, out[i + 2] as number);
  }

  // ---- the skip list -------------------------------------------------------------------

  /** The run holding pfn, or NIL. */
  private nodeAt(pfn: number): number {
    const h = this.hit;
    if (h !== NIL && (this.startOf[h] as number) <= pfn && pfn < (this.endOf[h] as number)) return h;
    // The last run starting at or before pfn (pfns are integers, so "before pfn + 1").
    let x = HEAD;
    for (let l = this.level - 1; l >= 0; l--) {
      let nx = this.links[(this.linkAt[x] as number) + l] as number;
      while (nx !== NIL && (this.startOf[nx] as number) <= pfn) { x = nx; nx = this.links[(this.linkAt[x] as number) + l] as number; }
    }
    if (x === HEAD || (this.endOf[x] as number) <= pfn) return NIL;
    this.hit = x;
    return x;
  }

  /** Fill `update` with the last node before `key` on each level; returns the one on level 0. */
  private search(key: number): number {
    let x = HEAD;
    for (let l = this.level - 1; l >= 0; l--) {
      let nx = this.links[(this.linkAt[x] as number) + l] as number;
      while (nx !== NIL && (this.startOf[nx] as number) < key) { x = nx; nx = this.links[(this.linkAt[x] as number) + l] as number; }
      this.update[l] = x;
    }
    return x;
  }

  /** Append after the last run (the caller checked start >= its end): O(1) expected. */
  private append(start: number, end: number, seed: number): void {
    this.hit = NIL;
    const last = this.tail[0] as number;
    if (last !== HEAD && (this.endOf[last] as number) === start &&
        pageSeedAt(this.seedAt[last] as number, start - (this.startOf[last] as number)) === seed >>> 0) {
      this.endOf[last] = end;
      return;
    }
    const x = this.node(start, end, seed >>> 0);
    const h = this.heightOf[x] as number;
    if (h > this.level) this.level = h;
    for (let l = 0; l < h; l++) {
      this.links[(this.linkAt[this.tail[l] as number] as number) + l] = x;
      this.tail[l] = x;
    }
  }

  /** Link x in after update[l] on each of its levels (the caller searched for its start). */
  private link(x: number): void {
    const h = this.heightOf[x] as number;
    for (let l = this.level; l < h; l++) this.update[l] = HEAD;
    if (h > this.level) this.level = h;
    for (let l = 0; l < h; l++) {
      const prev = this.update[l] as number;
      const after = this.links[(this.linkAt[prev] as number) + l] as number;
      this.links[(this.linkAt[x] as number) + l] = after;
      this.links[(this.linkAt[prev] as number) + l] = x;
      if (after === NIL) this.tail[l] = x;
    }
  }

  /** Remove x, which follows update[l] on every level it is on. */
  private unlink(x: number): void {
    const h = this.heightOf[x] as number;
    for (let l = 0; l < h; l++) {
      const prev = this.update[l] as number;
      const after = this.links[(this.linkAt[x] as number) + l] as number;
      this.links[(this.linkAt[prev] as number) + l] = after;
      if (after === NIL) this.tail[l] = prev;
    }
    (this.free[h] as number[]).push(x);
    this.n--;
  }

  /** A fresh node with a random height (p = 1/4), unlinked. */
  private node(start: number, end: number, seed: number): number {
    let r = this.rng;
    r ^= r << 13; r ^= r >>> 17; r ^= r << 5;
    this.rng = r >>> 0;
    // Two random bits per level: each level is kept with probability 1/4.
    let h = 1;
    while (h < MAX_LEVEL && ((this.rng >>> (2 * h)) & 3) === 0) h++;
    let x = (this.free[h] as number[]).pop();
    if (x === undefined) {
      if (this.used === this.startOf.length) this.growNodes();
      if (this.linksUsed + h > this.links.length) this.growLinks();
      x = this.used++;
      this.linkAt[x] = this.linksUsed;
      this.linksUsed += h;
      this.heightOf[x] = h;
    }
    this.startOf[x] = start;
    this.endOf[x] = end;
    this.seedAt[x] = seed;
    // A loop, not links.fill(): h is 1.33 on average and fill() is a builtin call per node.
    const at = this.linkAt[x] as number;
    for (let l = 0; l < h; l++) this.links[at + l] = NIL;
    this.n++;
    return x;
  }

  private growNodes(): void {
    const cap = this.startOf.length * 2;
    const f64 = (a: Float64Array): Float64Array<ArrayBuffer> => { const b = new Float64Array(cap); b.set(a); return b; };
    this.startOf = f64(this.startOf);
    this.endOf = f64(this.endOf);
    this.seedAt = f64(this.seedAt);
    const heights = new Uint8Array(cap);
    heights.set(this.heightOf);
    this.heightOf = heights;
    const linkAt = new Int32Array(cap);
    linkAt.set(this.linkAt);
    this.linkAt = linkAt;
  }

  private growLinks(): void {
    const links = new Int32Array(this.links.length * 2);
    links.set(this.links);
    this.links = links;
  }

  private reset(): void {
    this.links.fill(NIL, 0, MAX_LEVEL);
    this.linksUsed = MAX_LEVEL;
    this.tail.fill(HEAD);
    this.level = 1;
    this.n = 0;
    this.used = 1;
    for (const f of this.free) f.length = 0;
    this.hit = NIL;
  }
}
