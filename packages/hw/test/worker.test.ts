import { describe, it, expect, beforeAll } from 'vitest';
import { Worker } from 'node:worker_threads';
import { existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import {
  PAGE_SIZE, POISON_BYTE, PfnRanges, createMachine, fillSyntheticPage, type Machine, type NumaNode,
} from '../src/index.js';

/**
 * The worker imports the compiled package (a worker cannot load TypeScript sources), so this
 * test needs packages/hw/dist: the root `npm test` builds it with `tsc -b` first.
 */
const distIndex = fileURLToPath(new URL('../dist/index.js', import.meta.url));
const workerScript = new URL('./fixtures/attach-worker.mjs', import.meta.url);

const GiB = 2 ** 30;
const BYTES_AT = 5 * GiB + PAGE_SIZE - 6; // 12 bytes straddling pfn 1310720 / 1310721
const BYTES = [0x10, 0x21, 0x32, 0x43, 0x54, 0x65, 0x76, 0x87, 0x98, 0xa9, 0xba, 0xcb];
const U64_AT = 5 * GiB + 64;
const U64 = 0x0102030405060708n;
const FIRST_PFN = (5 * GiB) / PAGE_SIZE; // 1310720, first page of the chunk the main thread wrote
const LATE_AT = 5 * GiB + 2 * PAGE_SIZE + 32; // written by the main thread after share(), same chunk
const LATE = [0xde, 0xad, 0xbe, 0xef];
const SYNTHETIC_AT = 40 * GiB;
const SYNTHETIC_PAGES = 8;
const SEED = 1234;
const POISON_PFN = FIRST_PFN + 5; // same chunk, not a survivor
const WORKER_WRITE_AT = 5 * GiB + 100; // existing chunk, survivor page
const WORKER_BYTES = [1, 2, 3, 4, 5, 6, 7];
const WORKER_U64_AT = 5 * GiB + 15 * PAGE_SIZE; // existing chunk, last page, poisoned before
const WORKER_U64 = 0x1122334455667788n;

interface WorkerSeen {
  readonly memorySize: number;
  readonly numaNodes: readonly NumaNode[];
  readonly bootCount: number;
  readonly cmdline: string;
  readonly khoData: readonly number[];
  readonly bytes: readonly number[];
  readonly lateBytes: readonly number[];
  readonly u64: string;
  readonly synthetic: readonly number[];
  readonly isSyntheticRun: boolean;
  readonly isSyntheticRunOtherSeed: boolean;
  readonly poisonKind: string;
  readonly poisonByte: number;
  readonly survivorKind: string;
  readonly residentBytes: number;
}

function runWorker(workerData: unknown): Promise<WorkerSeen> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(workerScript, { workerData });
    let seen: WorkerSeen | undefined;
    worker.on('message', (msg: unknown) => { seen = msg as WorkerSeen; });
    worker.on('error', reject);
    worker.on('exit', (code) => {
      if (seen && code === 0) resolve(seen);
      else reject(new Error(`worker exited with code ${code} ${seen ? 'after' : 'before'} posting its results`));
    });
  });
}

function syntheticBytes(seed: number, pages: number): number[] {
  const words = new Uint32Array(PAGE_SIZE / 4);
  const out: number[] = [];
  for (let i = 0; i < pages; i++) {
    fillSyntheticPage(words, seed + i);
    out.push(...new Uint8Array(words.buffer));
  }
  return out;
}

