/**
 * A DMA engine endpoint modelled on Intel DSA (drivers/dma/idxd; the device the VFIO
 * selftests drive): the VMM writes descriptors to its portal BAR; while Bus Master Enable is
 * set on it and on every bridge above it, the engine performs one write per `nsPerWrite` of machine time, through the machine's
 * DMA port (so an IOMMU can translate), and logs every write it made (physical address,
 * sequence, time) in typed arrays. Clearing Bus Master Enable stalls it; FLR drops its work.
 */
import type { MachineClock, Ticker } from '../clock.js';
import type { Restore } from '../state.js';
import type { DmaPort } from './dma.js';
import type { PciDeviceModel, PciFunction } from './function.js';

/** DSA opcodes the model implements (include/uapi/linux/idxd.h numbers for the real ones). */
export const DSA_OPCODE_MEMMOVE = 0x03;
/** Not a DSA opcode: a writer of consecutive u64 sequence numbers into a ring of buffers. */
export const DSA_OPCODE_SEQWRITE = 0x80;
/** Completion record status: DSA_COMP_SUCCESS. */
export const DSA_COMP_SUCCESS = 1;
/** Bytes one memmove write moves (a 64-byte posted write). */
export const DSA_MEMMOVE_CHUNK = 64;

export interface DsaMemmove {
  readonly opcode: typeof DSA_OPCODE_MEMMOVE;
  readonly src: number;
  readonly dst: number;
  readonly size: number;
  /** Where the 32-byte completion record is written (0: none). */
  readonly completion?: number;
}

export interface DsaSeqWrite {
  readonly opcode: typeof DSA_OPCODE_SEQWRITE;
  /** Buffers (bus addresses, 8-byte aligned lengths) written round-robin, 8 bytes per write. */
  readonly ring: ReadonlyArray<{ readonly iova: number; readonly length: number }>;
  readonly startSeq: number;
  /** Writes to make; Infinity: until reset. */
  readonly count: number;
  readonly completion?: number;
}

export type DsaDescriptor = DsaMemmove | DsaSeqWrite;

/** Every write the engine made, in order. */
export class DmaWriteLog {
  phys = new Float64Array(1024);
  seq = new Float64Array(1024);
  timeNs = new Float64Array(1024);
  count = 0;

  push(phys: number, seq: number, t: number): void {
    if (this.count === this.phys.length) {
      const grow = (a: Float64Array<ArrayBuffer>): Float64Array<ArrayBuffer> => { const b = new Float64Array(a.length * 2); b.set(a); return b; };
      this.phys = grow(this.phys);
      this.seq = grow(this.seq);
      this.timeNs = grow(this.timeNs);
    }
    this.phys[this.count] = phys;
    this.seq[this.count] = seq;
    this.timeNs[this.count] = t;
    this.count++;
  }

  /** The log is append-only: putting it back is putting its length back. */
  save(): Restore {
    const n = this.count;
    return () => { this.count = n; };
  }

  /** Index of the first write at or after `t` (the log is in time order). */
  firstAtOrAfter(t: number): number {
    let lo = 0;
    let hi = this.count;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((this.timeNs[mid] as number) < t) lo = mid + 1; else hi = mid;
    }
    return lo;
  }
}

interface Active {
  readonly desc: DsaDescriptor;
  /** Writes done for this descriptor. */
  done: number;
  readonly total: number;
  /** Seqwrite: 8-byte slots up to and including ring buffer i (prefix sums), so a write finds its buffer by binary search. */
  readonly ringEnds: Float64Array | null;
}

export interface DsaOptions {
  /** Machine time per write (default 10 µs). */
  readonly nsPerWrite?: number;
}

export class DsaEngine implements PciDeviceModel, Ticker {
  readonly log = new DmaWriteLog();
  readonly nsPerWrite: number;
  private queue: Active[] = [];
  /** Descriptors dropped by a reset before they completed. */
  dropped = 0;
  completed = 0;
  /** Write slots lost because Bus Master Enable was clear while work was queued. */
  stalledSlots = 0;
  readonly faultsBefore: number;
  private readonly comp = new Uint8Array(32);

