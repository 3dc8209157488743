/**
 * Flattened device tree (DTB, Devicetree Specification v0.4 chapter 5) writer and reader for
 * the KHO handover FDT. The writer lays a blob out exactly as dtc does (header, reservation
 * map, structure block, strings block), so dtc and libfdt read what we write and dtc's own
 * output re-encodes byte for byte. The reader treats its input as hostile: the blob comes
 * from the previous kernel's memory, which nothing on this side has vouched for.
 *
 * Error codes follow libfdt where it has a rule for the same condition: a block or a
 * totalsize that does not fit is FDT_ERR_TRUNCATED (fdt_check_header/fdt_check_full), a
 * property name offset outside the strings block is FDT_ERR_BADOFFSET and one without a NUL
 * before the block ends is FDT_ERR_TRUNCATED (fdt_get_string). FDT_ERR_BADLAYOUT is part of
 * the code set for parity with libfdt but is never produced: blocks in any order are readable.
 */

export interface FdtNode { name: string; props: Map<string, Uint8Array>; children: FdtNode[] }

export type FdtErrorCode =
  | 'FDT_ERR_TRUNCATED' | 'FDT_ERR_BADMAGIC' | 'FDT_ERR_BADVERSION' | 'FDT_ERR_BADSTRUCTURE'
  | 'FDT_ERR_BADOFFSET' | 'FDT_ERR_BADLAYOUT' | 'FDT_ERR_NOSPACE' | 'FDT_ERR_BADNAME' | 'FDT_ERR_TOODEEP';

export class FdtError extends Error {
  override readonly name = 'FdtError';
  readonly code: FdtErrorCode;
  constructor(code: FdtErrorCode, message: string) {
    super(`${code}: ${message}`);
    this.code = code;
  }
}

export const FDT_MAGIC = 0xd00dfeed;

const FDT_BEGIN_NODE = 1;
const FDT_END_NODE = 2;
const FDT_PROP = 3;
const FDT_NOP = 4;
const FDT_END = 9;

// Header field offsets (all big-endian u32). size_dt_struct only exists from version 17 on,
// which is why a version 16 header is 4 bytes shorter and its structure block runs to totalsize.
const H = {
  totalsize: 4, offStruct: 8, offStrings: 12, offRsvmap: 16, version: 20, lastComp: 24,
  sizeStrings: 32, sizeStruct: 36,
} as const;
const HEADER_SIZE_V16 = 0x24;
const HEADER_SIZE_V17 = 0x28;
const RSV_ENTRY_SIZE = 16;
// libfdt refuses blobs above INT_MAX because it does its offset arithmetic in int.
const INT_MAX = 0x7fffffff;
/** Deepest nesting accepted (root = 1): bounds recursion in the writer and memory in the reader. */
const MAX_DEPTH = 64;
/**
 * Longest property name accepted. Names live in the strings block and any number of
 * properties may point into one long string, so without a bound a small blob could expand
 * into gigabytes of decoded names. The spec asks for 1-31 characters; real bindings
 * exceed that, so the bound is generous.
 */
const MAX_PROP_NAME = 255;

const utf8 = new TextEncoder();
// fatal: a name that is not UTF-8 is rejected rather than silently altered; ignoreBOM keeps
// a leading U+FEFF so that decode(encode(x)) === x.
const utf8Strict = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

// Arithmetic, not `& ~3`: offsets near INT_MAX would turn negative in 32-bit bitwise ops.
const align4 = (n: number): number => n + ((4 - (n % 4)) % 4);
const viewOf = (b: Uint8Array): DataView => new DataView(b.buffer, b.byteOffset, b.byteLength);

function fail(code: FdtErrorCode, message: string): never {
  throw new FdtError(code, message);
}

function decodeUtf8(bytes: Uint8Array): string | undefined {
  // Node names, property names and compatible strings are short ASCII: decoded in JS, which
  // is several times cheaper than a TextDecoder call per name; anything else goes to the decoder.
  if (bytes.length <= 64) {
    let ascii = '';
    let i = 0;
    for (; i < bytes.length; i++) {
      const b = bytes[i] as number;
      if (b >= 0x80) break;
      ascii += String.fromCharCode(b);
    }
    if (i === bytes.length) return ascii;
  }
  try { return utf8Strict.decode(bytes); } catch { return undefined; }
}

