/**
 * Decode a KHO/LUO handover from bytes alone, the way the incoming kernel would find it:
 * boot params (struct kho_data) → root FDT (kho-v4) → preserved-memory tracker and subtrees →
 * "LUO" (luo_ser: session and file kho_block chains, the FLB page) and "kexec-metadata".
 * Nothing here needs the outgoing kernel: the same decoder reads a live machine right after
 * the jump and a dump file rebuilt into a fresh PhysMemory. The bytes are untrusted: every
 * pointer is checked, chains are bounded, and what does not decode becomes a problem line.
 */
import { PAGE_SIZE, PfnRanges, type PhysMemory } from '@liveupdate/hw';
import {
  abi, fdtCheckHeader, fdtParse, fdtToDts, fdtTotalSize, readPropString, readPropU64LE, versionOf, walkTracker, type FdtNode,
} from '@liveupdate/runtime';
import type { Decoded, DecodedValue, FormatDecoder, OwnedPages, Plugin } from '@liveupdate/sdk';

const { kho, luo, block, kexecMetadata } = abi;

export interface KhoDataView {
  readonly fdtAddr: number;
  readonly fdtSize: number;
  readonly scratchAddr: number;
  readonly scratchSize: number;
}

export interface ScratchAreaView {
  readonly addr: number;
  readonly size: number;
}

export interface FdtView {
  readonly phys: number;
  readonly size: number;
  readonly compatible: string | null;
  readonly dts: string;
  readonly root: FdtNode;
}

export interface OrderRuns {
  readonly order: number;
  readonly blocks: number;
  readonly pages: number;
  /** Merged [startPfn, endPfn) runs of the blocks of this order. */
  readonly runs: ReadonlyArray<readonly [number, number]>;
}

export interface TrackerView {
  readonly rootPhys: number;
  /** Table and bitmap pages of the radix tree, in walk order. */
  readonly nodePfns: readonly number[];
  readonly orders: readonly OrderRuns[];
  readonly blocks: number;
  readonly pages: number;
}

export interface SubtreeView {
  readonly name: string;
  readonly phys: number;
  readonly size: number;
}

/** What a plugin's decoder made of a file's or an FLB's bytes. */
export interface DecodedView {
  readonly family: string | null;
  readonly version: string | null;
  /** The plugin that declares the format (null when no loaded plugin does). */
  readonly owner: string | null;
  readonly fields: Readonly<Record<string, DecodedValue>>;
  readonly problems: readonly string[];
  readonly pages: readonly OwnedPages[];
  readonly dataRuns: ReadonlyArray<readonly [number, number]>;
}

export interface LuoFileView {
  readonly compatible: string;
  readonly data: bigint;
  readonly token: bigint;
  /** Null until decodeHandover ran the plugins' decoders (or when none was asked for). */
  decoded?: DecodedView | null;
}

export interface LuoSessionView {
  readonly name: string;
  readonly filesPa: number;
  readonly count: number;
  readonly files: readonly LuoFileView[];
}

export interface LuoFlbView {
  readonly name: string;
  readonly data: bigint;
  readonly count: number;
  decoded?: DecodedView | null;
}

export interface LuoView {
  readonly phys: number;
  readonly compatible: string;
  readonly liveupdateNum: number;
  readonly sessionsPa: number;
  readonly flbsPa: number;
  readonly sessions: readonly LuoSessionView[];
  readonly flbs: readonly LuoFlbView[];
}

export interface KexecMetadataView {
  readonly previousRelease: string;
  readonly kexecCount: number;
}

export interface HandoverView {
  readonly memorySize: number;
  readonly khoData: KhoDataView | null;
  readonly scratch: readonly ScratchAreaView[];
  readonly fdt: FdtView | null;
  readonly tracker: TrackerView | null;
  readonly subtrees: readonly SubtreeView[];
  readonly luo: LuoView | null;
  readonly metadata: KexecMetadataView | null;
  /** Every page a handover structure occupies (pfn → what it holds), guest data excluded. */
  readonly pages: ReadonlyMap<number, string>;
  /** Per page of `pages`: the structure it belongs to (core ones, and the plugins' OwnedPages.structure). */
  readonly structures: ReadonlyMap<number, string>;
  /** The pages plugins' decoders say their files and FLBs own (pointer words included, for the fuzzer). */
  readonly owned: readonly OwnedPages[];
  /** Guest data (folios) the files hand over, as [startPfn, endPfn) runs. */
  readonly dataRuns: ReadonlyArray<readonly [number, number]>;
  /** Why a part could not be decoded; empty for a sound handover. */
  readonly problems: readonly string[];
}

