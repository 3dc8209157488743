/**
 * The KHO xarray as a building block: a sparse u64 → u64 map in preserved pages that is its
 * own handover. Checked against a Map model through a real kexec, and against hostile bytes.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { createMachine, type Machine } from '@liveupdate/hw';
import { boot, ErrnoError, Kernel, KhoXarray, PAGE_SIZE, xarrayAbi, type XarrayKey } from '@liveupdate/sdk';

const CMDLINE = 'kho=on';
const SUBTREE = 'xarray-test';
const KEY_MAX = 2n ** 54n - 1n;

function coldBoot(): { m: Machine; k1: Kernel } {
  const m = createMachine({ memory: '1GiB' });
  return { m, k1: boot(m, { cmdline: CMDLINE }) };
}

const out = (k: Kernel) => { if (!k.khoOut) throw new Error('KHO is off'); return k.khoOut; };
const kin = (k: Kernel) => { if (!k.khoIn) throw new Error('not a KHO boot'); return k.khoIn; };
const freePages = (k: Kernel): number => k.mm.allocator?.freePages ?? Number.NaN;

/** What a format would do: store the root's address in a kho_alloc_preserve'd blob under a subtree. */
function publishRoot(k1: Kernel, xa: KhoXarray): void {
  const blob = out(k1).allocPreserve(8);
  k1.machine.memory.writeU64(blob, xa.rootPhys);
  out(k1).addSubtree(SUBTREE, blob, 8);
}

/** The incoming half: read the root address and release the blob. */
function takeRoot(k2: Kernel): number {
  const { phys } = kin(k2).retrieveSubtree(SUBTREE);
  const root = k2.machine.memory.readU64Number(phys);
  kin(k2).restoreFree(phys);
  return root;
}

/** The physical address stored in slot `slot` of the node at `node`. */
const slotPhys = (m: Machine, node: number, slot: number): number => m.memory.readU64Number(node + 8 * slot);
const slotOf = (key: number, level: number): number => Math.floor(key / 2 ** (9 * level)) % 512;

/** The node addresses on the path to `key`, root first (6 of them, the leaf last). */
function pathOf(m: Machine, root: number, key: number): number[] {
  const path = [root];
  for (let level = 5; level >= 1; level--) path.push(slotPhys(m, path.at(-1) as number, slotOf(key, level)));
  return path;
}

/** Everything the map shows, compared with the model: size, get, getNumber, next, forEach order. */
function expectMatches(xa: KhoXarray, model: Map<bigint, bigint>, probes: readonly bigint[]): void {
  const keys = [...model.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  expect(xa.size).toBe(model.size);
  // Exact u64 iteration: kho_xa_next from 0 until it runs out.
  const walked: Array<[bigint, bigint]> = [];
  for (let e = xa.next(0n); e; e = xa.next(e.key + 1n)) walked.push([e.key, e.value]);
  expect(walked).toEqual(keys.map((k) => [k, model.get(k)]));
  // forEach: ascending; key and value as numbers (exact below 2^53).
  const seen: Array<[number, number]> = [];
  xa.forEach((k, v) => { seen.push([k, v]); });
  expect(seen).toEqual(keys.map((k) => [Number(k), Number(model.get(k))]));
  const words: bigint[] = [];
  xa.forEachWords((_k, lo, hi) => { words.push((BigInt(hi) << 32n) | BigInt(lo)); });
  expect(words).toEqual(keys.map((k) => model.get(k)));
  for (const k of keys) {
    const v = model.get(k) as bigint;
    expect(xa.get(k)).toBe(v);
    if (k <= BigInt(Number.MAX_SAFE_INTEGER)) expect(xa.get(Number(k))).toBe(v);
    if (v <= BigInt(Number.MAX_SAFE_INTEGER)) expect(xa.getNumber(k)).toBe(Number(v));
  }
  for (const p of probes) {
    const want = keys.find((k) => k >= p);
    expect(xa.next(p)).toEqual(want === undefined ? null : { key: want, value: model.get(want) });
    if (!model.has(p)) expect(xa.get(p)).toBe(0n);
  }
}

type Cmd = { op: 'set'; at: number; value: number | bigint } | { op: 'clear'; at: number };

const denseKey = fc.integer({ min: 0, max: 2047 });
const sparseNumber = fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER });
const sparseBig = fc.oneof(fc.bigInt({ min: 0n, max: KEY_MAX }), fc.bigInt({ min: KEY_MAX - 1100n, max: KEY_MAX }));
/** Dense small keys (as numbers or bigints), sparse safe numbers, sparse 54-bit bigints up to 2^54-1. */
const anyKey: fc.Arbitrary<XarrayKey> = fc.oneof(denseKey, denseKey.map(BigInt), sparseNumber, sparseBig);
const keyPool = fc.uniqueArray(anyKey, { minLength: 1, maxLength: 40, selector: (k) => BigInt(k) });
const value = fc.oneof(fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }), fc.bigInt({ min: 1n, max: 2n ** 64n - 1n }));
const commands = (pool: XarrayKey[]) => fc.array(fc.oneof(
  { weight: 3, arbitrary: fc.record({ op: fc.constant('set' as const), at: fc.nat({ max: pool.length - 1 }), value }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('clear' as const), at: fc.nat({ max: pool.length - 1 }) }) },
), { maxLength: 120 });

