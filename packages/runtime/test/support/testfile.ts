/**
 * "testfile": a tiny in-tree file type standing in for memfd until the memfd plugin exists,
 * with its LUO handler (compatible 'testfile-v1') and a test FLB ('liveupdate-test-flb-v<i>',
 * as CONFIG_LIVEUPDATE_TEST registers upstream).
 *
 * A testfile's content lives in order-0 pages from the kernel's page allocator. Preserving it
 * KHO-preserves every content page plus a header folio from kho_alloc_preserve:
 *
 *   struct testfile_ser { u64 magic; u64 size; u64 nr_pages; u64 pfns[nr_pages]; }
 *
 * serialized_data is the header's physical address. The incoming side rebuilds the file from
 * those bytes alone (kho_restore_folio on the header and on every page).
 *
 * Every op is recorded in the handler's `calls` so tests can check who was called, how often
 * and in which order. Behaviour that tests bend (a failing freeze, a refusing can_finish)
 * lives in `options`, shared by every kernel the plugin is set up in and mutable, so a test
 * can "fix the handler" and retry.
 */
import { PAGE_SIZE } from '@liveupdate/hw';
import {
  ErrnoError, Inode, KFile, defineStruct, u64,
  type ErrnoCode, type FileOperations, type Kernel, type LiveupdateFileHandler, type LiveupdateFileOpArgs,
  type LiveupdateFileOps, type LiveupdateFlb, type LiveupdateFlbOpArgs, type Process, type RuntimePlugin,
} from '@liveupdate/runtime';

export const TESTFILE_COMPATIBLE = 'testfile-v1';
export const TEST_FLB_COMPATIBLE = (i: number): string => `liveupdate-test-flb-v${i}`;
/** "TESTFIL1" little-endian. */
export const TESTFILE_MAGIC = 0x314c4946_54534554n;
export const TEST_FLB_MAGIC = 0x30424c46_54534554n; // "TESTFLB0"

export const testfileSer = defineStruct('testfile_ser', { magic: u64, size: u64, nr_pages: u64 }, { size: 24 });
export const testFlbSer = defineStruct('test_flb_ser', { magic: u64, generation: u64 }, { size: 16 });

const O_RDWR = 0o2;

/** The in-kernel object behind a testfile KFile (its private_data). */
export class TestFile {
  released = false;
  constructor(readonly kernel: Kernel, readonly pfns: readonly number[], readonly size: number) {}

  read(): Uint8Array {
    const out = new Uint8Array(this.size);
    const mem = this.kernel.machine.memory;
    for (let i = 0; i < this.pfns.length; i++) {
      const n = Math.min(PAGE_SIZE, this.size - i * PAGE_SIZE);
      out.set(mem.read((this.pfns[i] as number) * PAGE_SIZE, n), i * PAGE_SIZE);
    }
    return out;
  }

  /** Overwrite bytes in place (the size never changes). */
  write(bytes: Uint8Array, offset = 0): void {
    if (offset + bytes.length > this.size) throw new ErrnoError('EFBIG', 'write', 'testfiles do not grow');
    const mem = this.kernel.machine.memory;
    for (let done = 0; done < bytes.length;) {
      const pos = offset + done;
      const page = Math.floor(pos / PAGE_SIZE);
      const off = pos % PAGE_SIZE;
      const n = Math.min(PAGE_SIZE - off, bytes.length - done);
      mem.write((this.pfns[page] as number) * PAGE_SIZE + off, bytes.subarray(done, done + n));
      done += n;
    }
  }

  free(): void {
    if (this.released) return;
    this.released = true;
    if (this.kernel.isDead) return;
    for (const pfn of this.pfns) this.kernel.mm.freePages(pfn, 0);
  }
}

const TESTFILE_FOPS: FileOperations = {
  kind: 'testfile',
  read: (file, dst, pos) => {
    const bytes = (file.privateData as TestFile).read();
    const n = Math.max(0, Math.min(dst.length, bytes.length - pos));
    dst.set(bytes.subarray(pos, pos + n));
    return n;
  },
  write: (file, src, pos) => { (file.privateData as TestFile).write(src, pos); return src.length; },
  release: (file) => (file.privateData as TestFile).free(),
};

function newTestKFile(kernel: Kernel, tf: TestFile): KFile {
  return new KFile(TESTFILE_FOPS, new Inode(tf), tf, O_RDWR, kernel.id);
}

export const isTestFile = (file: KFile): boolean => file.privateData instanceof TestFile;