/** Props are kept in object order, which JS puts integer-like keys ("1") first. */
export function fdtNode(name: string, props: Record<string, Uint8Array> = {}, children: FdtNode[] = []): FdtNode {
  return { name, props: new Map(Object.entries(props)), children };
}

// ---- writer -------------------------------------------------------------------------------

/** Append-only byte buffer; never rewinds, so bytes skipped by pad4 are still zero. */
class ByteSink {
  private buf = new Uint8Array(256);
  length = 0;
  private grow(n: number): void {
    if (this.length + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.length + n) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
  }
  /** Big-endian, stored in place: a token costs no allocation. */
  u32(v: number): void {
    this.grow(4);
    const b = this.buf;
    const at = this.length;
    b[at] = v >>> 24; b[at + 1] = v >>> 16; b[at + 2] = v >>> 8; b[at + 3] = v;
    this.length = at + 4;
  }
  bytes(b: Uint8Array): void {
    this.grow(b.length);
    this.buf.set(b, this.length);
    this.length += b.length;
  }
  /** n zero bytes (the buffer is never rewound, so they are zero already). */
  zeros(n: number): void {
    this.grow(n);
    this.length += n;
  }
  /** Tokens are 32-bit aligned relative to the block start, so names and values are padded. */
  pad4(): void { this.zeros(align4(this.length) - this.length); }
  view(): Uint8Array { return this.buf.subarray(0, this.length); }
}

class StringTable {
  readonly sink = new ByteSink();
  private mirror = '';
  private readonly offsets = new Map<string, number>();
  offsetOf(name: string, encoded: Uint8Array): number {
    const known = this.offsets.get(name);
    if (known !== undefined) return known;
    // dtc reuses any NUL-terminated tail already in the table ("data" inside
    // "preserved-data\0"); doing the same keeps our bytes identical to dtc's.
    // The bytes as one char each (an ASCII name's bytes are its own characters).
    const key = `${encoded.length === name.length ? name : String.fromCharCode(...encoded)}\0`;
    let off = this.mirror.indexOf(key);
    if (off < 0) {
      off = this.sink.length;
      this.sink.bytes(encoded);
      this.sink.zeros(1);
      this.mirror += key;
    }
    this.offsets.set(name, off);
    return off;
  }
}

/**
 * Valid names by kind, encoded: a name's bytes and validity are a pure function of the name,
 * and the writer sees the same few names on every write (the KHO root FDT is rewritten on
 * every kho_add_subtree of every boot). Callers only read the bytes.
 */
const encodedNames = { node: new Map<string, Uint8Array>(), property: new Map<string, Uint8Array>() };
const ENCODED_NAMES_MAX = 4096;

function encodeName(name: string, kind: 'node' | 'property'): Uint8Array {
  const known = encodedNames[kind].get(name);
  if (known !== undefined) return known;
  const enc = utf8.encode(name);
  // NUL ends a name in both blocks, '/' separates path components, an empty name is the
  // root's alone, and a lone surrogate would not survive UTF-8.
  if (name === '' || name.includes('\0') || /\p{Cs}/u.test(name)
    || (kind === 'node' ? name.includes('/') : enc.length > MAX_PROP_NAME)) {
    fail('FDT_ERR_BADNAME', `invalid ${kind} name ${JSON.stringify(name)}`);
  }
  if (encodedNames[kind].size < ENCODED_NAMES_MAX) encodedNames[kind].set(name, enc);
  return enc;
}

