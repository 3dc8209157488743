/**
 * The memfd read path: read(2)/pread(2) return exactly what was written with holes as zeros,
 * wherever the read starts and ends, into a fresh array or the caller's buffer; and the
 * resident-run iterator gives the folios of a range as file- and physically-contiguous runs.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { PAGE_SIZE } from '@liveupdate/hw';
import type { Process } from '@liveupdate/sdk';
import memfd, { FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, MFD_HUGETLB, MFD_HUGE_2MB, memfdCreate, memfdStore } from '@liveupdate/plugin-memfd';
import { inodeOf } from '../src/memfd.js';
import { MiB, pattern, start } from './support.js';

function vmm(cmdline?: string): Process {
  return start([memfd()], { memory: '2GiB', ...(cmdline ? { cmdline } : {}) }).p;
}

/**
 * Where two byte arrays first differ (the shorter length if one is a prefix), or -1 when
 * equal: vitest's deep equality walks a typed array element by element, too slow for MiBs.
 */
function firstDifference(got: Uint8Array, want: Uint8Array): number {
  if (Buffer.from(got.buffer, got.byteOffset, got.length).equals(Buffer.from(want.buffer, want.byteOffset, want.length))) return -1;
  const n = Math.min(got.length, want.length);
  for (let i = 0; i < n; i++) if (got[i] !== want[i]) return i;
  return n;
}

/** Runs as [fileOffset, phys, bytes] triples. */
function runsOf(p: Process, fd: number, pos: number, length: number): Array<[number, number, number]> {
  const out: Array<[number, number, number]> = [];
  inodeOf(p.file(fd, 'test')).forEachResidentRun(pos, length, (off, phys, bytes) => { out.push([off, phys, bytes]); });
  return out;
}

