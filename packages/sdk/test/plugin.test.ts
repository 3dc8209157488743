/**
 * definePlugin as the runtime sees it: the SDK range is checked at boot, the format version
 * in force reaches each handler op, upstream aliases are written byte-exact, and declared
 * dependencies fail the freeze (so the kexec) instead of losing a file.
 */
import { describe, expect, it } from 'vitest';
import { createMachine } from '@liveupdate/hw';
import {
  boot, createSession, defineFileHandler, defineFlb, definePlugin, ErrnoError, finishSession, Inode, isPlugin, KFile, Kernel,
  openLiveupdate, PAGE_SIZE, PluginLoadError, preserveFd, retrieveFd, retrieveSession, SDK_VERSION,
  type Dependency, type Plugin, type Process,
} from '@liveupdate/sdk';

const CMDLINE = 'kho=on liveupdate=on';

/** A tiny file type: a note holding a short text. */
class Note { constructor(readonly text: string, readonly kind: 'note' | 'tag') {} }
const NOTE_FOPS = { kind: 'anon_inode:[note]' };
const noteFile = (k: Kernel, note: Note): KFile => new KFile(NOTE_FOPS, new Inode(note), note, 0o2, k.id);
const noteOf = (p: Process, fd: number): Note => p.file(fd, 'read').privateData as Note;

/** note_create: a note (or tag) on a new fd of `p` in kernel `k`. */
function noteCreate(k: Kernel, p: Process, text: string, kind: 'note' | 'tag' = 'note'): number {
  return p.fdInstall(noteFile(k, new Note(text, kind)), false);
}

interface NoteOptions {
  readonly writes: string[];
  readonly reads: string;
  readonly log?: string[];
  readonly sdk?: string;
}

/**
 * The note handler: 1.x writes [u32 len][text] (upstream alias 'note-v1' for 1.0.0), 2.x writes
 * [u32 magic 'NOT2'][u32 len][text], into a kho_alloc_preserve'd page.
 */
function notes(o: NoteOptions, family: 'note' | 'tag' = 'note', requires: Dependency[] = []) {
  const log = o.log ?? [];
  return defineFileHandler<{ note: Note; page: number }>({
    format: { family, writes: o.writes, reads: o.reads, aliases: { 1: `${family}-v1` } },
    requires,
    canPreserve: (file) => file.privateData instanceof Note && (file.privateData as Note).kind === family,
    preserve(ctx) {
      log.push(`preserve ${ctx.version}`);
      const page = (ctx.kernel.khoOut as NonNullable<Kernel['khoOut']>).allocPreserve(PAGE_SIZE);
      ctx.state = { note: (ctx.file as KFile).privateData as Note, page };
      ctx.data = BigInt(page);
    },
    unpreserve(ctx) {
      log.push(`unpreserve ${ctx.version}`);
      ctx.kernel.khoOut?.unpreserveFree((ctx.state as { page: number }).page);
    },
    freeze(ctx) {
      log.push(`freeze ${ctx.version}`);
      const { note, page } = ctx.state as { note: Note; page: number };
      const text = new TextEncoder().encode(note.text);
      const mem = ctx.kernel.machine.memory;
      if (ctx.version.startsWith('1.')) { mem.writeU32(page, text.length); mem.write(page + 4, text); } else { mem.writeU32(page, 0x32544f4e); mem.writeU32(page + 4, text.length); mem.write(page + 8, text); }
    },
    retrieve(ctx) {
      log.push(`retrieve ${ctx.version}`);
      const page = Number(ctx.data);
      const f = ctx.kernel.khoIn?.restoreFolio(page);
      if (!f) throw new ErrnoError('EINVAL', 'note_retrieve');
      const mem = ctx.kernel.machine.memory;
      const v1 = ctx.version.startsWith('1.');
      const len = mem.readU32(v1 ? page : page + 4);
      const text = new TextDecoder().decode(mem.read(v1 ? page + 4 : page + 8, len));
      ctx.kernel.mm.freePages(f.pfn, f.order);
      ctx.file = noteFile(ctx.kernel, new Note(text, family));
    },
    finish(ctx) {
      log.push(`finish ${ctx.version}`);
      if (ctx.retrieveStatus !== 1) ctx.kernel.khoIn?.restoreFree(Number(ctx.data));
    },
  });
}

function notePlugin(o: NoteOptions, extra: { tagRequires?: Dependency[] } = {}): Plugin {
  return definePlugin({
    name: '@test/notes', version: '1.0.0', sdk: o.sdk ?? '^0.1.0',
    handlers: [notes(o), notes(o, 'tag', extra.tagRequires ?? [])],
  });
}

