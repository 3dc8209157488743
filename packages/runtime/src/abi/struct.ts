/**
 * Packed little-endian struct codec. Every serialized layout (KHO/LUO `*_ser` structs, ioctl
 * argument structs) is declared once with `defineStruct`, so offsets are computed in one place
 * and a declared size acts like the kernel's `static_assert(sizeof(...) == N)`.
 *
 * Layouts are packed (no implicit padding): the kernel declares these structs `__packed` (or
 * pads them explicitly) precisely so that both kernels agree byte for byte. Padding, where a
 * layout needs it, is declared as an explicit `bytes(n)` field.
 */

export type FieldSpec =
  | { kind: 'u8' } | { kind: 'u16' } | { kind: 'u32' } | { kind: 's32' }
  | { kind: 'u64' }
  | { kind: 'bytes'; length: number }
  | { kind: 'cstring'; length: number };

// The scalar specs are typed by their literal kind (still assignable to FieldSpec) so that
// FieldValue<typeof layout.x> resolves to one type instead of the union of all value types.
// Frozen because they are shared singletons used by every layout.
export const u8: { readonly kind: 'u8' } = Object.freeze({ kind: 'u8' });
export const u16: { readonly kind: 'u16' } = Object.freeze({ kind: 'u16' });
export const u32: { readonly kind: 'u32' } = Object.freeze({ kind: 'u32' });
export const s32: { readonly kind: 's32' } = Object.freeze({ kind: 's32' });
export const u64: { readonly kind: 'u64' } = Object.freeze({ kind: 'u64' });

export function bytes(length: number): { readonly kind: 'bytes'; readonly length: number } {
  if (!Number.isSafeInteger(length) || length < 0) throw new RangeError(`bytes(${length}): length must be a non-negative integer`);
  return Object.freeze({ kind: 'bytes', length });
}

export function cstring(length: number): { readonly kind: 'cstring'; readonly length: number } {
  // A char[0] could never hold the terminating NUL, so it cannot carry any string.
  if (!Number.isSafeInteger(length) || length < 1) throw new RangeError(`cstring(${length}): length must be a positive integer`);
  return Object.freeze({ kind: 'cstring', length });
}

export type FieldValue<F extends FieldSpec> =
  F extends { kind: 'u64' } ? bigint
  : F extends { kind: 'bytes' } ? Uint8Array
  : F extends { kind: 'cstring' } ? string
  : number;

// -readonly: `const L` makes the layout's keys readonly, and a homomorphic mapped type would
// carry that over, leaving decoded values impossible to modify and re-encode.
export type StructValue<L extends Record<string, FieldSpec>> = { -readonly [K in keyof L]: FieldValue<L[K]> };

export interface StructCodec<L extends Record<string, FieldSpec>> {
  readonly name: string;
  readonly size: number;
  readonly offsets: { readonly [K in keyof L]: number };
  readonly fields: L;
  encode(value: Partial<StructValue<L>>): Uint8Array;
  encodeInto(dst: Uint8Array, offset: number, value: Partial<StructValue<L>>): void;
  decode(src: Uint8Array, offset?: number): StructValue<L>;
  read<K extends keyof L>(src: Uint8Array, field: K, offset?: number): FieldValue<L[K]>;
  write<K extends keyof L>(dst: Uint8Array, field: K, value: FieldValue<L[K]>, offset?: number): void;
}

export class StructError extends Error {
  override readonly name = 'StructError';
  readonly struct: string;
  readonly field: string | undefined;
  constructor(struct: string, field: string | undefined, detail: string) {
    super(`struct ${struct}${field === undefined ? '' : `.${field}`}: ${detail}`);
    this.struct = struct;
    this.field = field;
  }
}

interface FieldPlan {
  readonly name: string;
  readonly spec: FieldSpec;
  readonly offset: number;
  readonly size: number;
}

const SCALAR_SIZE = { u8: 1, u16: 2, u32: 4, s32: 4, u64: 8 } as const;
const INT_RANGE = {
  u8: [0, 0xff], u16: [0, 0xffff], u32: [0, 0xffff_ffff], s32: [-0x8000_0000, 0x7fff_ffff],
} as const;
const U64_MAX = (1n << 64n) - 1n;

const utf8Encoder = new TextEncoder();
// fatal:false because decode must never throw anything but StructError: a peer kernel (or a
// corrupted handover page) may hand us invalid UTF-8, which decodes to U+FFFD instead.
const utf8Decoder = new TextDecoder('utf-8', { fatal: false });

