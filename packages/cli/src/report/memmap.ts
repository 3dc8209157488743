/**
 * The machine's physical memory at the kexec, per NUMA node: handover metadata, preserved
 * guest memory, scratch areas and the rest (free: scrubbed to poison at the jump). Two bands
 * per node: a linear one (true positions; kept regions get at least a hairline) and a
 * log-scaled one where each region's width grows with log2 of its size, so a 4 KiB FDT page
 * is as visible as 30 GiB of free memory is, in address order.
 */
import { PAGE_SIZE, type NumaNode } from '@liveupdate/hw';
import type { HandoverView } from '../handover/decode.js';
import { bytes, count, hex } from '../output/format.js';
import { el, esc } from './svg.js';

export type RegionKind = 'metadata' | 'preserved' | 'scratch' | 'free';

export interface Region {
  readonly start: number;
  readonly end: number;
  readonly kind: RegionKind;
}

/**
 * Higher wins where kinds overlap. Every preserved page is metadata unless a plugin's decoder
 * says its file hands it over as data (Decoded.dataRuns): guest memory is what the files own,
 * the rest of what the tracker preserves is the handover's own cost.
 */
const PRIORITY: Readonly<Record<RegionKind, number>> = { free: 0, scratch: 1, metadata: 2, preserved: 3 };

export const REGION_COLORS: Readonly<Record<RegionKind, string>> = {
  metadata: '#d62728',
  preserved: '#1f77b4',
  scratch: '#f2b134',
  free: '#e6e6e6',
};

export const REGION_LABELS: Readonly<Record<RegionKind, string>> = {
  metadata: 'handover metadata (FDT, tracker, LUO, headers, xarray nodes, folio arrays)',
  preserved: 'preserved data (guest memory the files hand over)',
  scratch: 'scratch (the next kernel boots here)',
  free: 'free (scrubbed at the kexec)',
};

/** Every page of [node.startPfn, node.endPfn) as sorted, merged regions of one kind. */
export function nodeRegions(node: NumaNode, view: HandoverView): Region[] {
  const spans: Region[] = [];
  const clip = (s: number, e: number, kind: RegionKind): void => {
    const a = Math.max(s, node.startPfn);
    const b = Math.min(e, node.endPfn);
    if (b > a) spans.push({ start: a, end: b, kind });
  };
  for (const a of view.scratch) clip(a.addr / PAGE_SIZE, (a.addr + a.size) / PAGE_SIZE, 'scratch');
  for (const o of view.tracker?.orders ?? []) for (const [s, e] of o.runs) clip(s, e, 'metadata');
  for (const [s, e] of view.dataRuns) clip(s, e, 'preserved');
  const meta = [...view.pages.keys()].sort((a, b) => a - b);
  for (let i = 0; i < meta.length;) {
    let j = i + 1;
    while (j < meta.length && meta[j] === (meta[j - 1] as number) + 1) j++;
    clip(meta[i] as number, (meta[j - 1] as number) + 1, 'metadata');
    i = j;
  }
  // Sweep the boundaries; each elementary piece takes the highest-priority kind covering it.
  const cuts = [...new Set([node.startPfn, node.endPfn, ...spans.flatMap((s) => [s.start, s.end])])].sort((a, b) => a - b);
  const byStart = [...spans].sort((a, b) => a.start - b.start);
  const out: Region[] = [];
  const open: Region[] = [];
  let k = 0;
  for (let i = 0; i + 1 < cuts.length; i++) {
    const s = cuts[i] as number;
    const e = cuts[i + 1] as number;
    while (k < byStart.length && (byStart[k] as Region).start <= s) open.push(byStart[k++] as Region);
    for (let j = open.length - 1; j >= 0; j--) if ((open[j] as Region).end <= s) open.splice(j, 1);
    const kind = open.reduce<RegionKind>((best, r) => (PRIORITY[r.kind] > PRIORITY[best] ? r.kind : best), 'free');
    const last = out[out.length - 1];
    if (last && last.kind === kind && last.end === s) out[out.length - 1] = { ...last, end: e };
    else out.push({ start: s, end: e, kind });
  }
  return out;
}

const WIDTH = 960;
const BAND = 26;
const LABEL_W = 0;