/** Make a testfile holding `bytes` and install it in `proc` (not close-on-exec). */
export function createTestFile(kernel: Kernel, proc: Process, bytes: Uint8Array): number {
  const n = Math.ceil(bytes.length / PAGE_SIZE);
  const pfns: number[] = [];
  for (let i = 0; i < n; i++) {
    const pfn = kernel.mm.allocPages(0);
    if (pfn === null) {
      for (const p of pfns) kernel.mm.freePages(p, 0);
      throw new ErrnoError('ENOMEM', 'testfile_create');
    }
    pfns.push(pfn);
  }
  const tf = new TestFile(kernel, pfns, bytes.length);
  // The tail of the last page is zeroed, as a fresh shmem page would be.
  if (n > 0) kernel.machine.memory.fill((pfns[n - 1] as number) * PAGE_SIZE, PAGE_SIZE, 0);
  tf.write(bytes);
  const file = newTestKFile(kernel, tf);
  try {
    return proc.fdInstall(file, false);
  } catch (e) {
    file.put();
    throw e;
  }
}

export function testFileOf(proc: Process, fd: number): TestFile {
  const file = proc.file(fd, 'read');
  if (!isTestFile(file)) throw new ErrnoError('EINVAL', 'read', `fd ${fd} is not a testfile`);
  return file.privateData as TestFile;
}

export function readTestFile(_kernel: Kernel, proc: Process, fd: number): Uint8Array {
  return testFileOf(proc, fd).read();
}

export function writeTestFile(proc: Process, fd: number, bytes: Uint8Array, offset = 0): void {
  testFileOf(proc, fd).write(bytes, offset);
}

// ---- the handler ------------------------------------------------------------------------

export interface CallRecord {
  readonly op: string;
  readonly session: string;
  readonly token: bigint;
  readonly retrieveStatus: number;
}

export interface FreezeInfo {
  /** freeze calls made in this kernel so far, this one excluded (0 for the first). */
  readonly index: number;
  readonly session: string;
  readonly token: bigint;
}

export interface TestFileOptions {
  compatible?: string;
  /** Return an errno to make this freeze fail. */
  failFreeze?: ((info: FreezeInfo) => ErrnoCode | undefined) | undefined;
  /** can_finish; default true. */
  canFinish?: ((args: LiveupdateFileOpArgs<Kernel>) => boolean) | undefined;
  /** Register this many test FLBs (liveupdate-test-flb-v0 ...) on the handler at setup. */
  flbs?: number;
}

/** Pages recorded at preserve time (private_data: runtime only, never crosses). */
interface Preserved {
  readonly header: number;
  readonly pfns: readonly number[];
}

export class TestFileHandler implements LiveupdateFileHandler<Kernel> {
  readonly compatible: string;
  readonly owner = 'testfile';
  readonly calls: CallRecord[] = [];
  readonly ops: LiveupdateFileOps<Kernel>;
  readonly flbs: TestFlb[] = [];
  private freezes = 0;

  constructor(readonly kernel: Kernel, readonly options: TestFileOptions) {
    this.compatible = options.compatible ?? TESTFILE_COMPATIBLE;
    this.ops = {
      canPreserve: (_h, file) => isTestFile(file),
      preserve: (a) => this.preserve(a),
      unpreserve: (a) => this.unpreserve(a),
      freeze: (a) => this.freeze(a),
      unfreeze: (a) => this.record('unfreeze', a),
      retrieve: (a) => this.retrieve(a),
      canFinish: (a) => {
        this.record('canFinish', a);
        return this.options.canFinish ? this.options.canFinish(a) : true;
      },
      finish: (a) => this.finish(a),
    };
  }

  private record(op: string, a: LiveupdateFileOpArgs<Kernel>): void {
    this.calls.push({ op, session: a.session.name, token: a.token, retrieveStatus: a.retrieveStatus });
  }

  /** Calls of one op, optionally of one session. */
  callsOf(op: string, session?: string): CallRecord[] {
    return this.calls.filter((c) => c.op === op && (session === undefined || c.session === session));
  }

