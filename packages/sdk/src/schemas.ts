/**
 * Manifests and scenario files are data, validated against JSON schemas shipped with the SDK
 * (and composed from the plugins' vocabulary). Valid data is answered by an interpreting checker
 * (schema-check.ts); invalid data, and schemas outside the checker's subset, go to one strict Ajv
 * instance per process, loaded and compiling a schema only when first needed; every error names
 * the field (a JSON pointer) and, for files, the line it sits on.
 */
import { createRequire } from 'node:module';
import type { Ajv, ErrorObject, JSONSchemaType, ValidateFunction } from 'ajv';
import { remembered, semver } from '@liveupdate/runtime';
import { checkerFor } from './schema-check.js';
import { isSize, parseSizeStrict } from './size.js';
import type { JsonSchema, ObjectKind, ScenarioSection } from './tools.js';

export interface ManifestFormat {
  family: string;
  writes: string[];
  reads: string;
  aliases?: Record<string, string>;
}

export interface ManifestDependency {
  from: string;
  family: string;
  sameSession: boolean;
}

/** A plugin's manifest: what it is, what SDK it needs, what it writes and reads. */
export interface PluginManifest {
  name: string;
  version: string;
  sdk: string;
  formats: ManifestFormat[];
  requires: ManifestDependency[];
}

/** The schemas' formats, for ajv and for the interpreting checker alike. */
const FORMATS: Readonly<Record<string, (s: string) => boolean>> = {
  semver: remembered((s) => semver.valid(s) === s),
  'semver-range': remembered((s) => semver.validRange(s) !== null),
  size: remembered(isSize),
};

let instance: Ajv | null = null;

/** The process's Ajv instance, made (and ajv loaded) on first use. */
function ajv(): Ajv {
  if (instance) return instance;
  const { Ajv: AjvClass } = createRequire(import.meta.url)('ajv') as typeof import('ajv');
  // No meta-schema pass over each schema compiled (compiling draft-07's meta-schema cost a CLI
  // run a third of its start-up): strict mode still rejects unknown keywords, keyword values of
  // the wrong type and unknown types, so a plugin's malformed vocabulary still fails to compile.
  const a = new AjvClass({ strict: true, allErrors: false, verbose: true, validateSchema: false });
  for (const [name, validate] of Object.entries(FORMATS)) a.addFormat(name, { type: 'string', validate });
  instance = a;
  return a;
}

/**
 * A validator with ajv's call shape (`errors` included, so callers cannot tell) that answers
 * valid data with the interpreting checker (schema-check.ts: no code generation, no ajv loaded)
 * and asks ajv, compiled on first need, when the checker says no or cannot take the schema: every
 * error comes from ajv. `eager`: compile with ajv now when the checker cannot take the schema
 * (so a schema ajv rejects is rejected where it is made, as before).
 */
function validatorOf<T>(schema: object, eager = false): ValidateFunction<T> {
  // The checker is built on first use (a module-level validator nobody calls costs nothing at load).
  let check: ReturnType<typeof checkerFor> | undefined = eager ? checkerFor(schema, FORMATS) : undefined;
  let compiled: ValidateFunction<T> | null = check === null && eager ? ajv().compile<T>(schema) : null;
  const validate = ((data: unknown): boolean => {
    if (check === undefined) check = checkerFor(schema, FORMATS); // null: the checker cannot take it, ajv answers
    if (check?.(data)) {
      validate.errors = null;
      return true;
    }
    compiled ??= ajv().compile<T>(schema);
    const ok = compiled(data);
    validate.errors = compiled.errors ?? null;
    return ok;
  }) as ValidateFunction<T>;
  validate.schema = schema;
  validate.errors = null;
  return validate;
}

const manifestSchema: JSONSchemaType<PluginManifest> = {
  $id: 'liveupdate:plugin-manifest',
  type: 'object',
  additionalProperties: false,
  required: ['name', 'version', 'sdk', 'formats', 'requires'],
  properties: {
    name: { type: 'string', pattern: '^(@[a-z0-9-~][a-z0-9-._~]*/)?[a-z0-9-~][a-z0-9-._~]*$', maxLength: 214 },
    version: { type: 'string', format: 'semver' },
    // minLength: semver reads '' as '*', which would silently mean "any SDK" / "any version".
    sdk: { type: 'string', minLength: 1, format: 'semver-range' },
    formats: {
      type: 'array',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['family', 'writes', 'reads'],
        properties: {
          family: { type: 'string', pattern: '^[a-z][a-z0-9_-]{0,30}$' },
          writes: { type: 'array', minItems: 1, items: { type: 'string', format: 'semver' } },
          reads: { type: 'string', minLength: 1, format: 'semver-range' },
          aliases: {
            type: 'object', nullable: true, required: [],
            propertyNames: { pattern: '^[0-9]+$' },
            additionalProperties: { type: 'string', minLength: 1, maxLength: 47 },
          },
        },
      },
    },
    requires: {
      type: 'array',
      items: {
        type: 'object', additionalProperties: false, required: ['from', 'family', 'sameSession'],
        properties: { from: { type: 'string' }, family: { type: 'string' }, sameSession: { type: 'boolean' } },
      },
    },
  },
};

