import { PfnRanges } from './ranges.js';
import { SyntheticRuns, fillSyntheticPage, pageSeedAt } from './synthetic.js';
import { PAGE_SHIFT, PAGE_SIZE } from './units.js';

/** Memory is backed in 64 KiB chunks (16 pages), allocated on first write. */
const CHUNK_SHIFT = 16;
const CHUNK_SIZE = 1 << CHUNK_SHIFT;
const PAGES_PER_CHUNK = CHUNK_SIZE >>> PAGE_SHIFT;
/** The kernel's PAGE_POISON byte: scrubbed pages read as 0xaa. */
export const POISON_BYTE = 0xaa;
const POISON_U32 = 0xaaaaaaaa;

const PAGE_OK = 0;
const PAGE_POISONED = 1;
/** Bytes copied from a synthetic run and not written since: still that run's content. */
const PAGE_SYNTH = 2;

/** What a page holds right now. */
export type PageKind = 'zero' | 'data' | 'synthetic' | 'poison';

/**
 * A check on every read and write of [phys, phys+length) that goes through this memory (the
 * kernel's and devices' accesses; never the scrub). Hardware that owns pages (a hypervisor
 * holding deposited memory) installs one and throws to fault the access.
 */
export type AccessGuard = (phys: number, length: number, write: boolean) => void;

/**
 * The fault vector of whatever runs on the CPUs: called with what the guard threw on an access,
 * returns what to throw instead (a kernel installs one at boot and dies of the fault there).
 */
export type GuardFaultTrap = (fault: unknown, phys: number, length: number, write: boolean) => Error;

export class PhysAddrError extends RangeError {
  override readonly name = 'PhysAddrError';
  constructor(readonly phys: number, readonly length: number, readonly limit: number) {
    super(`physical access [0x${phys.toString(16)}, +0x${length.toString(16)}) is outside memory [0, 0x${limit.toString(16)})`);
  }
}

interface Chunk {
  readonly sab: SharedArrayBuffer;
  readonly bytes: Uint8Array;
  readonly words: Uint32Array;
  /** One byte per page: PAGE_OK or PAGE_POISONED (poison that nobody has written since the scrub). */
  readonly state: Uint8Array;
  /** The snapshot generation the chunk was made in: a chunk older than the live snapshot is shared with it (copy on write). */
  readonly epoch: number;
}

function makeChunk(sab: SharedArrayBuffer, epoch = 0): Chunk {
  return {
    sab,
    bytes: new Uint8Array(sab, 0, CHUNK_SIZE),
    words: new Uint32Array(sab, 0, CHUNK_SIZE >>> 2),
    state: new Uint8Array(sab, CHUNK_SIZE, PAGES_PER_CHUNK),
    epoch,
  };
}

/**
 * A copy-on-write snapshot of a PhysMemory (see `PhysMemory.snapshot`). Opaque: only the
 * memory that made it can restore it, and only while it is that memory's latest snapshot.
 */
export interface MemorySnapshot {
  readonly epoch: number;
}

/** Everything needed to map the same memory in another worker (structured-cloneable). */
export interface MemoryState {
  readonly size: number;
  readonly chunks: ReadonlyArray<readonly [index: number, sab: SharedArrayBuffer]>;
  readonly synthetic: Float64Array;
  readonly zeroRuns: Float64Array | null;
  readonly counters: SharedArrayBuffer;
}

/**
 * Sparse physical memory. Untouched pages cost nothing; written pages live in 64 KiB
 * SharedArrayBuffer chunks so another worker can map the very same bytes. A page is, in
 * order of precedence: chunk bytes (written), synthetic (a run seeded by `fillSynthetic`),
 * zero (never written since power-on), or poison (scrubbed at a kexec).
 */
