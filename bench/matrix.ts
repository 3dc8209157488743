/**
 * What qualifying a version pair costs: the `liveupdate` CLI's start-up, the first pair, and the
 * per-pair cost at 16 and 256 pairs, in the in-process runner (`runMatrix`) and in the whole
 * `liveupdate matrix` process, against a real kexec cycle.
 *
 * A pair: one session, two small memfds (a sealed 64 KiB pattern file, every byte checked; a
 * 1 MiB synthetic file a quarter written), preserve -> kexec -> retrieve -> check -> finish, every
 * invariant of the harness, on a 1 GiB machine. The plugin versions: 16 builds of the current
 * @liveupdate/plugin-memfd made by this bench only, through the public surface: a package folder
 * per version whose factory returns the current plugin under that version number, found by the
 * CLI through LIVEUPDATE_PLUGIN_PATH. 16 pairs are the first 4 builds (4x4), 256 pairs all 16 (16x16).
 *
 * What it prints (targets from the qualification-path issue):
 * - start-up: `liveupdate --help` as wall and CPU time, bare `node -e 0` the same, and the CLI's
 *   own start-up net of bare node (target < 150 ms);
 * - the first pair: from the matrix process's start to its first cell line (a probe loaded with
 *   --import timestamps it), minus the start-up above (target < 10 ms);
 * - per pair at 16 and 256 pairs, whole process, with and without the start-up (target <= 5 ms),
 *   and the ratio of each figure to a 5 s real kexec cycle (target >= 1000x).
 * CPU times count every thread of the process (V8 compiles and collects garbage on helper
 * threads), so on this 2-core machine a short run's CPU time can exceed its wall time.
 *
 * The real kexec cycle (5 s) is NOT measured here: it is the figure measured outside, a same-kernel
 * kexec in QEMU TCG on this machine (Debian cloud kernel, busybox initramfs, no test work): 4.96 s median.
 *
 *   npm run bench -- matrix
 *   npm run bench -- matrix --runs 9     # start-up median of 9 spawns (default 7), 16-pair runs max(3, runs/2)
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const runsAt = process.argv.indexOf('--runs');
const RUNS = runsAt >= 0 ? Number(process.argv[runsAt + 1]) : 7;
const REAL_KEXEC_MS = 5000;
const PLUGIN = '@liveupdate/plugin-memfd';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const BIN = path.join(root, 'packages/cli/dist/bin.js');
const CLI = pathToFileURL(path.join(root, 'packages/cli/dist/index.js')).href;
const MEMFD = pathToFileURL(path.join(root, 'packages/plugin-memfd/dist/index.js')).href;

const median = (xs: readonly number[]): number => {
  const a = [...xs].sort((x, y) => x - y);
  const m = a.length >> 1;
  return a.length % 2 === 1 ? (a[m] as number) : ((a[m - 1] as number) + (a[m] as number)) / 2;
};
const f1 = (n: number): string => n.toFixed(1);
const f2 = (n: number): string => n.toFixed(2);

// --- the plugin builds and the scenario, in a temporary folder ---------------------------------
const work = mkdtempSync(path.join(tmpdir(), 'liveupdate-bench-matrix-'));
const builds = path.join(work, 'builds');
const versions = Array.from({ length: 16 }, (_, i) => `3.${100 + i}.0`);
for (const v of versions) {
  const dir = path.join(builds, `plugin-memfd-${v}`);
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: PLUGIN, version: v, type: 'module', exports: './index.js' }));
  writeFileSync(path.join(dir, 'index.js'), [
    `import memfd from ${JSON.stringify(MEMFD)};`,
    '// The current plugin under another version number (the bench\'s 16 releases).',
    `export default function plugin() { const p = memfd(); return { ...p, version: ${JSON.stringify(v)}, manifest: { ...p.manifest, version: ${JSON.stringify(v)} } }; }`,
  ].join('\n'));
}
const scenarioFile = path.join(work, 'pair.json');
writeFileSync(scenarioFile, JSON.stringify({
  name: 'pair',
  description: 'one session, two small memfds',
  machine: { memory: '1GiB', numaNodes: 1 },
  from: { release: '7.1.0', plugins: { [PLUGIN]: versions[0] } },
  to: { release: '7.2.0', plugins: { [PLUGIN]: versions[0] } },
  sessions: [{
    name: 'vm',
    objects: [
      { token: 1, type: 'memfd', size: '64KiB', fill: 'pattern', seals: ['shrink', 'grow'] },
      { token: 2, type: 'memfd', size: '1MiB', fill: 'synthetic', touched: 0.25 },
    ],
  }],
}, null, 2));
process.env.LIVEUPDATE_PLUGIN_PATH = builds;
const env = { ...process.env, FORCE_COLOR: '0' };

// The child's own CPU time (user + system, all its threads), printed as it exits: on a shared
// machine the wall clock also counts the time other processes held the cores. And when the
// first `[matrix]` cell line is written: wall time since the process started (performance.now()
// counts from the process's time origin) and CPU time by then.
const PROBE = [
  'let first = null;',
  'const write = process.stderr.write.bind(process.stderr);',
  "process.stderr.write = (chunk, ...rest) => { if (first === null && String(chunk).startsWith('[matrix] ')) { const u = process.cpuUsage(); first = performance.now() + ' ' + (u.user + u.system) / 1000; } return write(chunk, ...rest); };",
  "process.on('exit', () => { const u = process.cpuUsage(); write('\\nBENCH-CPU ' + (u.user + u.system) / 1000 + ' ' + performance.now() + '\\n' + (first === null ? '' : 'BENCH-FIRST ' + first + '\\n')); });",
].join('\n');
const CPU_PROBE = `data:text/javascript,${encodeURIComponent(PROBE)}`;

interface Spawned { ms: number; cpu: number; exitMs: number; stdout: string; stderr: string; code: number | null; first: { ms: number; cpu: number } | null }

function spawnMs(args: readonly string[]): Spawned {
  const t0 = performance.now();
  const r = spawnSync(process.execPath, ['--import', CPU_PROBE, ...args], { encoding: 'utf8', env, maxBuffer: 64 << 20 });
  const ms = performance.now() - t0;
  if (r.error) throw r.error;
  const end = /^BENCH-CPU ([\d.]+) ([\d.]+)$/m.exec(r.stderr);
  const cpu = Number(end?.[1] ?? NaN);
  const exitMs = Number(end?.[2] ?? NaN);
  const f = /^BENCH-FIRST ([\d.]+) ([\d.]+)$/m.exec(r.stderr);
  return { ms, cpu, exitMs, stdout: r.stdout, stderr: r.stderr, code: r.status, first: f ? { ms: Number(f[1]), cpu: Number(f[2]) } : null };
}

/** CPU milliseconds of this process during fn. */
async function cpuOf<T>(fn: () => Promise<T>): Promise<{ value: T; cpu: number }> {
  const c = process.cpuUsage();
  const value = await fn();
  const d = process.cpuUsage(c);
  return { value, cpu: (d.user + d.system) / 1000 };
}

