/**
 * The "ringbuf" file type: a byte ring whose bytes live in one naturally aligned folio of
 * the kernel's memory (so a live update keeps them in place), behind a file descriptor.
 *
 * Userspace gets one with ringbufCreate(proc, size) — open('/dev/ringbuf') plus sizing, the
 * way a character device hands out anonymous objects — and uses it through the plugin's
 * syscalls, which take the process first: ringbufWrite, ringbufRead, ringbufPeek, ringbufStat.
 * The producer never blocks: when the ring is full the oldest unread bytes are overwritten
 * and counted in `dropped`.
 */
import { ErrnoError, Inode, KFile, PAGE_SIZE, type FileOperations, type Kernel, type Process } from '@liveupdate/sdk';

export const RINGBUF_DEVICE = '/dev/ringbuf';
/** 4 MiB: the largest ring (order 10). */
export const RINGBUF_MAX_ORDER = 10;
const O_RDWR = 0o2;

/** What ringbufStat reports. */
export interface RingbufStat {
  readonly size: number;
  /** Bytes ever written. */
  readonly head: number;
  /** Bytes ever consumed (or skipped because they were overwritten). */
  readonly tail: number;
  /** Unread bytes. */
  readonly used: number;
  /** Bytes overwritten before they were read. */
  readonly dropped: number;
}

/** The in-kernel object behind a ringbuf file (its private_data). */
export class Ringbuf {
  /** First page frame of the ring folio; -1 until sized. */
  pfn = -1;
  order = 0;
  head = 0;
  tail = 0;
  dropped = 0;
  released = false;

  constructor(readonly kernel: Kernel) {}

  get isSized(): boolean { return this.pfn >= 0; }
  get size(): number { return PAGE_SIZE * 2 ** this.order; }
  get phys(): number { return this.pfn * PAGE_SIZE; }
  get used(): number { return this.head - this.tail; }

  /** Allocate the ring (zeroed): `size` must be a power of two from one page to 4 MiB. */
  setup(size: number): void {
    if (this.isSized) throw new ErrnoError('EBUSY', 'ringbuf_setup', 'already sized');
    if (!Number.isSafeInteger(size) || size < PAGE_SIZE || size > PAGE_SIZE * 2 ** RINGBUF_MAX_ORDER || (size & (size - 1)) !== 0) {
      throw new ErrnoError('EINVAL', 'ringbuf_setup', `size ${size} is not a power of two in [${PAGE_SIZE}, ${PAGE_SIZE * 2 ** RINGBUF_MAX_ORDER}]`);
    }
    const order = Math.log2(size / PAGE_SIZE);
    const pfn = this.kernel.mm.allocZeroedPages(order);
    if (pfn === null) throw new ErrnoError('ENOMEM', 'ringbuf_setup');
    this.pfn = pfn;
    this.order = order;
  }

  /** Adopt a ring handed over by the previous kernel (already restored). */
  adopt(pfn: number, order: number, head: number, tail: number, dropped: number): void {
    this.pfn = pfn;
    this.order = order;
    this.head = head;
    this.tail = tail;
    this.dropped = dropped;
  }

  private copyOut(pos: number, n: number): Uint8Array {
    const out = new Uint8Array(n);
    const mem = this.kernel.machine.memory;
    const off = pos % this.size;
    const first = Math.min(n, this.size - off);
    mem.readInto(this.phys + off, out.subarray(0, first));
    if (first < n) mem.readInto(this.phys, out.subarray(first));
    return out;
  }

  write(src: Uint8Array): number {
    this.need('ringbuf_write');
    const mem = this.kernel.machine.memory;
    // Only the last `size` bytes of a write can still be in the ring afterwards.
    const keep = src.length > this.size ? src.subarray(src.length - this.size) : src;
    let pos = this.head + (src.length - keep.length);
    for (let done = 0; done < keep.length;) {
      const off = pos % this.size;
      const n = Math.min(keep.length - done, this.size - off);
      mem.write(this.phys + off, keep.subarray(done, done + n));
      done += n;
      pos += n;
    }
    this.head += src.length;
    if (this.head - this.tail > this.size) {
      this.dropped += this.head - this.tail - this.size;
      this.tail = this.head - this.size;
    }
    return src.length;
  }

  peek(): Uint8Array {
    this.need('ringbuf_peek');
    return this.copyOut(this.tail, this.used);
  }

  read(max: number): Uint8Array {
    this.need('ringbuf_read');
    const n = Math.max(0, Math.min(max, this.used));
    const out = this.copyOut(this.tail, n);
    this.tail += n;
    return out;
  }

  stat(): RingbufStat {
    return { size: this.isSized ? this.size : 0, head: this.head, tail: this.tail, used: this.used, dropped: this.dropped };
  }

  /** Last fput: the ring goes back to the page allocator. */
  free(): void {
    if (this.released) return;
    this.released = true;
    if (!this.isSized || this.kernel.isDead) return;
    this.kernel.mm.freePages(this.pfn, this.order);
  }

  private need(syscall: string): void {
    if (!this.isSized) throw new ErrnoError('EINVAL', syscall, 'ring not sized');
  }
}

export const RINGBUF_FOPS: FileOperations = {
  kind: 'anon_inode:[ringbuf]',
  release: (file) => (file.privateData as Ringbuf).free(),
};

/** A ringbuf struct file in `kernel` (the device's open, and the handler's retrieve). */
export function newRingbufFile(kernel: Kernel, rb: Ringbuf): KFile {
  return new KFile(RINGBUF_FOPS, new Inode(rb), rb, O_RDWR, kernel.id);
}

export const isRingbuf = (file: KFile): boolean => file.privateData instanceof Ringbuf;

/** The ring behind `fd`, or EINVAL if fd is another kind of file. */
export function ringbufOf(proc: Process, fd: number, syscall = 'ringbuf'): Ringbuf {
  const file = proc.file(fd, syscall);
  if (!isRingbuf(file)) throw new ErrnoError('EINVAL', syscall, `fd ${fd} is not a ringbuf`);
  return file.privateData as Ringbuf;
}

/** ringbuf_create(size): a new ring of `size` bytes on a new fd (needs the ringbuf plugin loaded). */
export function ringbufCreate(proc: Process, size: number): number {
  const fd = proc.open(RINGBUF_DEVICE, O_RDWR);
  try {
    ringbufOf(proc, fd, 'ringbuf_create').setup(size);
  } catch (e) {
    proc.close(fd);
    throw e;
  }
  return fd;
}

/** Append bytes; returns the count written (always all of it: old bytes are overwritten). */
export function ringbufWrite(proc: Process, fd: number, bytes: Uint8Array): number {
  return ringbufOf(proc, fd, 'ringbuf_write').write(bytes);
}

/** Consume up to `max` unread bytes. */
export function ringbufRead(proc: Process, fd: number, max = Number.MAX_SAFE_INTEGER): Uint8Array {
  return ringbufOf(proc, fd, 'ringbuf_read').read(max);
}

/** The unread bytes, without consuming them. */
export function ringbufPeek(proc: Process, fd: number): Uint8Array {
  return ringbufOf(proc, fd, 'ringbuf_peek').peek();
}

export function ringbufStat(proc: Process, fd: number): RingbufStat {
  return ringbufOf(proc, fd, 'ringbuf_stat').stat();
}
