/**
 * The phases of a live update as an SVG timeline: boot A, before (create + preserve), freeze +
 * serialize + jump, boot B, after (retrieve + verify + finish), with the kexec boundary
 * marked. To scale: widths are times, and an axis under the bar says how many ms a pixel is.
 */
import { ms } from '../output/format.js';
import type { PhaseSummary } from '../output/summary.js';
import { el, esc, leaf } from './svg.js';

const WIDTH = 960;
const ROW = 44;
/** Rows of labels above the bar, so labels of narrow phases do not collide. */
const LABEL_ROWS = 2;
const TOP = 14 * LABEL_ROWS + 10;

const PHASE_COLORS: Readonly<Record<string, string>> = {
  'boot A': '#8aa4c8',
  before: '#5b8def',
  'freeze + serialize + jump': '#e07a5f',
  'boot B': '#81b29a',
  after: '#3d9970',
};

const slug = (s: string): string => s.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');

/** Roughly the width of a 12px label. */
const labelWidth = (text: string): number => text.length * 6.6 + 12;

/** A tick step of 1, 2 or 5 times a power of ten giving 4 to 10 ticks over `total` ms. */
export function tickStep(total: number): number {
  if (!(total > 0)) return 1;
  const raw = total / 8;
  const pow = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (m * pow >= raw) return m * pow;
  return 10 * pow;
}

/**
 * The phases to scale: every box's width is its time (one pixel per `total / WIDTH` ms, a
 * hairline at least), with a time axis under it. A label that does not fit its box goes above
 * it, on alternating rows.
 */
export function timelineSvg(phases: readonly PhaseSummary[]): string {
  const total = phases.reduce((n, p) => n + Math.max(p.ms, 0), 0) || 1;
  const scale = WIDTH / total;
  const parts: string[] = [];
  let boundary = -1;
  let t = 0;
  let narrow = 0;
  phases.forEach((p) => {
    const x = t * scale;
    const w = Math.max(Math.max(p.ms, 0) * scale, 1);
    t += Math.max(p.ms, 0);
    const color = PHASE_COLORS[p.phase] ?? '#999';
    const fits = w >= labelWidth(p.phase);
    const labelY = fits ? TOP - 4 : TOP - 4 - 14 * (narrow++ % LABEL_ROWS);
    parts.push(el('g', { class: 'phase-group' }, [
      el('rect', {
        id: `phase-${slug(p.phase)}`, class: 'phase', 'data-phase': p.phase, 'data-ms': p.ms.toFixed(1),
        x, y: TOP, width: w, height: ROW, fill: color,
      }, el('title', {}, esc(`${p.phase}: ${ms(p.ms)}`))),
      el('text', { x: fits ? x + w / 2 : x, y: labelY, 'text-anchor': fits ? 'middle' : 'start', class: 'phase-label' }, esc(`${p.phase}${fits ? '' : ` ${ms(p.ms)}`}`)),
      fits ? el('text', { x: x + w / 2, y: TOP + ROW / 2 + 5, 'text-anchor': 'middle', class: 'phase-ms' }, esc(ms(p.ms))) : '',
    ].join('')));
    // Sub-steps of the long phases, to the same scale, in a second row under their phase.
    let q0 = x;
    for (const q of p.parts ?? []) {
      const qw = Math.max(Math.max(q.ms, 0) * scale, 1);
      parts.push(el('g', { class: 'part-group' }, [
        el('rect', {
          class: 'part', 'data-phase': `${p.phase} / ${q.phase}`, 'data-ms': q.ms.toFixed(1),
          x: q0, y: TOP + ROW + 8, width: qw, height: 22, fill: color, 'fill-opacity': 0.45,
        }, el('title', {}, esc(`${q.phase}: ${ms(q.ms)}`))),
        el('text', { x: q0 + qw / 2, y: TOP + ROW + 23, 'text-anchor': 'middle', class: 'part-label' }, esc(qw > labelWidth(q.phase) ? q.phase : '')),
      ].join('')));
      q0 += qw;
    }
    if (p.phase === 'boot B') boundary = x;
  });
  // The axis: a tick every 1, 2 or 5 x 10^k ms.
  const axisY = TOP + ROW + 40;
  const step = tickStep(total);
  const ticks: string[] = [leaf('line', { class: 'axis', x1: 0, x2: WIDTH, y1: axisY, y2: axisY, stroke: '#444', 'stroke-width': 1 })];
  for (let v = 0; v <= total + 1e-9; v += step) {
    const x = Math.min(v * scale, WIDTH - 0.5);
    ticks.push(leaf('line', { class: 'tick', x1: x, x2: x, y1: axisY, y2: axisY + 5, stroke: '#444' }));
    ticks.push(el('text', { x, y: axisY + 17, 'text-anchor': v === 0 ? 'start' : 'middle', class: 'tick-label', 'data-ms': v }, esc(ms(v))));
  }
  parts.push(el('g', { id: 'time-axis', 'data-step-ms': step, 'data-total-ms': total.toFixed(1), 'data-px-per-ms': scale.toFixed(4) }, ticks.join('')));
  if (boundary >= 0) {
    parts.push(leaf('line', { id: 'kexec-boundary', x1: boundary, x2: boundary, y1: 4, y2: axisY, stroke: '#222', 'stroke-dasharray': '4 3', 'stroke-width': 1.5 }));
    parts.push(el('text', { x: Math.min(boundary + 4, WIDTH - 250), y: axisY + 34, class: 'boundary-label' }, 'kexec: only memory and boot params cross'));
  }
  const height = axisY + 44;
  return el('svg', {
    id: 'timeline', xmlns: 'http://www.w3.org/2000/svg', viewBox: `0 -2 ${WIDTH + 10} ${height}`, width: WIDTH + 10, height, role: 'img',
    'aria-label': 'phases of the live update, to scale', 'data-phases': phases.length,
  }, parts.join(''));
}
