/**
 * A JSON-schema check by interpretation, without ajv's code generation: the answer to "is this
 * data valid?" for the schemas the SDK composes (manifests, scenarios with their plugins'
 * vocabulary), built in microseconds where compiling them with ajv costs a CLI run tens of
 * milliseconds. It answers yes or no only: a caller asks ajv (schemas.ts) when the answer is no,
 * for the errors, so every message still comes from ajv.
 *
 * It takes a deliberately narrow subset, on which ajv in strict mode agrees: every keyword that
 * only applies to one JSON type sits beside an explicit, single `type` (or under one, through
 * allOf / if / then / else / not), `required` names only declared properties, `items` is one
 * schema, formats are the ones given. Anything else (an unknown or unsupported keyword, a keyword
 * value of the wrong type, a union type) makes `checkerFor` return null, and the caller compiles
 * with ajv as before: so a plugin's malformed vocabulary still fails to compile with ajv's message.
 */

export type Checker = (data: unknown) => boolean;

/** Thrown while building: the schema is outside the subset (never leaves this module). */
class Outside extends Error {}

const ANNOTATIONS = new Set(['description', 'title', 'default', 'examples', '$comment']);
const TYPES = new Set(['string', 'number', 'integer', 'boolean', 'object', 'array', 'null']);
const FOR_TYPE: Readonly<Record<string, ReadonlySet<string>>> = {
  number: new Set(['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'multipleOf']),
  integer: new Set(['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'multipleOf']),
  string: new Set(['minLength', 'maxLength', 'pattern', 'format']),
  array: new Set(['items', 'minItems', 'maxItems']),
  object: new Set(['properties', 'required', 'additionalProperties', 'propertyNames']),
};
const ANY_TYPE = new Set(['type', 'nullable', 'enum', 'const', 'allOf', 'if', 'then', 'else', 'not']);

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0;
const need = (ok: boolean): void => { if (!ok) throw new Outside(); };

/** Deep equality of JSON values (what ajv's enum and const compare with). */
function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a)) return Array.isArray(b) && a.length === b.length && a.every((x, i) => jsonEqual(x, b[i]));
  if (Array.isArray(b)) return false;
  const ka = Object.keys(a);
  const ra = a as Record<string, unknown>;
  const rb = b as Record<string, unknown>;
  return ka.length === Object.keys(b).length && ka.every((k) => Object.prototype.hasOwnProperty.call(b, k) && jsonEqual(ra[k], rb[k]));
}

/** Unicode code points, as ajv counts minLength / maxLength (a surrogate pair is one). */
function codePoints(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    n++;
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) i++;
    }
  }
  return n;
}

function typeCheck(type: string): Checker {
  switch (type) {
    case 'string': return (x) => typeof x === 'string';
    case 'number': return (x) => typeof x === 'number' && Number.isFinite(x);
    case 'integer': return (x) => Number.isInteger(x);
    case 'boolean': return (x) => typeof x === 'boolean';
    case 'object': return isRecord;
    case 'array': return (x) => Array.isArray(x);
    default: return (x) => x === null;
  }
}