const hex = (n: number | bigint): string => `0x${n.toString(16)}`;

/** The core structures, by the role the decoder gives their pages. */
const CORE_STRUCTURES: ReadonlyArray<[RegExp, string]> = [
  [/^kho root fdt$/, 'root FDT'], [/^kho tracker node$/, 'tracker node'], [/^luo_ser$/, 'LUO blob'], [/^luo session block$/, 'session block'],
  [/^luo file block$/, 'file block'], [/^luo flb page$/, 'FLB page'], [/^kho scratch array$/, 'scratch array'], [/^kexec-metadata$/, 'kexec-metadata'],
  [/^file data/, 'file data'], [/^flb data/, 'FLB data'], [/^subtree /, 'subtree'],
];

export function structureOfRole(role: string): string {
  return CORE_STRUCTURES.find(([re]) => re.test(role))?.[1] ?? role;
}

class Reader {
  readonly problems: string[] = [];
  readonly pages = new Map<number, string>();
  readonly structures = new Map<number, string>();
  readonly owned: OwnedPages[] = [];
  readonly dataRuns: Array<readonly [number, number]> = [];
  constructor(readonly memory: PhysMemory) {}

  inRam(phys: number, length: number): boolean {
    return Number.isSafeInteger(phys) && phys >= 0 && length >= 0 && phys + length <= this.memory.size;
  }

  read(phys: number, length: number, what: string): Uint8Array | null {
    if (!this.inRam(phys, length)) {
      this.problems.push(`${what} at ${hex(phys)}+${hex(length)} is outside RAM`);
      return null;
    }
    return this.memory.read(phys, length);
  }

  /** Record the pages [phys, phys+length) as holding `role` (the first role wins). */
  mark(phys: number, length: number, role: string): void {
    if (!this.inRam(phys, Math.max(length, 1))) return;
    const first = Math.floor(phys / PAGE_SIZE);
    const last = Math.floor((phys + Math.max(length, 1) - 1) / PAGE_SIZE);
    for (let p = first; p <= last; p++) {
      if (this.pages.has(p)) continue;
      this.pages.set(p, role);
      this.structures.set(p, structureOfRole(role));
    }
  }

  /** A plugin's pages: its role and structure replace the generic 'file data' label. */
  own(o: OwnedPages): void {
    this.owned.push(o);
    for (let k = 0; k < (o.count ?? 1); k++) {
      const p = o.pfn + k;
      if (p < 0 || (p + 1) * PAGE_SIZE > this.memory.size) continue;
      this.pages.set(p, o.role);
      this.structures.set(p, o.structure);
    }
  }
}

