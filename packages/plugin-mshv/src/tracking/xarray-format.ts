/**
 * The 3.x tracking format (ours, the reviewers' direction): the deposited set handed over in
 * an LUO file as a KHO xarray whose key is pfn >> 6 and whose value is the 64-page bitmap
 * of that key (the June 1 call's "MSHV sparse bitmap tracking"). One header page
 * (struct mshv_track_ser) points at the xarray root and the partition id array; a CRC-32
 * covers the header, every xarray node page and the id array, so corruption of any metadata
 * byte is found before a single page is trusted.
 */
import { ErrnoError, KhoXarray, PAGE_SIZE, xarrayAbi, type Kernel } from '@liveupdate/sdk';
import type { PhysMemory } from '@liveupdate/hw';
import { MSHV_MAX_PARTITION_IDS, MSHV_TRACK_CRC_OFFSET, MSHV_XA_PAGES_PER_KEY, mshvTrackSer } from '../abi/mshv.js';
import { Crc32 } from '../crc32.js';

const SLOTS = xarrayAbi.KHO_XA_SLOTS;
const TOP = xarrayAbi.KHO_XA_DEPTH - 1;
const TWO32 = 0x1_0000_0000;

/** Bits [a, b) of a u32, 0 <= a < b <= 32. */
const bitRange = (a: number, b: number): number => (b - a === 32 ? 0xffffffff : (((1 << (b - a)) - 1) << a) >>> 0);

/** Each run of set bits of a u32 as [first, end) bit offsets. */
function wordRuns(v: number, emit: (a: number, b: number) => void): void {
  let w = v >>> 0;
  while (w !== 0) {
    const t = 31 - Math.clz32(w & -w);
    const rest = ~(w >>> t) >>> 0;
    const len = rest === 0 ? 32 - t : 31 - Math.clz32(rest & -rest);
    emit(t, t + len);
    w = t + len >= 32 ? 0 : (w & ~bitRange(t, t + len)) >>> 0;
  }
}

/**
 * Visit every node of the xarray at rootPhys, a node before its children, slots ascending,
 * over hostile bytes: nodes page aligned, inside RAM, reached once. `value` gets every
 * non-empty leaf slot (key, low and high 32 bits).
 */
export function walkXarray(
  memory: PhysMemory, rootPhys: number,
  cb: { node?(pfn: number, level: number, bytes: Uint8Array): string | undefined; value?(key: number, lo: number, hi: number): string | undefined },
  nodeOk: (pfn: number) => boolean = () => true,
): { ok: true; nodes: number } | { ok: false; reason: string } {
  const seen = new Set<number>();
  const visit = (phys: number, level: number, base: number): string | undefined => {
    if (!Number.isSafeInteger(phys) || phys <= 0 || phys % PAGE_SIZE !== 0) return `xarray node 0x${phys.toString(16)} at level ${level} is not a page`;
    const pfn = phys / PAGE_SIZE;
    if (pfn >= memory.pageCount) return `xarray node 0x${phys.toString(16)} at level ${level} is outside RAM`;
    if (seen.has(pfn)) return `xarray node 0x${phys.toString(16)} is reached twice (cycle or shared node)`;
    if (!nodeOk(pfn)) return `xarray node 0x${phys.toString(16)} at level ${level} is not a preserved page`;
    seen.add(pfn);
    const bytes = memory.read(phys, PAGE_SIZE);
    const bad = cb.node?.(pfn, level, bytes);
    if (bad) return bad;
    const w = new Uint32Array(bytes.buffer, bytes.byteOffset, PAGE_SIZE >>> 2);
    for (let s = 0; s < SLOTS; s++) {
      const lo = w[2 * s] as number;
      const hi = w[2 * s + 1] as number;
      if ((lo | hi) === 0) continue;
      if (level === 0) {
        const b = cb.value?.(base + s, lo, hi);
        if (b) return b;
        continue;
      }
      const b = visit(hi * TWO32 + lo, level - 1, (base + s) * SLOTS);
      if (b) return b;
    }
    return undefined;
  };
  const reason = visit(rootPhys, TOP, 0);
  return reason ? { ok: false, reason } : { ok: true, nodes: seen.size };
}