  private preserve(a: LiveupdateFileOpArgs<Kernel>): void {
    this.record('preserve', a);
    const out = a.kernel.khoOut;
    if (!out || !a.file) throw new ErrnoError('EINVAL', 'testfile_preserve', 'KHO is off');
    const tf = a.file.privateData as TestFile;
    const done: number[] = [];
    let header: number;
    try {
      for (const pfn of tf.pfns) { out.preserveFolio(pfn, 0); done.push(pfn); }
      header = out.allocPreserve(testfileSer.size + 8 * tf.pfns.length);
      const bytes = new Uint8Array(testfileSer.size + 8 * tf.pfns.length);
      testfileSer.encodeInto(bytes, 0, { magic: TESTFILE_MAGIC, size: BigInt(tf.size), nr_pages: BigInt(tf.pfns.length) });
      const dv = new DataView(bytes.buffer);
      tf.pfns.forEach((pfn, i) => dv.setBigUint64(testfileSer.size + 8 * i, BigInt(pfn), true));
      a.kernel.machine.memory.write(header, bytes);
    } catch (e) {
      for (const pfn of done) out.unpreserveFolio(pfn, 0);
      throw e;
    }
    a.serializedData = BigInt(header);
    a.privateData = { header, pfns: [...tf.pfns] } satisfies Preserved;
  }

  private unpreserve(a: LiveupdateFileOpArgs<Kernel>): void {
    this.record('unpreserve', a);
    const out = a.kernel.khoOut;
    const p = a.privateData as Preserved | undefined;
    if (!out || !p) return;
    for (const pfn of p.pfns) out.unpreserveFolio(pfn, 0);
    out.unpreserveFree(p.header);
  }

  private freeze(a: LiveupdateFileOpArgs<Kernel>): void {
    this.record('freeze', a);
    const info: FreezeInfo = { index: this.freezes++, session: a.session.name, token: a.token };
    const errno = this.options.failFreeze?.(info);
    if (errno) throw new ErrnoError(errno, 'testfile_freeze', `injected at freeze #${info.index} (${info.session}/${info.token})`);
  }

  /** Read and validate the header; returns the pfns and size, or throws. The header folio is always restored and freed. */
  private takeHeader(kernel: Kernel, phys: bigint): { size: number; pfns: number[] } {
    const kin = kernel.khoIn;
    if (!kin) throw new ErrnoError('EINVAL', 'testfile_retrieve', 'not a KHO boot');
    const folio = phys > 0n && phys < BigInt(kernel.machine.memory.size) ? kin.restoreFolio(Number(phys)) : null;
    if (!folio) throw new ErrnoError('EIO', 'testfile_retrieve', `header 0x${phys.toString(16)} cannot be restored`);
    try {
      const mem = kernel.machine.memory;
      const bytes = mem.read(folio.pfn * PAGE_SIZE, 2 ** folio.order * PAGE_SIZE);
      const h = testfileSer.decode(bytes);
      const maxPages = (bytes.length - testfileSer.size) / 8;
      if (h.magic !== TESTFILE_MAGIC) throw new ErrnoError('EINVAL', 'testfile_retrieve', 'bad header magic');
      if (h.nr_pages > BigInt(maxPages)) throw new ErrnoError('EINVAL', 'testfile_retrieve', `nr_pages ${h.nr_pages}`);
      const n = Number(h.nr_pages);
      if (h.size > BigInt(n * PAGE_SIZE) || (n > 0 && h.size <= BigInt((n - 1) * PAGE_SIZE))) {
        throw new ErrnoError('EINVAL', 'testfile_retrieve', `size ${h.size} for ${n} pages`);
      }
      const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      const pfns: number[] = [];
      for (let i = 0; i < n; i++) pfns.push(Number(dv.getBigUint64(testfileSer.size + 8 * i, true)));
      return { size: Number(h.size), pfns };
    } finally {
      kernel.mm.freePages(folio.pfn, folio.order);
    }
  }

  private retrieve(a: LiveupdateFileOpArgs<Kernel>): void {
    this.record('retrieve', a);
    const kin = a.kernel.khoIn;
    const { size, pfns } = this.takeHeader(a.kernel, a.serializedData);
    const got: number[] = [];
    for (let i = 0; i < pfns.length; i++) {
      const f = kin?.restoreFolio((pfns[i] as number) * PAGE_SIZE) ?? null;
      if (!f || f.order !== 0) {
        // memfd's rule: the remaining pages are restored and freed, the file is dropped.
        if (f) a.kernel.mm.freePages(f.pfn, f.order);
        for (const p of got) a.kernel.mm.freePages(p, 0);
        for (const rest of pfns.slice(i + 1)) {
          const r = kin?.restoreFolio(rest * PAGE_SIZE);
          if (r) a.kernel.mm.freePages(r.pfn, r.order);
        }
        throw new ErrnoError('EIO', 'testfile_retrieve', `page ${i} (pfn 0x${(pfns[i] as number).toString(16)}) cannot be restored`);
      }
      got.push(f.pfn);
    }
    a.file = newTestKFile(a.kernel, new TestFile(a.kernel, got, size));
  }