function apply(xa: KhoXarray, model: Map<bigint, bigint>, pool: XarrayKey[], cmds: Cmd[]): void {
  for (const c of cmds) {
    const key = pool[c.at] as XarrayKey;
    if (c.op === 'set') { xa.set(key, c.value); model.set(BigInt(key), BigInt(c.value)); } else { xa.clear(key); model.delete(BigInt(key)); }
  }
}

describe('KHO xarray: layout', () => {
  it('is a 6-level radix of one-page nodes over 54-bit keys, 9 bits per level', () => {
    expect(xarrayAbi).toMatchObject({ KHO_XA_VERSION: '1.0.0', KHO_XA_KEY_BITS: 54, KHO_XA_LEVEL_BITS: 9, KHO_XA_DEPTH: 6, KHO_XA_SLOTS: 512 });
  });

  it('stores a value little-endian in its leaf slot, reached through u64 physical addresses', () => {
    const { m, k1 } = coldBoot();
    const xa = KhoXarray.create(k1);
    const slots = [85, 217, 78, 175, 123, 247]; // level 5 (root) .. level 0 (leaf)
    const key = slots.reduce((k, s) => k * 512 + s, 0);
    expect(key).toBe(0xa_ad92_72bc_f6f7);
    xa.set(key, 0x1122_3344_5566_7788n);
    const path = pathOf(m, xa.rootPhys, key);
    expect([5, 4, 3, 2, 1, 0].map((l) => slotOf(key, l))).toEqual([85, 217, 78, 175, 123, 247]);
    expect(path.every((p) => p % PAGE_SIZE === 0 && p > 0)).toBe(true);
    expect(new Set(path).size).toBe(6);
    const leaf = path[5] as number;
    expect([...m.memory.read(leaf + 8 * 247, 8)]).toEqual([0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]);
    // Every other slot of every node is 0 (empty).
    for (const [i, node] of path.entries()) {
      const used = [...Array(512).keys()].filter((s) => m.memory.readU64(node + 8 * s) !== 0n);
      expect(used).toEqual([i === 5 ? 247 : slotOf(key, 5 - i)]);
    }
  });

  it('costs one node page per populated path: 6 for the first key, 0 more in the same leaf, 1 for the next leaf, 5 for a far key', () => {
    const { k1 } = coldBoot();
    const xa = KhoXarray.create(k1);
    expect(xa.nodePages).toBe(1);
    xa.set(0, 1);
    expect(xa.nodePages).toBe(6);
    xa.set(511, 1);
    expect(xa.nodePages).toBe(6);
    xa.set(512, 1);
    expect(xa.nodePages).toBe(7);
    xa.set(KEY_MAX, 1); // 2^54-1: only a bigint can say it
    expect(xa.nodePages).toBe(12);
    expect(xa.size).toBe(4);
  });

  it('preserves every node page it allocates (kho_preserve_folio, order 0)', () => {
    const { m, k1 } = coldBoot();
    const xa = KhoXarray.create(k1);
    xa.set(12345, 1);
    for (const p of pathOf(m, xa.rootPhys, 12345)) expect(out(k1).isPreserved(p / PAGE_SIZE, 0)).toBe(true);
  });

  it.each([
    ['a negative key', -1, 1], ['a 55-bit key', 2n ** 54n, 1], ['a negative bigint key', -1n, 1], ['a fractional key', 1.5, 1],
    ['a number key of 2^53 (possibly rounded: must be a bigint)', 2 ** 53, 1], ['a NaN key', Number.NaN, 1],
    ['a negative value', 0, -1], ['an unsafe number', 0, 2 ** 53], ['a 65-bit bigint', 0, 2n ** 64n], ['a negative bigint', 0, -1n],
  ] as const)('rejects %s with EINVAL', (_what, key, v) => {
    const { k1 } = coldBoot();
    const xa = KhoXarray.create(k1);
    expect(() => xa.set(key, v)).toThrow(expect.objectContaining({ code: 'EINVAL', syscall: 'kho_xa_set' }));
    expect(xa.nodePages).toBe(1);
  });

  it('a number key and the equal bigint key name the same slot; keys above 2^53 work as bigints', () => {
    const { k1 } = coldBoot();
    const xa = KhoXarray.create(k1);
    xa.set(2 ** 53 - 1, 1);
    expect(xa.get(2n ** 53n - 1n)).toBe(1n);
    xa.set(2n ** 53n - 1n, 2);
    expect([xa.get(2 ** 53 - 1), xa.size]).toEqual([2n, 1]);
    xa.set(2n ** 53n + 1n, 3);
    xa.set(KEY_MAX, 4n);
    expect([xa.get(2n ** 53n), xa.get(2n ** 53n + 1n), xa.get(KEY_MAX), xa.size]).toEqual([0n, 3n, 4n, 3]);
    expect(xa.next(2 ** 53)).toEqual({ key: 2n ** 53n + 1n, value: 3n });
    expect(xa.next(2n ** 53n + 2n)).toEqual({ key: KEY_MAX, value: 4n });
    expect(xa.next(KEY_MAX + 1n)).toBeNull();
  });

  it('an allocation failure half-way down a new path leaves no empty node behind (ENOMEM)', () => {
    const { k1 } = coldBoot();
    const xa = KhoXarray.create(k1);
    xa.set(1, 1);
    const blocks0 = out(k1).survivors().blocks;
    const free0 = freePages(k1);
    // The page allocator runs dry after three more pages (alloc_pages returns NULL).
    const alloc = k1.mm.allocPages.bind(k1.mm);
    let calls = 0;
    k1.mm.allocPages = (order, nid) => (++calls > 3 ? null : alloc(order, nid));
    expect(() => xa.set(KEY_MAX, 1)).toThrow(expect.objectContaining({ code: 'ENOMEM', syscall: 'kho_xa_set' }));
    expect(calls).toBe(4);
    expect([xa.nodePages, xa.size]).toEqual([6, 1]);
    expect(out(k1).survivors().blocks).toBe(blocks0);
    expect(freePages(k1)).toBe(free0);
    k1.mm.allocPages = alloc;
    xa.set(KEY_MAX, 1);
    expect([xa.nodePages, xa.size]).toEqual([11, 2]);
  });

  it('destroyed: further sets are EINVAL', () => {
    const { k1 } = coldBoot();
    const xa = KhoXarray.create(k1);
    xa.destroy();
    expect(() => xa.set(1, 1)).toThrow(expect.objectContaining({ code: 'EINVAL', syscall: 'kho_xa_set' }));
  });

  it('treats value 0 as empty: set(k, 0) clears k', () => {
    const { k1 } = coldBoot();
    const xa = KhoXarray.create(k1);
    xa.set(7, 99);
    xa.set(7, 0);
    expect(xa.get(7)).toBe(0n);
    expect(xa.size).toBe(0);
    expect(xa.nodePages).toBe(1);
  });

  it('refuses to exist without KHO (EOPNOTSUPP)', () => {
    const k = boot(createMachine({ memory: '1GiB' }), { cmdline: 'kho=off' });
    expect(() => KhoXarray.create(k)).toThrow(expect.objectContaining({ code: 'EOPNOTSUPP', syscall: 'kho_xa_init' }));
  });
});