try {
  // --- start-up ----------------------------------------------------------------------------------
  const nodeOnly: Array<{ ms: number; cpu: number }> = [];
  const help: Array<{ ms: number; cpu: number }> = [];
  for (let i = 0; i < RUNS; i++) {
    nodeOnly.push(spawnMs(['-e', '0']));
    const h = spawnMs([BIN, '--help']);
    if (h.code !== 0) throw new Error(`liveupdate --help exited ${h.code}: ${h.stderr}`);
    help.push(h);
  }
  const [l1, l5] = loadavg();
  const startWall = median(help.map((h) => h.ms));
  const startCpu = median(help.map((h) => h.cpu));
  const nodeWall = median(nodeOnly.map((h) => h.ms));
  const nodeCpu = median(nodeOnly.map((h) => h.cpu));
  console.log(`liveupdate matrix bench: pair = one session, two small memfds, every invariant; ${versions.length} builds of ${PLUGIN}`);
  console.log(`host: ${availableParallelism()} cores, load average ${f1(l1 ?? NaN)} (1 min) ${f1(l5 ?? NaN)} (5 min): wall clocks include waiting for a core, CPU times do not`);
  console.log('');
  console.log(`start-up (median of ${RUNS} spawns each; target < 150 ms):`);
  console.log(`  \`liveupdate --help\`: ${f1(startWall)} ms wall, ${f1(startCpu)} ms CPU`);
  console.log(`  \`node -e 0\` (bare node): ${f1(nodeWall)} ms wall, ${f1(nodeCpu)} ms CPU`);
  console.log(`  the CLI's own start-up, net of bare node: ${f1(startWall - nodeWall)} ms wall, ${f1(startCpu - nodeCpu)} ms CPU`);

  // --- the whole `liveupdate matrix` process --------------------------------------------------------
  const cellTimes = (stderr: string): number[] => [...stderr.matchAll(/^\[matrix\] .* \(([\d.]+) (ms|s)\)$/gm)].map((m) => Number(m[1]) * (m[2] === 's' ? 1000 : 1));
  // `further`: from the first cell line to the process's exit, per pair after the first (the
  // cost of each further pair in one process, the "each further pair in matrix").
  interface ProcessRun { ms: number; cpu: number; cells: number[]; first: { ms: number; cpu: number }; further: { ms: number; cpu: number } }
  const processRun = (n: number): ProcessRun => {
    const r = spawnMs([BIN, 'matrix', scenarioFile, '--plugin', PLUGIN, '--versions', versions.slice(0, n).join(',')]);
    if (r.code !== 0) throw new Error(`liveupdate matrix (${n}x${n}) exited ${r.code}: ${r.stderr.slice(-2000)}\n${r.stdout.slice(-2000)}`);
    const cells = cellTimes(r.stderr);
    if (cells.length !== n * n) throw new Error(`liveupdate matrix (${n}x${n}) printed ${cells.length} cell lines`);
    if (!r.first) throw new Error(`liveupdate matrix (${n}x${n}): the probe saw no cell line`);
    return { ms: r.ms, cpu: r.cpu, cells, first: r.first, further: { ms: (r.exitMs - r.first.ms) / (n * n - 1), cpu: (r.cpu - r.first.cpu) / (n * n - 1) } };
  };
  // The run whose CPU time is the median of `runs` runs (each figure of one run stays from that run).
  const medianRun = (n: number, runs: number): ProcessRun => {
    const all = Array.from({ length: runs }, () => processRun(n)).sort((x, y) => x.cpu - y.cpu);
    return all[all.length >> 1] as ProcessRun;
  };
  const PROCESS_RUNS = Math.max(3, RUNS >> 1);
  const p16 = medianRun(4, PROCESS_RUNS);
  const p256 = medianRun(16, 3);
  const marginal = (p256.ms - p16.ms) / (256 - 16);
  const marginalCpu = (p256.cpu - p16.cpu) / (256 - 16);
  const firsts = [p16, p256].map((p) => p.first);
  const firstWall = median(firsts.map((f) => f.ms));
  const firstCpu = median(firsts.map((f) => f.cpu));
  const firstCell = median([p16, p256].map((p) => p.cells[0] ?? NaN));
  console.log('');
  console.log('the first pair (whole `liveupdate matrix` process; target < 10 ms after start-up):');
  console.log(`  process start -> first pair done: ${f1(firstWall)} ms wall, ${f1(firstCpu)} ms CPU`);
  console.log(`  after start-up (minus \`liveupdate --help\`): ${f1(firstWall - startWall)} ms wall, ${f1(firstCpu - startCpu)} ms CPU; of which the pair itself ${f1(firstCell)} ms wall, loading the command, the scenario and the releases the rest`);
  console.log('');
  console.log(`whole \`liveupdate matrix\` process (the run of median CPU time of ${PROCESS_RUNS} at 16 pairs, of 3 at 256; target <= 5 ms per pair):`);
  for (const [n, p] of [[16, p16], [256, p256]] as const) {
    console.log(`  ${String(n).padStart(3)} pairs: ${f1(p.ms)} ms wall (${f1(p.cpu)} ms CPU) in all; per pair ${f2(p.ms / n)} ms wall (${f2(p.cpu / n)} ms CPU) with start-up, ${f2((p.ms - startWall) / n)} ms wall (${f2((p.cpu - startCpu) / n)} ms CPU) after start-up; median cell ${f2(median(p.cells))} ms`);
  }
  console.log(`  each pair beyond 16: ${f2(marginal)} ms wall, ${f2(marginalCpu)} ms CPU ((256-pair run - 16-pair run) / 240)`);
  for (const [n, p] of [[16, p16], [256, p256]] as const) {
    console.log(`  ${String(n).padStart(3)} pairs, each pair after the first (first cell line -> exit, / ${n - 1}): ${f2(p.further.ms)} ms wall, ${f2(p.further.cpu)} ms CPU`);
  }

  // --- the in-process runner ------------------------------------------------------------------------
  const cli = await import(CLI) as typeof import('@liveupdate/cli');
  const t0 = performance.now();
  const loaded = await cli.loadScenarioFile(scenarioFile);
  await cli.parseVersions(PLUGIN, versions.join(','));
  const prepMs = performance.now() - t0;
  const inProcess = async (n: number): Promise<{ ms: number; cpu: number; first: number; cells: number[] }> => {
    const cells: number[] = [];
    const a = performance.now();
    const { value: rep, cpu } = await cpuOf(() => cli.runMatrix(loaded.scenario, PLUGIN, versions.slice(0, n), { onCell: (c, ms) => { if (c.outcome !== 'ok') throw new Error(`${c.from} -> ${c.to}: ${c.outcome}: ${c.reason ?? ''}`); cells.push(ms); } }));
    const ms = performance.now() - a;
    if (rep.counts.ok !== n * n) throw new Error(`${n}x${n}: ${rep.counts.ok} cells ok`);
    return { ms, cpu, first: cells[0] ?? NaN, cells };
  };
  const i16 = await inProcess(4);
  const i256 = await inProcess(16);
  const w256 = await inProcess(16);
  console.log('');
  console.log(`in-process runner (runMatrix; loading the scenario and the 16 builds first: ${f1(prepMs)} ms):`);
  for (const [what, n, r] of [['16 pairs', 16, i16], ['256 pairs', 256, i256], ['256 pairs again (warm)', 256, w256]] as const) {
    console.log(`  ${what}: ${f1(r.ms)} ms wall (${f1(r.cpu)} ms CPU), ${f2(r.ms / n)} ms wall (${f2(r.cpu / n)} ms CPU) per pair; first pair ${f1(r.first)} ms, median cell ${f2(median(r.cells))} ms`);
  }

  // --- against a real kexec cycle -------------------------------------------------------------------
  const per = [
    ['whole process, 16 pairs, each pair after the first, CPU', p16.further.cpu],
    ['whole process, 256 pairs, each pair after the first, CPU', p256.further.cpu],
    ['whole process, 16 pairs, CPU after start-up', (p16.cpu - startCpu) / 16],
    ['whole process, 256 pairs, CPU after start-up', (p256.cpu - startCpu) / 256],
    ['whole process, 256 pairs, wall with start-up', p256.ms / 256], ['whole process, 256 pairs, CPU with start-up', p256.cpu / 256],
    ['whole process, each pair beyond 16, CPU', marginalCpu],
    ['in-process, 256 pairs, CPU', i256.cpu / 256], ['in-process, 256 pairs warm, CPU', w256.cpu / 256],
  ] as const;
  console.log('');
  console.log(`against a real kexec cycle of ${REAL_KEXEC_MS / 1000} s (measured outside this bench: QEMU TCG same-kernel kexec, 4.96 s median):`);
  for (const [what, ms] of per) console.log(`  ${what}: ${f2(ms)} ms per pair, ${Math.round(REAL_KEXEC_MS / ms)}x cheaper (target: <= 5 ms, >= 1000x)`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