describe('a machine shared with a worker_threads Worker', () => {
  let machine: Machine;
  let seen: WorkerSeen;
  let mainSyntheticBefore: number[];
  let poisonReadsByWorker: number;

  beforeAll(async () => {
    if (!existsSync(distIndex)) {
      throw new Error(`${distIndex} is missing: the worker test imports the compiled package; run \`npx tsc -b packages/hw\` (or \`npm test\`, which builds first)`);
    }
    machine = createMachine({ memory: '64GiB', numaNodes: 2 });
    machine.powerOn('first');
    const mem = machine.memory;
    mem.write(BYTES_AT, Uint8Array.from(BYTES));
    mem.writeU64(U64_AT, U64);
    mem.fillSynthetic(SYNTHETIC_AT, SYNTHETIC_PAGES * PAGE_SIZE, SEED);
    mem.writeU8(6 * GiB, 1); // a chunk with no survivor: released at kexec
    machine.kexec({
      survivors: PfnRanges.of([FIRST_PFN, FIRST_PFN + 2], [SYNTHETIC_AT / PAGE_SIZE, SYNTHETIC_AT / PAGE_SIZE + SYNTHETIC_PAGES]),
      params: { cmdline: 'second', khoData: Uint8Array.from([0xc0, 0xff, 0xee]) },
    });
    mainSyntheticBefore = Array.from(mem.read(SYNTHETIC_AT, SYNTHETIC_PAGES * PAGE_SIZE));
    const handle = machine.share();
    mem.write(LATE_AT, Uint8Array.from(LATE)); // after share(), into a chunk the handle already maps
    mem.resetPoisonReads();
    seen = await runWorker({
      hwUrl: pathToFileURL(distIndex).href,
      handle,
      plan: {
        bytesAt: BYTES_AT, bytesLength: BYTES.length,
        lateAt: LATE_AT, lateLength: LATE.length,
        u64At: U64_AT,
        syntheticAt: SYNTHETIC_AT, syntheticPages: SYNTHETIC_PAGES, seed: SEED,
        poisonPfn: POISON_PFN, survivorPfn: FIRST_PFN,
        workerWriteAt: WORKER_WRITE_AT, workerBytes: WORKER_BYTES,
        workerU64At: WORKER_U64_AT, workerU64: WORKER_U64.toString(),
      },
    });
    poisonReadsByWorker = mem.poisonReads;
  }, 30_000);

  it('the worker sees the same size, NUMA nodes, boot count and boot params', () => {
    expect(seen.memorySize).toBe(68719476736);
    expect(seen.numaNodes).toEqual([
      { id: 0, startPfn: 0, endPfn: 8388608 },
      { id: 1, startPfn: 8388608, endPfn: 16777216 },
    ]);
    expect(seen.bootCount).toBe(2);
    expect(seen.cmdline).toBe('second');
    expect(seen.khoData).toEqual([0xc0, 0xff, 0xee]);
  });

  it('the worker reads the bytes the main thread wrote, across a page boundary', () => {
    expect(seen.bytes).toEqual(BYTES);
    expect(seen.u64).toBe('102030405060708');
  });

  it('the worker sees a write the main thread made after share() into an existing chunk', () => {
    expect(seen.lateBytes).toEqual(LATE);
  });

  it('the worker reads identical synthetic content and recognises the run', () => {
    expect(seen.synthetic).toEqual(mainSyntheticBefore);
    expect(seen.synthetic).toEqual(syntheticBytes(SEED, SYNTHETIC_PAGES));
    expect(seen.isSyntheticRun).toBe(true);
    expect(seen.isSyntheticRunOtherSeed).toBe(false);
  });

  it('the worker sees the poison left by the kexec and maps only the surviving chunk', () => {
    expect(seen.poisonKind).toBe('poison');
    expect(seen.poisonByte).toBe(POISON_BYTE);
    expect(seen.survivorKind).toBe('data');
    expect(seen.residentBytes).toBe(65536);
  });

  it("the worker's poison read is counted in the main thread's shared counter", () => {
    expect(poisonReadsByWorker).toBe(1);
  });

  it("the main thread sees the worker's write into the existing chunk", () => {
    expect(Array.from(machine.memory.read(WORKER_WRITE_AT, WORKER_BYTES.length))).toEqual(WORKER_BYTES);
    expect(machine.memory.readU64(WORKER_U64_AT)).toBe(WORKER_U64);
  });

  it("the worker's write un-poisons the page for the main thread too", () => {
    expect(machine.memory.pageKind(WORKER_U64_AT / PAGE_SIZE)).toBe('data');
    expect(machine.memory.readU8(WORKER_U64_AT + 8)).toBe(POISON_BYTE);
  });

  it('bytes next to the worker write are unchanged', () => {
    expect(Array.from(machine.memory.read(BYTES_AT, BYTES.length))).toEqual(BYTES);
    expect(machine.memory.readU8(WORKER_WRITE_AT - 1)).toBe(0);
    expect(machine.memory.readU8(WORKER_WRITE_AT + WORKER_BYTES.length)).toBe(0);
  });
});