/** Run the decoder of the plugin that declares `compatible`'s format (files) or the FLB. */
function runDecoder(r: Reader, plugins: readonly Plugin[], target: { file: string; session: string; token: bigint } | { flb: string }, data: bigint, label: string): DecodedView | null {
  let family: string | null = null;
  let version: string | null = null;
  let owner: string | null = null;
  let decoder: FormatDecoder | undefined;
  if ('file' in target) {
    for (const p of plugins) {
      for (const spec of p.formats ?? []) {
        const v = versionOf(spec, target.file);
        if (v === null) continue;
        family = spec.family; version = v; owner = p.name;
        decoder = (p.tools.decoders ?? []).find((d) => d.target.kind === 'file' && d.target.family === spec.family);
        break;
      }
      if (owner) break;
    }
  } else {
    for (const p of plugins) {
      decoder = (p.tools.decoders ?? []).find((d) => d.target.kind === 'flb' && d.target.compatible === target.flb);
      if (decoder) { owner = p.name; break; }
    }
  }
  if (!decoder) return owner ? { family, version, owner, fields: {}, problems: [], pages: [], dataRuns: [] } : null;
  let d: Decoded;
  try {
    d = decoder.decode(r.memory, data, version, 'file' in target ? { label, file: { session: target.session, token: target.token } } : { label });
  } catch (e) {
    r.problems.push(`${label}: ${owner ?? '?'}'s decoder threw ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
    return { family, version, owner, fields: {}, problems: [], pages: [], dataRuns: [] };
  }
  for (const o of d.pages) r.own(o);
  for (const run of d.dataRuns ?? []) r.dataRuns.push(run);
  for (const p of d.problems) r.problems.push(`${label}: ${p}`);
  return { family, version, owner, fields: d.fields, problems: d.problems, pages: d.pages, dataRuns: d.dataRuns ?? [] };
}

function decodeKhoData(r: Reader, bytes: Uint8Array | undefined): KhoDataView | null {
  if (!bytes) { r.problems.push('no kho_data in the boot parameters: a cold boot, nothing handed over'); return null; }
  if (bytes.length < kho.khoData.size) { r.problems.push(`kho_data is ${bytes.length} bytes, expected ${kho.khoData.size}`); return null; }
  const d = kho.khoData.decode(bytes);
  const view = { fdtAddr: Number(d.fdt_addr), fdtSize: Number(d.fdt_size), scratchAddr: Number(d.scratch_addr), scratchSize: Number(d.scratch_size) };
  return view;
}

function decodeScratch(r: Reader, d: KhoDataView): ScratchAreaView[] {
  const raw = r.read(d.scratchAddr, d.scratchSize, 'scratch array');
  if (!raw) return [];
  r.mark(d.scratchAddr, d.scratchSize, 'kho scratch array');
  if (raw.length % kho.khoScratch.size !== 0) r.problems.push(`scratch array is ${raw.length} bytes, not a multiple of ${kho.khoScratch.size}`);
  const areas: ScratchAreaView[] = [];
  for (let off = 0; off + kho.khoScratch.size <= raw.length; off += kho.khoScratch.size) {
    const a = kho.khoScratch.decode(raw, off);
    areas.push({ addr: Number(a.addr), size: Number(a.size) });
  }
  return areas;
}

function decodeFdt(r: Reader, d: KhoDataView): FdtView | null {
  const head = r.read(d.fdtAddr, Math.min(d.fdtSize, PAGE_SIZE), 'root FDT');
  if (!head) return null;
  const bad = fdtCheckHeader(head);
  if (bad) { r.problems.push(`root FDT at ${hex(d.fdtAddr)} is invalid: ${bad}`); return null; }
  const size = fdtTotalSize(head);
  const bytes = r.read(d.fdtAddr, size, 'root FDT');
  if (!bytes) return null;
  r.mark(d.fdtAddr, Math.max(size, d.fdtSize), 'kho root fdt');
  try {
    const root = fdtParse(bytes);
    const compatible = readPropString(root, 'compatible') ?? null;
    if (compatible !== kho.KHO_FDT_COMPATIBLE) r.problems.push(`root FDT compatible is '${compatible ?? ''}', expected '${kho.KHO_FDT_COMPATIBLE}'`);
    return { phys: d.fdtAddr, size, compatible, dts: fdtToDts(root), root };
  } catch (e) {
    r.problems.push(`root FDT at ${hex(d.fdtAddr)} does not parse: ${e instanceof Error ? e.message : String(e)}`);
    return null;
  }
}

function decodeTracker(r: Reader, root: FdtNode): TrackerView | null {
  const map = readPropU64LE(root, kho.KHO_FDT_MEMORY_MAP_PROP_NAME);
  if (map === undefined || map === 0n) { r.problems.push(`root FDT has no valid ${kho.KHO_FDT_MEMORY_MAP_PROP_NAME}`); return null; }
  const rootPhys = Number(map);
  const byOrder = new Map<number, { ranges: PfnRanges; blocks: number }>();
  const nodePfns: number[] = [];
  const res = walkTracker(r.memory, rootPhys, {
    key: (pfn, order) => {
      let o = byOrder.get(order);
      if (!o) { o = { ranges: new PfnRanges(), blocks: 0 }; byOrder.set(order, o); }
      o.ranges.add(pfn, pfn + 2 ** order);
      o.blocks++;
      return undefined;
    },
    node: (pfn) => { nodePfns.push(pfn); return undefined; },
  });
  for (const pfn of nodePfns) r.mark(pfn * PAGE_SIZE, PAGE_SIZE, 'kho tracker node');
  if (!res.ok) r.problems.push(`preserved-memory tracker: ${res.reason}`);
  const orders: OrderRuns[] = [...byOrder].sort((a, b) => a[0] - b[0]).map(([order, o]) => ({
    order, blocks: o.blocks, pages: o.blocks * 2 ** order, runs: [...o.ranges.runs()],
  }));
  return {
    rootPhys, nodePfns, orders,
    blocks: orders.reduce((n, o) => n + o.blocks, 0),
    pages: orders.reduce((n, o) => n + o.pages, 0),
  };
}

function decodeSubtrees(r: Reader, root: FdtNode): SubtreeView[] {
  const out: SubtreeView[] = [];
  for (const c of root.children) {
    const phys = readPropU64LE(c, kho.KHO_SUB_TREE_PROP_NAME);
    const size = readPropU64LE(c, kho.KHO_SUB_TREE_SIZE_PROP_NAME);
    if (phys === undefined || size === undefined) { r.problems.push(`subtree ${c.name}: missing ${kho.KHO_SUB_TREE_PROP_NAME} or ${kho.KHO_SUB_TREE_SIZE_PROP_NAME}`); continue; }
    out.push({ name: c.name, phys: Number(phys), size: Number(size) });
  }
  return out;
}

/** A kho_block chain: page addresses in order, bounded and cycle-checked. */
function blockChain(r: Reader, headPa: number, what: string): number[] {
  const chain: number[] = [];
  const seen = new Set<number>();
  for (let p = headPa; p !== 0;) {
    if (p % PAGE_SIZE !== 0 || !r.inRam(p, PAGE_SIZE)) { r.problems.push(`${what}: block ${hex(p)} is not a page of RAM`); break; }
    if (seen.has(p)) { r.problems.push(`${what}: cycle at block ${hex(p)}`); break; }
    if (chain.length >= block.KHO_MAX_BLOCKS) { r.problems.push(`${what}: more than ${block.KHO_MAX_BLOCKS} blocks`); break; }
    seen.add(p);
    chain.push(p);
    r.mark(p, PAGE_SIZE, what);
    p = r.memory.readU64Number(p);
  }
  return chain;
}

/** The entries of a kho_block chain, each block's count checked against its capacity. */
function blockEntries(r: Reader, headPa: number, entrySize: number, what: string): Uint8Array[] {
  const perBlock = Math.floor((block.KHO_BLOCK_SIZE - block.khoBlockHeader.size) / entrySize);
  const out: Uint8Array[] = [];
  for (const b of blockChain(r, headPa, what)) {
    const count = Number(r.memory.readU64(b + 8));
    if (count < 1 || count > perBlock) { r.problems.push(`${what}: block ${hex(b)} count ${count} outside 1..${perBlock}`); continue; }
    for (let i = 0; i < count; i++) out.push(r.memory.read(b + block.khoBlockHeader.size + i * entrySize, entrySize));
  }
  return out;
}

/** The page a handler's u64 points to, if it is the head of a preserved block (a header page). */
function markPointee(r: Reader, tracker: TrackerView | null, data: bigint, role: string): void {
  if (data === 0n || data % BigInt(PAGE_SIZE) !== 0n || data >= BigInt(r.memory.size)) return;
  const pfn = Number(data) / PAGE_SIZE;
  const preserved = tracker?.orders.some((o) => pfn % 2 ** o.order === 0 && o.runs.some(([s, e]) => pfn >= s && pfn < e));
  if (preserved) r.mark(Number(data), PAGE_SIZE, role);
}

function decodeLuo(r: Reader, sub: SubtreeView, tracker: TrackerView | null): LuoView | null {
  const raw = r.read(sub.phys, luo.luoSer.size, 'luo_ser');
  if (!raw) return null;
  r.mark(sub.phys, sub.size, 'luo_ser');
  const ser = luo.luoSer.decode(raw);
  if (ser.compatible !== luo.LUO_ABI_COMPATIBLE) r.problems.push(`luo_ser compatible is '${ser.compatible}', expected '${luo.LUO_ABI_COMPATIBLE}'`);
  const sessions: LuoSessionView[] = [];
  for (const e of blockEntries(r, Number(ser.sessions_pa), luo.luoSessionSer.size, 'luo session block')) {
    const s = luo.luoSessionSer.decode(e);
    const files = blockEntries(r, Number(s.files), luo.luoFileSer.size, 'luo file block').map((fe) => {
      const f = luo.luoFileSer.decode(fe);
      markPointee(r, tracker, f.data, `file data (${f.compatible})`);
      return { compatible: f.compatible, data: f.data, token: f.token } as LuoFileView;
    });
    if (BigInt(files.length) !== s.count) r.problems.push(`session ${s.name}: ${files.length} files in its blocks, ${s.count} in luo_session_ser`);
    sessions.push({ name: s.name, filesPa: Number(s.files), count: Number(s.count), files });
  }
  const flbs: LuoFlbView[] = [];
  const flbsPa = Number(ser.flbs_pa);
  if (flbsPa !== 0) {
    const page = r.read(flbsPa, PAGE_SIZE, 'luo FLB page');
    if (page) {
      r.mark(flbsPa, PAGE_SIZE, 'luo flb page');
      const h = luo.luoFlbHeaderSer.decode(page);
      const count = Number(h.count);
      if (count > luo.LUO_FLB_MAX) r.problems.push(`FLB page count ${count} > ${luo.LUO_FLB_MAX}`);
      for (let i = 0; i < Math.min(count, luo.LUO_FLB_MAX); i++) {
        const f = luo.luoFlbSer.decode(page, luo.luoFlbHeaderSer.size + i * luo.luoFlbSer.size);
        markPointee(r, tracker, f.data, `flb data (${f.name})`);
        flbs.push({ name: f.name, data: f.data, count: Number(f.count) } as LuoFlbView);
      }
    }
  }
  return {
    phys: sub.phys, compatible: ser.compatible, liveupdateNum: Number(ser.liveupdate_num),
    sessionsPa: Number(ser.sessions_pa), flbsPa, sessions, flbs,
  };
}

function decodeMetadata(r: Reader, sub: SubtreeView): KexecMetadataView | null {
  const raw = r.read(sub.phys, Math.min(sub.size, kexecMetadata.khoKexecMetadata.size), 'kexec-metadata');
  if (!raw) return null;
  r.mark(sub.phys, sub.size, 'kexec-metadata');
  if (raw.length < kexecMetadata.khoKexecMetadata.size) { r.problems.push(`kexec-metadata is ${raw.length} bytes`); return null; }
  const m = kexecMetadata.khoKexecMetadata.decode(raw);
  if (m.version !== kexecMetadata.KHO_KEXEC_METADATA_VERSION) { r.problems.push(`kexec-metadata version ${m.version}`); return null; }
  return { previousRelease: m.previous_release, kexecCount: m.kexec_count };
}

/** Decode everything the boot parameters lead to. Never throws on bad bytes: see `problems`. */
export function decodeHandover(memory: PhysMemory, khoDataBytes: Uint8Array | undefined, plugins: readonly Plugin[] = []): HandoverView {
  const r = new Reader(memory);
  const khoData = decodeKhoData(r, khoDataBytes);
  const empty = { memorySize: memory.size, khoData, scratch: [], fdt: null, tracker: null, subtrees: [], luo: null, metadata: null };
  const rest = () => ({ pages: r.pages, structures: r.structures, owned: r.owned, dataRuns: r.dataRuns, problems: r.problems });
  if (!khoData) return { ...empty, ...rest() };
  const scratch = decodeScratch(r, khoData);
  const fdt = decodeFdt(r, khoData);
  if (!fdt) return { ...empty, scratch, ...rest() };
  const tracker = decodeTracker(r, fdt.root);
  const subtrees = decodeSubtrees(r, fdt.root);
  const luoSub = subtrees.find((s) => s.name === luo.LUO_KHO_ENTRY_NAME);
  const metaSub = subtrees.find((s) => s.name === kexecMetadata.KHO_KEXEC_METADATA_NAME);
  const luoView = luoSub ? decodeLuo(r, luoSub, tracker) : null;
  const metadata = metaSub ? decodeMetadata(r, metaSub) : null;
  for (const s of subtrees) if (s !== luoSub && s !== metaSub) r.mark(s.phys, s.size, `subtree ${s.name}`);
  if (luoView && plugins.length > 0) {
    for (const s of luoView.sessions) {
      for (const f of s.files) f.decoded = runDecoder(r, plugins, { file: f.compatible, session: s.name, token: f.token }, f.data, `session ${s.name} token ${f.token}`);
    }
    for (const f of luoView.flbs) f.decoded = runDecoder(r, plugins, { flb: f.name }, f.data, `FLB ${f.name}`);
  }
  return { memorySize: memory.size, khoData, scratch, fdt, tracker, subtrees, luo: luoView, metadata, ...rest() };
}
