/**
 * Structure-aware mutations of one handover page, beside the plain XOR flips: each one rewrites
 * a word the page's decoder names (OwnedPages.words: pointer, count, index, flags) or, for a
 * page whose decoder names none (the core's pages), a word that looks like one (an aligned u64
 * holding a page-aligned address inside memory is a pointer; a small non-zero u32 a count).
 *
 *   xor             1..4 bytes XORed with a non-zero mask
 *   retarget-page   a pointer now names another handover page
 *   retarget-folio  a pointer now names a data page another file hands over
 *   duplicate       one entry (pointer or index word) copied over another of the same kind
 *   count+1/count-1 a count off by one
 *   count-0/count-max  a count at its extremes
 *   cycle-self      a pointer to its own page
 *   cycle-earlier   a pointer to an earlier page of the same structure (or its first page)
 *   swap            two entries of the same kind exchanged
 *
 * A mutation is a pure function of its seed and the handover's targets, and is applied to a
 * copy of the page: `--seed S` reproduces it exactly.
 */
import { PAGE_SIZE } from '@liveupdate/hw';

export const MUTATIONS = [
  'xor', 'retarget-page', 'retarget-folio', 'duplicate', 'count+1', 'count-1', 'count-0', 'count-max', 'cycle-self', 'cycle-earlier', 'swap',
] as const;
export type MutationKind = (typeof MUTATIONS)[number];

export type WordKind = 'pointer' | 'count' | 'index' | 'flags';
export interface Word { readonly offset: number; readonly size: 4 | 8; readonly kind: WordKind }

/** One page the campaign may mutate. */
export interface MutationTarget {
  readonly structure: string;
  readonly role: string;
  readonly pfn: number;
  /** Words the decoder named, or those inferred from the bytes. */
  readonly words: readonly Word[];
  readonly bytes: Uint8Array;
  /** An upstream layout without integrity check (the core's KHO/LUO structures, pages a decoder marks upstream). */
  readonly upstream?: boolean;
}

export interface Mutation {
  readonly kind: MutationKind;
  readonly structure: string;
  readonly pfn: number;
  /** Every byte written: offset in the page and its new value. */
  readonly writes: ReadonlyArray<{ readonly offset: number; readonly value: number }>;
  /** One line for reports ('word +0x18 0x1234000 -> 0x5678000'). */
  readonly what: string;
}

/** mulberry32: a small, fast PRNG whose whole state is one u32. */
export function prng(seed: number): { next(): number; int(n: number): number } {
  let a = seed >>> 0;
  const next = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 0x1_0000_0000;
  };
  return { next, int: (n) => Math.floor(next() * n) };
}

/** mulberry32 (see prng), seeded through a mix so neighbouring seeds differ in every draw. */
export function rng(seed: number): { next(): number; int(n: number): number } {
  return prng((Math.imul(seed ^ 0x5bd1e995, 0x9e3779b1) ^ seed) >>> 0);
}

const readWord = (b: Uint8Array, w: Word): bigint => {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return w.size === 8 ? v.getBigUint64(w.offset, true) : BigInt(v.getUint32(w.offset, true));
};

function wordWrites(page: Uint8Array, w: Word, value: bigint): Array<{ offset: number; value: number }> {
  const out: Array<{ offset: number; value: number }> = [];
  const v = BigInt.asUintN(w.size * 8, value);
  for (let i = 0; i < w.size; i++) {
    const byte = Number((v >> BigInt(8 * i)) & 0xffn);
    if (page[w.offset + i] !== byte) out.push({ offset: w.offset + i, value: byte });
  }
  return out;
}

/**
 * Words of a page that no decoder described: aligned u64s holding a page-aligned address
 * inside memory (pointers), and aligned u32s from 1 to 4096 (counts and indices).
 */
export function inferWords(page: Uint8Array, memorySize: number): Word[] {
  const v = new DataView(page.buffer, page.byteOffset, page.byteLength);
  const words: Word[] = [];
  for (let off = 0; off + 8 <= page.length; off += 8) {
    const lo = v.getUint32(off, true);
    const hi = v.getUint32(off + 4, true);
    const x = hi * 0x1_0000_0000 + lo;
    if (x !== 0 && x % PAGE_SIZE === 0 && x < memorySize) { words.push({ offset: off, size: 8, kind: 'pointer' }); continue; }
    if (lo >= 1 && lo <= 4096) words.push({ offset: off, size: 4, kind: 'count' });
    if (hi >= 1 && hi <= 4096) words.push({ offset: off + 4, size: 4, kind: 'count' });
  }
  return words;
}

/** A new value for a pointer word that keeps the old one's encoding: a physical address (low bits kept) or a pfn. */
function pointerTo(old: bigint, pfn: number, pageCount: number): bigint {
  if (old !== 0n && old < BigInt(pageCount) && old % BigInt(PAGE_SIZE) !== 0n) return BigInt(pfn);
  return BigInt(pfn * PAGE_SIZE) | (old & BigInt(PAGE_SIZE - 1));
}

export interface MutationContext {
  readonly targets: readonly MutationTarget[];
  /** Data pages files hand over, [startPfn, endPfn) runs, per file (decoders' dataRuns). */
  readonly dataRuns: ReadonlyArray<readonly [number, number]>;
  readonly pageCount: number;
}

