/**
 * Manifests and scenario files are data, validated by ajv schemas shipped with the SDK. One
 * strict Ajv instance per process, schemas compiled at module load; every error names the
 * field (a JSON pointer) and, for files, the line it sits on.
 */
import { Ajv, type ErrorObject, type JSONSchemaType } from 'ajv';
import semver from 'semver';

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

const ajv = new Ajv({ strict: true, allErrors: false });
ajv.addFormat('semver', { type: 'string', validate: (s: string) => semver.valid(s) !== null && semver.valid(s) === s });
ajv.addFormat('semver-range', { type: 'string', validate: (s: string) => semver.validRange(s) !== null });
ajv.addFormat('size', { type: 'string', validate: (s: string) => /^\d+(\.\d+)?\s*([KMGT]i?B?|B)?$/i.test(s) });

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

export const validateManifest = ajv.compile(manifestSchema);

/** One preserved file in a scenario. */
export interface ScenarioFile {
  token: number;
  type: 'memfd' | 'hugetlb-memfd';
  size: string;
  /** 'pattern': real bytes; 'synthetic': generated per-page content; fraction of pages touched. */
  fill: 'pattern' | 'synthetic' | 'zero';
  touched?: number;
  seals?: string[];
}

export interface ScenarioSession {
  name: string;
  files: ScenarioFile[];
}

export interface ScenarioSide {
  release: string;
  plugins: Record<string, string>;
}

/** A live update to run: the machine, both kernels, and what is preserved. */
export interface Scenario {
  name: string;
  description?: string;
  machine: { memory: string; numaNodes?: number };
  from: ScenarioSide;
  to: ScenarioSide;
  /** The process that holds /dev/liveupdate and the session fds through the kexec (luod). */
  broker?: string;
  sessions: ScenarioSession[];
}

const sideSchema = {
  type: 'object', additionalProperties: false, required: ['release', 'plugins'],
  properties: {
    release: { type: 'string', minLength: 1, maxLength: 64 },
    plugins: { type: 'object', required: [], additionalProperties: { type: 'string', format: 'semver' } },
  },
} as const;

export const scenarioSchema: JSONSchemaType<Scenario> = {
  $id: 'liveupdate:scenario',
  type: 'object',
  additionalProperties: false,
  required: ['name', 'machine', 'from', 'to', 'sessions'],
  properties: {
    name: { type: 'string', minLength: 1 },
    description: { type: 'string', nullable: true },
    machine: {
      type: 'object', additionalProperties: false, required: ['memory'],
      properties: { memory: { type: 'string', format: 'size' }, numaNodes: { type: 'integer', minimum: 1, maximum: 64, nullable: true } },
    },
    from: sideSchema as unknown as JSONSchemaType<ScenarioSide>,
    to: sideSchema as unknown as JSONSchemaType<ScenarioSide>,
    broker: { type: 'string', nullable: true, minLength: 1 },
    sessions: {
      type: 'array',
      items: {
        type: 'object', additionalProperties: false, required: ['name', 'files'],
        properties: {
          name: { type: 'string', minLength: 1, maxLength: 63 },
          files: {
            type: 'array',
            items: {
              type: 'object', additionalProperties: false, required: ['token', 'type', 'size', 'fill'],
              properties: {
                token: { type: 'integer', minimum: 0 },
                type: { type: 'string', enum: ['memfd', 'hugetlb-memfd'] },
                size: { type: 'string', format: 'size' },
                fill: { type: 'string', enum: ['pattern', 'synthetic', 'zero'] },
                touched: { type: 'number', minimum: 0, maximum: 1, nullable: true },
                seals: { type: 'array', nullable: true, items: { type: 'string', enum: ['seal', 'shrink', 'grow', 'write', 'future_write', 'exec'] } },
              },
            },
          },
        },
      },
    },
  },
};

export const validateScenario = ajv.compile(scenarioSchema);

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
  // A bad property name comes twice: the failing rule (with propertyName) and a generic
  // 'propertyNames' wrapper. Keep the rule, pointed at the offending key.
  return (errors ?? []).filter((e) => e.keyword !== 'propertyNames').map((e) => {
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
    } else if (e.keyword === 'enum') {
      message = `must be one of ${((e.params as { allowedValues?: unknown[] }).allowedValues ?? []).map((v) => JSON.stringify(v)).join(', ')}`;
    }
    return { field, message };
  });
}

export function assertManifest(m: unknown): asserts m is PluginManifest {
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

/** Parse and validate a scenario file's text; SchemaError names each field and its line. */
export function parseScenario(text: string, file = 'scenario'): Scenario {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (e) {
    // V8's message carries a position only for some errors ("Unexpected token '}', ... is not
    // valid JSON" and "Unexpected end of JSON input" have none), so find the offset ourselves.
    const line = text.slice(0, jsonErrorOffset(text)).split('\n').length;
    throw new SchemaError(file, [{ field: '', line, message: `is not valid JSON (${e instanceof Error ? e.message : String(e)})` }]);
  }
  if (!validateScenario(data)) {
    const issues = issuesOf(validateScenario.errors).map((iss) => {
      const line = lineOfPointer(text, iss.field) ?? lineOfPointer(text, iss.field.split('/').slice(0, -1).join('/'));
      return line ? { ...iss, line } : iss;
    });
    throw new SchemaError(file, issues);
  }
  return data;
}
