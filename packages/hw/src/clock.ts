/**
 * The machine's clock, in nanoseconds since power-on. Nothing advances it by itself: the
 * runtime charges a documented cost per operation and boot phase, guests and devices are
 * charged for their work, and the kexec jump charges its own. Devices tick on it, so a DMA
 * engine or a vCPU keeps working across the jump, below any kernel. Blackout windows are read
 * off this clock, never off wall time, so they are the same on every run.
 */
import { saveArray, type Restore } from './state.js';

/** Something that works while time passes: called with the interval [fromNs, toNs). */
export interface Ticker {
  readonly name: string;
  tick(fromNs: number, toNs: number): void;
  /** Its own state, for a machine snapshot (see Machine.snapshot); absent: it keeps none between ticks. */
  save?(): Restore;
}

/** What crossing kexec costs the machine: purgatory, the jump and early decompression (ns). */
export const KEXEC_JUMP_NS = 20_000_000;

export class MachineClock {
  private ns: number;
  private readonly tickers: Ticker[] = [];
  private ticking = false;

  constructor(startNs = 0) {
    this.ns = startNs;
  }

  /** Nanoseconds since power-on. */
  get now(): number { return this.ns; }

  /**
   * Let `ns` pass. Every ticker runs for the whole interval, in attach order. A ticker that
   * advances the clock itself would nest intervals: refused.
   */
  advance(ns: number): void {
    if (!Number.isFinite(ns) || ns < 0) throw new RangeError(`clock: cannot advance by ${ns} ns`);
    if (this.ticking) throw new Error('clock: a ticker advanced the clock from inside its tick');
    if (ns === 0) return;
    const from = this.ns;
    const to = from + ns;
    if (!Number.isSafeInteger(Math.ceil(to))) throw new RangeError(`clock: ${to} ns is past the clock's range`);
    this.ns = to;
    this.ticking = true;
    try {
      for (const t of this.tickers) t.tick(from, to);
    } finally {
      this.ticking = false;
    }
  }

  /** Start ticking `t`; returns the detach function. */
  attach(t: Ticker): () => void {
    this.tickers.push(t);
    return () => {
      const i = this.tickers.indexOf(t);
      if (i >= 0) this.tickers.splice(i, 1);
    };
  }

  get attached(): readonly Ticker[] { return this.tickers; }

  /** The reading, the tickers attached and each ticker's own state. */
  save(): Restore {
    const ns = this.ns;
    const list = saveArray(this.tickers);
    const own = this.tickers.map((t) => t.save?.()).filter((f): f is Restore => f !== undefined);
    return () => { this.ns = ns; list(); for (const f of own) f(); };
  }
}