describe('the SDK range a plugin was built against', () => {
  it('a plugin built for SDK ^9.0.0 is refused at boot with PluginLoadError naming it, its range and the SDK version', () => {
    let error: unknown;
    try { boot(createMachine({ memory: '1GiB' }), { cmdline: CMDLINE, plugins: [notePlugin({ writes: ['1.0.0'], reads: '^1.0.0', sdk: '^9.0.0' })] }); } catch (e) { error = e; }
    expect(error).toBeInstanceOf(PluginLoadError);
    expect(error).toMatchObject({ plugin: '@test/notes', range: '^9.0.0', sdkVersion: SDK_VERSION, code: 'LIVEUPDATE_PLUGIN_SDK_RANGE' });
    expect((error as Error).message).toBe(`plugin @test/notes was built for SDK '^9.0.0'; this runtime implements SDK ${SDK_VERSION}`);
    expect(SDK_VERSION).toBe('0.1.0');
  });

  it('a kexec into an image whose plugin needs SDK ^9.0.0 is refused before freeze and the old kernel keeps running', () => {
    const plugin = notePlugin({ writes: ['1.0.0'], reads: '^1.0.0' });
    const k1 = boot(createMachine({ memory: '1GiB' }), { cmdline: CMDLINE, plugins: [plugin] });
    const p = k1.spawn('vmm');
    const s = createSession(p, openLiveupdate(p), 'notes');
    preserveFd(p, s, noteCreate(k1, p, 'kept'), 1);
    const frozen: string[] = [];
    k1.luo.hooks.fileOp.tap('test', (ev) => { if (ev.op === 'freeze') frozen.push(ev.compatible); });
    let error: unknown;
    try {
      k1.kexec({ cmdline: CMDLINE, plugins: [notePlugin({ writes: ['1.0.0'], reads: '^1.0.0', sdk: '^9.0.0' })] });
    } catch (e) { error = e; }
    expect(error).toBeInstanceOf(PluginLoadError);
    expect(frozen).toEqual([]);
    expect(k1.isDead).toBe(false);
    const k2 = k1.kexec({ cmdline: CMDLINE, plugins: [plugin] });
    const q = k2.spawn('vmm');
    const fd = retrieveFd(q, retrieveSession(q, openLiveupdate(q), 'notes'), 1);
    expect(noteOf(q, fd).text).toBe('kept');
  });

  it.each(['^0.1.0', '>=0.1.0 <1.0.0', '0.1.x', '*'])('a plugin built for %s loads', (sdk) => {
    const k = boot(createMachine({ memory: '1GiB' }), { cmdline: CMDLINE, plugins: [notePlugin({ writes: ['1.0.0'], reads: '^1.0.0', sdk })] });
    expect(k.luo.handlers.map((h) => h.compatible)).toEqual(['note-v1', 'tag-v1']);
  });
});

describe('a plugin as the runtime loads it', () => {
  it('is branded, registers one LUO handler per format under the newest version\'s compatible, owned by the plugin', () => {
    const p = notePlugin({ writes: ['1.0.0', '2.0.0'], reads: '>=1.0.0 <3.0.0' });
    expect(isPlugin(p)).toBe(true);
    expect(isPlugin({ name: '@test/notes', version: '1.0.0', setup() {} })).toBe(false);
    const k = boot(createMachine({ memory: '1GiB' }), { cmdline: CMDLINE, plugins: [p] });
    const h = p.handlerIn(k, 'note');
    expect([h?.compatible, h?.owner, h?.format]).toEqual(['note@2.0.0', '@test/notes', 'note']);
    expect([h?.accepts?.('note-v1'), h?.accepts?.('note@1.7.0'), h?.accepts?.('note@3.0.0'), h?.accepts?.('tag@1.0.0')]).toEqual([true, true, false, false]);
    expect(k.formats.get('note')).toEqual({ family: 'note', writes: ['1.0.0', '2.0.0'], reads: '>=1.0.0 <3.0.0', owner: '@test/notes', aliases: { 1: 'note-v1' } });
  });

  it('an FLB naming a family the plugin has no handler for is a TypeError at boot', () => {
    const flb = defineFlb({ compatible: 'notes-flb-v1', preserve() {}, unpreserve() {}, retrieve() {}, finish() {} });
    const p = definePlugin({ name: '@test/flb', version: '1.0.0', sdk: '^0.1.0', handlers: [notes({ writes: ['1.0.0'], reads: '^1.0.0' })], flbs: [{ flb, handlers: ['nope'] }] });
    expect(() => boot(createMachine({ memory: '1GiB' }), { cmdline: CMDLINE, plugins: [p] }))
      .toThrow(new TypeError("plugin @test/flb: FLB notes-flb-v1 names unknown handler family 'nope'"));
  });
});