  constructor(readonly fn: PciFunction, private readonly dma: DmaPort, clock: MachineClock, opts: DsaOptions = {}) {
    this.nsPerWrite = opts.nsPerWrite ?? 10_000;
    if (!(this.nsPerWrite >= 1)) throw new RangeError(`nsPerWrite ${this.nsPerWrite} must be >= 1`);
    this.faultsBefore = dma.faults.length;
    fn.model = this;
    clock.attach(this);
  }

  get name(): string { return `dsa ${this.fn.name}`; }
  get pending(): number { return this.queue.length; }

  /**
   * A portal write (MOVDIR64B to the WQ portal in BAR 2): accepted only while Memory Space is
   * enabled (otherwise the MMIO write goes nowhere). Returns whether it was queued.
   */
  submit(desc: DsaDescriptor): boolean {
    if (!this.fn.memoryEnabled) return false;
    let total: number;
    let ringEnds: Float64Array | null = null;
    if (desc.opcode === DSA_OPCODE_MEMMOVE) {
      if (desc.size <= 0 || desc.size % DSA_MEMMOVE_CHUNK !== 0) throw new RangeError(`memmove size ${desc.size} must be a positive multiple of ${DSA_MEMMOVE_CHUNK}`);
      total = desc.size / DSA_MEMMOVE_CHUNK;
    } else {
      if (desc.ring.length === 0 || desc.ring.some((b) => b.length <= 0 || b.length % 8 !== 0 || b.iova % 8 !== 0)) throw new RangeError('seqwrite ring buffers must be non-empty, 8-byte aligned');
      total = desc.count;
      ringEnds = new Float64Array(desc.ring.length);
      let slots = 0;
      desc.ring.forEach((b, i) => { slots += b.length / 8; (ringEnds as Float64Array)[i] = slots; });
    }
    this.queue.push({ desc, done: 0, total, ringEnds });
    return true;
  }

  /** The queue (each descriptor's progress), the counters and the write log. */
  save(): Restore {
    const queue = this.queue.slice();
    const done = queue.map((a) => a.done);
    const { dropped, completed, stalledSlots } = this;
    const log = this.log.save();
    return () => {
      this.queue = queue.slice();
      queue.forEach((a, i) => { a.done = done[i] as number; });
      this.dropped = dropped;
      this.completed = completed;
      this.stalledSlots = stalledSlots;
      log();
    };
  }

  reset(): void {
    this.dropped += this.queue.length;
    this.queue = [];
  }

  tick(fromNs: number, toNs: number): void {
    const step = this.nsPerWrite;
    let k = Math.ceil(fromNs / step);
    const end = Math.ceil(toNs / step);
    if (k >= end || this.queue.length === 0) return;
    if (!this.fn.dmaPathOpen) { this.stalledSlots += end - k; return; }
    for (; k < end && this.queue.length > 0; k++) this.writeOne(k * step);
  }

  private writeOne(t: number): void {
    const a = this.queue[0] as Active;
    const seg = this.fn.domain;
    const rid = this.fn.requesterId;
    if (a.desc.opcode === DSA_OPCODE_MEMMOVE) {
      const off = a.done * DSA_MEMMOVE_CHUNK;
      const data = this.dma.read(seg, rid, a.desc.src + off, DSA_MEMMOVE_CHUNK);
      if (data) {
        const phys = this.dma.write(seg, rid, a.desc.dst + off, data);
        if (phys >= 0) this.log.push(phys, a.done, t);
      }
    } else {
      const d = a.desc;
      const seq = d.startSeq + a.done;
      const ends = a.ringEnds as Float64Array;
      const slot = a.done % (ends[ends.length - 1] as number);
      // The first buffer whose prefix sum passes the slot.
      let lo = 0;
      let hi = ends.length - 1;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if ((ends[mid] as number) <= slot) lo = mid + 1; else hi = mid;
      }
      const before = lo === 0 ? 0 : ends[lo - 1] as number;
      const iova = (d.ring[lo] as { iova: number }).iova + (slot - before) * 8;
      const phys = this.dma.writeU64(seg, rid, iova, seq);
      if (phys >= 0) this.log.push(phys, seq, t);
    }
    a.done++;
    if (a.done >= a.total) {
      this.queue.shift();
      this.completed++;
      if (a.desc.completion) {
        this.comp.fill(0);
        this.comp[0] = DSA_COMP_SUCCESS;
        this.dma.write(seg, rid, a.desc.completion, this.comp);
      }
    }
  }
}