export class PhysMemory {
  readonly size: number;
  readonly pageCount: number;
  private readonly chunks = new Map<number, Chunk>();
  private synthetic: SyntheticRuns;
  /** null: every non-chunk, non-synthetic page reads zero (no kexec yet); else the pages that still do. */
  private zeroRuns: PfnRanges | null;
  /** [0] poison page reads, [1] chunks allocated (shared with workers). */
  private readonly counters: Int32Array;
  private readonly countersSab: SharedArrayBuffer;
  private lastIndex = -1;
  private lastChunk: Chunk | undefined;
  private readonly synthPage = new Uint32Array(PAGE_SIZE >>> 2);
  private synthPageSeed = -1;
  private readonly synthBytes = new Uint8Array(this.synthPage.buffer);
  /** u64 reads go through readInto so a poisoned page counts once per read, not once per u32 half. */
  private readonly scratch8 = new Uint8Array(8);
  private readonly scratch8View = new DataView(this.scratch8.buffer);
  /** The effective guard: the installed one, its faults routed through the trap if any. */
  private guard: AccessGuard | null = null;
  private rawGuard: AccessGuard | null = null;
  private trap: GuardFaultTrap | null = null;
  /** The live snapshot's generation (0: none); chunks with a lower epoch are shared with it. */
  private snapEpoch = 0;
  /** Chunk slots changed since the live snapshot: index -> the chunk the snapshot had there (undefined: none). */
  private readonly dirty = new Map<number, Chunk | undefined>();
  private snapSynthetic: Float64Array | null = null;
  private snapZeroRuns: PfnRanges | null = null;
  private syntheticDirty = false;
  /** The guard-fault trap at the live snapshot (the kernel that ran then). */
  private snapTrap: GuardFaultTrap | null = null;

  constructor(size: number, state?: MemoryState) {
    if (!Number.isSafeInteger(size) || size <= 0 || size % PAGE_SIZE !== 0) {
      throw new RangeError(`memory size ${size} must be a positive multiple of ${PAGE_SIZE}`);
    }
    this.size = size;
    this.pageCount = size / PAGE_SIZE;
    this.countersSab = state?.counters ?? new SharedArrayBuffer(8);
    this.counters = new Int32Array(this.countersSab);
    this.synthetic = new SyntheticRuns(state?.synthetic);
    this.zeroRuns = null;
    if (state) {
      for (const [index, sab] of state.chunks) this.chunks.set(index, makeChunk(sab));
      if (state.zeroRuns) {
        const z = new PfnRanges(state.zeroRuns.length / 2);
        for (let i = 0; i < state.zeroRuns.length; i += 2) z.add(state.zeroRuns[i] as number, state.zeroRuns[i + 1] as number);
        this.zeroRuns = z;
      }
    }
  }

  /** Install (or remove, with null) the access guard; one at a time. */
  setAccessGuard(guard: AccessGuard | null): void {
    if (guard && this.rawGuard && guard !== this.rawGuard) throw new Error('memory: an access guard is already installed');
    this.rawGuard = guard;
    this.composeGuard();
  }

  /** Install (or remove, with null) the trap for guard faults; the running kernel's, so a new one replaces the old. */
  setGuardFaultTrap(trap: GuardFaultTrap | null): void {
    this.trap = trap;
    this.composeGuard();
  }

  private composeGuard(): void {
    const raw = this.rawGuard;
    const trap = this.trap;
    this.guard = raw === null || trap === null ? raw : (phys, length, write) => {
      try { raw(phys, length, write); } catch (e) { throw trap(e, phys, length, write); }
    };
  }

  /** Reads that hit a poisoned page (one per page touched). */
  get poisonReads(): number { return Atomics.load(this.counters, 0); }
  resetPoisonReads(): void { Atomics.store(this.counters, 0, 0); }
  /** Host bytes actually backing this memory. */
  get residentBytes(): number { return this.chunks.size * CHUNK_SIZE; }
  get chunkCount(): number { return this.chunks.size; }

  exportState(): MemoryState {
    const zero = this.zeroRuns;
    let zeroRuns: Float64Array | null = null;
    if (zero) {
      zeroRuns = new Float64Array(zero.runCount * 2);
      let k = 0;
      for (const [s, e] of zero.runs()) { zeroRuns[k++] = s; zeroRuns[k++] = e; }
    }
    return {
      size: this.size,
      chunks: [...this.chunks].map(([i, c]) => [i, c.sab] as const),
      synthetic: this.synthetic.serialize(),
      zeroRuns,
      counters: this.countersSab,
    };
  }