// In /u mode a well-formed surrogate pair is one code point, so \p{Cs} matches only lone
// surrogates, which TextEncoder would silently replace with U+FFFD (a lossy encode).
const LONE_SURROGATE = /\p{Cs}/u;
// Integer-like keys are enumerated before all other keys regardless of declaration order, so
// "field order = key order" would silently lay them out somewhere other than where written.
const INTEGER_KEY = /^(0|[1-9]\d*)$/;

function isFieldSpec(spec: unknown): spec is FieldSpec {
  return typeof spec === 'object' && spec !== null && 'kind' in spec && typeof spec.kind === 'string';
}

function fieldSize(struct: string, name: string, spec: unknown): number {
  if (!isFieldSpec(spec)) throw new StructError(struct, name, 'field spec is not a FieldSpec');
  switch (spec.kind) {
    case 'u8': case 'u16': case 'u32': case 's32': case 'u64':
      return SCALAR_SIZE[spec.kind];
    case 'bytes': case 'cstring': {
      const min = spec.kind === 'cstring' ? 1 : 0;
      if (!Number.isSafeInteger(spec.length) || spec.length < min) {
        throw new StructError(struct, name, `${spec.kind} length ${String(spec.length)} must be an integer >= ${min}`);
      }
      return spec.length;
    }
    default:
      throw new StructError(struct, name, `unknown field kind '${String((spec as { kind: unknown }).kind)}'`);
  }
}

/** Describe a value for an error message without risking a throw (symbols, odd objects). */
function show(v: unknown): string {
  if (typeof v === 'bigint') return `${v}n`;
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v);
  if (v instanceof Uint8Array) return `Uint8Array(${v.length})`;
  if (typeof v === 'number' || typeof v === 'boolean' || v === null || v === undefined) return String(v);
  return typeof v;
}

function view(buf: Uint8Array): DataView {
  // Honour byteOffset: callers routinely pass subarrays of a larger handover page.
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}

function fieldError(struct: string, f: FieldPlan, value: unknown, why: string): StructError {
  return new StructError(struct, f.name, `${show(value)} ${why}`);
}

/** Validate and write one field; `at` is the absolute offset within `dv`. (No closure, no destructuring: this runs for every field of every struct.) */
function writeField(struct: string, f: FieldPlan, dv: DataView, at: number, value: unknown): void {
  const spec = f.spec;
  switch (spec.kind) {
    case 'u8': case 'u16': case 'u32': case 's32': {
      const range = INT_RANGE[spec.kind];
      const min = range[0];
      const max = range[1];
      if (typeof value !== 'number' || !Number.isInteger(value)) throw fieldError(struct, f, value, `is not an integer (${spec.kind})`);
      if (value < min || value > max) throw fieldError(struct, f, value, `is out of range for ${spec.kind} [${min}, ${max}]`);
      if (spec.kind === 'u8') dv.setUint8(at, value);
      else if (spec.kind === 'u16') dv.setUint16(at, value, true);
      else if (spec.kind === 'u32') dv.setUint32(at, value, true);
      else dv.setInt32(at, value, true);
      return;
    }
    case 'u64':
      // No implicit number -> bigint: a number above 2^53 has already lost precision.
      if (typeof value !== 'bigint') throw fieldError(struct, f, value, 'is not a bigint (u64)');
      if (value < 0n || value > U64_MAX) throw fieldError(struct, f, value, 'is out of range for u64 [0, 2^64-1]');
      dv.setBigUint64(at, value, true);
      return;
    case 'bytes': {
      if (!(value instanceof Uint8Array)) throw fieldError(struct, f, value, 'is not a Uint8Array');
      if (value.length > spec.length) throw fieldError(struct, f, value, `is longer than bytes(${spec.length})`);
      // Shorter arrays are zero-padded, like a partially initialised C array.
      new Uint8Array(dv.buffer, dv.byteOffset + at, f.size).fill(0).set(value);
      return;
    }
    case 'cstring': {
      if (typeof value !== 'string') throw fieldError(struct, f, value, 'is not a string');
      // An embedded NUL would be truncated on decode: the round trip would silently lose data.
      if (value.includes('\0')) throw fieldError(struct, f, value, 'contains a NUL character');
      if (LONE_SURROGATE.test(value)) throw fieldError(struct, f, value, 'contains a lone UTF-16 surrogate');
      const encoded = utf8Encoder.encode(value);
      if (encoded.length >= spec.length) {
        throw fieldError(struct, f, value, `is ${encoded.length} UTF-8 bytes; cstring(${spec.length}) holds at most ${spec.length - 1} plus NUL`);
      }
      new Uint8Array(dv.buffer, dv.byteOffset + at, f.size).fill(0).set(encoded);
      return;
    }
  }
}

