/**
 * Manifests and scenario files are data: every validation error names the field (a JSON
 * pointer) and, for files, the exact line it sits on.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { fileKind as memfdKind } from './support/vocabulary.js';
import {
  checkScenarioData, defineFileHandler, definePlugin, lineOfPointer, parseScenario, parseScenarioJson, SchemaError, validateManifest,
  parseSizeStrict, SIZE_UNITS_HELP, type FormatDeclaration, type JsonSchema, type PluginDefinition, type ScenarioVocabulary,
} from '@liveupdate/sdk';

const handler = (format: FormatDeclaration) => defineFileHandler({
  format, canPreserve: () => false, preserve() {}, unpreserve() {}, retrieve() {}, finish() {},
});
const fmt = (patch: Partial<FormatDeclaration> = {}): FormatDeclaration => ({ family: 'ringbuf', writes: ['1.0.0'], reads: '^1.0.0', ...patch });
const plugin = (patch: Partial<PluginDefinition> = {}): PluginDefinition => ({ name: '@example/ringbuf', version: '1.0.0', sdk: '^0.1.0', handlers: [handler(fmt())], ...patch });

function schemaErrorOf(fn: () => unknown): SchemaError {
  try { fn(); } catch (e) { if (e instanceof SchemaError) return e; throw e; }
  throw new Error('no SchemaError');
}

describe('plugin manifest validation (definePlugin)', () => {
  it('accepts a well-formed plugin and exposes its manifest as data', () => {
    const p = definePlugin(plugin({ handlers: [handler(fmt({ writes: ['1.0.0', '1.1.0'], reads: '>=1.0.0 <3.0.0', aliases: { 1: 'ringbuf-v1' } }))] }));
    expect(p.manifest).toEqual({
      name: '@example/ringbuf', version: '1.0.0', sdk: '^0.1.0',
      formats: [{ family: 'ringbuf', writes: ['1.0.0', '1.1.0'], reads: '>=1.0.0 <3.0.0', aliases: { 1: 'ringbuf-v1' } }],
      requires: [],
    });
    expect(validateManifest(p.manifest)).toBe(true);
  });

  it.each([
    ['a version that is not semver', plugin({ version: '1.0' }), '/version', 'must match format "semver"'],
    ['a version with a v prefix', plugin({ version: 'v1.0.0' }), '/version', 'must match format "semver"'],
    ['a name that is not an npm name', plugin({ name: 'Ring Buf' }), '/name', 'must match pattern "^(@[a-z0-9-~][a-z0-9-._~]*/)?[a-z0-9-~][a-z0-9-._~]*$"'],
    ['an sdk that is not a range', plugin({ sdk: 'latest please' }), '/sdk', 'must match format "semver-range"'],
    ['an empty sdk range (semver would read it as *)', plugin({ sdk: '' }), '/sdk', 'must NOT have fewer than 1 characters'],
    ['a reads that is not a range', plugin({ handlers: [handler(fmt({ reads: 'one point oh' }))] }), '/formats/0/reads', 'must match format "semver-range"'],
    ['an empty reads range', plugin({ handlers: [handler(fmt({ reads: '' }))] }), '/formats/0/reads', 'must NOT have fewer than 1 characters'],
    ['empty writes', plugin({ handlers: [handler(fmt({ writes: [] }))] }), '/formats/0/writes', 'must NOT have fewer than 1 items'],
    ['a writes entry that is not a version', plugin({ handlers: [handler(fmt({ writes: ['1.0.0', '2'] }))] }), '/formats/1/writes/1', ''],
    ['a family with a capital and a space', plugin({ handlers: [handler(fmt({ family: 'Ring Buf' }))] }), '/formats/0/family', 'must match pattern "^[a-z][a-z0-9_-]{0,30}$"'],
    ['a family longer than 31 characters', plugin({ handlers: [handler(fmt({ family: `r${'x'.repeat(31)}` }))] }), '/formats/0/family', 'must match pattern "^[a-z][a-z0-9_-]{0,30}$"'],
    ['an alias of 48 characters', plugin({ handlers: [handler(fmt({ aliases: { 1: 'x'.repeat(48) } }))] }), '/formats/0/aliases/1', 'must NOT have more than 47 characters'],
    ['an alias keyed by a non-number', plugin({ handlers: [handler(fmt({ aliases: { one: 'ringbuf-v1' } as unknown as Record<number, string> }))] }), '/formats/0/aliases/one', 'property name must match pattern "^[0-9]+$"'],
  ])('rejects %s: SchemaError naming %s', (_what, def, field, message) => {
    // The second handler case: its bad field is under /formats/1.
    const d = field.startsWith('/formats/1') ? { ...def, handlers: [handler(fmt({ family: 'first' })), ...(def.handlers ?? [])] } : def;
    const e = schemaErrorOf(() => definePlugin(d));
    expect(e.issues).toHaveLength(1);
    expect(e.issues[0]?.field).toBe(field);
    if (message) expect(e.issues[0]?.message).toBe(message);
    expect(e.message).toBe(`plugin manifest of ${d.name}: ${field}: ${e.issues[0]?.message}`);
  });

  it('a handler missing a required op is a TypeError naming the family and the op', () => {
    expect(() => defineFileHandler({ format: fmt(), canPreserve: () => false, preserve() {}, unpreserve() {}, retrieve() {} } as never))
      .toThrow(new TypeError("file handler 'ringbuf': required op 'finish' is missing"));
  });
});