function emitNode(node: FdtNode, depth: number, out: ByteSink, strings: StringTable): void {
  if (depth > MAX_DEPTH) fail('FDT_ERR_TOODEEP', `nesting deeper than ${MAX_DEPTH}`);
  out.u32(FDT_BEGIN_NODE);
  // The root's name is always empty in a DTB (spec 5.4.1), whatever the caller named it.
  if (depth !== 1) out.bytes(encodeName(node.name, 'node'));
  out.zeros(1);
  out.pad4();
  for (const [name, value] of node.props) {
    const nameoff = strings.offsetOf(name, encodeName(name, 'property'));
    out.u32(FDT_PROP);
    out.u32(value.length);
    out.u32(nameoff);
    out.bytes(value);
    out.pad4();
  }
  // Sibling names must be unique (spec 2.2.1); dtc refuses to read a tree that breaks this.
  const seen = new Set<string>();
  for (const child of node.children) {
    if (seen.has(child.name)) fail('FDT_ERR_BADNAME', `duplicate node name ${JSON.stringify(child.name)}`);
    seen.add(child.name);
    emitNode(child, depth + 1, out, strings);
  }
  out.u32(FDT_END_NODE);
}

export function fdtCreate(root: FdtNode, opts?: { maxSize?: number }): Uint8Array {
  const struct = new ByteSink();
  const strings = new StringTable();
  emitNode(root, 1, struct, strings);
  struct.u32(FDT_END);
  // The reservation map must be 8-byte aligned (spec 5.3); 0x28 already is, and its only
  // entry is the all-zero terminator.
  const offRsvmap = HEADER_SIZE_V17;
  const offStruct = offRsvmap + RSV_ENTRY_SIZE;
  const offStrings = offStruct + struct.length;
  const total = offStrings + strings.sink.length;
  if (total > INT_MAX || (opts?.maxSize !== undefined && total > opts.maxSize)) {
    fail('FDT_ERR_NOSPACE', `blob needs ${total} bytes, limit is ${opts?.maxSize ?? INT_MAX}`);
  }
  const blob = new Uint8Array(total);
  const dv = viewOf(blob);
  // magic, totalsize, off_dt_struct, off_dt_strings, off_mem_rsvmap, version,
  // last_comp_version (16: a v16 reader can use this blob), boot_cpuid_phys, the two sizes.
  const header = [FDT_MAGIC, total, offStruct, offStrings, offRsvmap, 17, 16, 0, strings.sink.length, struct.length];
  for (let i = 0; i < header.length; i++) dv.setUint32(i * 4, header[i] as number);
  blob.set(struct.view(), offStruct);
  blob.set(strings.sink.view(), offStrings);
  return blob;
}

// ---- reader -------------------------------------------------------------------------------

interface Header {
  totalsize: number; offStruct: number; sizeStruct: number;
  offStrings: number; sizeStrings: number; offRsvmap: number;
}

