/**
 * The campaign's structure-aware mutations: each kind, applied to a page with known words,
 * writes exactly the bytes it names, and nothing else.
 */
import { describe, expect, it } from 'vitest';
import { chooseMutation, inferWords, mutatedPage, type MutationKind, type MutationTarget } from '../src/fuzz/mutate.js';

const PAGE = 4096;
type W = MutationTarget['words'][number];

function page(pfn: number, structure: string, words: W[], values: Record<number, bigint>): MutationTarget {
  const bytes = new Uint8Array(PAGE);
  const v = new DataView(bytes.buffer);
  for (const w of words) {
    const x = values[w.offset] ?? 0n;
    if (w.size === 8) v.setBigUint64(w.offset, x, true); else v.setUint32(w.offset, Number(x), true);
  }
  return { structure, role: `${structure} page`, pfn, words, bytes };
}
const u64 = (b: Uint8Array, off: number): bigint => new DataView(b.buffer, b.byteOffset).getBigUint64(off, true);
const u32 = (b: Uint8Array, off: number): number => new DataView(b.buffer, b.byteOffset).getUint32(off, true);
/** Offsets whose byte differs. */
const changed = (a: Uint8Array, b: Uint8Array): number[] => [...a.keys()].filter((i) => a[i] !== b[i]);

const ptr: W = { offset: 0x10, size: 8, kind: 'pointer' };
const cnt: W = { offset: 0x20, size: 4, kind: 'count' };
const node = page(5, 'node', [ptr], { 0x10: 0x7000n });
const counted = page(6, 'counted', [cnt], { 0x20: 3n });
const other = page(9, 'other', [], {});
const ctx = { targets: [node, counted, other], dataRuns: [[100, 101]] as ReadonlyArray<readonly [number, number]>, pageCount: 1024 };

function run(kind: MutationKind, structure: string, c = ctx): { t: MutationTarget; out: Uint8Array } {
  const m = chooseMutation(1, c, [structure], kind);
  expect(m.kind).toBe(kind);
  const t = c.targets.find((x) => x.pfn === m.pfn) as MutationTarget;
  return { t, out: mutatedPage(t, m) };
}

describe('structure-aware mutations', () => {
  it('retarget-page points the pointer word at another handover page (0x7000 -> 0x6000 or 0x9000)', () => {
    const { t, out } = run('retarget-page', 'node');
    expect([0x6000n, 0x9000n]).toContain(u64(out, 0x10));
    expect(changed(t.bytes, out).every((o) => o >= 0x10 && o < 0x18)).toBe(true);
  });

  it('retarget-folio points the pointer word at a data page a decoder handed over (pfn 100 -> 0x64000)', () => {
    const { out } = run('retarget-folio', 'node');
    expect(u64(out, 0x10)).toBe(0x64000n);
  });

  it('cycle-self points the pointer word at its own page (0x5000)', () => {
    const { out } = run('cycle-self', 'node');
    expect(u64(out, 0x10)).toBe(0x5000n);
  });

  it('cycle-earlier points a later node at an earlier node of the same structure', () => {
    const first = page(3, 'node', [ptr], { 0x10: 0x5000n });
    const c = { ...ctx, targets: [first, node] };
    for (let seed = 1; seed < 50; seed++) {
      const m = chooseMutation(seed, c, ['node'], 'cycle-earlier');
      if (m.pfn !== 5) continue;
      expect(u64(mutatedPage(node, m), 0x10)).toBe(0x3000n);
      return;
    }
    throw new Error('no seed chose the later node');
  });

  it('a pointer kept as a pfn stays a pfn (7 -> 100)', () => {
    const pfnNode = page(5, 'node', [ptr], { 0x10: 7n });
    const { out } = run('retarget-folio', 'node', { ...ctx, targets: [pfnNode] });
    expect(u64(out, 0x10)).toBe(100n);
  });

  it.each([
    ['count+1', 4], ['count-1', 2], ['count-0', 0], ['count-max', 0xffffffff],
  ] as const)('%s turns the count 3 into %i, touching only its 4 bytes', (kind, want) => {
    const { t, out } = run(kind, 'counted');
    expect(u32(out, 0x20)).toBe(want);
    expect(changed(t.bytes, out).every((o) => o >= 0x20 && o < 0x24)).toBe(true);
  });

  it('duplicate copies one entry over another; swap exchanges two', () => {
    const e1: W = { offset: 0x40, size: 8, kind: 'index' };
    const e2: W = { offset: 0x48, size: 8, kind: 'index' };
    const list = page(7, 'list', [e1, e2], { 0x40: 11n, 0x48: 22n });
    const c = { ...ctx, targets: [list] };
    const dup = mutatedPage(list, chooseMutation(1, c, ['list'], 'duplicate'));
    expect([u64(dup, 0x40), u64(dup, 0x48)].sort()).toEqual(u64(dup, 0x40) === 11n ? [11n, 11n] : [22n, 22n]);
    const sw = mutatedPage(list, chooseMutation(1, c, ['list'], 'swap'));
    expect([u64(sw, 0x40), u64(sw, 0x48)]).toEqual([22n, 11n]);
  });

  it('xor changes 1..4 bytes; the target page itself is left alone', () => {
    const before = new Uint8Array(node.bytes);
    const m = chooseMutation(7, ctx, ['node'], 'xor');
    const n = changed(node.bytes, mutatedPage(node, m)).length;
    expect(n).toBeGreaterThanOrEqual(1);
    expect(n).toBeLessThanOrEqual(4);
    expect(node.bytes).toEqual(before);
  });

  it('a kind the page has no word for falls back to xor', () => {
    expect(chooseMutation(1, ctx, ['other'], 'swap').kind).toBe('xor');
  });

  it('the same seed gives the same mutation', () => {
    expect(chooseMutation(42, ctx, ['node', 'counted'])).toEqual(chooseMutation(42, ctx, ['node', 'counted']));
  });

  it('infers pointers (page-aligned u64 inside memory) and counts (u32 1..4096) on pages no decoder described', () => {
    const p = page(1, 'core', [{ offset: 0, size: 8, kind: 'pointer' }, { offset: 8, size: 4, kind: 'count' }, { offset: 16, size: 8, kind: 'pointer' }], { 0: 0x3000n, 8: 17n, 16: 0x10_0000_0000n });
    // 0x10_0000_0000 is past memory: not a pointer, but its high half (16) reads as a count.
    expect(inferWords(p.bytes, 1024 * PAGE)).toEqual([{ offset: 0, size: 8, kind: 'pointer' }, { offset: 8, size: 4, kind: 'count' }, { offset: 20, size: 4, kind: 'count' }]);
  });
});
