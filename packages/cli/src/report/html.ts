/**
 * The HTML report of one live update: a single self-contained page (inline CSS, inline SVG,
 * a few lines of inline script, no external assets) with the summary, an SVG timeline of the
 * phases, an SVG map of physical memory at the kexec, the files and the handover's root FDT.
 */
import type { NumaNode } from '@liveupdate/hw';
import type { HandoverView } from '../handover/decode.js';
import { bytes, count, ms, plural } from '../output/format.js';
import type { RunSummary } from '../output/summary.js';
import { memmapSvg } from './memmap.js';
import { esc } from './svg.js';
import { timelineSvg } from './timeline.js';

const CSS = `
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px auto; max-width: 1040px; color: #1b1f24; padding: 0 16px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.sub { color: #555; margin: 0 0 12px; }
.verdict { display: inline-block; padding: 3px 10px; border-radius: 4px; font-weight: 600; color: #fff; }
.verdict.ok { background: #2e8540; } .verdict.failed { background: #c0392b; }
table { border-collapse: collapse; width: 100%; } td, th { text-align: left; padding: 4px 8px; border-bottom: 1px solid #eee; vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.kv td:first-child { width: 150px; color: #555; white-space: nowrap; }
svg text { font: 12px system-ui, sans-serif; fill: #1b1f24; } svg .phase-ms { fill: #fff; font-weight: 600; }
svg .part-label, svg .band-label { font-size: 11px; fill: #444; } svg .boundary-label { font-size: 11px; fill: #222; font-style: italic; }
svg rect.seg:hover, svg rect.phase:hover, svg rect.part:hover { stroke: #000; stroke-width: 1; }
#hover { min-height: 1.4em; color: #333; font-family: ui-monospace, monospace; font-size: 12px; margin-top: 4px; }
pre { background: #f6f8fa; padding: 10px; overflow: auto; font-size: 12px; }
.fail { color: #c0392b; font-weight: 600; } .pass { color: #2e8540; font-weight: 600; }
`;

// Shows the hovered region or phase, and records what the browser actually laid out (tests
// read these attributes back from the rendered DOM).
const SCRIPT = `
(function () {
  var info = document.getElementById('hover');
  document.querySelectorAll('rect.seg, rect.phase, rect.part').forEach(function (r) {
    r.addEventListener('mouseenter', function () { var t = r.querySelector('title'); info.textContent = t ? t.textContent : ''; });
  });
  document.querySelectorAll('svg[id]').forEach(function (svg) {
    var b = svg.getBBox();
    svg.setAttribute('data-rendered-width', String(Math.round(b.width)));
    svg.setAttribute('data-rendered-height', String(Math.round(b.height)));
  });
  var visible = 0;
  document.querySelectorAll('rect.seg').forEach(function (r) { if (r.getBoundingClientRect().width > 0) visible++; });
  document.body.setAttribute('data-visible-segments', String(visible));
  document.body.setAttribute('data-rendered', 'yes');
})();
`;

function kvRows(x: RunSummary): Array<[string, string]> {
  const rows: Array<[string, string]> = [
    ['scenario', `${x.scenario.name}${x.scenario.description ? ` — ${x.scenario.description}` : ''}`],
    ['machine', `${bytes(x.scenario.machine.memoryBytes)}, ${plural(x.scenario.machine.numaNodes, 'NUMA node')}`],
    ['kernels', `${x.scenario.from.release} → ${x.scenario.to.release} (cmdline "${x.scenario.cmdline}")`],
    ['broker', x.scenario.broker],
    ['outcome', `${x.outcome}${x.error ? `: ${x.error}` : ''}`],
    ['preserved', `${plural(x.preserved.sessions, 'session')}, ${plural(x.preserved.objects, 'object')}, ${count(x.preserved.pages)} pages resident`],
    ['restored', `${plural(x.restored.sessions, 'session')}, ${plural(x.restored.objects, 'object')}, ${count(x.restored.pages)} pages; ${plural(x.restored.finishedSessions, 'session')} finished`],
    ['formats', [...x.formats.files.map((u) => `${u.family} ${u.version ?? '?'} ("${u.compatible}", ${plural(u.files, 'file')})`),
      ...(x.formats.kho ? [`KHO "${x.formats.kho}"`] : []), ...(x.formats.luo ? [`LUO "${x.formats.luo}"`] : []), ...x.formats.flbs.map((f) => `FLB "${f}"`)].join(', ')],
  ];
  if (x.handover) rows.push(['handover', `${count(x.handover.metadataPages)} metadata pages (${bytes(x.handover.metadataBytes)}), ${count(x.handover.preservedBlocks)} preserved blocks, ${count(x.handover.trackerNodes)} tracker nodes`]);
  rows.push(['leaks', `${x.leaks.blocks} preserved blocks unclaimed, ${x.leaks.poisonReads} poisoned reads`]);
  rows.push(['data check', x.dataCheck.passed
    ? `passed: ${plural(x.dataCheck.objectsChecked, 'object')}; ${Object.entries(x.dataCheck.counts).map(([k, v]) => `${count(v)} ${k}`).join(', ')}`
    : x.outcome === 'updated' || x.dataCheck.objectsChecked > 0 ? `FAILED: ${x.dataCheck.problems.join('; ')}` : 'not run: no live update happened']);
  for (const c of x.sectionChecks) rows.push([`section ${c.section}`, `${c.ok ? 'passed' : 'FAILED'}: ${c.summary}${c.problems.length ? ` (${c.problems.join('; ')})` : ''}`]);
  if (x.unsupported) rows.push([`not supported by ${x.unsupported.side}`, x.unsupported.reasons.join('; ')]);
  rows.push(['liveupdate_num', `${x.liveupdateNum.before ?? '-'} → ${x.liveupdateNum.after ?? '-'}`]);
  for (const v of x.violations) rows.push(['invariant', v]);
  return rows;
}

