/**
 * Format versions are semver and negotiated before the blackout: pickVersion, intersectRanges
 * and the pre-flight report agree with what a kexec would do.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import semver from 'semver';
import { createMachine } from '@liveupdate/hw';
import {
  assertPreflight, boot, defineFileHandler, definePlugin, FormatNegotiationError, intersectRanges, pickVersion, preflight,
  type FormatDeclaration, type Plugin,
} from '@liveupdate/sdk';

const handler = (format: FormatDeclaration) => defineFileHandler({
  format, canPreserve: () => false, preserve() {}, unpreserve() {}, retrieve() {}, finish() {},
});
const plugin = (name: string, ...formats: FormatDeclaration[]): Plugin =>
  definePlugin({ name, version: '1.0.0', sdk: '^0.1.0', handlers: formats.map(handler) });

describe('pickVersion', () => {
  it.each([
    [['1.0.0', '1.1.0', '2.0.0'], '^1.0.0', '1.1.0'],
    [['1.0.0', '1.1.0', '2.0.0'], '^2.0.0', '2.0.0'],
    [['1.0.0', '1.1.0', '2.0.0'], '>=1.0.0 <3.0.0', '2.0.0'],
    [['1.0.0', '1.1.0', '2.0.0'], '^3.0.0', null],
    [['2.0.0', '2.1.0-rc.1'], '^2.0.0', '2.0.0'],
    [['2.1.0-rc.1'], '^2.0.0', null],
  ])('writes %j, target reads %s → %s', (writes, reads, chosen) => {
    expect(pickVersion(writes, reads)).toBe(chosen);
  });
});

describe('intersectRanges', () => {
  it("'^1.0.0 || ^2.0.0' ∩ '^2.1.0' accepts 2.1.0 and rejects 1.5.0", () => {
    const r = intersectRanges('^1.0.0 || ^2.0.0', '^2.1.0');
    expect(r).not.toBeNull();
    const range = r as string;
    expect(semver.satisfies('2.1.0', range)).toBe(true);
    expect(semver.satisfies('2.9.9', range)).toBe(true);
    expect(semver.satisfies('1.5.0', range)).toBe(false);
    expect(semver.satisfies('2.0.5', range)).toBe(false);
    expect(semver.satisfies('3.0.0', range)).toBe(false);
  });

  it("'^1.0.0' ∩ '>=2.0.0' is null (disjoint)", () => {
    expect(intersectRanges('^1.0.0', '>=2.0.0')).toBeNull();
  });

  it("'*' ∩ r behaves as r", () => {
    const r = intersectRanges('*', '~1.2.0') as string;
    for (const v of ['1.2.0', '1.2.9', '1.3.0', '1.1.9']) expect(semver.satisfies(v, r)).toBe(semver.satisfies(v, '~1.2.0'));
  });

  const version = fc.tuple(fc.nat({ max: 3 }), fc.nat({ max: 3 }), fc.nat({ max: 3 })).map(([a, b, c]) => `${a}.${b}.${c}`);
  const comparator = fc.oneof(
    version.map((v) => `^${v}`), version.map((v) => `~${v}`), version.map((v) => `>=${v}`), version.map((v) => `<${v}`),
    version.map((v) => `>${v}`), version.map((v) => `<=${v}`), version, fc.nat({ max: 3 }).map((m) => `${m}.x`), fc.constant('*'),
  );
  // A hyphen range is a whole comparator set on its own (semver rejects '1.0.0 - 2.0.0 >=1.5.0').
  const set = fc.oneof(fc.array(comparator, { minLength: 1, maxLength: 2 }).map((cs) => cs.join(' ')), fc.tuple(version, version).map(([a, b]) => `${a} - ${b}`));
  const range = fc.array(set, { minLength: 1, maxLength: 3 }).map((sets) => sets.join(' || '));

  it('accepts exactly the versions both ranges accept (or is null when none is accepted by both)', () => {
    fc.assert(fc.property(range.filter((r) => semver.validRange(r) !== null), range.filter((r) => semver.validRange(r) !== null), fc.array(version, { minLength: 1, maxLength: 30 }), (a, b, samples) => {
      const r = intersectRanges(a, b);
      for (const v of samples) {
        const both = semver.satisfies(v, a) && semver.satisfies(v, b);
        if (r === null) expect(both).toBe(false);
        else expect(semver.satisfies(v, r)).toBe(both);
      }
    }), { numRuns: 500 });
  });
});

describe('preflight', () => {
  const writer = plugin('@example/ab',
    { family: 'alpha', writes: ['1.0.0', '1.1.0', '2.0.0'], reads: '>=1.0.0 <3.0.0' },
    { family: 'beta', writes: ['3.2.0'], reads: '^3.0.0' });

  it('lists every family the source writes, with the version that would travel', () => {
    const report = preflight({ plugins: [writer], release: '7.1.0' }, { plugins: [plugin('@example/ab', { family: 'alpha', writes: ['1.1.0'], reads: '^1.0.0' }, { family: 'beta', writes: ['3.0.0'], reads: '^3.0.0' })], release: '7.2.0' });
    expect(report).toEqual({
      from: '7.1.0', to: '7.2.0', ok: true, refusals: [],
      entries: [
        { family: 'kho', owner: 'kernel', offered: ['4.0.0'], accepted: '^4.0.0', chosen: '4.0.0' },
        { family: 'luo', owner: 'kernel', offered: ['5.0.0'], accepted: '^5.0.0', chosen: '5.0.0' },
        { family: 'alpha', owner: '@example/ab', offered: ['1.0.0', '1.1.0', '2.0.0'], accepted: '^1.0.0', chosen: '1.1.0' },
        { family: 'beta', owner: '@example/ab', offered: ['3.2.0'], accepted: '^3.0.0', chosen: '3.2.0' },
      ],
    });
    expect(() => assertPreflight(report)).not.toThrow();
  });

  it('collects every refusal, not the first: a range miss, a family the target lacks, a core ABI', () => {
    const report = preflight(
      { plugins: [writer], release: '7.1.0' },
      { plugins: [plugin('@example/a-only', { family: 'alpha', writes: ['3.0.0'], reads: '^3.0.0' })], release: '8.0.0', abi: { luo: '^6.0.0' } },
    );
    expect(report.ok).toBe(false);
    expect(report.entries.map((e) => [e.family, e.chosen])).toEqual([['kho', '4.0.0'], ['luo', null], ['alpha', null], ['beta', null]]);
    expect(report.refusals).toEqual([
      { family: 'luo', owner: 'kernel', offered: ['5.0.0'], accepted: '^6.0.0' },
      { family: 'alpha', owner: '@example/ab', offered: ['1.0.0', '1.1.0', '2.0.0'], accepted: '^3.0.0' },
      { family: 'beta', owner: '@example/ab', offered: ['3.2.0'], accepted: null },
    ]);
    let error: unknown;
    try { assertPreflight(report); } catch (e) { error = e; }
    expect(error).toBeInstanceOf(FormatNegotiationError);
    expect((error as FormatNegotiationError).refusals).toEqual(report.refusals);
    expect((error as Error).message).toBe([
      "kernel: format 'luo' writes 5.0.0 but kernel 8.0.0 reads '^6.0.0'",
      "@example/ab: format 'alpha' writes 1.0.0, 1.1.0, 2.0.0 but kernel 8.0.0 reads '^3.0.0'",
      "@example/ab: format 'beta' (writes 3.2.0) is not read by kernel 8.0.0 at all",
    ].join('; '));
  });

  it('works from a running kernel\'s manifest as well as from an image\'s boot config', () => {
    const k = boot(createMachine({ memory: '1GiB' }), { cmdline: 'kho=on liveupdate=on', plugins: [writer], release: '7.1.0' });
    const target = { plugins: [plugin('@example/ab', { family: 'alpha', writes: ['2.0.0'], reads: '^2.0.0' }, { family: 'beta', writes: ['3.0.0'], reads: '^3.1.0' })], release: '7.2.0' };
    expect(preflight(k.formats.manifest(), target)).toEqual(preflight({ plugins: [writer], release: '7.1.0' }, target));
    expect(preflight(k.formats.manifest(), target).entries.map((e) => e.chosen)).toEqual(['4.0.0', '5.0.0', '2.0.0', '3.2.0']);
  });
});
