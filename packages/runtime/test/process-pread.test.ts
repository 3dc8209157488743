/**
 * pread(2) in both shapes: into a new array (never larger than what the file holds past the
 * offset) and into the caller's buffer (preadInto: the count back, the rest of the buffer
 * untouched, f_pos untouched, the same errno as pread).
 */
import { describe, expect, it } from 'vitest';
import { createMachine } from '@liveupdate/hw';
import { Inode, KFile, boot, type FileOperations, type Process } from '@liveupdate/runtime';
import { errnoOf } from './support/client.js';

const CONTENT = Uint8Array.from({ length: 100 }, (_, i) => i + 1);

/** A process holding a 100-byte read-only file at the returned fd, and one with no read op. */
function world(): { p: Process; fd: number; noRead: number; reads: number[] } {
  const k = boot(createMachine({ memory: '1GiB' }), { cmdline: 'kho=on' });
  const p = k.spawn('reader');
  const reads: number[] = [];
  const ops: FileOperations = {
    kind: 'test:bytes',
    read: (_f, dst, pos) => {
      reads.push(dst.length);
      const n = Math.max(0, Math.min(dst.length, CONTENT.length - pos));
      dst.set(CONTENT.subarray(pos, pos + n));
      return n;
    },
    size: () => CONTENT.length,
  };
  const fd = p.fdInstall(new KFile(ops, new Inode(), null, 0o2, k.id), false);
  const noRead = p.fdInstall(new KFile({ kind: 'test:none' }, new Inode(), null, 0o2, k.id), false);
  return { p, fd, noRead, reads };
}

describe('pread and preadInto', () => {
  it('preadInto fills the caller buffer, returns the count and leaves the bytes past it alone', () => {
    const { p, fd } = world();
    const dst = new Uint8Array(16).fill(0xee);
    expect(p.preadInto(fd, dst, 90)).toBe(10);
    expect(Array.from(dst)).toEqual([91, 92, 93, 94, 95, 96, 97, 98, 99, 100, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee]);
    expect(p.preadInto(fd, dst, 100)).toBe(0);
  });

  it('preadInto does not move f_pos', () => {
    const { p, fd } = world();
    p.lseek(fd, 7, 0);
    p.preadInto(fd, new Uint8Array(4), 50);
    expect(p.read(fd, 2)).toEqual(Uint8Array.from([8, 9]));
  });

  it('preadInto answers EBADF, EINVAL (negative or fractional offset) and EINVAL (no read op) as pread does', () => {
    const { p, fd, noRead } = world();
    const dst = new Uint8Array(4);
    expect(errnoOf(() => p.preadInto(99, dst, 0))).toBe('EBADF');
    expect(errnoOf(() => p.preadInto(fd, dst, -1))).toBe('EINVAL');
    expect(errnoOf(() => p.preadInto(fd, dst, 0.5))).toBe('EINVAL');
    expect(errnoOf(() => p.preadInto(noRead, dst, 0))).toBe('EINVAL');
    expect(errnoOf(() => p.pread(noRead, 4, 0))).toBe('EINVAL');
  });

  it('pread asks the file for no more than it holds past the offset', () => {
    const { p, fd, reads } = world();
    const got = p.pread(fd, 4 << 20, 60);
    expect(got).toEqual(CONTENT.subarray(60));
    expect(got.buffer.byteLength).toBe(40);
    expect(reads).toEqual([40]);
    expect(p.pread(fd, 10, 200).length).toBe(0);
  });
});