describe('KHO xarray: model-based, through a kexec', () => {
  it('after any set/clear sequence, the map restored in the next kernel equals a Map model', () => {
    fc.assert(fc.property(
      keyPool.chain((pool) => fc.tuple(fc.constant(pool), commands(pool), fc.array(anyKey, { maxLength: 6 }))),
      ([pool, cmds, extraProbes]) => {
        const { k1 } = coldBoot();
        const xa = KhoXarray.create(k1);
        const model = new Map<bigint, bigint>();
        apply(xa, model, pool, cmds);
        const probes = [0n, KEY_MAX, ...[...pool, ...extraProbes].map(BigInt), ...pool.map((k) => BigInt(k) + 1n).filter((k) => k <= KEY_MAX)];
        expectMatches(xa, model, probes);
        const nodePages = xa.nodePages;
        publishRoot(k1, xa);

        const k2 = k1.kexec({ cmdline: CMDLINE });
        k2.machine.memory.resetPoisonReads();
        const root = takeRoot(k2);
        const free0 = freePages(k2);
        const back = KhoXarray.restore(k2, root);
        expect(back.incoming).toBe(true);
        expect(back.nodePages).toBe(nodePages);
        expectMatches(back, model, probes);
        expect(k2.machine.memory.poisonReads).toBe(0);
        // Every node was claimed by the restore; destroy gives them all to the page allocator.
        expect(kin(k2).leaked()).toEqual({ blocks: 0, pages: 0 });
        back.destroy();
        expect(freePages(k2) - free0).toBe(nodePages);
      },
    ), { numRuns: 25 });
  });

  it('frees (and unpreserves) every node that empties: clearing all keys leaves the root alone', () => {
    fc.assert(fc.property(keyPool, fc.func(fc.integer()), (pool, order) => {
      const { k1 } = coldBoot();
      const blocks0 = out(k1).survivors().blocks;
      const free0 = freePages(k1);
      const xa = KhoXarray.create(k1);
      for (const k of pool) xa.set(k, 1);
      expect(out(k1).survivors().blocks).toBe(blocks0 + xa.nodePages);
      const clearing = [...pool].sort((a, b) => order(a) - order(b) || (BigInt(a) < BigInt(b) ? -1 : 1));
      for (const k of clearing) xa.clear(k);
      expect(xa.size).toBe(0);
      expect(xa.nodePages).toBe(1);
      expect(out(k1).survivors().blocks).toBe(blocks0 + 1);
      expect(freePages(k1)).toBe(free0 - 1);
      expect(xa.next(0)).toBeNull();
    }), { numRuns: 25 });
  });

  it('destroy unpreserves and frees the outgoing map entirely', () => {
    const { k1 } = coldBoot();
    const blocks0 = out(k1).survivors().blocks;
    const free0 = freePages(k1);
    const xa = KhoXarray.create(k1);
    for (const k of [0, 1000, KEY_MAX]) xa.set(k, 5);
    xa.destroy();
    expect(out(k1).survivors().blocks).toBe(blocks0);
    expect(freePages(k1)).toBe(free0);
  });
});