  check(phys: number, length: number): void {
    if (!(Number.isSafeInteger(phys) && Number.isSafeInteger(length)) || phys < 0 || length < 0 || phys + length > this.size) {
      throw new PhysAddrError(phys, length, this.size);
    }
  }

  /** A page frame number must be a whole page inside memory: pfn 1.5 is not page 1 (nor a view straddling 1 and 2). */
  private checkPfn(pfn: number): void {
    if (!Number.isSafeInteger(pfn)) throw new PhysAddrError(pfn * PAGE_SIZE, PAGE_SIZE, this.size);
    this.check(pfn * PAGE_SIZE, PAGE_SIZE);
  }

  /** What the page at pfn holds (for reports and tests). */
  pageKind(pfn: number): PageKind {
    this.checkPfn(pfn);
    const c = this.chunks.get(Math.floor(pfn / PAGES_PER_CHUNK));
    if (c) {
      const st = c.state[pfn % PAGES_PER_CHUNK];
      return st === PAGE_POISONED ? 'poison' : st === PAGE_SYNTH ? 'synthetic' : 'data';
    }
    return this.backgroundKind(pfn);
  }

  // ---- reads -------------------------------------------------------------------------

  readU8(phys: number): number {
    this.check(phys, 1);
    if (this.guard !== null) this.guard(phys, 1, false);
    return this.byteAt(phys);
  }

  readU32(phys: number): number {
    this.check(phys, 4);
    if (this.guard !== null) this.guard(phys, 4, false);
    if ((phys & 3) === 0) return this.wordAt(phys);
    const b = this.read(phys, 4);
    return new DataView(b.buffer).getUint32(0, true);
  }

  readU64(phys: number): bigint {
    this.readInto(phys, this.scratch8);
    return (BigInt(this.scratch8View.getUint32(4, true)) << 32n) | BigInt(this.scratch8View.getUint32(0, true));
  }

  /** A u64 as a number; exact below 2^53 (every physical address), else rounded. */
  readU64Number(phys: number): number {
    this.readInto(phys, this.scratch8);
    return this.scratch8View.getUint32(4, true) * 0x1_0000_0000 + this.scratch8View.getUint32(0, true);
  }

  read(phys: number, length: number): Uint8Array {
    this.check(phys, length); // before allocating: a bad length is a PhysAddrError, not a typed-array RangeError
    const out = new Uint8Array(length);
    this.readInto(phys, out);
    return out;
  }

  readInto(phys: number, dst: Uint8Array): void {
    this.check(phys, dst.length);
    if (this.guard !== null) this.guard(phys, dst.length, false);
    let done = 0;
    while (done < dst.length) {
      const p = phys + done;
      const pageOff = p % PAGE_SIZE;
      const pfn = (p - pageOff) / PAGE_SIZE;
      const c = this.chunkOf(p);
      if (c) {
        // Every page of a chunk holds its bytes: copy up to the end of the chunk at once,
        // counting each poisoned page touched once.
        const off = p % CHUNK_SIZE;
        const n = Math.min(CHUNK_SIZE - off, dst.length - done);
        const lastPage = (off + n - 1) >>> PAGE_SHIFT;
        let poisoned = 0;
        for (let k = off >>> PAGE_SHIFT; k <= lastPage; k++) if (c.state[k] === PAGE_POISONED) poisoned++;
        if (poisoned > 0) Atomics.add(this.counters, 0, poisoned);
        dst.set(c.bytes.subarray(off, off + n), done);
        done += n;
        continue;
      }
      const n = Math.min(PAGE_SIZE - pageOff, dst.length - done);
      const kind = this.backgroundKind(pfn);
      if (kind === 'zero') dst.fill(0, done, done + n);
      else if (kind === 'poison') { Atomics.add(this.counters, 0, 1); dst.fill(POISON_BYTE, done, done + n); }
      else dst.set(this.synthAt(pfn).subarray(pageOff, pageOff + n), done);
      done += n;
    }
  }