  private finish(a: LiveupdateFileOpArgs<Kernel>): void {
    this.record('finish', a);
    if (a.retrieveStatus !== 0) return;
    // Never retrieved: release what was handed over.
    let taken: { pfns: number[] };
    try {
      taken = this.takeHeader(a.kernel, a.serializedData);
    } catch {
      return;
    }
    for (const pfn of taken.pfns) {
      const f = a.kernel.khoIn?.restoreFolio(pfn * PAGE_SIZE);
      if (f) a.kernel.mm.freePages(f.pfn, f.order);
    }
  }
}

// ---- the test FLB -----------------------------------------------------------------------

export interface FlbCallRecord {
  readonly op: string;
  readonly data: bigint;
}

/** One preserved page { magic, generation }: the FLB's global state. */
export class TestFlb implements LiveupdateFlb<Kernel> {
  readonly calls: FlbCallRecord[] = [];
  readonly owner = 'testfile';
  readonly ops: LiveupdateFlb<Kernel>['ops'];

  constructor(readonly compatible: string) {
    this.ops = {
      preserve: (a) => {
        this.record('preserve', a);
        const out = a.kernel.khoOut;
        if (!out) throw new ErrnoError('EINVAL', 'test_flb_preserve');
        const phys = out.allocPreserve(testFlbSer.size);
        a.kernel.machine.memory.write(phys, testFlbSer.encode({ magic: TEST_FLB_MAGIC, generation: BigInt(a.kernel.luo.liveupdateNum) }));
        a.data = BigInt(phys);
        a.obj = { phys, generation: a.kernel.luo.liveupdateNum };
      },
      unpreserve: (a) => {
        this.record('unpreserve', a);
        a.kernel.khoOut?.unpreserveFree(Number(a.data));
      },
      retrieve: (a) => {
        this.record('retrieve', a);
        const f = a.kernel.khoIn?.restoreFolio(Number(a.data));
        if (!f) throw new ErrnoError('EIO', 'test_flb_retrieve');
        const v = testFlbSer.decode(a.kernel.machine.memory.read(f.pfn * PAGE_SIZE, testFlbSer.size));
        if (v.magic !== TEST_FLB_MAGIC) throw new ErrnoError('EINVAL', 'test_flb_retrieve', 'bad magic');
        a.obj = { phys: f.pfn * PAGE_SIZE, order: f.order, generation: Number(v.generation) };
      },
      finish: (a) => {
        this.record('finish', a);
        const o = a.obj as { phys: number; order: number } | undefined;
        if (o) a.kernel.mm.freePages(o.phys / PAGE_SIZE, o.order);
      },
    };
  }

  private record(op: string, a: LiveupdateFlbOpArgs<Kernel>): void {
    this.calls.push({ op, data: a.data });
  }

  callsOf(op: string): FlbCallRecord[] { return this.calls.filter((c) => c.op === op); }
}

// ---- the plugin -------------------------------------------------------------------------

export interface TestFilePlugin extends RuntimePlugin {
  readonly options: TestFileOptions;
  /** The handler this plugin registered in kernel k. */
  handlerOf(k: Kernel): TestFileHandler;
}

/**
 * A RuntimePlugin registering the testfile handler (and its test FLBs) at late_initcall. A
 * disabled LUO (EOPNOTSUPP) is ignored, as memfd does.
 */
export function testFilePlugin(options: TestFileOptions = {}): TestFilePlugin {
  const handlers = new Map<number, TestFileHandler>();
  return {
    name: 'testfile',
    version: '1.0.0',
    options,
    handlerOf(k: Kernel): TestFileHandler {
      const h = handlers.get(k.id);
      if (!h) throw new Error(`testfile plugin was not set up in kernel ${k.id}`);
      return h;
    },
    setup(k: Kernel): void {
      const h = new TestFileHandler(k, options);
      handlers.set(k.id, h);
      try {
        k.luo.registerFileHandler(h);
      } catch (e) {
        if (e instanceof ErrnoError && e.code === 'EOPNOTSUPP') return;
        throw e;
      }
      for (let i = 0; i < (options.flbs ?? 0); i++) {
        const flb = new TestFlb(TEST_FLB_COMPATIBLE(i));
        k.luo.registerFlb(h, flb);
        h.flbs.push(flb);
      }
    },
  };
}