describe('the format version in force reaches every handler op', () => {
  it('preserve sees the newest, freeze the negotiated one, retrieve and finish the handed-over one', () => {
    const log: string[] = [];
    const k1 = boot(createMachine({ memory: '1GiB' }), { cmdline: CMDLINE, plugins: [notePlugin({ writes: ['1.0.0', '2.0.0'], reads: '>=1.0.0 <3.0.0', log })] });
    const p = k1.spawn('luod');
    const s = createSession(p, openLiveupdate(p), 'notes');
    preserveFd(p, s, noteCreate(k1, p, 'hello, kexec'), 1);
    const k2 = k1.kexec({ cmdline: CMDLINE, plugins: [notePlugin({ writes: ['1.0.0'], reads: '^1.0.0', log })] });
    const q = k2.spawn('luod');
    const s2 = retrieveSession(q, openLiveupdate(q), 'notes');
    // 1.0.0 travels under the upstream alias, byte-exact.
    expect(k2.luo.sessions.incoming[0]?.fileSet.files.map((f) => f.compatible)).toEqual(['note-v1']);
    expect(noteOf(q, retrieveFd(q, s2, 1)).text).toBe('hello, kexec');
    finishSession(q, s2);
    expect(log).toEqual(['preserve 2.0.0', 'freeze 1.0.0', 'retrieve 1.0.0', 'finish 1.0.0']);
  });

  it('without a constraint the newest version travels as "family@version"', () => {
    const log: string[] = [];
    const plugin = () => notePlugin({ writes: ['1.0.0', '2.0.0'], reads: '>=1.0.0 <3.0.0', log });
    const k1 = boot(createMachine({ memory: '1GiB' }), { cmdline: CMDLINE, plugins: [plugin()] });
    const p = k1.spawn('luod');
    const s = createSession(p, openLiveupdate(p), 'notes');
    preserveFd(p, s, noteCreate(k1, p, 'v2 text'), 1);
    const k2 = k1.kexec({ cmdline: CMDLINE, plugins: [plugin()] });
    const q = k2.spawn('luod');
    const s2 = retrieveSession(q, openLiveupdate(q), 'notes');
    expect(k2.luo.sessions.incoming[0]?.fileSet.files.map((f) => f.compatible)).toEqual(['note@2.0.0']);
    expect(noteOf(q, retrieveFd(q, s2, 1)).text).toBe('v2 text');
    expect(log).toEqual(['preserve 2.0.0', 'freeze 2.0.0', 'retrieve 2.0.0']);
  });
});

describe('declared dependencies', () => {
  const requires: Dependency[] = [{ family: 'note', sameSession: true, reason: 'a tag annotates a note' }];

  it('a tag without a note in its session fails the freeze (ENOENT): the kexec rolls back and can be retried', () => {
    const log: string[] = [];
    const plugin = () => notePlugin({ writes: ['1.0.0'], reads: '^1.0.0', log }, { tagRequires: requires });
    const writer = plugin();
    const k1 = boot(createMachine({ memory: '1GiB' }), { cmdline: CMDLINE, plugins: [writer] });
    const p = k1.spawn('luod');
    const s = createSession(p, openLiveupdate(p), 'vm0');
    preserveFd(p, s, noteCreate(k1, p, 'blue', 'tag'), 1);
    let error: unknown;
    try { k1.kexec({ cmdline: CMDLINE, plugins: [plugin()] }); } catch (e) { error = e; }
    expect(error).toBeInstanceOf(ErrnoError);
    expect(error).toMatchObject({ code: 'ENOENT', syscall: 'freeze' });
    expect((error as Error).message).toBe("freeze: ENOENT (@test/notes: needs a 'note' file in session vm0 (a tag annotates a note))");
    expect(k1.isDead).toBe(false);
    expect(log).toEqual(['preserve 1.0.0']); // the tag's own freeze never ran
    expect(writer.manifest).toEqual({
      name: '@test/notes', version: '1.0.0', sdk: '^0.1.0',
      formats: [{ family: 'note', writes: ['1.0.0'], reads: '^1.0.0', aliases: { 1: 'note-v1' } }, { family: 'tag', writes: ['1.0.0'], reads: '^1.0.0', aliases: { 1: 'tag-v1' } }],
      requires: [{ from: 'tag', family: 'note', sameSession: true }],
    });

    preserveFd(p, s, noteCreate(k1, p, 'the note'), 2);
    const k2 = k1.kexec({ cmdline: CMDLINE, plugins: [plugin()] });
    const q = k2.spawn('luod');
    const s2 = retrieveSession(q, openLiveupdate(q), 'vm0');
    expect([noteOf(q, retrieveFd(q, s2, 1)).text, noteOf(q, retrieveFd(q, s2, 2)).text]).toEqual(['blue', 'the note']);
    finishSession(q, s2);
    expect(k2.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
  });
});