function probe(bytes: Uint8Array): Header | { code: FdtErrorCode; why: string } {
  const bad = (code: FdtErrorCode, why: string): { code: FdtErrorCode; why: string } => ({ code, why });
  if (bytes.length < 4) return bad('FDT_ERR_TRUNCATED', `${bytes.length} bytes cannot hold a header`);
  const dv = viewOf(bytes);
  if (dv.getUint32(0) !== FDT_MAGIC) return bad('FDT_ERR_BADMAGIC', `magic 0x${dv.getUint32(0).toString(16)}`);
  if (bytes.length < H.lastComp + 4) return bad('FDT_ERR_TRUNCATED', `${bytes.length} bytes cannot hold a header`);
  const version = dv.getUint32(H.version);
  const lastComp = dv.getUint32(H.lastComp);
  // We read 16 and 17; a newer blob is readable only if it declares itself compatible with
  // 17 or older, and no blob can be compatible with a version newer than itself.
  if (version < 16 || lastComp > 17 || version < lastComp) {
    return bad('FDT_ERR_BADVERSION', `version ${version}, last_comp_version ${lastComp}`);
  }
  const hdrSize = version >= 17 ? HEADER_SIZE_V17 : HEADER_SIZE_V16;
  if (bytes.length < hdrSize) return bad('FDT_ERR_TRUNCATED', `${bytes.length} bytes cannot hold a v${version} header`);
  const totalsize = dv.getUint32(H.totalsize);
  if (totalsize < hdrSize || totalsize > INT_MAX || totalsize > bytes.length) {
    return bad('FDT_ERR_TRUNCATED', `totalsize ${totalsize} does not fit a ${bytes.length}-byte buffer`);
  }
  // Every block must start after the header and end by totalsize; u32 sums cannot overflow
  // a JS number, so the end check is exact.
  const fits = (off: number, size: number): boolean => off >= hdrSize && off + size <= totalsize;
  const offRsvmap = dv.getUint32(H.offRsvmap);
  const offStruct = dv.getUint32(H.offStruct);
  const offStrings = dv.getUint32(H.offStrings);
  const sizeStrings = dv.getUint32(H.sizeStrings);
  if (!fits(offRsvmap, 0)) return bad('FDT_ERR_TRUNCATED', `off_mem_rsvmap ${offRsvmap} outside the blob`);
  if (!fits(offStruct, 0)) return bad('FDT_ERR_TRUNCATED', `off_dt_struct ${offStruct} outside the blob`);
  const sizeStruct = version >= 17 ? dv.getUint32(H.sizeStruct) : totalsize - offStruct;
  if (!fits(offStruct, sizeStruct)) return bad('FDT_ERR_TRUNCATED', `structure block ${offStruct}+${sizeStruct} outside the blob`);
  if (!fits(offStrings, sizeStrings)) return bad('FDT_ERR_TRUNCATED', `strings block ${offStrings}+${sizeStrings} outside the blob`);
  return { totalsize, offStruct, sizeStruct, offStrings, sizeStrings, offRsvmap };
}

export function fdtCheckHeader(bytes: Uint8Array): FdtErrorCode | null {
  const h = probe(bytes);
  return 'code' in h ? h.code : null;
}

export function fdtTotalSize(bytes: Uint8Array): number {
  if (bytes.length < 8) fail('FDT_ERR_TRUNCATED', `${bytes.length} bytes cannot hold a header`);
  const dv = viewOf(bytes);
  if (dv.getUint32(0) !== FDT_MAGIC) fail('FDT_ERR_BADMAGIC', `magic 0x${dv.getUint32(0).toString(16)}`);
  return dv.getUint32(H.totalsize);
}

/**
 * The reservation map has no length field: it ends at the first entry of size zero (where
 * libfdt stops too), so that entry must exist before totalsize. Its entries are not kept:
 * FdtNode has no place for them and the KHO handover never carries reservations.
 */
function checkRsvmap(dv: DataView, h: Header): void {
  for (let off = h.offRsvmap; off + RSV_ENTRY_SIZE <= h.totalsize; off += RSV_ENTRY_SIZE) {
    if (dv.getUint32(off + 8) === 0 && dv.getUint32(off + 12) === 0) return;
  }
  fail('FDT_ERR_TRUNCATED', 'memory reservation map has no terminating entry');
}