function xorMutation(r: ReturnType<typeof rng>, t: MutationTarget): Mutation {
  const k = 1 + r.int(4);
  const offsets = new Set<number>();
  while (offsets.size < k) {
    const x = r.next();
    offsets.add(r.int(x < 0.4 ? 64 : x < 0.7 ? 512 : PAGE_SIZE));
  }
  const writes = [...offsets].map((offset) => {
    const mask = r.next() < 0.5 ? 1 << r.int(8) : 1 + r.int(255);
    return { offset, value: (t.bytes[offset] as number) ^ mask };
  });
  return { kind: 'xor', structure: t.structure, pfn: t.pfn, writes, what: writes.map((w) => `+0x${w.offset.toString(16)}=0x${w.value.toString(16)}`).join(' ') };
}

/**
 * The mutation of `seed`: a structure (uniform over those present), a page of it, a kind
 * (uniform over those the page has words for; XOR when none fits), then its operands. A word
 * mutation that would write the same bytes falls back to an XOR, so every run changes the page.
 */
export function chooseMutation(seed: number, ctx: MutationContext, structures: readonly string[], only?: MutationKind): Mutation {
  const r = rng(seed);
  const structure = structures[r.int(structures.length)] as string;
  const pages = ctx.targets.filter((t) => t.structure === structure);
  const t = pages[r.int(pages.length)] as MutationTarget;
  const of = (k: WordKind | 'entry'): Word[] => t.words.filter((w) => (k === 'entry' ? w.kind === 'pointer' || w.kind === 'index' : w.kind === k));
  const pointers = of('pointer');
  const counts = [...of('count'), ...of('index')];
  const entries = of('entry');
  const possible = MUTATIONS.filter((k) => {
    switch (k) {
      case 'xor': return true;
      case 'retarget-page': case 'cycle-self': case 'cycle-earlier': return pointers.length > 0;
      case 'retarget-folio': return pointers.length > 0 && ctx.dataRuns.length > 0;
      case 'duplicate': case 'swap': return entries.length > 1;
      default: return counts.length > 0;
    }
  });
  const kind = only !== undefined ? (possible.includes(only) ? only : 'xor') : possible[r.int(possible.length)] as MutationKind;
  const pick = <T>(xs: readonly T[]): T => xs[r.int(xs.length)] as T;
  const word = (w: Word, value: bigint, label: string): Mutation | null => {
    const writes = wordWrites(t.bytes, w, value);
    if (writes.length === 0) return null;
    return { kind, structure, pfn: t.pfn, writes, what: `${label} +0x${w.offset.toString(16)}: 0x${readWord(t.bytes, w).toString(16)} -> 0x${BigInt.asUintN(w.size * 8, value).toString(16)}` };
  };
  let m: Mutation | null = null;
  switch (kind) {
    case 'xor': return xorMutation(r, t);
    case 'retarget-page': {
      const w = pick(pointers);
      const others = ctx.targets.filter((x) => x.pfn !== t.pfn);
      if (others.length === 0) break;
      const other = pick(others).pfn;
      m = word(w, pointerTo(readWord(t.bytes, w), other, ctx.pageCount), 'pointer'); break;
    }
    case 'retarget-folio': {
      const w = pick(pointers);
      const [s, e] = pick(ctx.dataRuns);
      m = word(w, pointerTo(readWord(t.bytes, w), s + r.int(Math.max(1, e - s)), ctx.pageCount), 'pointer'); break;
    }
    case 'cycle-self': {
      const w = pick(pointers);
      m = word(w, pointerTo(readWord(t.bytes, w), t.pfn, ctx.pageCount), 'pointer'); break;
    }
    case 'cycle-earlier': {
      const w = pick(pointers);
      const earlier = pages.filter((x) => x.pfn < t.pfn);
      const to = earlier.length > 0 ? pick(earlier).pfn : (pages[0] as MutationTarget).pfn;
      m = word(w, pointerTo(readWord(t.bytes, w), to, ctx.pageCount), 'pointer'); break;
    }
    case 'duplicate': {
      const a = pick(entries);
      const same = entries.filter((x) => x !== a && x.size === a.size);
      if (same.length === 0) break;
      const b = pick(same);
      m = word(b, readWord(t.bytes, a), `entry +0x${a.offset.toString(16)} over`); break;
    }
    case 'swap': {
      const a = pick(entries);
      const same = entries.filter((x) => x !== a && x.size === a.size && readWord(t.bytes, x) !== readWord(t.bytes, a));
      if (same.length === 0) break;
      const b = pick(same);
      const wa = wordWrites(t.bytes, a, readWord(t.bytes, b));
      const wb = wordWrites(t.bytes, b, readWord(t.bytes, a));
      m = { kind, structure, pfn: t.pfn, writes: [...wa, ...wb], what: `entries +0x${a.offset.toString(16)} <-> +0x${b.offset.toString(16)}` };
      break;
    }
    case 'count+1': case 'count-1': case 'count-0': case 'count-max': {
      const w = pick(counts);
      const old = readWord(t.bytes, w);
      const max = (1n << BigInt(w.size * 8)) - 1n;
      const value = kind === 'count+1' ? old + 1n : kind === 'count-1' ? old - 1n : kind === 'count-0' ? 0n : max;
      m = word(w, value, w.kind); break;
    }
  }
  return m ?? xorMutation(r, t);
}

/** The page's bytes after the mutation (a copy; the target's bytes are left alone). */
export function mutatedPage(t: MutationTarget, m: Mutation): Uint8Array {
  const out = new Uint8Array(t.bytes);
  for (const w of m.writes) out[w.offset] = w.value;
  return out;
}
