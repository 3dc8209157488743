/**
 * What a new user ran into, each pinned by a test: output paths checked before the run, the
 * report's JSON and HTML saying what happened, the memory map counting metadata as the summary
 * does, a timeline to scale, a dump holding every handover page, progress agreeing with the
 * summary, a visible cursor, sizes with every unit up to the machine maximum, a machine too small
 * for the kernel, and a host-memory estimate before a huge pattern fill.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createProgress } from '../src/output/progress.js';
import { cli, removeDir, tempDir, type CliRun } from './support/cli.js';

const MEMFD = '"@liveupdate/plugin-memfd"';
const scenario = (machine: string, objects: string, plugins = `{ ${MEMFD}: "4.0.0" }`, extra = ''): string => `{
  "name": "trial",${extra}
  "machine": { "memory": "${machine}" },
  "from": { "release": "7.1.0", "plugins": ${plugins} },
  "to": { "release": "7.2.0", "plugins": ${plugins} },
  "sessions": [{ "name": "vm", "objects": [${objects}] }]
}
`;
const smallMemfd = '{ "type": "memfd", "token": 1, "size": "4MiB", "fill": "pattern", "touched": 0.5 }';

/** Attributes of the first `<tag ... id="id" ...>` in an HTML page. */
function attrsOf(html: string, tag: string, id: string): Record<string, string> {
  const m = new RegExp(`<${tag}\\b[^>]*\\bid="${id}"[^>]*>`).exec(html)?.[0] ?? '';
  return Object.fromEntries([...m.matchAll(/([\w:-]+)="([^"]*)"/g)].map((a) => [a[1] as string, a[2] as string]));
}

describe('found when trying it', () => {
  const dir = tempDir('trying');
  afterAll(() => removeDir(dir));
  const file = (name: string, text: string): string => { const f = path.join(dir, name); writeFileSync(f, text); return f; };

  it('a --dump into a directory that does not exist is a usage error before anything runs (exit 2)', () => {
    const r = cli(['run', '--dump', path.join(dir, 'no/such/dir/d.json')]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(`liveupdate: --dump ${path.join(dir, 'no/such/dir/d.json')}: cannot write there (no directory ${path.join(dir, 'no/such/dir')})\n`);
  });

  it('a --report or --out that is a directory is a usage error before anything runs (exit 2)', () => {
    expect(cli(['run', '--report', dir])).toMatchObject({ code: 2, stdout: '', stderr: `liveupdate: --report ${dir}: is a directory\n` });
    expect(cli(['report', '--out', dir])).toMatchObject({ code: 2, stdout: '', stderr: `liveupdate: --out ${dir}: is a directory\n` });
  });

  describe('report of a refused update', () => {
    let r: CliRun;
    let html = '';
    beforeAll(() => {
      // Kernel B has no memfd plugin: format negotiation refuses the kexec before anything froze.
      const f = file('refused.json', scenario('1GiB', smallMemfd).replace(`"to": { "release": "7.2.0", "plugins": { ${MEMFD}: "4.0.0" } }`, '"to": { "release": "7.2.0", "plugins": {} }'));
      const out = path.join(dir, 'refused.html');
      r = cli(['report', f, '--out', out, '--json', '--no-progress']);
      html = readFileSync(out, 'utf8');
    }, 60_000);

    it('--json says "command": "report"', () => {
      expect(JSON.parse(r.stdout)).toMatchObject({ command: 'report', ok: false, outcome: 'rolled-back' });
      expect(r.code).toBe(1);
    });

    it('the HTML says rolled back, and that no data check ran, not FAILED with an empty check', () => {
      expect(html).toMatch(/<span class="verdict failed" id="verdict">ROLLED BACK<\/span>\n the update was refused before the jump and rolled back; kernel 7\.1\.0 keeps running: /);
      expect(html).toContain('<td>data check</td><td>not run: no live update happened</td>');
      expect(html).not.toContain('>FAILED<');
    });
  });

  describe('the default scenario\'s report, dump and progress', () => {
    let run: CliRun;
    let html = '';
    let dump: { pages: Array<{ role: string }> } = { pages: [] };
    beforeAll(() => {
      const out = path.join(dir, 'r.html');
      const d = path.join(dir, 'd.json');
      run = cli(['run', '--report', out, '--dump', d, '--json']);
      html = readFileSync(out, 'utf8');
      dump = JSON.parse(readFileSync(d, 'utf8'));
    }, 60_000);

    it('the memory map paints as metadata exactly the pages the summary counts, and the files\' data as guest memory', () => {
      const s = JSON.parse(run.stdout);
      const map = attrsOf(html, 'svg', 'memmap');
      expect(Number(map['data-metadata-pages'])).toBe(s.handover.metadataPages);
      expect(Number(map['data-data-pages'])).toBe(540_672);
    });

    it('the timeline is to scale with a time axis: each phase is its time in pixels', () => {
      const axis = attrsOf(html, 'g', 'time-axis');
      const pxPerMs = Number(axis['data-px-per-ms']);
      expect(pxPerMs * Number(axis['data-total-ms'])).toBeCloseTo(960, 0);
      for (const m of html.matchAll(/<rect\b[^>]*class="phase"[^>]*>/g)) {
        const ms = Number(/data-ms="([\d.]+)"/.exec(m[0])?.[1]);
        const width = Number(/width="([\d.]+)"/.exec(m[0])?.[1]);
        expect(width).toBeCloseTo(Math.max(ms * pxPerMs, 1), 0);
      }
      const ticks = [...html.matchAll(/class="tick-label" data-ms="([\d.]+)"/g)].map((t) => Number(t[1]));
      expect(ticks[0]).toBe(0);
      expect(ticks.length).toBeGreaterThanOrEqual(4);
      expect(new Set(ticks.slice(1).map((t, i) => Math.round((t - (ticks[i] as number)) * 1000)))).toEqual(new Set([Math.round(Number(axis['data-step-ms']) * 1000)]));
    });

    it('the dump holds every handover page: the memfd headers, vmalloc chunks and extent-stream pages, as the summary counts them', () => {
      const s = JSON.parse(run.stdout);
      const roles = dump.pages.map((p) => p.role);
      expect(roles.filter((r) => r.startsWith('memfd header'))).toHaveLength(6);
      expect(roles.filter((r) => r.startsWith('memfd vmalloc chunk'))).toHaveLength(s.handover.structures['memfd vmalloc chunk']);
      expect(roles.filter((r) => r.startsWith('memfd extent stream'))).toHaveLength(s.handover.structures['memfd extent stream']);
      expect(dump.pages).toHaveLength(Object.values(s.handover.structures as Record<string, number>).reduce((a, b) => a + b, 0));
    });

    /** inspect of the dump with one byte of one page flipped. */
    const inspectFlipped = (role: string, at: number): CliRun => {
      const d = structuredClone(dump) as { pages: Array<{ role: string; data: string }> };
      const page = d.pages.find((p) => p.role === role);
      expect(page, role).toBeDefined();
      const bytes = Buffer.from(page?.data ?? '', 'base64');
      bytes[at] = (bytes[at] as number) ^ 0xff;
      if (page) page.data = bytes.toString('base64');
      const bad = path.join(dir, 'bad-crc.json');
      writeFileSync(bad, JSON.stringify(d));
      return cli(['inspect', bad]);
    };

    it('inspect: a memfd@4.0.0 header whose CRC-32 does not match is a problem (exit 1), not "problems: none"', () => {
      const r = inspectFlipped('memfd header (session vm-web token 1)', 68); // the crc32 word
      expect(r.code).toBe(1);
      expect(r.stdout).toMatch(/^ {6}problem: crc32 0x[0-9a-f]+, metadata 0x[0-9a-f]+ \(covers bytes 0\.\.67 and the stream\)$/m);
      expect(r.stdout).toMatch(/^ {2}- session vm-web token 1: crc32 0x[0-9a-f]+, metadata 0x[0-9a-f]+/m);
      expect(r.stdout).not.toContain('problems: none');
    });

    it('inspect: a byte of a memfd@4.0.0 extent stream changed is a whole-metadata CRC-32 mismatch (exit 1)', () => {
      // The 1 GiB file's stream: its first extent's pfn delta, a retargeted folio.
      const r = inspectFlipped('memfd extent stream (session vm-batch token 1)', 1);
      expect(r.code).toBe(1);
      expect(r.stdout).toMatch(/^ {2}- session vm-batch token 1: crc32 0x[0-9a-f]+, metadata 0x[0-9a-f]+ \(covers bytes 0\.\.67 and the stream\)/m);
      expect(r.stdout).not.toContain('problems: none');
    });

    it('inspect of a dump that does not name its plugins (an older dump): files listed, a note, no false problem', () => {
      const { plugins: _plugins, ...old } = dump as { plugins?: unknown; pages: unknown[] };
      const f = path.join(dir, 'old-dump.json');
      writeFileSync(f, JSON.stringify(old));
      const r = cli(['inspect', f]);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain('note: the dump does not name its plugins (an older dump): files are listed, not decoded');
      expect(r.stdout).toContain('problems: none');
    });

    it('progress counts what the summary counts: resident pages preserved and restored, the kexec as its phase', () => {
      const r = cli(['run']);
      const s = r.stdout;
      expect(r.stderr).toMatch(/^\[preserve\] 540,672 pages$/m);
      expect(r.stderr).toMatch(/^\[restore\] 540,672 pages$/m);
      expect(r.stderr).toMatch(/^\[kexec\] 7 steps$/m);
      expect(s).toMatch(/^preserved\s+3 sessions, 6 objects: 540,672 pages/m);
      expect(s).toMatch(/^restored\s+3 sessions, 6 objects: 540,672 pages/m);
    }, 60_000);
  });

  it('a memfd-v2 handover dumped and inspected: its vmalloc chunks and folio arrays are in the dump and walked', () => {
    const f = file('v2.json', scenario('1GiB', smallMemfd, `{ ${MEMFD}: "2.0.0" }`));
    const d = path.join(dir, 'v2-dump.json');
    expect(cli(['run', f, '--dump', d, '--no-progress']).code).toBe(0);
    const x = JSON.parse(cli(['inspect', d, '--json']).stdout);
    // memfd-v2 materializes the holes: 1,024 folios of 16-byte records, a 16 KiB (4-page) array.
    const [memfd] = x.luo.sessions[0].files;
    expect(memfd).toMatchObject({ compatible: 'memfd-v2', version: '2.0.0', pages: { 'memfd header': 1, 'memfd vmalloc chunk': 1, 'memfd folio array': 4 }, dataPages: 1024, problems: [] });
    expect(x.problems).toEqual([]);
  });

  it('a progress bar leaves the cursor visible (a Ctrl-C during the synchronous update cannot restore a hidden one)', () => {
    let written = '';
    const tty = Object.assign(new Writable({ write(chunk: Buffer, _e: string, cb: () => void) { written += chunk.toString(); cb(); } }), { isTTY: true, columns: 100, cursorTo: () => true, clearLine: () => true, moveCursor: () => true });
    const p = createProgress('bar', tty);
    p.phase('preserve', 10, 'pages');
    p.tick(5);
    p.done();
    expect(written).not.toContain('\x1b[?25l');
  });

  it('sizes: 1PiB is a machine, 64GB is refused as ambiguous naming the units, 100000TiB is beyond the machine maximum', () => {
    const ok = cli(['run', file('pib.json', scenario('1PiB', smallMemfd)), '--json', '--no-progress']);
    expect(JSON.parse(ok.stdout)).toMatchObject({ ok: true, scenario: { machine: { memoryBytes: 2 ** 50 } } });
    const gb = cli(['run', file('gb.json', scenario('64GB', smallMemfd))]);
    expect(gb.code).toBe(2);
    expect(gb.stderr).toContain("gb.json:3: /machine/memory: must match format \"size\": '64GB': 'GB' is ambiguous (10^n or 2^n bytes?): use a whole number of bytes with B, KiB, MiB, GiB, TiB or PiB");
    const huge = cli(['run', file('huge.json', scenario('100000TiB', smallMemfd))]);
    expect(huge.stderr).toContain("'100000TiB' is larger than the largest machine this model addresses (4 PiB, 52-bit physical addresses)");
  }, 30_000);

  it('a 128 MiB machine is too small for the kernel and its scratch areas: said up front (exit 2)', () => {
    const r = cli(['run', file('tiny.json', scenario('128MiB', smallMemfd))]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('tiny.json:3: /machine/memory: a 128MiB machine is too small for the kernel and its KHO scratch areas (KHO: Failed to reserve scratch area, disabling kexec handover): give it at least 256MiB');
  });

  it('a pattern fill bigger than the host can hold is refused up front with the estimate (exit 2)', () => {
    const r = cli(['run', file('fill.json', scenario('64TiB', '{ "type": "memfd", "token": 1, "size": "4TiB", "fill": "pattern" }'))]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^liveupdate: scenario trial needs about 4(\.00?)? TiB of host memory to create its objects \(real bytes, e.g. pattern fills\), more than the .* this run may use \(half of the host's RAM\)/);
    expect(existsSync(path.join(dir, 'fill.json'))).toBe(true);
  });
});