const SCENARIO = `{
  "name": "vm-update",
  "machine": { "memory": "64GiB", "numaNodes": 2 },
  "from": { "release": "7.1.0", "plugins": { "@liveupdate/plugin-memfd": "2.0.0" } },
  "to": { "release": "7.2.0", "plugins": { "@liveupdate/plugin-memfd": "3.0.0" } },
  "broker": "luod",
  "sessions": [
    {
      "name": "vm0",
      "files": [
        { "token": 1, "type": "memfd", "size": "1GiB", "fill": "pattern" },
        {
          "token": 2,
          "type": "hugetlb-memfd",
          "size": "2GiB",
          "fill": "synthetic",
          "touched": 0.25
        }
      ]
    }
  ]
}
`;

/** The scenario with line `line` (1-based) replaced. */
const withLine = (line: number, text: string): string => SCENARIO.split('\n').map((l, i) => (i === line - 1 ? text : l)).join('\n');

/** A plugin's scenario vocabulary: two file kinds with the fields memfds have, and a 'pci' section. */
const fileKind = (type: string) => memfdKind(type, { seals: { type: 'array', items: { type: 'string' } } });
const VOCAB: ScenarioVocabulary[] = [
  { objects: [fileKind('memfd'), fileKind('hugetlb-memfd')] },
  { sections: [{ key: 'pci', schema: { type: 'object', additionalProperties: false, properties: { devices: { type: 'integer', minimum: 1 } } } }] },
];
const parse = (text: string, file?: string) => parseScenario(text, file, VOCAB);

