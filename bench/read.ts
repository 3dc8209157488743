/**
 * Reading guest RAM back: does read(2)/pread(2) of a memfd cost the resident pages it touches
 * plus the bytes asked, with no large allocation per call?
 *
 * Files (order-0 shmem unless said): 64 MiB written (every page resident), 1 GiB never
 * written (all holes), 1 GiB with one page in 100 written, and 64 MiB of hugeTLB 2 MiB folios.
 * Each is read front to back in 4 MiB steps (the CLI's verification step), two ways:
 *   - pread:      Process.pread, a new array per call;
 *   - preadInto:  Process.preadInto into one reused 4 MiB buffer.
 * Printed: CPU us per 4 KiB page read (median of the runs), and for the sparse file the cost
 * split into resident and hole pages using the dense and hole figures.
 *
 *   npm run bench -- read
 *   npm run bench -- read --runs 9     # median of 9 (default 5)
 */
import { PAGE_SIZE, createMachine } from '@liveupdate/hw';
import { boot, type Process } from '@liveupdate/sdk';
import memfd, { MFD_HUGETLB, MFD_HUGE_2MB, memfdCreate, memfdResidentPages, memfdStore } from '@liveupdate/plugin-memfd';

const runsAt = process.argv.indexOf('--runs');
const RUNS = runsAt >= 0 ? Number(process.argv[runsAt + 1]) : 5;
const MiB = 2 ** 20;
const STEP = 4 * MiB;

const median = (xs: readonly number[]): number => {
  const a = [...xs].sort((x, y) => x - y);
  const m = a.length >> 1;
  return a.length % 2 === 1 ? (a[m] as number) : ((a[m - 1] as number) + (a[m] as number)) / 2;
};

/** CPU milliseconds (user + system) of fn: on a shared machine, time preempted is not the read path's. */
function cpuMs(fn: () => void): number {
  const c = process.cpuUsage();
  fn();
  const d = process.cpuUsage(c);
  return (d.user + d.system) / 1e3;
}

const machine = createMachine({ memory: '64GiB', numaNodes: 2 });
const k = boot(machine, { cmdline: 'kho=on liveupdate=on hugepagesz=2M hugepages=64', plugins: [memfd()], release: '7.1.0' });
const p: Process = k.spawn('vmm');
const data = new Uint8Array(STEP);
for (let i = 0; i < data.length; i++) data[i] = (i * 31 + 7) & 0xff;

interface File { readonly name: string; readonly fd: number; readonly size: number }

function shmem(name: string, size: number, fill: (fd: number) => void): File {
  const fd = memfdCreate(p, name, 0);
  p.ftruncate(fd, size);
  fill(fd);
  return { name, fd, size };
}

const dense = shmem('64 MiB, all written', 64 * MiB, (fd) => { for (let off = 0; off < 64 * MiB; off += STEP) p.pwrite(fd, data, off); });
const holes = shmem('1 GiB, never written', 1024 * MiB, () => undefined);
const sparse = shmem('1 GiB, 1 page in 100 written', 1024 * MiB, (fd) => {
  for (let pg = 0; pg < (1024 * MiB) / PAGE_SIZE; pg += 100) p.pwrite(fd, data.subarray(0, PAGE_SIZE), pg * PAGE_SIZE);
});
const hugeFd = memfdCreate(p, 'huge', MFD_HUGETLB | MFD_HUGE_2MB);
p.ftruncate(hugeFd, 64 * MiB);
for (let off = 0; off < 64 * MiB; off += STEP) memfdStore(p, hugeFd, data, off);
const huge: File = { name: '64 MiB hugeTLB, all written', fd: hugeFd, size: 64 * MiB };

const buffer = new Uint8Array(STEP);
const readAll = (f: File, into: boolean): void => {
  for (let off = 0; off < f.size; off += STEP) {
    if (into) p.preadInto(f.fd, buffer, off);
    else p.pread(f.fd, STEP, off);
  }
};

/** Median CPU microseconds per page over RUNS passes (after one warm-up pass). */
function usPerPage(f: File, into: boolean): number {
  readAll(f, into);
  return (median(Array.from({ length: RUNS }, () => cpuMs(() => readAll(f, into)))) * 1e3) / (f.size / PAGE_SIZE);
}

console.log(`read path benchmark; node ${process.version}; CPU us per 4 KiB page read, median of ${RUNS} passes, 4 MiB per call`);
console.log(`  ${'file'.padEnd(34)} ${'resident pages'.padStart(14)} ${'pread'.padStart(10)} ${'preadInto'.padStart(10)}`);
const cost: Record<string, [number, number]> = {};
for (const f of [dense, holes, sparse, huge]) {
  const a = usPerPage(f, false);
  const b = usPerPage(f, true);
  cost[f.name] = [a, b];
  console.log(`  ${f.name.padEnd(34)} ${String(memfdResidentPages(p, f.fd)).padStart(14)} ${a.toFixed(3).padStart(10)} ${b.toFixed(3).padStart(10)}`);
}
const [, residentUs] = cost[dense.name] as [number, number];
const [, holeUs] = cost[holes.name] as [number, number];
const [, sparseUs] = cost[sparse.name] as [number, number];
const predicted = 0.01 * residentUs + 0.99 * holeUs;
console.log(`\npreadInto: ${residentUs.toFixed(3)} us per resident page, ${holeUs.toFixed(3)} us per hole page (${(residentUs / holeUs).toFixed(1)}x)`);
console.log(`sparse file: ${sparseUs.toFixed(3)} us per page measured, ${predicted.toFixed(3)} predicted from 1% resident + 99% holes (ratio ${(sparseUs / predicted).toFixed(2)})`);
