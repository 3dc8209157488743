/**
 * Which page frames the hypervisor holds, and for whom: a sparse map of 32768-page chunks,
 * each a Uint16Array of owner entries (0 = not deposited, else partition slot + 1, bit 15 =
 * in use by the hypervisor's own bookkeeping). No per-page objects: 1 GiB deposited costs
 * 8 chunks (512 KiB) when dense, and memory never touched by a deposit costs nothing.
 */
import type { Restore } from '../state.js';

const CHUNK_SHIFT = 15;
export const DEPOSIT_CHUNK_PAGES = 1 << CHUNK_SHIFT;
const CHUNK_MASK = DEPOSIT_CHUNK_PAGES - 1;
const USED = 0x8000;
const SLOT_MASK = 0x7fff;
export const MAX_PARTITION_SLOTS = SLOT_MASK - 1;

interface Chunk {
  readonly entries: Uint16Array;
  deposited: number;
}

export class DepositMap {
  private readonly chunks = new Map<number, Chunk>();
  /** Per slot: deposited pages, pages in use, and the chunks holding its pages. */
  private readonly perSlot = new Map<number, { deposited: number; used: number; chunks: Set<number> }>();
  private total = 0;
  /** Bumped by every change (and by a restore): a restore copies only when it moved. */
  private gen = 0;

  get depositedPages(): number { return this.total; }

  private slotInfo(slot: number): { deposited: number; used: number; chunks: Set<number> } {
    let s = this.perSlot.get(slot);
    if (!s) { s = { deposited: 0, used: 0, chunks: new Set() }; this.perSlot.set(slot, s); }
    return s;
  }

  depositedOf(slot: number): number { return this.perSlot.get(slot)?.deposited ?? 0; }
  usedOf(slot: number): number { return this.perSlot.get(slot)?.used ?? 0; }
  freeOf(slot: number): number { const s = this.perSlot.get(slot); return s ? s.deposited - s.used : 0; }

  /** The owner slot of a deposited page, or -1. */
  ownerOf(pfn: number): number {
    const c = this.chunks.get(Math.floor(pfn / DEPOSIT_CHUNK_PAGES));
    const e = c ? (c.entries[pfn & CHUNK_MASK] as number) : 0;
    return e === 0 ? -1 : (e & SLOT_MASK) - 1;
  }

  isDeposited(pfn: number): boolean { return this.ownerOf(pfn) >= 0; }

  /** First deposited page in [start, end), or -1: cost per chunk overlapped plus per page of chunks that exist. */
  firstDepositedIn(start: number, end: number): number {
    if (this.total === 0) return -1;
    for (let ci = Math.floor(start / DEPOSIT_CHUNK_PAGES); ci * DEPOSIT_CHUNK_PAGES < end; ci++) {
      const c = this.chunks.get(ci);
      if (!c) continue;
      const base = ci * DEPOSIT_CHUNK_PAGES;
      const lo = Math.max(start, base) - base;
      const hi = Math.min(end, base + DEPOSIT_CHUNK_PAGES) - base;
      const e = c.entries;
      for (let i = lo; i < hi; i++) if (e[i] !== 0) return base + i;
    }
    return -1;
  }

  /** Hand `pfn` to `slot`; false if it is already deposited. */
  add(pfn: number, slot: number): boolean {
    const ci = Math.floor(pfn / DEPOSIT_CHUNK_PAGES);
    let c = this.chunks.get(ci);
    if (!c) { c = { entries: new Uint16Array(DEPOSIT_CHUNK_PAGES), deposited: 0 }; this.chunks.set(ci, c); }
    const i = pfn & CHUNK_MASK;
    if (c.entries[i] !== 0) return false;
    c.entries[i] = slot + 1;
    this.gen++;
    c.deposited++;
    this.total++;
    const s = this.slotInfo(slot);
    s.deposited++;
    s.chunks.add(ci);
    return true;
  }

  /** Take up to `max` unused pages of `slot` back, ascending; they leave the map. */
  takeFree(slot: number, max: number): number[] {
    const s = this.perSlot.get(slot);
    const out: number[] = [];
    if (!s) return out;
    const want = slot + 1;
    for (const ci of [...s.chunks].sort((a, b) => a - b)) {
      const c = this.chunks.get(ci);
      if (!c) continue;
      const e = c.entries;
      for (let i = 0; i < DEPOSIT_CHUNK_PAGES && out.length < max; i++) {
        if (e[i] !== want) continue;
        e[i] = 0;
        c.deposited--;
        out.push(ci * DEPOSIT_CHUNK_PAGES + i);
      }
      if (c.deposited === 0) this.chunks.delete(ci);
      if (!this.chunkHasSlot(ci, want)) s.chunks.delete(ci);
      if (out.length >= max) break;
    }
    s.deposited -= out.length;
    this.gen++;
    this.total -= out.length;
    return out;
  }