  /** True when [phys, phys+length) is untouched synthetic content of a run seeded `seed`: O(runs), for TiB-scale checks. */
  isSyntheticRun(phys: number, length: number, seed: number): boolean {
    this.check(phys, length);
    if (phys % PAGE_SIZE !== 0 || length % PAGE_SIZE !== 0) return false;
    const start = phys / PAGE_SIZE;
    const end = start + length / PAGE_SIZE;
    if (!this.synthetic.matches(start, end, seed)) return false;
    const firstChunk = Math.floor(start / PAGES_PER_CHUNK);
    const lastChunk = Math.floor((end - 1) / PAGES_PER_CHUNK);
    // Pages backed by a chunk still count if they were never written since the synthetic fill.
    const clean = (i: number, c: Chunk): boolean => {
      for (let k = 0; k < PAGES_PER_CHUNK; k++) {
        const pfn = i * PAGES_PER_CHUNK + k;
        if (pfn >= start && pfn < end && c.state[k] !== PAGE_SYNTH) return false;
      }
      return true;
    };
    if (lastChunk - firstChunk + 1 <= this.chunks.size) {
      for (let i = firstChunk; i <= lastChunk; i++) { const c = this.chunks.get(i); if (c && !clean(i, c)) return false; }
    } else {
      for (const [i, c] of this.chunks) if (i >= firstChunk && i <= lastChunk && !clean(i, c)) return false;
    }
    return true;
  }

  /** The synthetic page seed of an untouched synthetic page, or -1. */
  syntheticSeed(pfn: number): number {
    const c = this.chunks.get(Math.floor(pfn / PAGES_PER_CHUNK));
    if (c && c.state[pfn % PAGES_PER_CHUNK] !== PAGE_SYNTH) return -1;
    return this.synthetic.seedOf(pfn);
  }


  // ---- writes ------------------------------------------------------------------------

  writeU8(phys: number, value: number): void {
    this.check(phys, 1);
    if (this.guard !== null) this.guard(phys, 1, true);
    const c = this.chunkForWrite(phys);
    c.state[(phys % CHUNK_SIZE) >>> PAGE_SHIFT] = PAGE_OK;
    c.bytes[phys % CHUNK_SIZE] = value;
  }

