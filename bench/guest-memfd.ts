/**
 * guest_memfd preservation at scale: a VM with guest_memfd RAM, PRESERVE_FD of the VM file and
 * the guest_memfd, kexec, RETRIEVE_FD (the VM on demand), in
 *   dense   a 64 GiB guest, every page touched (synthetic per-page content)
 *   sparse  a 64 GiB guest, 1% touched in 2 MiB runs (every 100th run)
 * with upstream guest_memfd_luo_v1 (a vmalloc'd array of 16-byte records: 16 B per folio plus
 * one 4 KiB chunk page per 511 array pages) and the sparse 2.0.0 format (KHO xarray entries:
 * 8 B per folio plus table nodes). Prints the time of each phase, per-page costs and the format
 * metadata per preserved page, counted by the plugin's own decoder from the bytes the next
 * kernel receives. Never asserts on time.
 *
 *   npm run bench -- guest-memfd                     (every scenario and format; one process each)
 *   node --import tsx bench/guest-memfd.ts sparse 1  (one run: scenario, format major)
 *   GUEST_GIB=8 npm run bench -- guest-memfd         (a smaller guest)
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { PAGE_SIZE, createMachine } from '@liveupdate/hw';
import {
  Kernel, boot, createSession, finishSession, openLiveupdate, preserveFd, retrieveFd, retrieveSession,
} from '@liveupdate/sdk';
import guestMemfd, { gmemCheckSynthetic, gmemFillSynthetic, kvmAbi, kvmCreateGuestMemfdFd, kvmCreateVm } from '@liveupdate/plugin-guest-memfd';

const GiB = 2 ** 30;
const MiB = 2 ** 20;
const SEED = 0x6e3d;
const GUEST = (Number(process.env.GUEST_GIB) || 64) * GiB;

interface Scenario { readonly name: string; readonly what: string; readonly touched: ReadonlyArray<readonly [number, number]> }
function everyNth(size: number, run: number, every: number): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (let off = 0; off + run <= size; off += run * every) out.push([off, run]);
  return out;
}
const SCENARIOS: Record<string, Scenario> = {
  dense: { name: 'dense', what: `${GUEST / GiB} GiB guest, every page touched`, touched: [[0, GUEST]] },
  sparse: { name: 'sparse', what: `${GUEST / GiB} GiB guest, 1% touched in 2 MiB runs`, touched: everyNth(GUEST, 2 * MiB, 100) },
};

function run(sc: Scenario, major: 1 | 2): void {
  const writes = major === 1 ? ['1.0.0'] : ['1.0.0', '2.0.0'];
  const cfg = { cmdline: 'kho=on liveupdate=on', plugins: [guestMemfd({ writes })], release: '7.1.0' };
  const machine = createMachine({ memory: `${GUEST / GiB + 16}GiB` });
  const ms: Record<string, number> = {};
  const time = <R>(phase: string, fn: () => R): R => {
    const t0 = performance.now();
    try { return fn(); } finally { ms[phase] = performance.now() - t0; }
  };
  const k1 = boot(machine, cfg);
  const p1 = k1.spawn('vmm');
  const kvm = p1.open('/dev/kvm');
  const vm = kvmCreateVm(p1, kvm, 0);
  const gmem = kvmCreateGuestMemfdFd(p1, vm, GUEST, kvmAbi.GUEST_MEMFD_FLAG_MMAP | kvmAbi.GUEST_MEMFD_FLAG_INIT_SHARED);
  time('fill', () => { for (const [off, len] of sc.touched) gmemFillSynthetic(p1, gmem, off, len, SEED + off / PAGE_SIZE); });
  const dataPages = sc.touched.reduce((n, [, len]) => n + len / PAGE_SIZE, 0);
  const s = createSession(p1, openLiveupdate(p1), 'vm');
  time('preserve', () => { preserveFd(p1, s, vm, 1); preserveFd(p1, s, gmem, 2); });
  const files = k1.luo.sessions.outgoing[0]?.fileSet.files ?? [];
  const gmemSer = files.find((f) => f.token === 2n);
  time('kexec (freeze, jump)', () => k1.kexecJump(cfg));
  const decoder = cfg.plugins[0]?.tools.decoders?.find((d) => d.target.kind === 'file' && d.target.family === 'guest_memfd');
  const decoded = decoder?.decode(machine.memory, gmemSer?.serializedData ?? 0n, `${major}.0.0`, { label: 'bench' });
  if (!decoded || decoded.problems.length > 0) throw new Error(`decoder: ${decoded?.problems.join('; ') ?? 'missing'}`);
  const metaPages = decoded.pages.reduce((n, p) => n + (p.count ?? 1), 0);
  const byStructure = new Map<string, number>();
  for (const p of decoded.pages) byStructure.set(p.structure, (byStructure.get(p.structure) ?? 0) + (p.count ?? 1));

  const k2 = time('boot B', () => Kernel.boot(machine, cfg));
  const p2 = k2.spawn('vmm');
  const fd2 = time('retrieve', () => {
    const s2 = retrieveSession(p2, openLiveupdate(p2), 'vm');
    const fd = retrieveFd(p2, s2, 2);
    finishSession(p2, s2);
    return fd;
  });
  const ok = time('verify', () => sc.touched.every(([off, len]) => gmemCheckSynthetic(p2, fd2, off, len, SEED + off / PAGE_SIZE)));
  if (!ok) throw new Error(`${sc.name} ${major}.x: guest content differs after the live update`);
  if ((k2.khoIn?.leaked().blocks ?? 0) !== 0) throw new Error('preserved blocks leaked');

  console.log(`\n${sc.what} — guest_memfd ${major === 1 ? 'guest_memfd_luo_v1' : '2.0.0 (sparse)'}`);
  for (const [phase, t] of Object.entries(ms)) {
    const per = phase === 'preserve' || phase === 'retrieve' ? `  (${((t * 1000) / dataPages).toFixed(3)} µs per page)` : '';
    console.log(`  ${phase.padEnd(24)} ${t.toFixed(1).padStart(9)} ms${per}`);
  }
  console.log(`  ${'preserved data pages'.padEnd(24)} ${dataPages}`);
  console.log(`  ${'format metadata'.padEnd(24)} ${metaPages} pages (${[...byStructure].map(([k, v]) => `${v} ${k}`).join(' + ')}) = ${((metaPages * PAGE_SIZE) / dataPages).toFixed(3)} B per preserved page`);
  console.log(`  ${'peak RSS'.padEnd(24)} ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MiB`);
}

const args = process.argv.slice(2).filter((a) => a !== 'guest-memfd');
if (args.length === 2) {
  const sc = SCENARIOS[args[0] as string];
  const major = Number(args[1]);
  if (!sc || (major !== 1 && major !== 2)) throw new Error(`usage: guest-memfd.ts <${Object.keys(SCENARIOS).join('|')}> <1|2>`);
  run(sc, major);
} else {
  console.log(`guest_memfd bench (node ${process.version}); one process per run`);
  const me = fileURLToPath(import.meta.url);
  for (const name of args.length ? args : Object.keys(SCENARIOS)) {
    for (const major of ['1', '2']) {
      const r = spawnSync(process.execPath, [...process.execArgv, me, name, major], { stdio: 'inherit' });
      if (r.status !== 0) process.exit(r.status ?? 1);
    }
  }
}