function regionRect(r: Region, x: number, w: number, y: number, h: number, band: string): string {
  const pages = r.end - r.start;
  const tip = `${REGION_LABELS[r.kind]}: ${hex(r.start * PAGE_SIZE)}-${hex(r.end * PAGE_SIZE)}, ${bytes(pages * PAGE_SIZE)} (${count(pages)} pages)`;
  return el('rect', {
    class: `seg seg-${r.kind}`, 'data-band': band, 'data-kind': r.kind, 'data-start': hex(r.start * PAGE_SIZE), 'data-pages': pages,
    x, y, width: w, height: h, fill: REGION_COLORS[r.kind],
  }, el('title', {}, esc(tip)));
}

/** Past this many regions in a node, a band draws per-pixel (linear) or per-bucket (log) summaries. */
const MAX_DRAWN_REGIONS = 2048;
const KINDS_BY_PRIORITY: readonly RegionKind[] = ['free', 'scratch', 'metadata', 'preserved'];

/**
 * Many regions (an MSHV host's scattered deposits: ~10^5 runs) would make one SVG element each,
 * tens of MB of report. Regions that share a pixel are drawn as one rect of the highest-priority
 * kind among them, its title counting what it stands for: cost follows pixels, not regions.
 */
function coalesced(regions: readonly Region[], slotOf: (r: Region, i: number) => readonly [number, number], slots: number): Array<{ slot0: number; slot1: number; kind: RegionKind; start: number; end: number; count: number }> {
  const kind = new Int8Array(slots).fill(-1);
  const first = new Float64Array(slots).fill(-1);
  const last = new Float64Array(slots);
  const n = new Uint32Array(slots);
  regions.forEach((r, i) => {
    if (r.kind === 'free') return;
    const [a, b] = slotOf(r, i);
    const k = KINDS_BY_PRIORITY.indexOf(r.kind);
    const x0 = Math.min(slots - 1, Math.max(0, a));
    // Counted once, in its first pixel; painted in every pixel it covers.
    n[x0] = (n[x0] as number) + 1;
    for (let x = x0; x < Math.min(slots, Math.max(b, x0 + 1)); x++) {
      if (k > (kind[x] as number)) kind[x] = k;
      if ((first[x] as number) < 0) first[x] = r.start;
      last[x] = r.end;
    }
  });
  const out: Array<{ slot0: number; slot1: number; kind: RegionKind; start: number; end: number; count: number }> = [];
  for (let x = 0; x < slots;) {
    const k = kind[x] as number;
    let y = x + 1;
    while (y < slots && kind[y] === k) y++;
    if (k >= 0) {
      let count = 0;
      for (let z = x; z < y; z++) count += n[z] as number;
      out.push({ slot0: x, slot1: y, kind: KINDS_BY_PRIORITY[k] as RegionKind, start: first[x] as number, end: last[y - 1] as number, count });
    }
    x = y;
  }
  return out;
}

function summaryRect(c: { kind: RegionKind; start: number; end: number; count: number }, x: number, w: number, y: number, h: number, band: string): string {
  const tip = `${c.count} regions, mostly ${REGION_LABELS[c.kind]}: ${hex(c.start * PAGE_SIZE)}-${hex(c.end * PAGE_SIZE)}`;
  return el('rect', {
    class: `seg seg-${c.kind}`, 'data-band': band, 'data-kind': c.kind, 'data-start': hex(c.start * PAGE_SIZE), 'data-regions': c.count,
    x, y, width: w, height: h, fill: REGION_COLORS[c.kind],
  }, el('title', {}, esc(tip)));
}