/** The CRC of a header (bytes before `crc`), the node pages in walk order and the id array. */
function checksum(memory: PhysMemory, header: Uint8Array, rootPhys: number, idsPhys: number, nrIds: number, nodeOk?: (pfn: number) => boolean): number | string {
  const crc = new Crc32().update(header.subarray(0, MSHV_TRACK_CRC_OFFSET));
  const w = walkXarray(memory, rootPhys, { node: (_p, _l, bytes) => { crc.update(bytes); return undefined; } }, nodeOk);
  if (!w.ok) return w.reason;
  if (nrIds > 0) crc.update(memory.read(idsPhys, nrIds * 8));
  return crc.digest();
}

export interface TrackingWrite {
  readonly headerPhys: number;
  readonly nodes: number;
  /** Undo everything (a rolled-back kexec). */
  release(): void;
}

/** Serialize runs of tracked pages and the partition ids; data pages are KHO-preserved run by run. */
export function writeTracking(
  kernel: Kernel, runs: ReadonlyArray<readonly [number, number]>, ids: readonly bigint[], flags: number,
  opts: { preserveData?: boolean } = {},
): TrackingWrite {
  const out = kernel.khoOut;
  if (!out) throw new ErrnoError('EOPNOTSUPP', 'mshv_track_freeze', 'KHO is disabled');
  if (ids.length > MSHV_MAX_PARTITION_IDS) throw new ErrnoError('E2BIG', 'mshv_track_freeze', `${ids.length} partitions`);
  const mem = kernel.mm.memory;
  const undo: Array<() => void> = [];
  const release = (): void => { for (const u of undo.reverse()) u(); undo.length = 0; };
  try {
    const xa = KhoXarray.create(kernel);
    undo.push(() => xa.destroy());
    let key = -1;
    let lo = 0;
    let hi = 0;
    let pages = 0;
    const flush = (): void => {
      if (key < 0) return;
      xa.set(key, hi < 2 ** 21 ? hi * TWO32 + lo : (BigInt(hi) << 32n) | BigInt(lo));
    };
    for (const [s, e] of runs) {
      pages += e - s;
      for (let pfn = s; pfn < e;) {
        const k = Math.floor(pfn / MSHV_XA_PAGES_PER_KEY);
        if (k !== key) { flush(); key = k; lo = 0; hi = 0; }
        const b0 = pfn % MSHV_XA_PAGES_PER_KEY;
        const upto = Math.min(e, (k + 1) * MSHV_XA_PAGES_PER_KEY);
        const b1 = b0 + (upto - pfn);
        if (b0 < 32) lo = (lo | bitRange(b0, Math.min(b1, 32))) >>> 0;
        if (b1 > 32) hi = (hi | bitRange(Math.max(b0, 32) - 32, b1 - 32)) >>> 0;
        pfn = upto;
      }
    }
    flush();
    if (opts.preserveData ?? true) for (const [s, e] of runs) {
      out.preservePages(s, e - s);
      undo.push(() => out.unpreservePages(s, e - s));
    }
    const idsPhys = ids.length > 0 ? out.allocPreserve(ids.length * 8) : 0;
    if (idsPhys) { undo.push(() => out.unpreserveFree(idsPhys)); ids.forEach((id, i) => mem.writeU64(idsPhys + i * 8, id)); }
    const headerPhys = out.allocPreserve(PAGE_SIZE);
    undo.push(() => out.unpreserveFree(headerPhys));
    const header = mshvTrackSer.encode({
      xa_root: BigInt(xa.rootPhys), nr_pages: BigInt(pages), nr_nodes: BigInt(xa.nodePages),
      partition_ids: BigInt(idsPhys), nr_partition_ids: ids.length, flags, crc: 0, reserved: 0,
    });
    const crc = checksum(mem, header, xa.rootPhys, idsPhys, ids.length);
    if (typeof crc === 'string') throw new Error(`outgoing tracking xarray is corrupt: ${crc}`);
    new DataView(header.buffer).setUint32(MSHV_TRACK_CRC_OFFSET, crc, true);
    mem.write(headerPhys, header);
    return { headerPhys, nodes: xa.nodePages, release };
  } catch (e) {
    release();
    throw e;
  }
}