describe('KHO xarray: restore treats memory as hostile', () => {
  /** k1 with a map of `keys`, jumped; `corrupt` edits memory between the jump and the next boot. */
  function handOver(keys: number[], corrupt: (m: Machine, root: number, extra: number) => void = () => {}): { k2: Kernel; root: number; nodes: number } {
    const { m, k1 } = coldBoot();
    const extra = out(k1).allocPreserve(2 * PAGE_SIZE); // an unrelated order-1 preserved block
    const xa = KhoXarray.create(k1);
    for (const k of keys) xa.set(k, k + 1);
    publishRoot(k1, xa);
    const nodes = xa.nodePages;
    const config = { cmdline: CMDLINE };
    k1.kexecJump(config);
    const root = xa.rootPhys;
    corrupt(m, root, extra);
    const k2 = Kernel.boot(m, config);
    takeRoot(k2);
    return { k2, root, nodes: nodes + 1 };
  }

  function expectEinval(k2: Kernel, root: number, message: RegExp): void {
    let error: unknown;
    try { KhoXarray.restore(k2, root); } catch (e) { error = e; }
    expect(error).toBeInstanceOf(ErrnoError);
    expect(error).toMatchObject({ code: 'EINVAL', syscall: 'kho_xa_restore' });
    expect((error as Error).message).toMatch(message);
  }

  it.each([
    ['outside RAM', (root: number) => root + 2 ** 30, /root 0x[0-9a-f]+ is not a page of RAM/],
    ['unaligned', (root: number) => root + 8, /root 0x[0-9a-f]+ is not a page of RAM/],
    ['NULL', () => 0, /root 0x0 is not a page of RAM/],
    ['a page that was never preserved', () => 0x2000_0000, /root 0x20000000 is not a preserved node/],
  ])('a root pointer %s is EINVAL and claims nothing: the real root still restores', (_what, bad, message) => {
    const { k2, root, nodes } = handOver([1, 2 ** 40]);
    const free0 = freePages(k2);
    expectEinval(k2, bad(root), message);
    expect(freePages(k2)).toBe(free0);
    expect(kin(k2).leaked().blocks).toBe(nodes); // every node and the order-1 block, untouched
    const xa = KhoXarray.restore(k2, root);
    expect([xa.get(1), xa.get(2 ** 40), xa.size]).toEqual([2n, 2n ** 40n + 1n, 2]);
  });

  it('a leaf pointer to a page that was never preserved: EINVAL, and the 5 nodes restored on the way are freed', () => {
    const key = 777;
    const { k2, root } = handOver([key], (m, r) => {
      const l1 = pathOf(m, r, key)[4] as number;
      m.memory.writeU64(l1 + 8 * slotOf(key, 1), 0x2000_0000);
    });
    const free0 = freePages(k2);
    expectEinval(k2, root, /level-0 node 0x20000000 is not a preserved node/);
    expect(freePages(k2) - free0).toBe(5);
    // Only the real leaf, which nothing points to any more, stays reserved (and the unrelated order-1 block).
    expect(kin(k2).leaked()).toEqual({ blocks: 1 + 1, pages: 1 + 2 });
  });

  it.each([
    ['outside RAM', 2 ** 40, /level-4 node 0x10000000000 is not a page of RAM/],
    ['unaligned', 0x2000_0010, /level-4 node 0x20000010 is not a page of RAM/],
  ])('a node pointer %s: EINVAL, the root it was found in is freed', (_what, bad, message) => {
    const { k2, root } = handOver([5], (m, r) => m.memory.writeU64(r, bad));
    const free0 = freePages(k2);
    expectEinval(k2, root, message);
    expect(freePages(k2) - free0).toBe(1);
  });

  it('a node pointer to a preserved folio of order 1: EINVAL, and that folio is freed with its order, not lost', () => {
    const { k2, root } = handOver([9], (m, r, extra) => m.memory.writeU64(r, extra));
    const free0 = freePages(k2);
    expectEinval(k2, root, /level-4 node 0x[0-9a-f]+ is not a preserved node/);
    expect(freePages(k2) - free0).toBe(1 + 2);
    expect(kin(k2).leaked()).toEqual({ blocks: 5, pages: 5 }); // the real path below the root
  });

  it('a node referenced twice: EINVAL at the second reference, every node claimed before it freed', () => {
    // Keys 0 and 2^45 sit under root slots 0 and 1; slot 1 is made to point at slot 0's subtree.
    const { k2, root } = handOver([0, 2 ** 45], (m, r) => m.memory.writeU64(r + 8, slotPhys(m, r, 0)));
    const free0 = freePages(k2);
    expectEinval(k2, root, /level-4 node 0x[0-9a-f]+ is not a preserved node \(or is reached twice\)/);
    expect(freePages(k2) - free0).toBe(6); // the root and the 5 nodes of the first subtree
    expect(kin(k2).leaked()).toEqual({ blocks: 5 + 1, pages: 5 + 2 }); // the orphaned second subtree, the order-1 block
  });

  it('a cycle back to the root: EINVAL, nothing kept', () => {
    const key = 3;
    const { k2, root } = handOver([key], (m, r) => {
      const l1 = pathOf(m, r, key)[4] as number;
      m.memory.writeU64(l1 + 8 * slotOf(key, 1), r);
    });
    const free0 = freePages(k2);
    expectEinval(k2, root, /level-0 node 0x[0-9a-f]+ is not a preserved node \(or is reached twice\)/);
    expect(freePages(k2) - free0).toBe(5);
  });

  it('an incoming map is read-only: set and clear are EINVAL, reads work', () => {
    const { k2, root } = handOver([10, 20]);
    const xa = KhoXarray.restore(k2, root);
    expect(() => xa.set(10, 1)).toThrow(expect.objectContaining({ code: 'EINVAL', syscall: 'kho_xa_set' }));
    expect(() => xa.set(30, 1)).toThrow(expect.objectContaining({ code: 'EINVAL', syscall: 'kho_xa_set' }));
    expect(() => xa.clear(10)).toThrow(expect.objectContaining({ code: 'EINVAL', syscall: 'kho_xa_clear' }));
    expect([xa.get(10), xa.get(20), xa.size]).toEqual([11n, 21n, 2]);
  });

  it('restoring on a kernel that was not KHO-booted is EINVAL', () => {
    const { k1 } = coldBoot();
    expect(() => KhoXarray.restore(k1, 0x100000)).toThrow(expect.objectContaining({ code: 'EINVAL', syscall: 'kho_xa_restore' }));
  });
});
