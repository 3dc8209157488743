/**
 * The plugin surface for tools, end to end in the SDK: the README's complete example plugin
 * runs through the generic scenario runner (the one `liveupdate` uses), its decoder reads its
 * page, the harness refuses to call a refused update done, reports the negotiated formats,
 * and a plugin from a second copy of the SDK is refused by name.
 */
import { readFileSync } from 'node:fs';
import { PhysMemory } from '@liveupdate/hw';
import { describe, expect, it } from 'vitest';
import { checkScenarioData, checkSdkCopy, DuplicateSdkError, SDK_IDENTITY, type Scenario } from '@liveupdate/sdk';
import { liveUpdate, runScenario, UnexpectedOutcomeError } from '@liveupdate/sdk/testing';
import { note, noteOpen } from './fixtures/tools-example.js';
import { createSession, openLiveupdate, preserveFd } from '@liveupdate/sdk';

const hello = (): Scenario => checkScenarioData(structuredClone(note().tools.scenarios?.[0]?.scenario), 'hello', [note().tools]);

describe('the README example plugin with tools', () => {
  it('is in packages/sdk/README.md exactly as tested here', () => {
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    const fixture = readFileSync(new URL('./fixtures/tools-example.ts', import.meta.url), 'utf8');
    expect(readme).toContain(`\`\`\`ts\n${fixture}\`\`\``);
  });

  it('runs through the generic scenario runner: created in A, checked in B, nothing leaked', () => {
    const r = runScenario(hello(), { from: [note()], to: [note()] });
    expect(r).toMatchObject({ outcome: 'updated', harnessOutcome: 'updated', violations: [], leaks: { blocks: 0, pages: 0 }, formats: { note: '1.0.0' } });
    expect(r.objects).toMatchObject([{
      session: 'app', token: 1, type: 'note', compatible: 'note@1.0.0', createdBy: '@example/note@1.0.0', restoredBy: '@example/note@1.0.0',
      check: { ok: true, summary: '15 characters compared', problems: [], counts: { 'note characters compared': 15 } },
    }]);
    expect(r.cmdline).toBe('kho=on liveupdate=on');
  });

  it('its decoder reads a note page from bytes alone, and names what is wrong with a bad one', () => {
    const memory = new PhysMemory(1 << 20);
    memory.write(0x3000, new Uint8Array([5, 0, 0, 0, ...new TextEncoder().encode('hello')]));
    const decoder = note().tools.decoders?.[0];
    expect(decoder?.decode(memory, 0x3000n, '1.0.0', { label: 'app token 1' })).toEqual({
      fields: { length: 5, text: 'hello' }, problems: [],
      pages: [{ pfn: 3, structure: 'note page', role: 'note page (app token 1)', words: [{ offset: 0, size: 4, kind: 'count' }] }],
    });
    memory.write(0x3000, new Uint8Array([0xff, 0xff, 0, 0]));
    expect(decoder?.decode(memory, 0x3000n, '1.0.0', { label: 'x' }).problems).toEqual(['length 65535 beyond the page']);
    expect(decoder?.decode(memory, 0x3001n, '1.0.0', { label: 'x' }).problems).toEqual(['0x3001 is not a page of RAM']);
  });

  it('its schema fragment is part of the scenario schema: a bad field is named', () => {
    const bad = structuredClone(note().tools.scenarios?.[0]?.scenario) as { sessions: Array<{ objects: Array<Record<string, unknown>> }> };
    (bad.sessions[0]?.objects[0] as Record<string, unknown>).text = 42;
    expect(() => checkScenarioData(bad, 'hello', [note().tools])).toThrow('hello: /sessions/0/objects/0/text: must be string');
  });

  it('an object kind kernel A has no plugin for: not supported by A, nothing runs', () => {
    const r = runScenario(hello(), { from: [], to: [note()] });
    expect(r).toMatchObject({ outcome: 'not-supported', unsupported: { side: 'A' }, harnessOutcome: null, phases: [] });
    expect(r.error).toBe("not supported by A: session app token 1: no plugin of kernel A (none) handles 'note' objects");
  });
});

describe('liveUpdate() is honest about what happened', () => {
  const sides = (to: ReturnType<typeof note>[]) => ({ from: { plugins: [note()], release: '7.1.0' }, to: { plugins: to, release: '7.2.0' } });
  const scenario = {
    before(k: Parameters<Parameters<typeof liveUpdate>[1]['before']>[0], t: Parameters<Parameters<typeof liveUpdate>[1]['before']>[1]) {
      const p = t.spawn(k, 'app');
      preserveFd(p, createSession(p, openLiveupdate(p), 'app'), noteOpen(p, 'x'), 1);
    },
    after() { /* nothing to check: the update does not happen */ },
  };

  it('throws UnexpectedOutcomeError when the target kernel refuses the format and the test did not expect it', () => {
    let error: unknown;
    try { liveUpdate(sides([]), scenario); } catch (e) { error = e; }
    expect(error).toBeInstanceOf(UnexpectedOutcomeError);
    expect((error as UnexpectedOutcomeError).result.outcome.kind).toBe('rolled-back');
    expect((error as Error).message).toMatch(/^live update ended rolled-back: .*format 'note'.* \(the scenario expects updated; declare expect: 'rolled-back' if that is what it tests\)$/);
  });

  it('returns the rolled-back result, with no leak, when the scenario expects it', () => {
    const r = liveUpdate(sides([]), { ...scenario, expect: 'rolled-back' });
    expect(r.outcome.kind).toBe('rolled-back');
    expect(r.violations).toEqual([]);
    expect(r.formats).toEqual({});
  });

  it('refuses a plugin made by a second copy of the SDK, by name', () => {
    const foreign = { ...note(), sdkIdentity: { ...SDK_IDENTITY, sdk: 'file:///elsewhere/node_modules/@liveupdate/sdk/dist/copies.js', errnoClass: class {} } };
    expect(() => checkSdkCopy(foreign, '@example/note@1.0.0')).toThrow(DuplicateSdkError);
    expect(() => liveUpdate({ from: { plugins: [foreign], release: '7.1.0' }, to: { plugins: [note()], release: '7.2.0' } }, { ...scenario, expect: 'any' }))
      .toThrow(/^@example\/note@1\.0\.0 was made by a second copy of @liveupdate\/sdk \(file:\/\/\/elsewhere\/node_modules\/@liveupdate\/sdk\/dist\/copies\.js, 0\.1\.0\); this process uses .*Install @liveupdate\/sdk once: plugins list it as a peerDependency/);
  });
});
