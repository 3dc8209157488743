/**
 * LUO benchmark: create / preserve / kexec / retrieve / finish through the raw ioctls, for
 * many sessions with one file each and for one session with very many files. Prints the cost
 * per operation and the peak RSS; never asserts on time.
 *
 *   npm run bench -- luo                     (all scenarios)
 *   node --import tsx bench/luo.ts sessions  (after tsc -b; or: files, or a custom N×M)
 *
 * Files are "testfiles" (the in-tree test handler): every file has a preserved header page
 * plus its content pages, so the per-file cost includes real KHO preservation.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createMachine } from '@liveupdate/hw';
import { boot, type Kernel } from '@liveupdate/runtime';
import {
  createSession, ensureNofile, finishSession, openLuo, preserveFd, retrieveFd, retrieveSession,
} from '../packages/runtime/test/support/client.js';
import { createTestFile, readTestFile, testFilePlugin } from '../packages/runtime/test/support/testfile.js';

const CMDLINE = 'kho=on liveupdate=on';

interface Scenario {
  readonly name: string;
  readonly sessions: number;
  readonly filesPerSession: number;
  /** Content bytes per file (0: header page only). */
  readonly bytes: number;
}

const SCENARIOS: Record<string, Scenario> = {
  sessions: { name: '2000 sessions x 1 file', sessions: 2000, filesPerSession: 1, bytes: 64 },
  files: { name: '1 session x 100,000 files', sessions: 1, filesPerSession: 100_000, bytes: 0 },
};

const us = (ms: number, n: number): string => `${((ms * 1000) / Math.max(1, n)).toFixed(2)} µs`;
const mib = (kib: number): string => `${(kib / 1024).toFixed(0)} MiB`;

function content(i: number, n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let j = 0; j < n; j++) b[j] = (i * 31 + j) & 0xff;
  return b;
}

function run(sc: Scenario): Record<string, string> {
  const total = sc.sessions * sc.filesPerSession;
  const machine = createMachine({ memory: '16GiB' });
  const plugin = testFilePlugin();
  const k1 = boot(machine, { cmdline: CMDLINE, plugins: [plugin] });
  const p1 = k1.spawn('vmm');
  ensureNofile(p1, sc.sessions + 16);
  const dev = openLuo(p1);

  // Only LUO's work is timed: making the testfiles is the file type's cost.
  let t: number;
  let tCreate = 0;
  let tPreserve = 0;
  const sfds: number[] = [];
  for (let s = 0; s < sc.sessions; s++) {
    t = performance.now();
    sfds.push(createSession(p1, dev, `bench-${s}`));
    tCreate += performance.now() - t;
  }
  for (let s = 0; s < sc.sessions; s++) {
    for (let f = 0; f < sc.filesPerSession; f++) {
      const fd = createTestFile(k1, p1, content(s * sc.filesPerSession + f, sc.bytes));
      t = performance.now();
      preserveFd(p1, sfds[s] as number, fd, f);
      tPreserve += performance.now() - t;
      p1.close(fd); // LUO holds its own reference
    }
  }

  t = performance.now();
  const k2: Kernel = k1.kexec({ cmdline: CMDLINE, plugins: [plugin] });
  const tKexec = performance.now() - t;

  const p2 = k2.spawn('vmm');
  ensureNofile(p2, sc.sessions + 16);
  t = performance.now();
  const dev2 = openLuo(p2); // the first open deserializes
  const tOpen = performance.now() - t;

  let tRetrieveSession = 0;
  let tRetrieveFd = 0;
  let tFinish = 0;
  let checked = 0;
  for (let s = 0; s < sc.sessions; s++) {
    t = performance.now();
    const sfd = retrieveSession(p2, dev2, `bench-${s}`);
    tRetrieveSession += performance.now() - t;
    for (let f = 0; f < sc.filesPerSession; f++) {
      t = performance.now();
      const fd = retrieveFd(p2, sfd, f);
      tRetrieveFd += performance.now() - t;
      // Spot-check content (cheap: a sample), then drop the fd.
      if ((s * sc.filesPerSession + f) % 997 === 0) {
        const got = readTestFile(k2, p2, fd);
        const want = content(s * sc.filesPerSession + f, sc.bytes);
        if (got.length !== want.length || got.some((b, i) => b !== want[i])) throw new Error(`content mismatch in session ${s} file ${f}`);
        checked++;
      }
      p2.close(fd);
    }
    t = performance.now();
    finishSession(p2, sfd);
    tFinish += performance.now() - t;
    p2.close(sfd);
  }
  const leaked = k2.khoIn?.leaked();
  if (leaked && leaked.blocks !== 0) throw new Error(`leaked ${leaked.blocks} preserved blocks`);

  return {
    scenario: sc.name,
    'create session': us(tCreate, sc.sessions),
    'preserve fd': us(tPreserve, total),
    'kexec total': `${tKexec.toFixed(1)} ms`,
    'kexec per file': us(tKexec, total),
    'first open (deserialize)': `${tOpen.toFixed(1)} ms`,
    'retrieve session': us(tRetrieveSession, sc.sessions),
    'retrieve fd': us(tRetrieveFd, total),
    'finish (per file)': us(tFinish, total),
    'finish (per session)': us(tFinish, sc.sessions),
    'content checks': String(checked),
    'peak RSS': mib(process.resourceUsage().maxRSS),
  };
}

const args = process.argv.slice(2).filter((a) => a !== 'luo');
const picked: Scenario[] = [];
for (const a of args.length ? args : Object.keys(SCENARIOS)) {
  const custom = /^(\d+)x(\d+)$/.exec(a);
  if (custom) picked.push({ name: `${custom[1]} sessions x ${custom[2]} files`, sessions: Number(custom[1]), filesPerSession: Number(custom[2]), bytes: 0 });
  else if (SCENARIOS[a]) picked.push(SCENARIOS[a]);
  else throw new Error(`unknown scenario '${a}' (known: ${Object.keys(SCENARIOS).join(', ')}, or NxM)`);
}

if (picked.length > 1 && !process.env.LUO_BENCH_CHILD) {
  // One process per scenario, so each peak RSS is that scenario's own.
  console.log(`LUO bench (node ${process.version}); one process per scenario`);
  const me = fileURLToPath(import.meta.url);
  for (const a of args.length ? args : Object.keys(SCENARIOS)) {
    const r = spawnSync(process.execPath, [...process.execArgv, me, a], { stdio: 'inherit', env: { ...process.env, LUO_BENCH_CHILD: '1' } });
    if (r.status !== 0) process.exit(r.status ?? 1);
  }
} else {
  if (!process.env.LUO_BENCH_CHILD) console.log(`LUO bench (node ${process.version})`);
  // Warm the JIT on a small run so the first scenario is not charged for compilation.
  run({ name: 'warm-up', sessions: 50, filesPerSession: 20, bytes: 64 });
  for (const sc of picked) {
    const r = run(sc);
    console.log(`\n${r.scenario}`);
    for (const [k, v] of Object.entries(r)) if (k !== 'scenario') console.log(`  ${k.padEnd(26)} ${v}`);
  }
}
