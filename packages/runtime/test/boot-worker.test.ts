/**
 * The one rule, proven: the incoming kernel boots in a fresh worker_thread over the same
 * memory (SharedArrayBuffer chunks) with nothing but the boot parameters, and restores what
 * the outgoing kernel preserved. The worker runs the compiled packages, so this needs
 * packages/{hw,runtime}/dist: the root `npm test` builds them with `tsc -b` first.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { Worker } from 'node:worker_threads';
import { existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { PAGE_SIZE, createMachine, type Machine } from '@liveupdate/hw';
import { KernelDeadError, type Kernel, type KhoOut } from '@liveupdate/runtime';
import { MiB, coldBoot, encodeFolioRecords, prng, randomBytes, sha256 } from './fixtures/kho-helpers.js';

const hwDist = fileURLToPath(new URL('../../hw/dist/index.js', import.meta.url));
const runtimeDist = fileURLToPath(new URL('../dist/index.js', import.meta.url));
const workerScript = new URL('./fixtures/boot-worker.mjs', import.meta.url);

interface WorkerFolio { phys: number; recordedOrder: number; restoredOrder: number; recordedSha: string; sha: string }
interface WorkerResult {
  bootCount: number;
  cmdline: string;
  isKhoBoot: boolean;
  reservedBlocks: number;
  incomingMetadata: { previousRelease: string; kexecCount: number } | null;
  liveupdateNum: number;
  blob: { phys: number; size: number } | null;
  folios: WorkerFolio[];
  secondRestores: number;
  leakedBefore: { blocks: number; pages: number } | null;
  leakedAfter: { blocks: number; pages: number } | null;
  dmesg: string[];
}

function runWorker(workerData: unknown): Promise<WorkerResult> {
  return new Promise((resolve, reject) => {
    // Plain Node, not vitest's execArgv: that carries `--conditions @liveupdate/source`, which
    // would make the compiled runtime's `import '@liveupdate/hw'` load TypeScript sources.
    const worker = new Worker(workerScript, { workerData, execArgv: [] });
    let result: WorkerResult | undefined;
    worker.on('message', (msg: unknown) => { result = msg as WorkerResult; });
    worker.on('error', reject);
    worker.on('exit', (code) => {
      if (result && code === 0) resolve(result);
      else reject(new Error(`boot worker exited with code ${code} ${result ? 'after' : 'before'} posting its results`));
    });
  });
}

let machine: Machine;
let k1: Kernel;
const preserved: Array<{ phys: number; order: number; sha: string }> = [];
let blobPhys = 0;
let blobSize = 0;
let blocksHandedOver = 0;
let seen: WorkerResult;

beforeAll(async () => {
  for (const dist of [hwDist, runtimeDist]) {
    if (!existsSync(dist)) {
      throw new Error(`${dist} is missing: the boot worker imports the compiled packages; run \`npx tsc -b\` (or \`npm test\`, which builds first)`);
    }
  }
  machine = createMachine({ memory: '16GiB', numaNodes: 2 });
  k1 = coldBoot(machine, 'kho=on liveupdate=on', { release: '7.1.0' });
  const out = k1.khoOut as KhoOut;
  const rand = prng(0xb007);
  let total = 0;
  for (let i = 0; total < 2 * MiB; i++) {
    const order = i % 11;
    const pfn = k1.mm.allocPages(order, i % 2);
    if (pfn === null) throw new Error('test setup: out of memory');
    const bytes = randomBytes(rand, 2 ** order * PAGE_SIZE);
    machine.memory.write(pfn * PAGE_SIZE, bytes);
    out.preserveFolio(pfn, order);
    preserved.push({ phys: pfn * PAGE_SIZE, order, sha: sha256(bytes) });
    total += bytes.length;
  }
  const blob = encodeFolioRecords(preserved);
  blobSize = blob.length;
  blobPhys = out.allocPreserve(blobSize);
  machine.memory.write(blobPhys, blob);
  out.addSubtree('test_kho', blobPhys, blobSize);
  blocksHandedOver = out.survivors().blocks;

  k1.kexecJump('kho=on liveupdate=on');
  seen = await runWorker({
    hwUrl: pathToFileURL(hwDist).href,
    runtimeUrl: pathToFileURL(runtimeDist).href,
    handle: machine.share(),
    subtree: 'test_kho',
    release: '7.2.0',
  });
}, 30_000);

describe('booting the next kernel in a worker thread from bytes alone', () => {
  it('the outgoing kernel is dead after kexecJump', () => {
    expect(() => k1.spawn('late')).toThrow(KernelDeadError);
  });

  it('the worker boots as the second kernel with the command line from the boot parameters', () => {
    expect([seen.bootCount, seen.cmdline, seen.isKhoBoot]).toEqual([2, 'kho=on liveupdate=on', true]);
  });

  it('the worker reserves exactly the blocks k1 handed over', () => {
    expect(seen.reservedBlocks).toBe(blocksHandedOver);
    // Besides the test's blocks: KHO's root FDT and kexec-metadata, LUO's luo_ser and FLB page (one page each).
    expect(blocksHandedOver).toBe(preserved.length + 1 + 4);
    expect(seen.dmesg).toContain(`KHO: reserved ${blocksHandedOver} preserved blocks (${testPages() + 4} pages)`);
  });

  it("the worker reads k1's kexec-metadata and logs it", () => {
    expect(seen.incomingMetadata).toEqual({ previousRelease: '7.1.0', kexecCount: 0 });
    expect(seen.dmesg).toContain('KHO: exec from: 7.1.0 (count 0)');
  });

  it('the worker finds the test_kho blob where k1 put it', () => {
    expect(seen.blob).toEqual({ phys: blobPhys, size: blobSize });
  });

  it('the worker restores every folio at the order k1 preserved', () => {
    expect(seen.folios.map((f) => [f.phys, f.restoredOrder])).toEqual(preserved.map((p) => [p.phys, p.order]));
  });

  it("the digest of every restored folio equals the digest of k1's bytes", () => {
    expect(seen.folios.map((f) => f.sha)).toEqual(preserved.map((p) => p.sha));
  });

  it('the digests the worker read from the preserved blob are the ones k1 wrote', () => {
    expect(seen.folios.map((f) => [f.phys, f.recordedOrder, f.recordedSha])).toEqual(preserved.map((p) => [p.phys, p.order, p.sha]));
  });

  it('a second restore in the worker fails for every folio', () => {
    expect(seen.secondRestores).toBe(0);
  });

  it('leaked() counts every outstanding folio and the blob before restore, and nothing after', () => {
    expect(seen.leakedBefore).toEqual({ blocks: preserved.length + 1, pages: testPages() });
    expect(seen.leakedAfter).toEqual({ blocks: 0, pages: 0 });
  });

  it('LUO in the worker continues the live-update count from the bytes', () => {
    expect(seen.liveupdateNum).toBe(2);
    expect(seen.dmesg).toContain('liveupdate: Live Update Orchestrator enabled, liveupdate_num 2');
  });

  it('the preserved bytes are still intact in the shared memory after the worker ran', () => {
    expect(preserved.map((p) => sha256(machine.memory.read(p.phys, 2 ** p.order * PAGE_SIZE)))).toEqual(preserved.map((p) => p.sha));
  });
});

/** Pages of the test's own preserved blocks: the folios and the kho_alloc_preserve'd blob. */
function testPages(): number {
  return preserved.reduce((n, p) => n + 2 ** p.order, 0) + 2 ** Math.ceil(Math.log2(Math.ceil(blobSize / PAGE_SIZE)));
}