  private chunkHasSlot(ci: number, want: number): boolean {
    const c = this.chunks.get(ci);
    if (!c) return false;
    const e = c.entries;
    for (let i = 0; i < DEPOSIT_CHUNK_PAGES; i++) if (((e[i] as number) & SLOT_MASK) === want) return true;
    return false;
  }

  /**
   * Mark `count` unused pages of `slot` in use. With `align` > 1 they must be one naturally
   * aligned run of `count` pages. Returns the pages, or null when there are not enough
   * (or no run): nothing is marked then.
   */
  use(slot: number, count: number, align = 1): number[] | null {
    const s = this.perSlot.get(slot);
    if (!s || s.deposited - s.used < count) return null;
    const want = slot + 1;
    const picked: number[] = [];
    for (const ci of [...s.chunks].sort((a, b) => a - b)) {
      const e = this.chunks.get(ci)?.entries;
      if (!e) continue;
      if (align <= 1) {
        for (let i = 0; i < DEPOSIT_CHUNK_PAGES && picked.length < count; i++) if (e[i] === want) picked.push(ci * DEPOSIT_CHUNK_PAGES + i);
        if (picked.length === count) break;
        continue;
      }
      for (let i = 0; i + count <= DEPOSIT_CHUNK_PAGES; i += align) {
        let k = 0;
        while (k < count && e[i + k] === want) k++;
        if (k === count) { for (let j = 0; j < count; j++) picked.push(ci * DEPOSIT_CHUNK_PAGES + i + j); break; }
      }
      if (picked.length === count) break;
    }
    if (picked.length < count) return null;
    for (const pfn of picked) {
      const c = this.chunks.get(Math.floor(pfn / DEPOSIT_CHUNK_PAGES)) as Chunk;
      c.entries[pfn & CHUNK_MASK] = want | USED;
    }
    s.used += count;
    this.gen++;
    return picked;
  }

  /** Every page `slot` holds becomes unused (its partition was finalized or its objects freed). */
  release(slot: number, pages?: readonly number[]): void {
    const s = this.perSlot.get(slot);
    if (!s) return;
    const want = slot + 1;
    this.gen++;
    if (pages) {
      for (const pfn of pages) {
        const c = this.chunks.get(Math.floor(pfn / DEPOSIT_CHUNK_PAGES));
        if (c && c.entries[pfn & CHUNK_MASK] === (want | USED)) { c.entries[pfn & CHUNK_MASK] = want; s.used--; }
      }
      return;
    }
    for (const ci of s.chunks) {
      const e = this.chunks.get(ci)?.entries;
      if (!e) continue;
      for (let i = 0; i < DEPOSIT_CHUNK_PAGES; i++) if (e[i] === (want | USED)) e[i] = want;
    }
    s.used = 0;
  }

  /** Every chunk's owner entries (a typed-array copy per chunk) and the per-slot counts. */
  save(): Restore {
    const chunks = [...this.chunks].map(([ci, c]) => [ci, c.entries.slice(), c.deposited] as const);
    const perSlot = [...this.perSlot].map(([slot, s]) => [slot, s.deposited, s.used, [...s.chunks]] as const);
    const total = this.total;
    let clean = this.gen;
    return () => {
      if (this.gen === clean) return;
      this.chunks.clear();
      for (const [ci, e, deposited] of chunks) this.chunks.set(ci, { entries: e.slice(), deposited });
      this.perSlot.clear();
      for (const [slot, deposited, used, cs] of perSlot) this.perSlot.set(slot, { deposited, used, chunks: new Set(cs) });
      this.total = total;
      clean = ++this.gen;
    };
  }

  /** Deposited runs [start, end) in ascending order, whoever holds them. */
  forEachRun(fn: (start: number, end: number) => void): void {
    for (const ci of [...this.chunks.keys()].sort((a, b) => a - b)) {
      const e = (this.chunks.get(ci) as Chunk).entries;
      const base = ci * DEPOSIT_CHUNK_PAGES;
      let run = -1;
      for (let i = 0; i < DEPOSIT_CHUNK_PAGES; i++) {
        if (e[i] !== 0) { if (run < 0) run = i; }
        else if (run >= 0) { fn(base + run, base + i); run = -1; }
      }
      if (run >= 0) fn(base + run, base + DEPOSIT_CHUNK_PAGES);
    }
  }
}
