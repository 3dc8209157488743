/**
 * The interpreting schema checker (src/schema-check.ts) answers valid data without ajv, so it
 * must give ajv's answer on every input (property tests against strict ajv on the manifest and a
 * composed scenario schema), and must refuse (null: ajv decides) every schema ajv rejects.
 */
import { Ajv } from 'ajv';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { composeScenarioSchema, isSize, validateManifest, type ScenarioVocabulary } from '@liveupdate/sdk';
import semver from 'semver';
import { checkerFor } from '../src/schema-check.js';
import { fileKind } from './support/vocabulary.js';

const FORMATS = {
  semver: (s: string) => semver.valid(s) === s,
  'semver-range': (s: string) => semver.validRange(s) !== null,
  size: isSize,
};
const strictAjv = (): Ajv => {
  const a = new Ajv({ strict: true, allErrors: false, validateSchema: false });
  for (const [name, validate] of Object.entries(FORMATS)) a.addFormat(name, { type: 'string', validate });
  return a;
};

const VOCAB: ScenarioVocabulary[] = [
  {
    objects: ['memfd', 'hugetlb-memfd'].map((type) => fileKind(type, {
      pages: { type: 'integer', minimum: 1, multipleOf: 512 },
      label: { type: 'string', minLength: 2, maxLength: 3, pattern: '^[a-z\u{1F600}]+$' },
      seals: { type: 'array', minItems: 1, maxItems: 2, items: { type: 'string', enum: ['shrink', 'grow'] } },
    })),
  },
  { sections: [{ key: 'pci', schema: { type: 'object', additionalProperties: false, properties: { devices: { type: 'integer', minimum: 1 }, mode: { const: 'vfio' } } } }] },
];
const SCENARIO = {
  name: 'vm-update',
  machine: { memory: '64GiB', numaNodes: 2 },
  from: { release: '7.1.0', plugins: { '@liveupdate/plugin-memfd': '2.0.0' } },
  to: { release: '7.2.0', plugins: { '@liveupdate/plugin-memfd': '3.0.0' } },
  broker: 'luod',
  pci: { devices: 2, mode: 'vfio' },
  sessions: [{
    name: 'vm0',
    files: [
      { token: 1, type: 'memfd', size: '1GiB', fill: 'pattern', seals: ['grow'], label: 'ab' },
      { token: 2, type: 'hugetlb-memfd', size: '2GiB', fill: 'synthetic', touched: 0.25, pages: 1024 },
    ],
  }],
};
const MANIFEST = {
  name: '@example/ringbuf', version: '1.0.0', sdk: '^0.1.0',
  formats: [{ family: 'ringbuf', writes: ['1.0.0'], reads: '^1.0.0', aliases: { 1: 'ringbuf-v1' } }],
  requires: [{ from: '@example/other', family: 'ring', sameSession: true }],
};

/** Every path to a value in `v` (the root included). */
function paths(v: unknown, at: Array<string | number> = []): Array<Array<string | number>> {
  const out = [at];
  if (Array.isArray(v)) v.forEach((x, i) => out.push(...paths(x, [...at, i])));
  else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) out.push(...paths(x, [...at, k]));
  return out;
}

/** A copy of `v` with the value at `path` replaced (undefined: deleted), or a key added beside it. */
function mutate(v: unknown, path: ReadonlyArray<string | number>, value: unknown, addKey: string | null): unknown {
  const copy = structuredClone(v) as Record<string | number, unknown>;
  if (path.length === 0) return value;
  let parent = copy;
  for (const k of path.slice(0, -1)) parent = parent[k] as Record<string | number, unknown>;
  const last = path[path.length - 1] as string | number;
  if (addKey !== null && typeof parent === 'object' && !Array.isArray(parent)) parent[addKey] = value;
  else if (value === undefined && !Array.isArray(parent)) delete parent[last];
  else parent[last] = value;
  return copy;
}

const interesting = fc.oneof(
  fc.constantFrom(undefined, null, true, 0, -1, 0.5, 1, 2, 512, 1024, 1e21, '', 'a', 'ab', 'abc', 'abcd', '\u{1F600}\u{1F600}', 'A1', '1GiB', '2 GiB', '1.0.0', 'v1.0.0', '^1.0.0',
    'pattern', 'memfd', 'hugetlb-memfd', 'kvm', 'grow', 'vfio', [], {}, ['grow', 'shrink', 'grow'], { devices: 1 }),
  fc.jsonValue({ maxDepth: 2 }),
);

function agrees(schema: object, valid: unknown): void {
  const check = checkerFor(schema, FORMATS);
  expect(check).not.toBeNull();
  const ajvCheck = strictAjv().compile(schema);
  expect(check?.(valid)).toBe(true);
  const all = paths(valid);
  fc.assert(fc.property(
    fc.integer({ min: 0, max: all.length - 1 }), interesting, fc.option(fc.constantFrom('extra', 'type', 'token', 'name', '2'), { nil: null }),
    (i, value, addKey) => {
      const data = mutate(valid, all[i] as Array<string | number>, value, addKey);
      expect(check?.(data)).toBe(ajvCheck(data));
    },
  ), { numRuns: 3000, seed: 15 });
}

describe('the interpreting checker gives strict ajv\'s answer', () => {
  it('on a composed scenario schema (kinds, a section, every keyword the subset takes)', () => {
    agrees(composeScenarioSchema(VOCAB), SCENARIO);
  });
  it('on the open scenario schema', () => {
    agrees(composeScenarioSchema(null), SCENARIO);
  });
  it('on the plugin manifest schema', () => {
    agrees(validateManifest.schema as object, MANIFEST);
  });
  it('counts code points for minLength/maxLength as ajv does: two emoji are 2, not 4', () => {
    const check = checkerFor({ type: 'string', minLength: 2, maxLength: 2 }, FORMATS);
    expect([check?.('\u{1F600}\u{1F600}'), check?.('\u{1F600}'), check?.('abc')]).toEqual([true, false, false]);
  });
});

describe('a schema outside the subset is left to ajv (null), and strict ajv rejects each of these', () => {
  for (const [what, schema] of [
    ['a keyword for numbers without a type', { minimum: 1 }],
    ['a union type', { type: ['string', 'integer'] }],
    ['an unknown keyword', { type: 'string', minLenght: 1 }],
    ['a keyword value of the wrong type', { type: 'string', minLength: '1' }],
    ['a required property that is not declared', { type: 'object', required: ['a'], properties: { b: { type: 'string' } } }],
    ['then without if', { type: 'string', then: { minLength: 1 } }],
    ['another type under allOf', { type: 'object', allOf: [{ type: 'string' }] }],
    ['an unknown format', { type: 'string', format: 'email' }],
    ['items as an array', { type: 'array', items: [{ type: 'string' }] }],
  ] as const) {
    it(what, () => {
      expect(checkerFor(schema, FORMATS)).toBeNull();
      expect(() => strictAjv().compile(schema)).toThrow();
    });
  }
});