export interface TrackingRead {
  readonly xaRoot: number;
  readonly runs: Array<[number, number]>;
  readonly nrPages: number;
  readonly nodes: number[];
  readonly ids: bigint[];
  readonly idsPhys: number;
  readonly flags: number;
  readonly crc: number;
}

/**
 * Decode and verify from bytes alone, checks in this order: header bounds, reserved and flag
 * bits, id count, the walk (bounds, cycles), the CRC, then the counts against what the
 * bitmaps hold. A string is the first problem found.
 */
export function readTracking(memory: PhysMemory, headerPhys: number, pageOk: (pfn: number) => boolean = () => true): TrackingRead | string {
  if (!Number.isSafeInteger(headerPhys) || headerPhys <= 0 || headerPhys % PAGE_SIZE !== 0 || headerPhys + PAGE_SIZE > memory.size) {
    return `header 0x${headerPhys.toString(16)} is not a page of RAM`;
  }
  if (!pageOk(headerPhys / PAGE_SIZE)) return `header 0x${headerPhys.toString(16)} is not a preserved page`;
  const header = memory.read(headerPhys, mshvTrackSer.size);
  const h = mshvTrackSer.decode(header);
  if (h.reserved !== 0 || (h.flags & ~1) !== 0) return `reserved bits set (flags 0x${h.flags.toString(16)}, reserved 0x${h.reserved.toString(16)})`;
  if (h.nr_partition_ids > MSHV_MAX_PARTITION_IDS) return `nr_partition_ids ${h.nr_partition_ids} exceeds a page`;
  const idsPhys = Number(h.partition_ids);
  if (h.nr_partition_ids > 0 && (idsPhys <= 0 || idsPhys % PAGE_SIZE !== 0 || idsPhys + h.nr_partition_ids * 8 > memory.size)) return `partition_ids 0x${h.partition_ids.toString(16)} is not in RAM`;
  if (h.nr_partition_ids === 0 && h.partition_ids !== 0n) return 'partition_ids set with nr_partition_ids 0';
  if (h.nr_partition_ids > 0 && !pageOk(idsPhys / PAGE_SIZE)) return `partition_ids 0x${idsPhys.toString(16)} is not a preserved page`;
  const xaRoot = Number(h.xa_root);
  const crc = checksum(memory, header, xaRoot, idsPhys, h.nr_partition_ids, pageOk);
  if (typeof crc === 'string') return crc;
  if (crc !== h.crc) return `checksum mismatch (header says 0x${h.crc.toString(16)}, bytes give 0x${crc.toString(16)})`;
  const runs: Array<[number, number]> = [];
  const nodes: number[] = [];
  let pages = 0;
  const add = (s: number, e: number): void => {
    pages += e - s;
    const last = runs[runs.length - 1];
    if (last && last[1] === s) last[1] = e; else runs.push([s, e]);
  };
  const w = walkXarray(memory, xaRoot, {
    node: (pfn) => { nodes.push(pfn); return undefined; },
    value: (key, lo, hi) => {
      const base = key * MSHV_XA_PAGES_PER_KEY;
      if (base + MSHV_XA_PAGES_PER_KEY > memory.pageCount) return `key 0x${key.toString(16)} tracks pages outside RAM`;
      if (lo === 0xffffffff && hi === 0xffffffff) { add(base, base + 64); return undefined; }
      wordRuns(lo, (a, b) => add(base + a, base + b));
      wordRuns(hi, (a, b) => add(base + 32 + a, base + 32 + b));
      return undefined;
    },
  });
  if (!w.ok) return w.reason;
  if (BigInt(pages) !== h.nr_pages) return `nr_pages ${h.nr_pages} but the bitmaps hold ${pages}`;
  if (BigInt(nodes.length) !== h.nr_nodes) return `nr_nodes ${h.nr_nodes} but the walk found ${nodes.length}`;
  const ids: bigint[] = [];
  for (let i = 0; i < h.nr_partition_ids; i++) ids.push(memory.readU64(idsPhys + i * 8));
  return { xaRoot, runs, nrPages: pages, nodes, ids, idsPhys, flags: h.flags, crc: h.crc };
}