export function fdtParse(bytes: Uint8Array): FdtNode {
  const h = probe(bytes);
  if ('code' in h) fail(h.code, h.why);
  const dv = viewOf(bytes);
  checkRsvmap(dv, h);
  const end = h.offStruct + h.sizeStruct;
  const names = new Map<number, string>();
  const propName = (nameoff: number): string => {
    const known = names.get(nameoff);
    if (known !== undefined) return known;
    if (nameoff >= h.sizeStrings) fail('FDT_ERR_BADOFFSET', `name offset ${nameoff} outside the strings block`);
    const start = h.offStrings + nameoff;
    const stop = Math.min(h.offStrings + h.sizeStrings, start + MAX_PROP_NAME + 1);
    const len = bytes.subarray(start, stop).indexOf(0);
    if (len < 0 && stop === h.offStrings + h.sizeStrings) fail('FDT_ERR_TRUNCATED', `name at ${nameoff} is not NUL-terminated`);
    if (len < 0) fail('FDT_ERR_BADNAME', `name at ${nameoff} is longer than ${MAX_PROP_NAME} bytes`);
    const name = decodeUtf8(bytes.subarray(start, start + len));
    if (name === undefined || name === '') fail('FDT_ERR_BADNAME', `name at ${nameoff} is empty or not UTF-8`);
    names.set(nameoff, name);
    return name;
  };

  const stack: { node: FdtNode; childNames: Set<string> }[] = [];
  let root: FdtNode | undefined;
  let off = h.offStruct;
  // Every token takes at least 4 bytes and off only grows, so this loop runs at most
  // size_dt_struct / 4 times whatever the blob says.
  for (;;) {
    if (off + 4 > end) fail('FDT_ERR_TRUNCATED', 'structure block ends before FDT_END');
    const token = dv.getUint32(off);
    off += 4;
    const top = stack[stack.length - 1];
    switch (token) {
      case FDT_NOP:
        break;
      case FDT_BEGIN_NODE: {
        const len = bytes.subarray(off, end).indexOf(0);
        if (len < 0) fail('FDT_ERR_TRUNCATED', `node name at ${off} is not NUL-terminated`);
        const name = decodeUtf8(bytes.subarray(off, off + len));
        if (name === undefined) fail('FDT_ERR_BADNAME', `node name at ${off} is not UTF-8`);
        off = align4(off + len + 1);
        if (top === undefined) {
          // A second top-level node, or a named root, is not a device tree (libfdt agrees).
          if (root !== undefined) fail('FDT_ERR_BADSTRUCTURE', 'second root node');
          if (name !== '') fail('FDT_ERR_BADSTRUCTURE', `root node is named ${JSON.stringify(name)}`);
        } else {
          if (name === '' || name.includes('/')) fail('FDT_ERR_BADNAME', `invalid node name ${JSON.stringify(name)}`);
          // Siblings must be unique; accepting a duplicate would let it shadow the real node.
          if (top.childNames.has(name)) fail('FDT_ERR_BADSTRUCTURE', `duplicate node ${JSON.stringify(name)}`);
        }
        if (stack.length >= MAX_DEPTH) fail('FDT_ERR_TOODEEP', `nesting deeper than ${MAX_DEPTH}`);
        const node: FdtNode = { name, props: new Map(), children: [] };
        if (top === undefined) root = node;
        else { top.node.children.push(node); top.childNames.add(name); }
        stack.push({ node, childNames: new Set() });
        break;
      }
      case FDT_END_NODE:
        if (top === undefined) fail('FDT_ERR_BADSTRUCTURE', `FDT_END_NODE at ${off - 4} closes no node`);
        stack.pop();
        break;
      case FDT_PROP: {
        if (top === undefined) fail('FDT_ERR_BADSTRUCTURE', `FDT_PROP at ${off - 4} is outside any node`);
        if (off + 8 > end) fail('FDT_ERR_TRUNCATED', `property header at ${off} runs past the structure block`);
        const len = dv.getUint32(off);
        const value = off + 8;
        if (len > end - value) fail('FDT_ERR_TRUNCATED', `property value at ${value} (${len} bytes) runs past the structure block`);
        const name = propName(dv.getUint32(off + 4));
        if (top.node.props.has(name)) fail('FDT_ERR_BADSTRUCTURE', `duplicate property ${JSON.stringify(name)}`);
        // Copied so the tree does not alias (or pin) the caller's buffer.
        top.node.props.set(name, bytes.slice(value, value + len));
        off = align4(value + len);
        break;
      }
      case FDT_END:
        if (root === undefined || top !== undefined) fail('FDT_ERR_BADSTRUCTURE', 'FDT_END inside an open node or before the root');
        return root;
      default:
        fail('FDT_ERR_BADSTRUCTURE', `unknown token 0x${token.toString(16)} at ${off - 4}`);
    }
  }
}

/** libfdt path lookup: '/'-separated components; a component without '@' also matches 'name@unit'. */
export function fdtFindNode(root: FdtNode, path: string): FdtNode | undefined {
  if (!path.startsWith('/')) return undefined;
  let node = root;
  for (const part of path.split('/')) {
    if (part === '') continue;
    const unitless = !part.includes('@');
    const next = node.children.find((c) => c.name === part || (unitless && c.name.startsWith(`${part}@`)));
    if (next === undefined) return undefined;
    node = next;
  }
  return node;
}