function nodeGroup(node: NumaNode, regions: readonly Region[], y0: number): string {
  const span = node.endPfn - node.startPfn;
  const parts: string[] = [];
  const total = regions.reduce((n, r) => n + (r.end - r.start) * PAGE_SIZE, 0);
  parts.push(el('text', { x: LABEL_W, y: y0 + 12, class: 'node-label' },
    esc(`NUMA node ${node.id}: ${hex(node.startPfn * PAGE_SIZE)}-${hex(node.endPfn * PAGE_SIZE)} (${bytes(total)})`)));
  // Linear band: free as the background, kept regions on top with a hairline minimum.
  const yl = y0 + 18;
  parts.push(el('rect', { class: 'band-bg', x: LABEL_W, y: yl, width: WIDTH, height: BAND, fill: REGION_COLORS.free }));
  const many = regions.length > MAX_DRAWN_REGIONS;
  if (many) {
    const px = (pfn: number): number => Math.floor(((pfn - node.startPfn) / span) * WIDTH);
    for (const c of coalesced(regions, (r) => [px(r.start), Math.ceil(((r.end - node.startPfn) / span) * WIDTH)], WIDTH)) {
      parts.push(summaryRect(c, LABEL_W + c.slot0, c.slot1 - c.slot0, yl, BAND, 'linear'));
    }
  } else {
    for (const r of regions) {
      if (r.kind === 'free') continue;
      const x = LABEL_W + ((r.start - node.startPfn) / span) * WIDTH;
      parts.push(regionRect(r, x, Math.max(((r.end - r.start) / span) * WIDTH, 1.5), yl, BAND, 'linear'));
    }
  }
  parts.push(el('text', { x: WIDTH + 6, y: yl + 17, class: 'band-label' }, 'linear'));
  // Log band: address order kept, width ~ 1 + log2(pages).
  const yg = yl + BAND + 6;
  const weights = regions.map((r) => 1 + Math.log2(r.end - r.start));
  const sum = weights.reduce((a, b) => a + b, 0) || 1;
  let x = LABEL_W;
  if (many) {
    // Log positions, then the same per-pixel coalescing.
    const at = new Float64Array(regions.length + 1);
    for (let i = 0; i < regions.length; i++) at[i + 1] = (at[i] as number) + (WIDTH * (weights[i] as number)) / sum;
    parts.push(el('rect', { class: 'band-bg', x: LABEL_W, y: yg, width: WIDTH, height: BAND, fill: REGION_COLORS.free }));
    for (const c of coalesced(regions, (_r, i) => [Math.floor(at[i] as number), Math.ceil(at[i + 1] as number)], WIDTH)) {
      parts.push(summaryRect(c, LABEL_W + c.slot0, c.slot1 - c.slot0, yg, BAND, 'log'));
    }
  } else {
    regions.forEach((r, i) => {
      const w = (WIDTH * (weights[i] as number)) / sum;
      parts.push(regionRect(r, x, w, yg, BAND, 'log'));
      x += w;
    });
  }
  parts.push(el('text', { x: WIDTH + 6, y: yg + 17, class: 'band-label' }, 'log'));
  return el('g', { class: 'numa-node', 'data-node': node.id, 'data-regions': regions.length }, parts.join(''));
}

/** Pages of each kind over every node (the summary's handover metadata is the same count). */
export function regionPages(nodes: readonly NumaNode[], view: HandoverView): Record<RegionKind, number> {
  const out: Record<RegionKind, number> = { metadata: 0, preserved: 0, scratch: 0, free: 0 };
  for (const n of nodes) for (const r of nodeRegions(n, view)) out[r.kind] += r.end - r.start;
  return out;
}

export function memmapSvg(nodes: readonly NumaNode[], view: HandoverView | null): string {
  if (!view) {
    return el('svg', { id: 'memmap', xmlns: 'http://www.w3.org/2000/svg', viewBox: `0 0 ${WIDTH + 60} 40`, width: WIDTH + 60, height: 40, 'data-nodes': 0 },
      el('text', { x: 0, y: 24 }, 'No handover: the update stopped before the jump.'));
  }
  const groups: string[] = [];
  let y = 0;
  for (const node of nodes) {
    groups.push(nodeGroup(node, nodeRegions(node, view), y));
    y += 18 + 2 * BAND + 6 + 22;
  }
  const legendY = y + 4;
  const kinds: RegionKind[] = ['metadata', 'preserved', 'scratch', 'free'];
  const legend = kinds.map((k, i) => el('g', { class: 'legend-item', transform: `translate(${(i % 2) * 480},${legendY + Math.floor(i / 2) * 20})` },
    el('rect', { x: 0, y: 0, width: 14, height: 14, fill: REGION_COLORS[k] }) + el('text', { x: 20, y: 12, class: 'legend-label' }, esc(REGION_LABELS[k])))).join('');
  const height = legendY + 42;
  const pages = regionPages(nodes, view);
  return el('svg', {
    id: 'memmap', xmlns: 'http://www.w3.org/2000/svg', viewBox: `0 0 ${WIDTH + 60} ${height}`, width: WIDTH + 60, height,
    role: 'img', 'aria-label': 'physical memory at the kexec', 'data-nodes': nodes.length,
    'data-metadata-pages': pages.metadata, 'data-data-pages': pages.preserved,
  }, groups.join('') + legend);
}