function readField(f: FieldPlan, dv: DataView, at: number): unknown {
  const spec = f.spec;
  switch (spec.kind) {
    case 'u8': return dv.getUint8(at);
    case 'u16': return dv.getUint16(at, true);
    case 'u32': return dv.getUint32(at, true);
    case 's32': return dv.getInt32(at, true);
    case 'u64': return dv.getBigUint64(at, true);
    case 'bytes': return new Uint8Array(dv.buffer, dv.byteOffset + at, f.size).slice();
    case 'cstring': {
      const raw = new Uint8Array(dv.buffer, dv.byteOffset + at, f.size);
      const nul = raw.indexOf(0);
      return utf8Decoder.decode(nul === -1 ? raw : raw.subarray(0, nul));
    }
  }
}

/** Declare a packed layout; field order = object key order. `opts.size` is a static_assert. */
export function defineStruct<const L extends Record<string, FieldSpec>>(
  name: string,
  layout: L,
  opts?: { size?: number },
): StructCodec<L> {
  const plans: FieldPlan[] = [];
  // A Map, not a plain object, so a field lookup for e.g. 'toString' cannot hit Object.prototype.
  const byName = new Map<string, FieldPlan>();
  const offsets: Record<string, number> = {};
  const fields: Record<string, FieldSpec> = {};
  let size = 0;
  for (const [key, spec] of Object.entries(layout)) {
    if (INTEGER_KEY.test(key)) throw new StructError(name, key, 'integer-like field names do not keep declaration order');
    const fsize = fieldSize(name, key, spec);
    // Copy the spec so later mutation of the caller's object cannot desynchronise the offsets.
    const copy = Object.freeze({ ...spec });
    const plan: FieldPlan = { name: key, spec: copy, offset: size, size: fsize };
    plans.push(plan);
    byName.set(key, plan);
    offsets[key] = size;
    fields[key] = copy;
    size += fsize;
  }
  if (opts?.size !== undefined && opts.size !== size) {
    throw new StructError(name, undefined, `declared size ${opts.size} but fields add up to ${size} bytes`);
  }

  const fieldOf = (field: PropertyKey): FieldPlan => {
    const plan = typeof field === 'string' ? byName.get(field) : undefined;
    if (plan === undefined) throw new StructError(name, String(field), 'no such field');
    return plan;
  };

  /** Bounds-check a whole struct at `offset`: even a single-field access requires the struct to fit. */
  const checkFits = (buf: unknown, offset: unknown): DataView => {
    if (!(buf instanceof Uint8Array)) throw new StructError(name, undefined, `buffer is ${show(buf)}, not a Uint8Array`);
    if (typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < 0) {
      throw new StructError(name, undefined, `offset ${show(offset)} is not a non-negative integer`);
    }
    const available = Math.max(0, buf.length - offset);
    if (available < size) {
      throw new StructError(name, undefined, `needs ${size} bytes at offset ${offset}, only ${available} available`);
    }
    return view(buf);
  };

  const encode = (value: Partial<StructValue<L>>): Uint8Array => {
    if (typeof value !== 'object' || value === null) throw new StructError(name, undefined, `value is ${show(value)}, not an object`);
    // Reject unknown keys: a misspelt field would otherwise be silently encoded as zero.
    for (const key of Object.keys(value)) fieldOf(key);
    const out = new Uint8Array(size);
    const dv = view(out);
    const src: Partial<Record<string, unknown>> = value;
    for (const f of plans) {
      const v = src[f.name];
      if (v !== undefined) writeField(name, f, dv, f.offset, v);
    }
    return out;
  };

  return Object.freeze({
    name,
    size,
    offsets: Object.freeze(offsets) as { readonly [K in keyof L]: number },
    fields: Object.freeze(fields) as L,
    encode,
    encodeInto(dst: Uint8Array, offset: number, value: Partial<StructValue<L>>): void {
      checkFits(dst, offset);
      // Encode to a scratch buffer first so that a validation error leaves dst untouched.
      dst.set(encode(value), offset);
    },
    decode(src: Uint8Array, offset = 0): StructValue<L> {
      const dv = checkFits(src, offset);
      const out: Record<string, unknown> = {};
      for (const f of plans) out[f.name] = readField(f, dv, offset + f.offset);
      return out as StructValue<L>;
    },
    read<K extends keyof L>(src: Uint8Array, field: K, offset = 0): FieldValue<L[K]> {
      const f = fieldOf(field);
      const dv = checkFits(src, offset);
      return readField(f, dv, offset + f.offset) as FieldValue<L[K]>;
    },
    write<K extends keyof L>(dst: Uint8Array, field: K, value: FieldValue<L[K]>, offset = 0): void {
      const f = fieldOf(field);
      const dv = checkFits(dst, offset);
      writeField(name, f, dv, offset + f.offset, value);
    },
  });
}