// ---- property helpers ---------------------------------------------------------------------

export function propU64LE(value: bigint): Uint8Array {
  if (value < 0n || value > 0xffff_ffff_ffff_ffffn) throw new RangeError(`propU64LE: ${value} is not a u64`);
  const out = new Uint8Array(8);
  viewOf(out).setBigUint64(0, value, true);
  return out;
}

export function readPropU64LE(node: FdtNode, name: string): bigint | undefined {
  const v = node.props.get(name);
  return v?.length === 8 ? viewOf(v).getBigUint64(0, true) : undefined;
}

export function propString(value: string): Uint8Array {
  const enc = utf8.encode(value);
  const out = new Uint8Array(enc.length + 1);
  out.set(enc);
  return out;
}

/** The first string of the value; undefined when missing, unterminated or not UTF-8. */
export function readPropString(node: FdtNode, name: string): string | undefined {
  const v = node.props.get(name);
  const nul = v?.indexOf(0) ?? -1;
  return v === undefined || nul < 0 ? undefined : decodeUtf8(v.subarray(0, nul));
}

// ---- dts output ---------------------------------------------------------------------------

// dtc's isstring(): printable ASCII, NUL, or one of the C escapes \a\b\t\n\v\f\r.
const isStringByte = (c: number): boolean => (c >= 0x20 && c <= 0x7e) || c === 0 || (c >= 7 && c <= 13);
const ESCAPES: Record<number, string> = {
  7: '\\a', 8: '\\b', 9: '\\t', 10: '\\n', 11: '\\v', 12: '\\f', 13: '\\r', 0x22: '\\"', 0x5c: '\\\\',
};

const hex2 = (n: number): string => n.toString(16).padStart(2, '0');

/** A DTB carries no value types, so dtc guesses them; these are its rules and formats. */
function dtsValue(v: Uint8Array): string {
  if (v.length === 0) return '';
  const nuls = v.reduce((n, c) => n + (c === 0 ? 1 : 0), 0);
  // A string (list) ends in NUL, holds only string bytes and is not mostly NULs. Lists print
  // as "a", "b" as dtc >= 1.7 does (dtc 1.6 printed them as one "a\0b").
  if (v[v.length - 1] === 0 && v.every(isStringByte) && nuls <= v.length - nuls) {
    const strings: string[] = [];
    let cur = '';
    for (const c of v.subarray(0, v.length - 1)) {
      if (c === 0) { strings.push(cur); cur = ''; } else cur += ESCAPES[c] ?? String.fromCharCode(c);
    }
    strings.push(cur);
    return ` = ${strings.map((s) => `"${s}"`).join(', ')}`;
  }
  // Otherwise whole 32-bit big-endian cells when the length allows ("0x%02x"), else bytes.
  if (v.length % 4 === 0) {
    const dv = viewOf(v);
    const cells: string[] = [];
    for (let i = 0; i < v.length; i += 4) cells.push(`0x${hex2(dv.getUint32(i))}`);
    return ` = <${cells.join(' ')}>`;
  }
  return ` = [${Array.from(v, hex2).join(' ')}]`;
}

function dtsNode(node: FdtNode, level: number): string {
  if (level >= MAX_DEPTH) fail('FDT_ERR_TOODEEP', `nesting deeper than ${MAX_DEPTH}`);
  const indent = '\t'.repeat(level);
  let s = `${indent}${level === 0 ? '/' : node.name} {\n`;
  for (const [name, value] of node.props) s += `${indent}\t${name}${dtsValue(value)};\n`;
  for (const child of node.children) s += `\n${dtsNode(child, level + 1)}`;
  return `${s}${indent}};\n`;
}

export function fdtToDts(root: FdtNode): string {
  return `/dts-v1/;\n\n${dtsNode(root, 0)}`;
}