export function renderReport(x: RunSummary, numaNodes: readonly NumaNode[], view: HandoverView | null): string {
  const kv = kvRows(x).map(([k, v]) => `<tr><td>${esc(k)}</td><td>${esc(v)}</td></tr>`).join('\n');
  const files = x.objects.map((f) => `<tr><td>${esc(f.session)}</td><td class="num">${f.token}</td><td>${esc(f.type)}</td><td>${esc(f.what)}</td>`
    + `<td class="num">${count(f.preservedPages)}</td>`
    + `<td class="num">${f.restoredPages === null ? '-' : count(f.restoredPages)}</td><td>${esc(f.compatible ?? '-')}</td>`
    + `<td class="${f.check === 'passed' ? 'pass' : f.check === 'not run' ? '' : 'fail'}">${esc(f.check)}</td></tr>`).join('\n');
  const verdict = x.ok ? 'OK' : x.outcome === 'rolled-back' ? 'ROLLED BACK' : x.outcome === 'refused-incoming' ? 'REFUSED' : x.outcome === 'not-supported' ? 'NOT SUPPORTED' : 'FAILED';
  const because = x.ok
    ? (x.scenario.expect === 'updated' ? 'every invariant held: nothing leaked, every byte came back' : `${x.outcome}, as the scenario expects`)
    : x.outcome === 'rolled-back' ? `the update was refused before the jump and rolled back; kernel ${x.scenario.from.release} keeps running${x.error ? `: ${x.error}` : ''}`
      : x.outcome === 'refused-incoming' ? `kernel ${x.scenario.to.release} refused the handover${x.error ? `: ${x.error}` : ''}`
        : x.outcome === 'not-supported' ? (x.error ?? 'a kernel cannot handle the scenario\'s objects')
          : 'the live update did not keep every invariant';
  const phases = x.phases.map((p) => `<tr><td>${esc(p.phase)}</td><td class="num">${esc(ms(p.ms))}</td><td>${esc((p.parts ?? []).map((q) => `${q.phase} ${ms(q.ms)}`).join(', '))}</td></tr>`).join('\n');
  const dts = view?.fdt ? `<h2>Handover root FDT</h2>\n<pre id="dts">${esc(view.fdt.dts)}</pre>` : '';
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>liveupdate report: ${esc(x.scenario.name)}</title>
<style>${CSS}</style>
</head>
<body>
<h1>Live update ${esc(x.scenario.from.release)} → ${esc(x.scenario.to.release)}: ${esc(x.scenario.name)}</h1>
<p class="sub"><span class="verdict ${x.ok ? 'ok' : 'failed'}" id="verdict">${verdict}</span>
 ${esc(because)}</p>
<h2>Summary</h2>
<table class="kv" id="summary">
${kv}
</table>
<h2>Timeline</h2>
${timelineSvg(x.phases)}
<table id="phases"><tr><th>phase</th><th>time</th><th>steps</th></tr>
${phases}
</table>
<h2>Physical memory at the kexec</h2>
${memmapSvg(numaNodes, view)}
<div id="hover"></div>
<h2>Objects</h2>
<table id="files"><tr><th>session</th><th>token</th><th>type</th><th>object</th><th>preserved pages</th><th>restored pages</th><th>handed over as</th><th>data check</th></tr>
${files}
</table>
${dts}
<script>${SCRIPT}</script>
</body>
</html>
`;
}