export const validateManifest = validatorOf<PluginManifest>(manifestSchema);

/**
 * One object in a session (a file, a VM, a device): `type` names the object kind a loaded
 * plugin declares (`plugin.tools.objects`), `token` is its LUO token; the other fields are the
 * kind's, validated against the JSON-schema fragment the plugin ships.
 */
export interface ScenarioObject {
  readonly type: string;
  readonly token: number;
  readonly [field: string]: unknown;
}

/**
 * The memfd object of plugin-memfd's scenarios, as the first scenario files wrote it under
 * `files` (still accepted: `files` is a synonym of `objects`).
 */
export interface ScenarioFile extends ScenarioObject {
  readonly type: 'memfd' | 'hugetlb-memfd';
  readonly size: string;
  /** 'pattern': real bytes; 'synthetic': generated per-page content; fraction of pages touched. */
  readonly fill: 'pattern' | 'synthetic' | 'zero';
  readonly touched?: number;
  readonly seals?: readonly string[];
}

export interface ScenarioSession {
  name: string;
  /** The session's objects, each of a kind some loaded plugin declares. */
  objects?: ScenarioObject[];
  /** The same as `objects` (the name of the first scenario files, which held memfds only). */
  files?: ScenarioObject[];
}

export interface ScenarioSide {
  release: string;
  plugins: Record<string, string>;
}

/** The outcome a scenario expects; anything else fails it. */
export const SCENARIO_EXPECTATIONS = ['updated', 'rolled-back', 'refused-incoming', 'file-error'] as const;
export type ScenarioExpectation = (typeof SCENARIO_EXPECTATIONS)[number];

/** A live update to run: the machine, both kernels, what is preserved, and the plugins' sections. */
export interface Scenario {
  name: string;
  description?: string;
  machine: { memory: string; numaNodes?: number };
  from: ScenarioSide;
  to: ScenarioSide;
  /** The process that holds /dev/liveupdate and the session fds through the kexec (luod). */
  broker?: string;
  /** The outcome this scenario expects (default 'updated'). */
  expect?: ScenarioExpectation;
  sessions: ScenarioSession[];
  /** Machine-level sections of the loaded plugins (`plugin.tools.sections`), by key. */
  [section: string]: unknown;
}

/** Every object of a session, `objects` then `files`, with the JSON pointer of each. */
export function sessionObjects(s: ScenarioSession, index: number): Array<{ readonly object: ScenarioObject; readonly pointer: string }> {
  return [
    ...(s.objects ?? []).map((object, j) => ({ object, pointer: `/sessions/${index}/objects/${j}` })),
    ...(s.files ?? []).map((object, j) => ({ object, pointer: `/sessions/${index}/files/${j}` })),
  ];
}

const sideSchema = {
  type: 'object', additionalProperties: false, required: ['release', 'plugins'],
  properties: {
    release: { type: 'string', minLength: 1, maxLength: 64 },
    plugins: { type: 'object', required: [], additionalProperties: { type: 'string', format: 'semver' } },
  },
} as const;

/** What the scenario schema is composed of: the loaded plugins' object kinds and sections. */
export interface ScenarioVocabulary {
  readonly objects?: ReadonlyArray<Pick<ObjectKind, 'type' | 'properties' | 'required'>>;
  readonly sections?: ReadonlyArray<Pick<ScenarioSection, 'key' | 'schema'>>;
}

const BASE_KEYS = ['name', 'description', 'machine', 'from', 'to', 'broker', 'expect', 'sessions'];

/**
 * A plugin's schema fragment is written as a schema of its own: its `$defs` and its `$ref`s to
 * them ('#/$defs/x', '#' for itself) mean the fragment's root. Embedded at `pointer` in the
 * composed schema, its `$defs` move to the root's under `${ns}.x` and its refs follow.
 */
