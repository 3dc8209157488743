/**
 * Machine-level scenario sections (`plugin.tools.sections`) in the generic runner: the section's
 * key is a top-level scenario field validated by its schema, its cmdline words reach both
 * kernels, and its steps run in order: machine (before kernel A boots), before (kernel A, before
 * the sessions' objects), beforeKexec (after them), after (kernel B, after every session was
 * restored); the checks `after` returns decide the run like the objects' checks do.
 */
import { describe, expect, it } from 'vitest';
import { checkScenarioData, defineObjectKind, defineSection, definePlugin, type Plugin, type Scenario } from '@liveupdate/sdk';
import { runScenario } from '@liveupdate/sdk/testing';
import { note } from './fixtures/tools-example.js';

interface Spec { devices: number }
function board(calls: string[], ok = true): Plugin {
  return definePlugin({
    name: '@example/board', version: '1.0.0', sdk: '^0.1.0',
    tools: {
      sections: [defineSection<Spec, { slots: number[] }>({
        key: 'board',
        description: 'a board with devices',
        schema: { type: 'object', additionalProperties: false, required: ['devices'], properties: { devices: { type: 'integer', minimum: 1, maximum: 8 } } },
        cmdline: (spec) => `board.devices=${spec.devices}`,
        machine: (machine, spec) => { calls.push(`machine ${machine.memory.size > 0} ${spec.devices}`); return { slots: Array.from({ length: spec.devices }, (_, i) => i) }; },
        before: (ctx, spec, state) => { calls.push(`before kernel ${ctx.kernel.release} slots ${state.slots.length}`); },
        beforeKexec: (ctx) => { calls.push(`beforeKexec ${ctx.kernel.luo.sessions.outgoing.length} session(s)`); },
        after: (ctx, spec) => {
          calls.push(`after kernel ${ctx.kernel.release}`);
          return [{ ok, summary: `${spec.devices} devices still running`, problems: ok ? [] : ['device 0 lost its DMA mappings'] }];
        },
      })],
    },
  });
}

const scenario = (devices: number): Scenario => checkScenarioData({
  name: 'board', machine: { memory: '1GiB' }, board: { devices },
  from: { release: '7.1.0', plugins: { '@example/note': '1.0.0', '@example/board': '1.0.0' } },
  to: { release: '7.2.0', plugins: { '@example/note': '1.0.0', '@example/board': '1.0.0' } },
  sessions: [{ name: 'app', objects: [{ type: 'note', token: 1, text: 'x' }] }],
}, 'board', [note().tools, board([]).tools]);

describe('scenario sections in the generic runner', () => {
  it('run in order around the sessions, with their cmdline, and their checks are reported', () => {
    const calls: string[] = [];
    const r = runScenario(scenario(3), { from: [note(), board(calls)], to: [note(), board(calls)] });
    expect(r.outcome).toBe('updated');
    expect(r.cmdline).toBe('kho=on liveupdate=on board.devices=3');
    expect(calls).toEqual(['machine true 3', 'before kernel 7.1.0 slots 3', 'beforeKexec 1 session(s)', 'after kernel 7.2.0']);
    expect(r.sectionChecks).toEqual([{ section: 'board', ok: true, summary: '3 devices still running', problems: [] }]);
  });

  it('a parameter both a section and an object kind ask for is on the command line once', () => {
    const withWord = (p: Plugin): Plugin => ({ ...p, tools: { ...p.tools, objects: (p.tools.objects ?? []).map((k) => ({ ...k, cmdline: () => 'board.devices=3 note.x=1' })) } });
    const r = runScenario(scenario(3), { from: [withWord(note()), board([])], to: [withWord(note()), board([])] });
    expect(r.cmdline).toBe('kho=on liveupdate=on board.devices=3 note.x=1');
  });

  it('a section\'s failed check is reported as such', () => {
    const r = runScenario(scenario(1), { from: [note(), board([])], to: [note(), board([], false)] });
    expect(r.sectionChecks).toEqual([{ section: 'board', ok: false, summary: '1 devices still running', problems: ['device 0 lost its DMA mappings'] }]);
  });

  it('an object reaches an earlier object of its session (peer) and a section\'s state (section), in both kernels', () => {
    const seen: string[] = [];
    const linked = definePlugin({
      name: '@example/linked', version: '1.0.0', sdk: '^0.1.0', handlers: [], tools: {
        objects: [defineObjectKind<{ type: 'link'; token: number; to: number }, null>({
          type: 'link', description: 'a link to an earlier object', properties: { to: { type: 'integer' } }, required: ['to'],
          create(ctx, spec) {
            const peer = ctx.peer(spec.to) as { fd: number } | undefined;
            seen.push(`A: peer ${spec.to} fd ${peer?.fd ?? 'none'}, board ${JSON.stringify(ctx.section('board'))}`);
            return { fd: peer?.fd ?? -1, expect: null };
          },
          restore(ctx, spec) {
            const peer = ctx.peer(spec.to) as { fd: number } | undefined;
            seen.push(`B: peer ${spec.to} fd ${peer?.fd ?? 'none'}`);
            return { fd: peer?.fd ?? -1, check: { ok: peer !== undefined, summary: 'linked', problems: [] } };
          },
        })],
      },
    });
    const s = checkScenarioData({
      ...scenario(2),
      sessions: [{ name: 'app', objects: [{ type: 'note', token: 1, text: 'x' }, { type: 'link', token: 2, to: 1 }] }],
    }, 'linked', [note().tools, board([]).tools, linked.tools]);
    const r = runScenario(s, { from: [note(), board([]), linked], to: [note(), board([]), linked] });
    expect(r.outcome).toBe('updated');
    expect(seen).toEqual([expect.stringMatching(/^A: peer 1 fd \d+, board \{"slots":\[0,1\]\}$/), expect.stringMatching(/^B: peer 1 fd \d+$/)]);
    expect(r.objects.map((o) => o.check?.ok)).toEqual([true, true]);
  });

  it('its schema is the section\'s field in the scenario schema: a bad value is named', () => {
    const bad = { name: 'b', machine: { memory: '1GiB' }, board: { devices: 9 }, from: { release: 'a', plugins: {} }, to: { release: 'b', plugins: {} }, sessions: [] };
    expect(() => checkScenarioData(bad, 'b.json', [board([]).tools])).toThrow('b.json: /board/devices: must be <= 8');
  });
});
