/**
 * vmalloc: virtually contiguous memory backed by scattered pages. An area is a list of
 * physical runs of 2^order pages; reads and writes go through it like the kernel's page tables.
 */
import { PAGE_SIZE } from '@liveupdate/hw';
import type { Mm } from './mm.js';

export class VmArea {
  constructor(
    private readonly mm: Mm,
    /** First pfn of each run of 2^order pages, in virtual order. */
    readonly runs: Float64Array,
    readonly order: number,
    readonly size: number,
  ) {}

  get pageCount(): number { return this.runs.length * 2 ** this.order; }

  private physOf(offset: number): number {
    const runBytes = 2 ** this.order * PAGE_SIZE;
    const run = Math.floor(offset / runBytes);
    return (this.runs[run] as number) * PAGE_SIZE + (offset % runBytes);
  }

  read(offset: number, length: number): Uint8Array {
    this.bounds(offset, length);
    const out = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const off = offset + done;
      const n = Math.min(PAGE_SIZE - (off % PAGE_SIZE), length - done);
      this.mm.memory.readInto(this.physOf(off), out.subarray(done, done + n));
      done += n;
    }
    return out;
  }

  write(offset: number, bytes: Uint8Array): void {
    this.bounds(offset, bytes.length);
    let done = 0;
    while (done < bytes.length) {
      const off = offset + done;
      const n = Math.min(PAGE_SIZE - (off % PAGE_SIZE), bytes.length - done);
      this.mm.memory.write(this.physOf(off), bytes.subarray(done, done + n));
      done += n;
    }
  }

  private bounds(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.pageCount * PAGE_SIZE) {
      throw new RangeError(`vmalloc access [${offset}, +${length}) outside an area of ${this.size} bytes`);
    }
  }
}

/** vmalloc(size): order-0 pages, zeroed (vzalloc); null on -ENOMEM with everything freed. */
export function vzalloc(mm: Mm, size: number): VmArea | null {
  const pages = Math.max(1, Math.ceil(size / PAGE_SIZE));
  const runs = new Float64Array(pages);
  for (let i = 0; i < pages; i++) {
    const pfn = mm.allocZeroedPages(0);
    if (pfn === null) {
      for (let j = 0; j < i; j++) mm.freePages(runs[j] as number, 0);
      return null;
    }
    runs[i] = pfn;
  }
  return new VmArea(mm, runs, 0, size);
}

export function vfree(mm: Mm, area: VmArea): void {
  for (const pfn of area.runs) mm.freePages(pfn, area.order);
}