  writeU32(phys: number, value: number): void {
    this.check(phys, 4);
    if (this.guard !== null) this.guard(phys, 4, true);
    if ((phys & 3) === 0) {
      const c = this.chunkForWrite(phys);
      c.state[(phys % CHUNK_SIZE) >>> PAGE_SHIFT] = PAGE_OK;
      c.words[(phys % CHUNK_SIZE) >>> 2] = value >>> 0;
      return;
    }
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, value >>> 0, true);
    this.write(phys, b);
  }

  writeU64(phys: number, value: bigint | number): void {
    this.check(phys, 8);
    const v = BigInt.asUintN(64, typeof value === 'bigint' ? value : BigInt(value));
    this.writeU32(phys, Number(v & 0xffffffffn));
    this.writeU32(phys + 4, Number(v >> 32n));
  }

  write(phys: number, src: Uint8Array): void {
    this.check(phys, src.length);
    if (this.guard !== null) this.guard(phys, src.length, true);
    let done = 0;
    while (done < src.length) {
      const p = phys + done;
      const n = Math.min(CHUNK_SIZE - (p % CHUNK_SIZE), src.length - done);
      const c = this.chunkForWrite(p);
      this.unpoison(c, p, n);
      c.bytes.set(src.subarray(done, done + n), p % CHUNK_SIZE);
      done += n;
    }
  }

  fill(phys: number, length: number, byte: number): void {
    this.check(phys, length);
    if (this.guard !== null) this.guard(phys, length, true);
    let done = 0;
    while (done < length) {
      const p = phys + done;
      const n = Math.min(CHUNK_SIZE - (p % CHUNK_SIZE), length - done);
      if (byte === 0 && this.chunkOf(p) === undefined && this.readsZero(Math.floor(p / PAGE_SIZE), Math.ceil((p + n) / PAGE_SIZE))) {
        // Zeroing pages that already read as zero (never written, not synthetic, not poison): no store, no chunk.
        done += n;
        continue;
      }
      const c = this.chunkForWrite(p);
      this.unpoison(c, p, n);
      const off = p % CHUNK_SIZE;
      if ((off & 3) === 0 && (n & 3) === 0) {
        // Word stores: byte fills of shared memory cost ~10x more per page.
        c.words.fill((byte & 0xff) * 0x01010101, off >>> 2, (off + n) >>> 2);
      } else {
        c.bytes.fill(byte, off, off + n);
      }
      done += n;
    }
  }

  /**
   * A writable view of one page, the model's phys_to_virt: materializes the page and takes
   * it out of the poisoned state (the caller owns it, as after an allocation).
   */
  mapPage(pfn: number): Uint8Array {
    this.checkPfn(pfn);
    const phys = pfn * PAGE_SIZE;
    if (this.guard !== null) this.guard(phys, PAGE_SIZE, true);
    const c = this.chunkForWrite(phys);
    const off = phys % CHUNK_SIZE;
    c.state[off / PAGE_SIZE] = PAGE_OK;
    return c.bytes.subarray(off, off + PAGE_SIZE);
  }

  /** Give [phys, phys+length) (page aligned) synthetic content: page i gets page seed seed+i. */
  fillSynthetic(phys: number, length: number, seed: number): void {
    this.check(phys, length);
    if (this.guard !== null) this.guard(phys, length, true);
    const start = phys / PAGE_SIZE;
    const end = start + length / PAGE_SIZE;
    // Integer tests, not `% PAGE_SIZE`: physical addresses pass 2^31, where % is a floating-point remainder call.
    if (!Number.isInteger(start) || !Number.isInteger(end)) throw new RangeError('synthetic runs must be page aligned');
    if (end === start) return;
    this.syntheticDirty = true;
    this.synthetic.set(start, end, seed);
    // Pages already backed by a chunk keep precedence, so write the generated bytes there too.
    const firstChunk = Math.floor(start / PAGES_PER_CHUNK);
    const lastChunk = Math.floor((end - 1) / PAGES_PER_CHUNK);
    if (lastChunk - firstChunk + 1 <= this.chunks.size) {
      for (let i = firstChunk; i <= lastChunk; i++) { const c = this.chunks.get(i); if (c) this.writeSynthetic(i, c, start, end, seed); }
    } else {
      for (const [i, c] of this.chunks) if (i >= firstChunk && i <= lastChunk) this.writeSynthetic(i, c, start, end, seed);
    }
  }

  /** The generated bytes of run [start, end) into the pages of chunk i it covers (a method, not a closure per fill). */
  private writeSynthetic(i: number, shared: Chunk, start: number, end: number, seed: number): void {
    const c = this.own(i, shared);
    for (let k = 0; k < PAGES_PER_CHUNK; k++) {
      const pfn = i * PAGES_PER_CHUNK + k;
      if (pfn < start || pfn >= end) continue;
      fillSyntheticPage(this.synthPage, pageSeedAt(seed, pfn - start));
      this.synthPageSeed = -1;
      c.bytes.set(this.synthBytes, k * PAGE_SIZE);
      c.state[k] = PAGE_SYNTH;
    }
  }

  // ---- copy-on-write snapshots -------------------------------------------------------

  /**
   * Take a copy-on-write snapshot: O(1) now; afterwards the first write into each 64 KiB chunk
   * copies that chunk once, so `restore` costs what was written since, never the memory's size.
   * One snapshot is live at a time (a new one replaces it). Views from `mapPage` taken before
   * the snapshot write into the snapshot's chunk: take it when no such view is in use (after a
   * kexec, only bytes are left). Likewise another worker mapping this memory through
   * `exportState` writes the shared chunks directly: snapshots are for one thread's memory.
   */
  snapshot(): MemorySnapshot {
    this.snapEpoch++;
    this.dirty.clear();
    this.snapSynthetic = this.synthetic.serialize();
    this.snapZeroRuns = this.zeroRuns;
    this.syntheticDirty = false;
    this.snapTrap = this.trap;
    this.lastIndex = -1;
    this.lastChunk = undefined;
    return { epoch: this.snapEpoch };
  }

  /** Put every byte, page state and background run back as they were at `snap` (which stays usable). */
  restore(snap: MemorySnapshot): void {
    if (snap.epoch !== this.snapEpoch || this.snapEpoch === 0) throw new Error('memory: this snapshot is not the live one');
    for (const [index, original] of this.dirty) {
      if (original === undefined) this.chunks.delete(index);
      else this.chunks.set(index, original);
    }
    this.dirty.clear();
    if (this.syntheticDirty) this.synthetic = new SyntheticRuns(this.snapSynthetic ?? undefined);
    this.syntheticDirty = false;
    this.zeroRuns = this.snapZeroRuns;
    if (this.trap !== this.snapTrap) this.setGuardFaultTrap(this.snapTrap);
    this.lastIndex = -1;
    this.lastChunk = undefined;
    this.synthPageSeed = -1;
  }

  /** Chunks copied or added since the live snapshot (what the next restore undoes). */
  get dirtyChunks(): number { return this.dirty.size; }

  /** Record slot `index` as changed since the snapshot (keeping the snapshot's chunk for restore). */
  private touch(index: number, before: Chunk | undefined): void {
    if (this.snapEpoch !== 0 && !this.dirty.has(index)) this.dirty.set(index, before);
  }

  /** The chunk at `index`, writable: a copy when it is still shared with the live snapshot. */
  private own(index: number, c: Chunk): Chunk {
    if (c.epoch >= this.snapEpoch) return c;
    const sab = new SharedArrayBuffer(CHUNK_SIZE + PAGES_PER_CHUNK);
    new Uint8Array(sab).set(new Uint8Array(c.sab));
    const copy = makeChunk(sab, this.snapEpoch);
    this.touch(index, c);
    this.chunks.set(index, copy);
    if (this.lastIndex === index) this.lastChunk = copy;
    return copy;
  }

  // ---- the kexec boundary -------------------------------------------------------------

  /**
   * Scrub: every page outside `survivors` becomes poison. Cost: O(chunks + runs), never the
   * size of the machine. Chunks with no surviving page are released.
   */
  scrub(survivors: PfnRanges): void {
    // (Deleting the entry being visited is safe in a Map iteration: no copy of the entries.)
    for (const [i, shared] of this.chunks) {
      const first = i * PAGES_PER_CHUNK;
      if (!survivors.overlaps(first, first + PAGES_PER_CHUNK)) {
        this.touch(i, shared);
        this.chunks.delete(i);
        continue;
      }
      if (survivors.covers(first, first + PAGES_PER_CHUNK)) continue;
      let c = shared;
      for (let k = 0; k < PAGES_PER_CHUNK; k++) {
        if (survivors.has(first + k)) continue;
        c = this.own(i, c);
        // Word stores, as in fill(): byte fills of shared memory cost several times more per page.
        c.words.fill(POISON_U32, (k * PAGE_SIZE) >>> 2, ((k + 1) * PAGE_SIZE) >>> 2);
        c.state[k] = PAGE_POISONED;
      }
    }
    this.syntheticDirty = true;
    this.synthetic.intersect(survivors);
    this.zeroRuns = (this.zeroRuns ?? PfnRanges.of([0, this.pageCount])).intersect(survivors);
    this.lastIndex = -1;
    this.lastChunk = undefined;
    this.synthPageSeed = -1;
  }

  // ---- internals ----------------------------------------------------------------------

  /** Every page of [first, end) (inside one chunk) reads as zero from the background. */
  private readsZero(first: number, end: number): boolean {
    if (this.zeroRuns !== null && !this.zeroRuns.covers(first, end)) return false;
    return !this.synthetic.overlaps(first, end);
  }

  private backgroundKind(pfn: number): PageKind {
    if (this.synthetic.runCount > 0 && this.synthetic.seedOf(pfn) >= 0) return 'synthetic';
    if (this.zeroRuns === null || this.zeroRuns.has(pfn)) return 'zero';
    return 'poison';
  }

  private synthAt(pfn: number): Uint8Array {
    const seed = this.synthetic.seedOf(pfn);
    if (seed !== this.synthPageSeed) {
      fillSyntheticPage(this.synthPage, seed);
      this.synthPageSeed = seed;
    }
    return this.synthBytes;
  }

  private chunkOf(phys: number): Chunk | undefined {
    const index = Math.floor(phys / CHUNK_SIZE);
    if (index === this.lastIndex) return this.lastChunk;
    const c = this.chunks.get(index);
    if (c) { this.lastIndex = index; this.lastChunk = c; }
    return c;
  }

  private chunkForWrite(phys: number): Chunk {
    const existing = this.chunkOf(phys);
    if (existing) return existing.epoch >= this.snapEpoch ? existing : this.own(Math.floor(phys / CHUNK_SIZE), existing);
    const index = Math.floor(phys / CHUNK_SIZE);
    const c = makeChunk(new SharedArrayBuffer(CHUNK_SIZE + PAGES_PER_CHUNK), this.snapEpoch);
    this.touch(index, undefined);
    // A new chunk starts as what its pages read as before: zero, synthetic or poison. Most
    // chunks are made over memory that reads zero throughout: one range test, no per-page lookups.
    const first = index * PAGES_PER_CHUNK;
    if (!this.readsZero(first, first + PAGES_PER_CHUNK)) this.initChunk(c, first);
    this.chunks.set(index, c);
    Atomics.add(this.counters, 1, 1);
    this.lastIndex = index;
    this.lastChunk = c;
    return c;
  }

  /** A new chunk's pages as they read before it existed (synthetic bytes, poison; zero as allocated). */
  private initChunk(c: Chunk, first: number): void {
    for (let k = 0; k < PAGES_PER_CHUNK; k++) {
      const pfn = first + k;
      const kind = this.backgroundKind(pfn);
      if (kind === 'synthetic') { c.bytes.set(this.synthAt(pfn), k * PAGE_SIZE); c.state[k] = PAGE_SYNTH; }
      else if (kind === 'poison') {
        c.words.fill(POISON_U32, (k * PAGE_SIZE) >>> 2, ((k + 1) * PAGE_SIZE) >>> 2);
        c.state[k] = PAGE_POISONED;
      }
    }
  }

  private unpoison(c: Chunk, phys: number, length: number): void {
    const off = phys % CHUNK_SIZE;
    const firstPage = Math.floor(off / PAGE_SIZE);
    const lastPage = Math.floor((off + length - 1) / PAGE_SIZE);
    for (let k = firstPage; k <= lastPage; k++) c.state[k] = PAGE_OK;
  }

  private byteAt(phys: number): number {
    const pfn = Math.floor(phys / PAGE_SIZE);
    const c = this.chunkOf(phys);
    if (c) {
      if (c.state[pfn % PAGES_PER_CHUNK] === PAGE_POISONED) Atomics.add(this.counters, 0, 1);
      return c.bytes[phys % CHUNK_SIZE] as number;
    }
    const kind = this.backgroundKind(pfn);
    if (kind === 'zero') return 0;
    if (kind === 'poison') { Atomics.add(this.counters, 0, 1); return POISON_BYTE; }
    return this.synthAt(pfn)[phys % PAGE_SIZE] as number;
  }

  private wordAt(phys: number): number {
    const pfn = Math.floor(phys / PAGE_SIZE);
    const c = this.chunkOf(phys);
    if (c) {
      if (c.state[pfn % PAGES_PER_CHUNK] === PAGE_POISONED) Atomics.add(this.counters, 0, 1);
      return c.words[(phys % CHUNK_SIZE) >>> 2] as number;
    }
    const kind = this.backgroundKind(pfn);
    if (kind === 'zero') return 0;
    if (kind === 'poison') { Atomics.add(this.counters, 0, 1); return POISON_U32; }
    this.synthAt(pfn);
    return this.synthPage[(phys % PAGE_SIZE) >>> 2] as number;
  }
}
