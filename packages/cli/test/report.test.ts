/**
 * The HTML report rendered by a real browser (headless Chromium): the scripts ran, the timeline
 * and the memory map were laid out with the expected elements, and a screenshot shows them.
 * Without Chromium those two tests are skipped with a printed reason, except under CI=true
 * (.ci/run installs it), where they fail and say how to install it.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemTool } from '../../../test-support/system-tool.js';
import { cli, removeDir, tempDir } from './support/cli.js';
import { colorStats, countColor, decodePng } from './support/png.js';

const CHROMIUM = process.env.CHROMIUM ?? 'chromium';
const chromiumTool = systemTool(CHROMIUM, 'HTML report rendering (headless Chromium)', 'apt-get install -y chromium, or set CHROMIUM to its path');
const CHROMIUM_FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--hide-scrollbars',
];

function chromium(dir: string, args: readonly string[]): string {
  if (!chromiumTool.present) throw new Error(`${CHROMIUM} is missing: install it (apt-get install -y chromium) or set CHROMIUM`);
  const r = spawnSync(CHROMIUM, [...CHROMIUM_FLAGS, `--user-data-dir=${path.join(dir, 'profile')}`, ...args], { encoding: 'utf8', timeout: 60_000, maxBuffer: 64 << 20 });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`chromium exited ${r.status}: ${r.stderr}`);
  return r.stdout;
}

/** Attribute values of every element matching `<tag ... class="cls" ...>` in serialized HTML. */
function elements(html: string, tag: string, cls: string): Array<Record<string, string>> {
  const out: Array<Record<string, string>> = [];
  for (const m of html.matchAll(new RegExp(`<${tag}\\b([^>]*)>`, 'g'))) {
    const attrs: Record<string, string> = {};
    for (const a of (m[1] ?? '').matchAll(/([\w:-]+)="([^"]*)"/g)) attrs[a[1] as string] = a[2] as string;
    if ((attrs.class ?? '').split(/\s+/).includes(cls)) out.push(attrs);
  }
  return out;
}

describe('liveupdate report in headless Chromium', () => {
  const dir = tempDir('report');
  afterAll(() => removeDir(dir));
  const html = path.join(dir, 'report.html');
  let stdout = '';

  beforeAll(() => {
    const r = cli(['report', '--out', html, '--no-progress']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    stdout = r.stdout;
  }, 60_000);

  it('writes one self-contained page', () => {
    expect(stdout).toContain(`HTML report written to ${html}`);
    const page = readFileSync(html, 'utf8');
    expect(page).toMatch(/^<!doctype html>/);
    // No external assets: nothing is fetched from anywhere.
    expect(page).not.toMatch(/<(link|img|iframe)\b|\bsrc=|@import|url\(/);
  });

  it.runIf(chromiumTool.run)('renders the timeline and the memory map after its scripts ran', () => {
    const dom = chromium(dir, ['--dump-dom', pathToFileURL(html).href]);
    expect(dom).toContain('data-rendered="yes"');
    const timeline = /<svg[^>]*id="timeline"[^>]*>/.exec(dom)?.[0] ?? '';
    expect(Number(/data-rendered-width="(\d+)"/.exec(timeline)?.[1])).toBeGreaterThan(500);
    expect(elements(dom, 'rect', 'phase').map((p) => p['data-phase'])).toEqual(['boot A', 'before', 'freeze + serialize + jump', 'boot B', 'after']);
    expect(elements(dom, 'rect', 'part').map((p) => p['data-phase']).sort()).toEqual([
      'after / FINISH', 'after / RETRIEVE', 'after / verify', 'before / PRESERVE_FD', 'before / create hugetlb-memfd', 'before / create memfd',
    ]);
    expect(dom).toContain('id="kexec-boundary"');

    const memmap = /<svg[^>]*id="memmap"[^>]*>/.exec(dom)?.[0] ?? '';
    expect(memmap).toContain('data-nodes="2"');
    expect(Number(/data-rendered-height="(\d+)"/.exec(memmap)?.[1])).toBeGreaterThan(100);
    expect(elements(dom, 'g', 'numa-node')).toHaveLength(2);
    const segs = elements(dom, 'rect', 'seg');
    const kinds = new Set(segs.map((s) => s['data-kind']));
    expect([...kinds].sort()).toEqual(['free', 'metadata', 'preserved', 'scratch']);
    // In the log band even a single 4 KiB metadata page is a visible box.
    const logMeta = segs.filter((s) => s['data-band'] === 'log' && s['data-kind'] === 'metadata');
    expect(logMeta.length).toBeGreaterThan(0);
    expect(Math.min(...logMeta.map((s) => Number(s.width)))).toBeGreaterThan(3);
    expect(Number(/data-visible-segments="(\d+)"/.exec(dom)?.[1])).toBe(segs.length);
  }, 30_000);

  it.runIf(chromiumTool.run)('a screenshot is not blank and shows the memory map colors', () => {
    const png = path.join(dir, 'report.png');
    chromium(dir, ['--window-size=1100,1400', `--screenshot=${png}`, pathToFileURL(html).href]);
    const img = decodePng(readFileSync(png));
    expect(img.width).toBe(1100);
    const stats = colorStats(img);
    expect(stats.distinct).toBeGreaterThan(50);
    expect(stats.nonWhite).toBeGreaterThan(0.1);
    // Solid fills of the map: preserved, scratch, metadata (exact colors from report/memmap.ts).
    for (const color of ['#1f77b4', '#f2b134', '#d62728']) expect(countColor(img, color)).toBeGreaterThan(100);
  }, 30_000);
});