function build(schema: unknown, inherited: string | null, formats: Readonly<Record<string, (s: string) => boolean>>): Checker {
  need(isRecord(schema));
  const s = schema as Record<string, unknown>;
  const checks: Checker[] = [];
  let type = inherited;
  if (s.type !== undefined) {
    need(typeof s.type === 'string' && TYPES.has(s.type));
    // Under an applicator, ajv's strictTypes takes only the context's type (or integer for number).
    need(inherited === null || s.type === inherited || (inherited === 'number' && s.type === 'integer'));
    type = s.type as string;
  }
  const applicable = type === null ? undefined : FOR_TYPE[type];
  for (const k of Object.keys(s)) {
    need(ANNOTATIONS.has(k) || ANY_TYPE.has(k) || (applicable?.has(k) ?? false));
  }
  if (s.type !== undefined) {
    const t = typeCheck(s.type as string);
    if (s.nullable === true) checks.push((x) => x === null || t(x));
    else checks.push(t);
  } else need(s.nullable === undefined);
  need(s.nullable === undefined || typeof s.nullable === 'boolean');
  const nullOk = s.nullable === true;

  if (s.enum !== undefined) {
    need(Array.isArray(s.enum) && s.enum.length > 0);
    const values = s.enum as unknown[];
    checks.push((x) => values.some((v) => jsonEqual(x, v)));
  }
  if ('const' in s) { const c = s.const; checks.push((x) => jsonEqual(x, c)); }

  // Numbers (the type check above ran first: x is a finite number here, or null when nullable).
  for (const [k, ok] of [
    ['minimum', (x: number, m: number) => x >= m], ['maximum', (x: number, m: number) => x <= m],
    ['exclusiveMinimum', (x: number, m: number) => x > m], ['exclusiveMaximum', (x: number, m: number) => x < m],
  ] as const) {
    if (s[k] === undefined) continue;
    need(typeof s[k] === 'number' && Number.isFinite(s[k]));
    const m = s[k] as number;
    checks.push((x) => typeof x !== 'number' || ok(x, m));
  }
  if (s.multipleOf !== undefined) {
    need(typeof s.multipleOf === 'number' && s.multipleOf > 0 && Number.isFinite(s.multipleOf));
    const m = s.multipleOf as number;
    // ajv's test, exactly: the quotient is an integer as parseInt reads it.
    checks.push((x) => { if (typeof x !== 'number') return true; const q = x / m; return q === parseInt(String(q), 10); });
  }

  // Strings.
  if (s.minLength !== undefined) { need(isCount(s.minLength)); const n = s.minLength as number; checks.push((x) => typeof x !== 'string' || codePoints(x) >= n); }
  if (s.maxLength !== undefined) { need(isCount(s.maxLength)); const n = s.maxLength as number; checks.push((x) => typeof x !== 'string' || codePoints(x) <= n); }
  if (s.pattern !== undefined) {
    need(typeof s.pattern === 'string');
    let re: RegExp;
    try { re = new RegExp(s.pattern as string, 'u'); } catch { throw new Outside(); }
    checks.push((x) => typeof x !== 'string' || re.test(x));
  }
  if (s.format !== undefined) {
    need(typeof s.format === 'string' && Object.prototype.hasOwnProperty.call(formats, s.format));
    const f = formats[s.format as string] as (v: string) => boolean;
    checks.push((x) => typeof x !== 'string' || f(x));
  }

  // Arrays.
  if (s.items !== undefined) { const item = build(s.items, null, formats); checks.push((x) => !Array.isArray(x) || x.every(item)); }
  if (s.minItems !== undefined) { need(isCount(s.minItems)); const n = s.minItems as number; checks.push((x) => !Array.isArray(x) || x.length >= n); }
  if (s.maxItems !== undefined) { need(isCount(s.maxItems)); const n = s.maxItems as number; checks.push((x) => !Array.isArray(x) || x.length <= n); }

  // Objects.
  const props = new Map<string, Checker>();
  if (s.properties !== undefined) {
    need(isRecord(s.properties));
    for (const [k, v] of Object.entries(s.properties as Record<string, unknown>)) props.set(k, build(v, null, formats));
  }
  if (props.size > 0) {
    const entries = [...props];
    checks.push((x) => !isRecord(x) || entries.every(([k, check]) => x[k] === undefined || check(x[k])));
  }
  if (s.required !== undefined) {
    need(Array.isArray(s.required) && s.required.every((k) => typeof k === 'string' && props.has(k)) && new Set(s.required).size === s.required.length);
    const req = s.required as string[];
    if (req.length > 0) checks.push((x) => !isRecord(x) || req.every((k) => x[k] !== undefined));
  }
  if (s.additionalProperties !== undefined) {
    const extra: Checker = s.additionalProperties === false ? () => false
      : s.additionalProperties === true ? () => true : build(s.additionalProperties, null, formats);
    checks.push((x) => {
      if (!isRecord(x)) return true;
      for (const k in x) if (!props.has(k) && !extra(x[k])) return false;
      return true;
    });
  }
  if (s.propertyNames !== undefined) {
    const name = build(s.propertyNames, 'string', formats);
    checks.push((x) => {
      if (!isRecord(x)) return true;
      for (const k in x) if (!name(k)) return false;
      return true;
    });
  }

  // Applicators: the subschemas see this node's type.
  if (s.allOf !== undefined) {
    need(Array.isArray(s.allOf) && s.allOf.length > 0);
    const all = (s.allOf as unknown[]).map((x) => build(x, type, formats));
    checks.push((x) => all.every((c) => c(x)));
  }
  need((s.then === undefined && s.else === undefined) || s.if !== undefined);
  if (s.if !== undefined) {
    const cond = build(s.if, type, formats);
    const then = s.then === undefined ? null : build(s.then, type, formats);
    const otherwise = s.else === undefined ? null : build(s.else, type, formats);
    checks.push((x) => (cond(x) ? then?.(x) ?? true : otherwise?.(x) ?? true));
  }
  if (s.not !== undefined) { const not = build(s.not, type, formats); checks.push((x) => !not(x)); }

  if (nullOk) {
    const rest = checks.slice(1);
    const t = checks[0] as Checker;
    return (x) => x === null || (t(x) && rest.every((c) => c(x)));
  }
  return (x) => checks.every((c) => c(x));
}

/**
 * A checker for `schema`, or null when the schema is outside the subset this module takes (the
 * caller then uses ajv alone). The root may carry an `$id`.
 */
export function checkerFor(schema: unknown, formats: Readonly<Record<string, (s: string) => boolean>>): Checker | null {
  try {
    if (isRecord(schema) && typeof schema.$id === 'string') {
      const { $id: _id, ...rest } = schema;
      return build(rest, null, formats);
    }
    return build(schema, null, formats);
  } catch (e) {
    if (e instanceof Outside) return null;
    throw e;
  }
}