function rebase(fragment: JsonSchema, ns: string, pointer: string, defs: Record<string, JsonSchema>): JsonSchema {
  const local = (ref: string): string => (ref === '#' ? `#${pointer}` : ref.startsWith('#/$defs/') ? `#/$defs/${ns}.${ref.slice('#/$defs/'.length)}` : ref);
  const walk = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(walk);
    if (v === null || typeof v !== 'object') return v;
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[k] = k === '$ref' && typeof x === 'string' ? local(x) : walk(x);
    return out;
  };
  const { $defs, ...rest } = fragment;
  if ($defs !== null && typeof $defs === 'object') {
    for (const [name, def] of Object.entries($defs)) defs[`${ns}.${name}`] = walk(def) as JsonSchema;
  }
  return walk(rest) as JsonSchema;
}

/**
 * The scenario schema for a set of plugins' tools: sessions hold objects discriminated by
 * `type` (one `if`/`then` per kind, so an error names the kind's own field), and each section
 * is a top-level key with the plugin's schema. Without tools it is the open schema: every
 * `type`, any fields (what a file is checked against before its plugins are loaded).
 */
export function composeScenarioSchema(tools: readonly ScenarioVocabulary[] | null): JsonSchema {
  const kinds = new Map<string, Pick<ObjectKind, 'type' | 'properties' | 'required'>>();
  const sections = new Map<string, JsonSchema>();
  const defs: Record<string, JsonSchema> = {};
  for (const t of tools ?? []) {
    for (const k of t.objects ?? []) if (!kinds.has(k.type)) kinds.set(k.type, k);
    for (const s of t.sections ?? []) {
      if (BASE_KEYS.includes(s.key)) throw new TypeError(`scenario section '${s.key}': the key is a scenario field of its own`);
      if (!sections.has(s.key)) sections.set(s.key, rebase(s.schema, s.key, `/properties/${s.key}`, defs));
    }
  }
  const common = { type: { type: 'string', minLength: 1 }, token: { type: 'integer', minimum: 0 } };
  const objectSchema: JsonSchema = tools === null
    ? { type: 'object', required: ['type', 'token'], properties: common }
    : {
      type: 'object',
      required: ['type', 'token'],
      properties: { ...common, type: kinds.size > 0 ? { type: 'string', enum: [...kinds.keys()] } : { type: 'string', not: {} } },
      // (allOf must not be empty: a vocabulary of sections only has no kinds.)
      ...(kinds.size === 0 ? {} : { allOf: [...kinds.values()].map((k) => ({
        if: { type: 'object', properties: { type: { const: k.type } }, required: ['type'] },
        then: {
          type: 'object',
          additionalProperties: false,
          required: ['type', 'token', ...(k.required ?? [])],
          properties: { ...common, ...k.properties, type: { const: k.type } },
        },
      })) }),
    };
  const objects = { type: 'array', items: objectSchema };
  return {
    type: 'object',
    additionalProperties: tools === null,
    required: ['name', 'machine', 'from', 'to', 'sessions'],
    properties: {
      name: { type: 'string', minLength: 1 },
      description: { type: 'string' },
      machine: {
        type: 'object', additionalProperties: false, required: ['memory'],
        properties: { memory: { type: 'string', format: 'size' }, numaNodes: { type: 'integer', minimum: 1, maximum: 64 } },
      },
      from: sideSchema,
      to: sideSchema,
      broker: { type: 'string', minLength: 1 },
      expect: { type: 'string', enum: [...SCENARIO_EXPECTATIONS] },
      sessions: {
        type: 'array',
        items: {
          type: 'object', additionalProperties: false, required: ['name'],
          properties: { name: { type: 'string', minLength: 1, maxLength: 63 }, objects, files: objects },
        },
      },
      ...Object.fromEntries(sections),
    },
    ...(Object.keys(defs).length > 0 ? { $defs: defs } : {}),
  };
}

/** The open scenario schema (no plugin vocabulary): kept for tools that only read the common fields. */
export const scenarioSchema: JsonSchema = composeScenarioSchema(null);
export const validateScenario = validatorOf<Scenario>(scenarioSchema);

/** Compiled composed schemas, by the identity of the tools list's members (a CLI run compiles one or two). */
const composedCache = new Map<string, ValidateFunction<Scenario>>();