describe('parseScenario', () => {
  it('parses a valid scenario into data', () => {
    const s = parse(SCENARIO);
    expect(s.sessions[0]?.files?.map((f) => [f.token, f.type, f.size, f.fill])).toEqual([[1, 'memfd', '1GiB', 'pattern'], [2, 'hugetlb-memfd', '2GiB', 'synthetic']]);
    expect(s.machine).toEqual({ memory: '64GiB', numaNodes: 2 });
  });

  it('without a vocabulary checks only the common fields: any object type, any field', () => {
    const s = parseScenario(withLine(16, '          "fill": "random", "colour": "red", "type": "kvm-vm",'));
    expect(s.sessions[0]?.files?.[1]).toMatchObject({ type: 'kvm-vm', colour: 'red' });
  });

  it('an object type no loaded plugin declares is named with the types that are', () => {
    const e = schemaErrorOf(() => parse(withLine(11, '        { "token": 1, "type": "kvm-vm", "size": "1GiB", "fill": "pattern" },'), 'vm.json'));
    expect(e.issues).toEqual([{ field: '/sessions/0/files/0/type', line: 11, message: 'must be one of "memfd", "hugetlb-memfd"' }]);
  });

  it('objects and files are the same list: a bad field under objects has its own pointer and line', () => {
    const text = SCENARIO.replace('"files": [', '"objects": [');
    expect(parse(text).sessions[0]?.objects).toHaveLength(2);
    const e = schemaErrorOf(() => parse(text.replace('"fill": "synthetic"', '"fill": "random"'), 'vm.json'));
    expect(e.issues).toEqual([{ field: '/sessions/0/objects/1/fill', line: 16, message: 'must be one of "pattern", "synthetic", "zero"' }]);
  });

  it('a plugin section is a top-level key validated by its schema, with field and line', () => {
    const text = SCENARIO.replace('"broker": "luod",', '"broker": "luod",\n  "pci": { "devices": 0 },');
    const e = schemaErrorOf(() => parse(text, 'vm.json'));
    expect(e.issues).toEqual([{ field: '/pci/devices', line: 7, message: 'must be >= 1' }]);
    expect(parse(text.replace('"devices": 0', '"devices": 2')).pci).toEqual({ devices: 2 });
  });

  it('a top-level key no plugin declares is not a known field', () => {
    const e = schemaErrorOf(() => parse(SCENARIO.replace('"broker": "luod",', '"broker": "luod", "iommu": {},'), 'vm.json'));
    expect(e.issues).toEqual([{ field: '/iommu', line: 6, message: 'is not a known field' }]);
  });

  it.each([
    ['a bad enum value', 16, '          "fill": "random",', '/sessions/0/files/1/fill', 16, 'must be one of "pattern", "synthetic", "zero"'],
    ['a bad size', 11, '        { "token": 1, "type": "memfd", "size": "lots", "fill": "pattern" },', '/sessions/0/files/0/size', 11, `must match format "size": 'lots' is not a size: use ${SIZE_UNITS_HELP}`],
    ['a negative token', 13, '          "token": -2,', '/sessions/0/files/1/token', 13, 'must be >= 0'],
    ['touched above 1', 17, '          "touched": 1.5', '/sessions/0/files/1/touched', 17, 'must be <= 1'],
    ['numaNodes 0', 3, '  "machine": { "memory": "64GiB", "numaNodes": 0 },', '/machine/numaNodes', 3, 'must be >= 1'],
    ['a plugin version that is not semver', 5, '  "to": { "release": "7.2.0", "plugins": { "@liveupdate/plugin-memfd": "3" } },', '/to/plugins/@liveupdate~1plugin-memfd', 5, 'must match format "semver"'],
    ['an unknown field', 8, '    { "colour": "red",', '/sessions/0/colour', 8, 'is not a known field'],
    ['a missing field (the line of its object)', 11, '        { "token": 1, "type": "memfd", "fill": "pattern" },', '/sessions/0/files/0/size', 11, 'is required'],
  ])('reports %s with its field pointer and line', (_what, line, text, field, wantLine, message) => {
    const e = schemaErrorOf(() => parse(withLine(line, text), 'vm.json'));
    expect(e.issues).toEqual([{ field, line: wantLine, message }]);
    expect(e.message).toBe(`vm.json: ${field} (line ${wantLine}): ${message}`);
  });

  it.each([
    ['a trailing comma (V8 gives no position)', 17, '          "touched": 0.25,', 18],
    ['a single-quoted string', 6, "  'broker': \"luod\",", 6],
    ['an unquoted key', 9, '      name: "vm0",', 9],
    ['a missing comma between members', 2, '  "name": "vm-update"', 3],
    ['a control character in a string', 2, '  "name": "vm\tupdate",', 2],
    ['truncated input', 22, '', 22],
  ])('reports invalid JSON (%s) at its line', (_what, line, text, wantLine) => {
    const src = line === 22 ? SCENARIO.slice(0, SCENARIO.lastIndexOf('}')) : withLine(line, text);
    const e = schemaErrorOf(() => parseScenario(src, 'vm.json'));
    expect(e.issues).toHaveLength(1);
    expect(e.issues[0]).toMatchObject({ field: '', line: wantLine, message: expect.stringMatching(/^is not valid JSON \(/) });
  });
});

/** A JSON document with awkward keys (pointer escapes, quotes, newlines, non-ASCII). */
const awkwardKey = fc.oneof(fc.string({ maxLength: 6 }), fc.constantFrom('~', '/', 'a/b', '~1', '~0/', '"', '\\', '\n', 'é', '\u2028', '💡', ''));
const doc = fc.letrec((tie) => ({
  value: fc.oneof({ depthSize: 'small', withCrossShrink: true }, fc.integer(), fc.string(), fc.boolean(), fc.constant(null), tie('array'), tie('object')),
  array: fc.array(tie('value'), { maxLength: 4 }),
  object: fc.dictionary(awkwardKey.filter((k) => k !== '__proto__'), tie('value'), { maxKeys: 4 }),
})).object;

const escapeToken = (t: string): string => t.replace(/~/g, '~0').replace(/\//g, '~1');

/** Every path in the document, root first. */
function paths(v: unknown, at: string[] = []): string[][] {
  const out = [at];
  if (Array.isArray(v)) v.forEach((x, i) => out.push(...paths(x, [...at, String(i)])));
  else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) out.push(...paths(x, [...at, k]));
  return out;
}

describe('parseScenarioJson (text to data, validated later against the plugins)', () => {
  it('returns the data without checking any field', () => {
    expect(parseScenarioJson('{ "name": 5 }', 'x.json')).toEqual({ name: 5 });
  });

  it('text that is not JSON is a SchemaError at its line', () => {
    const e = schemaErrorOf(() => parseScenarioJson('{\n  "name": "a",\n  "machine": }', 'x.json'));
    expect(e.issues.map((i) => [i.field, i.line])).toEqual([['', 3]]);
    expect(e.issues[0]?.message).toMatch(/^is not valid JSON \(/);
  });
});

describe('a plugin\'s malformed scenario vocabulary does not compile (strict mode, no meta-schema pass)', () => {
  const data = JSON.parse(SCENARIO) as unknown;
  const withKind = (properties: Record<string, JsonSchema>): ScenarioVocabulary[] => [{ objects: [{ type: 'memfd', properties }, { type: 'hugetlb-memfd', properties: {} }] }];
  for (const [what, properties, cause] of [
    ['an unknown keyword', { size: { type: 'string', minLenght: 1 } }, 'strict mode: unknown keyword: "minLenght"'],
    ['a keyword value of the wrong type', { size: { type: 'string', minLength: '1' } }, 'minLength value must be ["number"]'],
    ['an unknown type', { size: { type: 'strin' } }, 'type must be JSONType or JSONType[]: strin'],
  ] as const) {
    it(`${what}: a TypeError naming the plugins' vocabulary`, () => {
      expect(() => checkScenarioData(data, 'x.json', withKind(properties))).toThrow(new TypeError(`the plugins' scenario vocabulary does not compile: ${cause}`));
    });
  }
});

describe('a section schema with $defs of its own', () => {
  const rack: ScenarioVocabulary = {
    sections: [{
      key: 'rack',
      schema: {
        type: 'object', additionalProperties: false, required: ['slots'],
        properties: { slots: { type: 'array', items: { $ref: '#/$defs/slot' } } },
        $defs: { slot: { type: 'object', additionalProperties: false, required: ['n'], properties: { n: { type: 'integer', minimum: 0 } } } },
      },
    }],
  };
  const withRack = (slots: unknown): unknown => ({ ...(JSON.parse(SCENARIO) as Record<string, unknown>), rack: { slots } });
  const vocab = (): ScenarioVocabulary[] => [{ objects: [fileKind('memfd'), fileKind('hugetlb-memfd')] }, rack];

  it('compiles embedded in the scenario schema: its refs resolve to its own $defs (hoisted as rack.slot)', () => {
    expect(checkScenarioData(withRack([{ n: 0 }, { n: 7 }]), 'x.json', vocab()).name).toBe('vm-update');
  });

  it('reports a bad value under a $ref with the field\'s path', () => {
    const e = schemaErrorOf(() => checkScenarioData(withRack([{ n: 0 }, { n: -1 }]), 'x.json', vocab()));
    expect(e.issues.map((i) => [i.field, i.message])).toEqual([['/rack/slots/1/n', 'must be >= 0']]);
  });
});

describe('lineOfPointer', () => {
  it('finds the line where the value at any pointer starts, in any pretty-printed document', () => {
    fc.assert(fc.property(doc, fc.constantFrom(2, 4, '\t'), (d, indent) => {
      const text = JSON.stringify(d, null, indent);
      for (const path of paths(d)) {
        // Oracle: put a sentinel at that path; only that value's own formatting changes.
        const marked = JSON.parse(text) as Record<string, unknown>;
        const sentinel = '\u0001sentinel\u0001';
        if (path.length === 0) continue;
        let parent: Record<string, unknown> = marked;
        for (const t of path.slice(0, -1)) parent = parent[t] as Record<string, unknown>;
        Object.defineProperty(parent, path.at(-1) as string, { value: sentinel, enumerable: true, writable: true, configurable: true });
        const markedText = JSON.stringify(marked, null, indent);
        const want = markedText.slice(0, markedText.indexOf(JSON.stringify(sentinel))).split('\n').length;
        expect(lineOfPointer(text, `/${path.map(escapeToken).join('/')}`)).toBe(want);
      }
      expect(lineOfPointer(text, '')).toBe(1);
    }), { numRuns: 200 });
  });

  it('is undefined for a pointer that is not in the document', () => {
    expect(lineOfPointer('{\n  "a": [1, 2]\n}', '/a/2')).toBeUndefined();
    expect(lineOfPointer('{\n  "a": [1, 2]\n}', '/b')).toBeUndefined();
  });
});

describe('sizes in scenarios (parseSizeStrict, the schemas\' "size" format)', () => {
  it.each([
    ['4096', 4096], ['64GiB', 64 * 2 ** 30], ['64G', 64 * 2 ** 30], ['512M', 512 * 2 ** 20], ['1.5GiB', 1.5 * 2 ** 30],
    ['1PiB', 2 ** 50], ['1024TiB', 2 ** 50], ['4PiB', 2 ** 52], ['2 MiB', 2 * 2 ** 20], ['3KiB', 3072],
  ])('%s is %i bytes', (text, bytes) => {
    expect(parseSizeStrict(text)).toBe(bytes);
  });

  it.each([
    ['64GB', "'64GB': 'GB' is ambiguous (10^n or 2^n bytes?): use "],
    ['1TB', "'1TB': 'TB' is ambiguous (10^n or 2^n bytes?): use "],
    ['5PiB', "'5PiB' is larger than the largest machine this model addresses (4 PiB, 52-bit physical addresses)"],
    ['100000TiB', "'100000TiB' is larger than the largest machine this model addresses"],
    ['1.0001KiB', "'1.0001KiB' is not a whole number of bytes"],
    ['12 parsecs', "'12 parsecs': unknown unit 'parsecs': use "], ['-1MiB', "'-1MiB' is not a size: use "],
    ['2XiB', "'2XiB': unknown unit 'XiB': use "],
  ])('%s is refused: %s', (text, message) => {
    expect(() => parseSizeStrict(text)).toThrow(message);
  });

  it('a refused size in a scenario file names the field, the line and what is accepted', () => {
    const e = schemaErrorOf(() => parse(withLine(3, '  "machine": { "memory": "64GB", "numaNodes": 2 },'), 'vm.json'));
    expect(e.issues).toEqual([{ field: '/machine/memory', line: 3, message: `must match format "size": '64GB': 'GB' is ambiguous (10^n or 2^n bytes?): use ${SIZE_UNITS_HELP}` }]);
  });
});