describe('memfd read path', () => {
  it('property: pread and preadInto at any offset and length equal a byte model of writes and punched holes', () => {
    const SIZE = 24 * PAGE_SIZE;
    const op = fc.oneof(
      fc.record({ kind: fc.constant('write' as const), at: fc.integer({ min: 0, max: SIZE - 1 }), len: fc.integer({ min: 1, max: 3 * PAGE_SIZE }), seed: fc.nat(255) }),
      fc.record({ kind: fc.constant('punch' as const), at: fc.integer({ min: 0, max: SIZE - 1 }), len: fc.integer({ min: 1, max: 4 * PAGE_SIZE }) }),
    );
    const read = fc.record({ at: fc.integer({ min: 0, max: SIZE + PAGE_SIZE }), len: fc.integer({ min: 0, max: SIZE }) });
    const p = vmm();
    fc.assert(fc.property(fc.array(op, { maxLength: 12 }), fc.array(read, { minLength: 1, maxLength: 6 }), (ops, reads) => {
      const fd = memfdCreate(p, 'model', 0);
      p.ftruncate(fd, SIZE);
      const model = new Uint8Array(SIZE);
      for (const o of ops) {
        const len = Math.min(o.len, SIZE - o.at);
        if (o.kind === 'write') {
          const bytes = pattern(len, o.seed);
          p.pwrite(fd, bytes, o.at);
          model.set(bytes, o.at);
        } else {
          p.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, o.at, len);
          model.fill(0, o.at, o.at + len);
        }
      }
      const buf = new Uint8Array(SIZE).fill(0xee);
      for (const r of reads) {
        const want = model.subarray(Math.min(r.at, SIZE), Math.min(r.at + r.len, SIZE));
        expect(firstDifference(p.pread(fd, r.len, r.at), want)).toBe(-1);
        const dst = buf.subarray(0, r.len).fill(0xee);
        expect(p.preadInto(fd, dst, r.at)).toBe(want.length);
        expect(firstDifference(dst.subarray(0, want.length), want)).toBe(-1);
        // Bytes past the count are the caller's, untouched.
        expect(dst.subarray(want.length).every((b) => b === 0xee)).toBe(true);
      }
      p.close(fd);
    }), { numRuns: 60 });
  });

  it('reads a 1 GiB file with two written pages as zeros around them', () => {
    const p = vmm();
    const fd = memfdCreate(p, 'sparse', 0);
    p.ftruncate(fd, 1024 * MiB);
    p.pwrite(fd, pattern(PAGE_SIZE, 1), 300 * MiB);
    p.pwrite(fd, pattern(100, 2), 700 * MiB + 5);
    const dst = new Uint8Array(4 * MiB).fill(0xee);
    expect(p.preadInto(fd, dst, 298 * MiB)).toBe(4 * MiB);
    const want = new Uint8Array(4 * MiB);
    want.set(pattern(PAGE_SIZE, 1), 2 * MiB);
    expect(firstDifference(dst, want)).toBe(-1);
    expect(p.pread(fd, 200, 700 * MiB)).toEqual(Uint8Array.from([0, 0, 0, 0, 0, ...pattern(100, 2), ...new Uint8Array(95)]));
  });

  it('preadInto at or past the end of the file returns 0 and leaves the buffer alone', () => {
    const p = vmm();
    const fd = memfdCreate(p, 'small', 0);
    p.pwrite(fd, pattern(10, 3), 0);
    const dst = new Uint8Array(8).fill(9);
    expect(p.preadInto(fd, dst, 10)).toBe(0);
    expect(p.preadInto(fd, dst, 1 << 40)).toBe(0);
    expect(Array.from(dst)).toEqual([9, 9, 9, 9, 9, 9, 9, 9]);
  });

  it('pread of 4 MiB from a 4 KiB file allocates only the 4 KiB it returns', () => {
    const p = vmm();
    const fd = memfdCreate(p, 'small', 0);
    p.pwrite(fd, pattern(PAGE_SIZE, 4), 0);
    const got = p.pread(fd, 4 * MiB, 0);
    expect(got).toEqual(pattern(PAGE_SIZE, 4));
    expect(got.buffer.byteLength).toBe(PAGE_SIZE);
  });

  it('gives physically contiguous resident folios as one run, clipped to the range, and skips holes', () => {
    const p = vmm();
    const fd = memfdCreate(p, 'runs', 0);
    p.ftruncate(fd, 64 * PAGE_SIZE);
    p.pwrite(fd, pattern(4 * PAGE_SIZE, 5), 8 * PAGE_SIZE); // folios 8..11, allocated in a row
    p.pwrite(fd, pattern(PAGE_SIZE, 6), 40 * PAGE_SIZE);
    const m = inodeOf(p.file(fd, 'test'));
    const pfn8 = m.cache.get(8);
    expect([9, 10, 11].map((i) => m.cache.get(i))).toEqual([pfn8 + 1, pfn8 + 2, pfn8 + 3]);
    expect(runsOf(p, fd, 0, 64 * PAGE_SIZE)).toEqual([
      [8 * PAGE_SIZE, pfn8 * PAGE_SIZE, 4 * PAGE_SIZE],
      [40 * PAGE_SIZE, m.cache.get(40) * PAGE_SIZE, PAGE_SIZE],
    ]);
    expect(runsOf(p, fd, 9 * PAGE_SIZE + 100, PAGE_SIZE)).toEqual([[9 * PAGE_SIZE + 100, (pfn8 + 1) * PAGE_SIZE + 100, PAGE_SIZE]]);
    expect(runsOf(p, fd, 12 * PAGE_SIZE, 28 * PAGE_SIZE)).toEqual([]);
  });

  it('splits a run where folios are not physically contiguous, and stops when the callback returns true', () => {
    const p = vmm();
    const a = memfdCreate(p, 'a', 0);
    const b = memfdCreate(p, 'b', 0);
    p.pwrite(a, pattern(PAGE_SIZE, 7), 0);
    p.pwrite(b, pattern(PAGE_SIZE, 8), 0); // takes the page after a's first one
    p.pwrite(a, pattern(PAGE_SIZE, 9), PAGE_SIZE);
    const runs = runsOf(p, a, 0, 2 * PAGE_SIZE);
    expect(runs.map(([off, , bytes]) => [off, bytes])).toEqual([[0, PAGE_SIZE], [PAGE_SIZE, PAGE_SIZE]]);
    let calls = 0;
    inodeOf(p.file(a, 'test')).forEachResidentRun(0, 2 * PAGE_SIZE, () => { calls++; return true; });
    expect(calls).toBe(1);
  });

  it('gives hugetlb folios as runs of whole 2 MiB folios and reads them back', () => {
    const p = vmm('kho=on liveupdate=on hugepagesz=2M hugepages=4');
    const fd = memfdCreate(p, 'huge', MFD_HUGETLB | MFD_HUGE_2MB);
    p.ftruncate(fd, 8 * MiB);
    memfdStore(p, fd, pattern(3 * MiB, 10), MiB);
    const runs = runsOf(p, fd, 0, 8 * MiB);
    expect(runs.map(([off, , bytes]) => [off, bytes])).toEqual([[0, 4 * MiB]]);
    const want = new Uint8Array(8 * MiB);
    want.set(pattern(3 * MiB, 10), MiB);
    expect(firstDifference(p.pread(fd, 8 * MiB, 0), want)).toBe(-1);
  });
});
