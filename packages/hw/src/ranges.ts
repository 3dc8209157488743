/**
 * A set of page frame numbers kept as sorted, merged half-open intervals [start, end) in a
 * growable Float64Array. Costs grow with the number of runs, never with the size of the
 * machine: a 64 TiB machine with three preserved runs is three pairs of numbers.
 */
export class PfnRanges {
  private buf: Float64Array;
  private n = 0; // number of runs

  constructor(capacity = 8) {
    this.buf = new Float64Array(Math.max(2, capacity * 2));
  }

  static of(...runs: ReadonlyArray<readonly [start: number, end: number]>): PfnRanges {
    const r = new PfnRanges(runs.length);
    for (const [s, e] of runs) r.add(s, e);
    return r;
  }

  get runCount(): number { return this.n; }

  /** Total pages covered. */
  get pageCount(): number {
    let t = 0;
    for (let i = 0; i < this.n; i++) t += (this.buf[2 * i + 1] as number) - (this.buf[2 * i] as number);
    return t;
  }

  start(i: number): number { return this.buf[2 * i] as number; }
  end(i: number): number { return this.buf[2 * i + 1] as number; }

  *runs(): IterableIterator<[start: number, end: number]> {
    for (let i = 0; i < this.n; i++) yield [this.buf[2 * i] as number, this.buf[2 * i + 1] as number];
  }

  clone(): PfnRanges {
    const r = new PfnRanges(this.n);
    r.buf.set(this.buf.subarray(0, 2 * this.n));
    r.n = this.n;
    return r;
  }

  /** Add [start, end). Appending in ascending order is O(1); anything else is an ordered insert. */
  add(start: number, end: number): void {
    if (!(end > start)) return;
    const n = this.n;
    if (n === 0 || start > (this.buf[2 * n - 1] as number)) { this.push(start, end); return; }
    if (start >= (this.buf[2 * n - 2] as number)) {
      // overlaps or touches the last run
      if (end > (this.buf[2 * n - 1] as number)) this.buf[2 * n - 1] = end;
      return;
    }
    // General case: find the first run whose end >= start, merge every run it touches.
    const lo = this.lowerEnd(start);
    let hi = lo;
    let s = start;
    let e = end;
    while (hi < n && (this.buf[2 * hi] as number) <= e) {
      s = Math.min(s, this.buf[2 * hi] as number);
      e = Math.max(e, this.buf[2 * hi + 1] as number);
      hi++;
    }
    this.splice(lo, hi - lo, s, e);
  }

  /** Remove [start, end) from the set. */
  remove(start: number, end: number): void {
    if (!(end > start) || this.n === 0) return;
    const lo = this.lowerEnd(start + 1); // first run with end > start
    let hi = lo;
    const keep: number[] = [];
    while (hi < this.n && (this.buf[2 * hi] as number) < end) {
      const s = this.buf[2 * hi] as number;
      const e = this.buf[2 * hi + 1] as number;
      if (s < start) keep.push(s, start);
      if (e > end) keep.push(end, e);
      hi++;
    }
    if (hi === lo) return;
    this.spliceMany(lo, hi - lo, keep);
  }

  has(pfn: number): boolean {
    const i = this.lowerEnd(pfn + 1);
    return i < this.n && (this.buf[2 * i] as number) <= pfn;
  }

  /** True when every page of [start, end) is in the set. */
  covers(start: number, end: number): boolean {
    if (!(end > start)) return true; // an empty range has no page outside the set
    const i = this.lowerEnd(start + 1);
    return i < this.n && (this.buf[2 * i] as number) <= start && (this.buf[2 * i + 1] as number) >= end;
  }

  /** True when any page of [start, end) is in the set. */
  overlaps(start: number, end: number): boolean {
    if (!(end > start)) return false; // an empty range has no page inside the set
    const i = this.lowerEnd(start + 1);
    return i < this.n && (this.buf[2 * i] as number) < end;
  }

  /** The intersection as a new set; O(runs of both). */
  intersect(other: PfnRanges): PfnRanges {
    const out = new PfnRanges(Math.min(this.n, other.n) + 1);
    let i = 0;
    let j = 0;
    while (i < this.n && j < other.n) {
      const s = Math.max(this.start(i), other.start(j));
      const e = Math.min(this.end(i), other.end(j));
      if (e > s) out.push(s, e);
      if (this.end(i) < other.end(j)) i++; else j++;
    }
    return out;
  }

  /** Index of the first run whose end >= x (binary search). */
  private lowerEnd(x: number): number {
    let lo = 0;
    let hi = this.n;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((this.buf[2 * mid + 1] as number) < x) lo = mid + 1; else hi = mid;
    }
    return lo;
  }

  private push(s: number, e: number): void {
    if (2 * this.n + 2 > this.buf.length) this.grow(this.n + 1);
    this.buf[2 * this.n] = s;
    this.buf[2 * this.n + 1] = e;
    this.n++;
  }

  private grow(runs: number): void {
    const next = new Float64Array(Math.max(runs * 2, this.buf.length * 2));
    next.set(this.buf.subarray(0, 2 * this.n));
    this.buf = next;
  }

  private splice(at: number, del: number, s: number, e: number): void {
    this.spliceMany(at, del, [s, e]);
  }

  private spliceMany(at: number, del: number, ins: readonly number[]): void {
    const insRuns = ins.length / 2;
    const newN = this.n - del + insRuns;
    if (2 * newN > this.buf.length) this.grow(newN);
    this.buf.copyWithin(2 * (at + insRuns), 2 * (at + del), 2 * this.n);
    for (let k = 0; k < ins.length; k++) this.buf[2 * at + k] = ins[k] as number;
    this.n = newN;
  }
}

/** Pages in either set. O(runs of both). */
export function unionRanges(a: PfnRanges, b: PfnRanges): PfnRanges {
  const out = new PfnRanges(a.runCount + b.runCount);
  let i = 0;
  let j = 0;
  while (i < a.runCount || j < b.runCount) {
    const takeA = j >= b.runCount || (i < a.runCount && a.start(i) <= b.start(j));
    if (takeA) { out.add(a.start(i), a.end(i)); i++; } else { out.add(b.start(j), b.end(j)); j++; }
  }
  return out;
}

/** Pages of `a` that are not in `b`. O(runs of both). */
export function subtractRanges(a: PfnRanges, b: PfnRanges): PfnRanges {
  const out = new PfnRanges(a.runCount + b.runCount);
  let j = 0;
  for (let i = 0; i < a.runCount; i++) {
    let s = a.start(i);
    const e = a.end(i);
    while (j < b.runCount && b.end(j) <= s) j++;
    let k = j;
    while (k < b.runCount && b.start(k) < e) {
      if (b.start(k) > s) out.add(s, b.start(k));
      s = Math.max(s, b.end(k));
      k++;
    }
    if (s < e) out.add(s, e);
  }
  return out;
}