function validatorFor(tools: readonly ScenarioVocabulary[] | null): ValidateFunction<Scenario> {
  if (tools === null) return validateScenario;
  const schema = composeScenarioSchema(tools);
  const key = JSON.stringify(schema);
  let v = composedCache.get(key);
  if (!v) {
    try {
      v = validatorOf<Scenario>(schema, true);
    } catch (e) {
      throw new TypeError(`the plugins' scenario vocabulary does not compile: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
    composedCache.set(key, v);
  }
  return v;
}

/** A validation problem: the field as a JSON pointer, the line in the file when known, the message. */
export interface SchemaIssue {
  readonly field: string;
  readonly line?: number;
  readonly message: string;
}

export class SchemaError extends Error {
  override readonly name = 'SchemaError';
  constructor(readonly what: string, readonly issues: readonly SchemaIssue[]) {
    super(`${what}: ${issues.map((i) => `${i.field || '/'}${i.line ? ` (line ${i.line})` : ''}: ${i.message}`).join('; ')}`);
  }
}

/** RFC 6901: '~' and '/' inside a reference token. */
const escapePointer = (token: string): string => token.replace(/~/g, '~0').replace(/\//g, '~1');

function issuesOf(errors: readonly ErrorObject[] | null | undefined): SchemaIssue[] {
  const sizeMessage = (data: unknown): string => {
    try { parseSizeStrict(String(data)); return 'must match format "size"'; } catch (e) { return `must match format "size": ${(e as Error).message}`; }
  };
  // A bad property name comes twice: the failing rule (with propertyName) and a generic
  // 'propertyNames' wrapper. Keep the rule, pointed at the offending key.
  return (errors ?? []).filter((e) => e.keyword !== 'propertyNames' && e.keyword !== 'if').map((e) => {
    let field = e.instancePath;
    let message = e.message ?? 'is invalid';
    if (e.propertyName !== undefined) {
      field = `${field}/${escapePointer(e.propertyName)}`;
      message = `property name ${message}`;
    } else if (e.keyword === 'additionalProperties') {
      const extra = (e.params as { additionalProperty?: string }).additionalProperty ?? '';
      field = `${field}/${escapePointer(extra)}`;
      message = 'is not a known field';
    } else if (e.keyword === 'required') {
      field = `${field}/${escapePointer((e.params as { missingProperty?: string }).missingProperty ?? '')}`;
      message = 'is required';
    } else if (e.keyword === 'format' && (e.params as { format?: string }).format === 'size') {
      message = sizeMessage(e.data);
    } else if (e.keyword === 'const') {
      message = `must be ${JSON.stringify((e.params as { allowedValue?: unknown }).allowedValue)}`;
    } else if (e.keyword === 'enum') {
      message = `must be one of ${((e.params as { allowedValues?: unknown[] }).allowedValues ?? []).map((v) => JSON.stringify(v)).join(', ')}`;
    }
    return { field, message };
  });
}

/** A manifest that is valid, or a SchemaError naming each bad field. */
export function assertManifest(m: unknown): asserts m is PluginManifest {
  // The interpreting checker answers a valid manifest in microseconds (every plugin instance
  // asserts its manifest: one per kernel), so there is no cache of manifests seen.
  if (!validateManifest(m)) throw new SchemaError(`plugin manifest${typeof m === 'object' && m && 'name' in m ? ` of ${String((m as { name: unknown }).name)}` : ''}`, issuesOf(validateManifest.errors));
}

/** The line of the value at a JSON pointer in `text` (1-based), found by a small tokenizer. */
export function lineOfPointer(text: string, pointer: string): number | undefined {
  const path = pointer.split('/').slice(1).map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
  let i = 0;
  let line = 1;
  const ws = (): void => {
    while (i < text.length && /\s/.test(text[i] as string)) { if (text[i] === '\n') line++; i++; }
  };
  const str = (): string => {
    const start = i;
    i++; // opening quote
    while (i < text.length && text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
    i++;
    // JSON.parse decodes every escape (\n, \u0041, ...) exactly as the parsed keys were.
    return JSON.parse(text.slice(start, i)) as string;
  };
  const skip = (): void => {
    ws();
    const c = text[i];
    if (c === '"') { str(); return; }
    if (c === '{' || c === '[') {
      const close = c === '{' ? '}' : ']';
      i++;
      ws();
      while (i < text.length && text[i] !== close) {
        if (c === '{') { ws(); str(); ws(); i++; }
        skip();
        ws();
        if (text[i] === ',') i++;
        ws();
      }
      i++;
      return;
    }
    while (i < text.length && !/[\s,\]}]/.test(text[i] as string)) i++;
  };
  const descend = (depth: number): number | undefined => {
    ws();
    if (depth === path.length) return line;
    const want = path[depth] as string;
    const c = text[i];
    if (c === '{') {
      i++;
      for (;;) {
        ws();
        if (text[i] !== '"') return undefined;
        const key = str();
        ws();
        i++; // colon
        if (key === want) return descend(depth + 1);
        skip();
        ws();
        if (text[i] !== ',') return undefined;
        i++;
      }
    }
    if (c === '[') {
      i++;
      const idx = Number(want);
      for (let k = 0; ; k++) {
        ws();
        if (k === idx) return descend(depth + 1);
        skip();
        ws();
        if (text[i] !== ',') return undefined;
        i++;
      }
    }
    return undefined;
  };
  try {
    return descend(0);
  } catch {
    return undefined;
  }
}

/**
 * The offset of the first JSON syntax error in `text` (text.length when the input ends too
 * early); only called after JSON.parse has failed, so the scan is a plain recursive descent.
 */
function jsonErrorOffset(text: string): number {
  let i = 0;
  class Bad extends Error {}
  const fail = (): never => { throw new Bad(); };
  const ws = (): void => { while (i < text.length && ' \t\n\r'.includes(text[i] as string)) i++; };
  const lit = (word: string): void => {
    for (const ch of word) { if (text[i] !== ch) fail(); i++; }
  };
  const str = (): void => {
    i++;
    for (;;) {
      if (i >= text.length) fail();
      const c = text.charCodeAt(i);
      if (c === 0x22) { i++; return; }
      if (c < 0x20) fail();
      if (c === 0x5c) {
        i++;
        const e = text[i];
        if (e === 'u') {
          for (let k = 1; k <= 4; k++) if (!/[0-9a-fA-F]/.test(text[i + k] ?? '')) { i += k; fail(); }
          i += 5;
        } else if (e !== undefined && '"\\/bfnrt'.includes(e)) i++;
        else fail();
        continue;
      }
      i++;
    }
  };
  const num = (): void => {
    const m = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i, i + 400));
    if (!m || m[0] === '' || m[0] === '-') fail();
    i += (m as RegExpExecArray)[0].length;
  };
  const value = (): void => {
    ws();
    const c = text[i];
    if (c === '{') {
      i++; ws();
      if (text[i] === '}') { i++; return; }
      for (;;) {
        ws();
        if (text[i] !== '"') fail();
        str(); ws();
        if (text[i] !== ':') fail();
        i++;
        value(); ws();
        if (text[i] === ',') { i++; continue; }
        if (text[i] === '}') { i++; return; }
        fail();
      }
    }
    if (c === '[') {
      i++; ws();
      if (text[i] === ']') { i++; return; }
      for (;;) {
        value(); ws();
        if (text[i] === ',') { i++; continue; }
        if (text[i] === ']') { i++; return; }
        fail();
      }
    }
    if (c === '"') return str();
    if (c === 't') return lit('true');
    if (c === 'f') return lit('false');
    if (c === 'n') return lit('null');
    if (c === '-' || (c !== undefined && c >= '0' && c <= '9')) return num();
    fail();
  };
  try {
    value();
    ws();
    if (i < text.length) fail();
  } catch (e) {
    if (!(e instanceof Bad)) throw e;
  }
  return Math.min(i, text.length);
}

/**
 * Parse and validate a scenario file's text; SchemaError names each field and its line.
 * `tools`: the loaded plugins' tools, whose object kinds and sections make up the schema;
 * null checks only the common fields (objects of any type, any top-level section).
 */
export function parseScenario(text: string, file = 'scenario', tools: readonly ScenarioVocabulary[] | null = null): Scenario {
  return checkScenarioData(parseScenarioJson(text, file), file, tools, text);
}

/**
 * A scenario file's text as JSON data, not validated yet (for a loader that validates against
 * its plugins' vocabulary, see checkScenarioData); SchemaError with the line when it is not JSON.
 */
export function parseScenarioJson(text: string, file = 'scenario'): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    // V8's message carries a position only for some errors ("Unexpected token '}', ... is not
    // valid JSON" and "Unexpected end of JSON input" have none), so find the offset ourselves.
    const line = text.slice(0, jsonErrorOffset(text)).split('\n').length;
    throw new SchemaError(file, [{ field: '', line, message: `is not valid JSON (${e instanceof Error ? e.message : String(e)})` }]);
  }
}

/** Validate scenario data (parsed, or built in code); `text` lets the issues name their lines. */
export function checkScenarioData(data: unknown, file: string, tools: readonly ScenarioVocabulary[] | null, text?: string): Scenario {
  const validate = validatorFor(tools);
  if (!validate(data)) {
    const issues = issuesOf(validate.errors).map((iss) => {
      if (text === undefined) return iss;
      const line = lineOfPointer(text, iss.field) ?? lineOfPointer(text, iss.field.split('/').slice(0, -1).join('/'));
      return line ? { ...iss, line } : iss;
    });
    throw new SchemaError(file, issues);
  }
  return data as Scenario;
}
