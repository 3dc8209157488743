/**
 * The phases of a live update as an SVG timeline: boot A, before (fill + preserve), freeze +
 * serialize + jump, boot B, after (retrieve + verify + finish), with the kexec boundary
 * marked. Widths follow time, with a floor so a 20 ms boot is still a visible, labelled box.
 */
import { ms } from '../output/format.js';
import type { PhaseSummary } from '../output/summary.js';
import { el, esc, leaf } from './svg.js';

const WIDTH = 960;
const MIN_BOX = 84;
const ROW = 44;

const PHASE_COLORS: Readonly<Record<string, string>> = {
  'boot A': '#8aa4c8',
  before: '#5b8def',
  'freeze + serialize + jump': '#e07a5f',
  'boot B': '#81b29a',
  after: '#3d9970',
};

const slug = (s: string): string => s.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');

/** Roughly the width of a 12px label: boxes are never narrower than their name. */
const labelWidth = (text: string): number => text.length * 6.6 + 12;

/** x and width per item: proportional to ms, every box at least `min` (or its label) wide. */
function layout(items: readonly { ms: number; phase?: string }[], width: number, min: number): Array<{ x: number; w: number }> {
  const mins = items.map((p) => Math.max(min, p.phase !== undefined && min >= MIN_BOX ? labelWidth(p.phase) : 0));
  const total = items.reduce((n, p) => n + Math.max(p.ms, 0), 0) || 1;
  const free = Math.max(0, width - mins.reduce((a, b) => a + b, 0));
  let x = 0;
  return items.map((p, i) => {
    const w = (mins[i] as number) + (free * Math.max(p.ms, 0)) / total;
    const out = { x, w };
    x += w;
    return out;
  });
}

export function timelineSvg(phases: readonly PhaseSummary[]): string {
  const boxes = layout(phases, WIDTH, MIN_BOX);
  const parts: string[] = [];
  let boundary = -1;
  phases.forEach((p, i) => {
    const b = boxes[i] as { x: number; w: number };
    const color = PHASE_COLORS[p.phase] ?? '#999';
    parts.push(el('g', { class: 'phase-group' }, [
      el('rect', {
        id: `phase-${slug(p.phase)}`, class: 'phase', 'data-phase': p.phase, 'data-ms': p.ms.toFixed(1),
        x: b.x + 1, y: 24, width: b.w - 2, height: ROW, rx: 4, fill: color,
      }, el('title', {}, esc(`${p.phase}: ${ms(p.ms)}`))),
      el('text', { x: b.x + b.w / 2, y: 18, 'text-anchor': 'middle', class: 'phase-label' }, esc(p.phase)),
      el('text', { x: b.x + b.w / 2, y: 24 + ROW / 2 + 5, 'text-anchor': 'middle', class: 'phase-ms' }, esc(ms(p.ms))),
    ].join('')));
    // Sub-steps of the long phases, in a second row under their phase.
    const sub = p.parts ?? [];
    if (sub.length) {
      const subBoxes = layout(sub, b.w - 2, Math.min(60, (b.w - 2) / sub.length));
      sub.forEach((q, j) => {
        const s = subBoxes[j] as { x: number; w: number };
        parts.push(el('g', { class: 'part-group' }, [
          el('rect', {
            class: 'part', 'data-phase': `${p.phase} / ${q.phase}`, 'data-ms': q.ms.toFixed(1),
            x: b.x + 1 + s.x + 1, y: 24 + ROW + 8, width: Math.max(s.w - 2, 1), height: 22, rx: 3, fill: color, 'fill-opacity': 0.45,
          }, el('title', {}, esc(`${q.phase}: ${ms(q.ms)}`))),
          el('text', { x: b.x + 1 + s.x + s.w / 2, y: 24 + ROW + 23, 'text-anchor': 'middle', class: 'part-label' }, esc(s.w > 50 ? q.phase : '')),
        ].join('')));
      });
    }
    if (p.phase === 'boot B') boundary = b.x;
  });
  if (boundary >= 0) {
    parts.push(leaf('line', { id: 'kexec-boundary', x1: boundary, x2: boundary, y1: 4, y2: 24 + ROW + 40, stroke: '#222', 'stroke-dasharray': '4 3', 'stroke-width': 1.5 }));
    parts.push(el('text', { x: boundary + 4, y: 24 + ROW + 52, class: 'boundary-label' }, 'kexec: only memory and boot params cross'));
  }
  const height = 24 + ROW + 60;
  return el('svg', {
    id: 'timeline', xmlns: 'http://www.w3.org/2000/svg', viewBox: `0 0 ${WIDTH} ${height}`, width: WIDTH, height, role: 'img',
    'aria-label': 'phases of the live update', 'data-phases': phases.length,
  }, parts.join(''));
}
