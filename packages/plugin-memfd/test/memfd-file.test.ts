/**
 * The memfd file type itself (mm/memfd.c, mm/shmem.c, fs/hugetlbfs): creation flags, seals,
 * holes, hole punching, fallocate, lseek and the hugetlbfs restrictions. No live update here.
 */
import { describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '@liveupdate/hw';
import type { Process } from '@liveupdate/sdk';
import memfd, {
  F_ADD_SEALS, F_GET_SEALS, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, MFD_ALLOW_SEALING, MFD_CLOEXEC, MFD_EXEC,
  MFD_HUGETLB, MFD_HUGE_2MB, MFD_NAME_MAX_LEN, MFD_NOEXEC_SEAL, memfdAbi, memfdCreate, memfdResidentPages, memfdStore,
} from '@liveupdate/plugin-memfd';
import { MiB, SEEK_CUR, SEEK_END, SEEK_SET, errnoOf, pattern, start } from './support.js';

const { F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_WRITE, F_SEAL_FUTURE_WRITE, F_SEAL_EXEC } = memfdAbi;
const F_GETFD = 1;

function vmm(cmdline?: string): Process {
  return start([memfd()], { memory: '2GiB', ...(cmdline ? { cmdline } : {}) }).p;
}

/** A sealable memfd of `size` bytes. */
function sealable(p: Process, size = 0): number {
  const fd = memfdCreate(p, 'sealed', MFD_ALLOW_SEALING);
  if (size > 0) p.ftruncate(fd, size);
  return fd;
}

describe('memfd_create', () => {
  it('without MFD_ALLOW_SEALING starts sealed with F_SEAL_SEAL, so F_ADD_SEALS fails EPERM', () => {
    const p = vmm();
    const fd = memfdCreate(p, 'ram', 0);
    expect(p.fcntl(fd, F_GET_SEALS)).toBe(F_SEAL_SEAL);
    expect(errnoOf(() => p.fcntl(fd, F_ADD_SEALS, F_SEAL_GROW))).toBe('EPERM');
  });

  it('with MFD_ALLOW_SEALING starts with no seals', () => {
    const p = vmm();
    expect(p.fcntl(memfdCreate(p, 'ram', MFD_ALLOW_SEALING), F_GET_SEALS)).toBe(0);
  });

  it('with MFD_NOEXEC_SEAL starts with F_SEAL_EXEC only: sealing stays allowed', () => {
    const p = vmm();
    const fd = memfdCreate(p, 'ram', MFD_NOEXEC_SEAL);
    expect(p.fcntl(fd, F_GET_SEALS)).toBe(F_SEAL_EXEC);
    p.fcntl(fd, F_ADD_SEALS, F_SEAL_GROW);
    expect(p.fcntl(fd, F_GET_SEALS)).toBe(F_SEAL_EXEC | F_SEAL_GROW);
  });

  it('sets FD_CLOEXEC only with MFD_CLOEXEC', () => {
    const p = vmm();
    expect(p.fcntl(memfdCreate(p, 'a', MFD_CLOEXEC), F_GETFD)).toBe(1);
    expect(p.fcntl(memfdCreate(p, 'b', 0), F_GETFD)).toBe(0);
  });

  it('names the file /memfd:<name> (deleted) and starts empty', () => {
    const p = vmm();
    const fd = memfdCreate(p, 'guest-ram', 0);
    expect(p.file(fd, 'stat').ops.kind).toBe('/memfd:guest-ram (deleted)');
    expect(p.lseek(fd, 0, SEEK_END)).toBe(0);
    expect(memfdResidentPages(p, fd)).toBe(0);
  });

  it.each([
    ['an unknown flag', 0x100],
    ['a huge page size without MFD_HUGETLB', MFD_HUGE_2MB],
    ['MFD_EXEC together with MFD_NOEXEC_SEAL', MFD_EXEC | MFD_NOEXEC_SEAL],
  ])('fails EINVAL for %s', (_what, flags) => {
    const p = vmm();
    expect(errnoOf(() => memfdCreate(p, 'ram', flags))).toBe('EINVAL');
  });

  it('accepts a name of MFD_NAME_MAX_LEN (249) bytes and fails EINVAL at 250', () => {
    const p = vmm();
    expect(errnoOf(() => memfdCreate(p, 'n'.repeat(MFD_NAME_MAX_LEN), 0))).toBe(0);
    expect(errnoOf(() => memfdCreate(p, 'n'.repeat(MFD_NAME_MAX_LEN + 1), 0))).toBe('EINVAL');
  });
});

describe('seals', () => {
  it('F_SEAL_SEAL forbids adding any further seal (EPERM) and keeps the seals as they were', () => {
    const p = vmm();
    const fd = sealable(p);
    p.fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_SEAL);
    expect(errnoOf(() => p.fcntl(fd, F_ADD_SEALS, F_SEAL_GROW))).toBe('EPERM');
    expect(p.fcntl(fd, F_GET_SEALS)).toBe(F_SEAL_SHRINK | F_SEAL_SEAL);
  });

  it('F_SEAL_SHRINK makes a shrinking ftruncate fail EPERM; growing still works', () => {
    const p = vmm();
    const fd = sealable(p, 2 * PAGE_SIZE);
    p.fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK);
    expect(errnoOf(() => p.ftruncate(fd, PAGE_SIZE))).toBe('EPERM');
    p.ftruncate(fd, 3 * PAGE_SIZE);
    expect(p.lseek(fd, 0, SEEK_END)).toBe(3 * PAGE_SIZE);
  });

  it('F_SEAL_GROW makes growing fail EPERM: ftruncate, pwrite past the end, fallocate past the end (even with KEEP_SIZE)', () => {
    const p = vmm();
    const fd = sealable(p, PAGE_SIZE);
    p.fcntl(fd, F_ADD_SEALS, F_SEAL_GROW);
    expect(errnoOf(() => p.ftruncate(fd, 2 * PAGE_SIZE))).toBe('EPERM');
    expect(errnoOf(() => p.pwrite(fd, pattern(16, 1), PAGE_SIZE - 8))).toBe('EPERM');
    expect(errnoOf(() => p.fallocate(fd, 0, 0, 2 * PAGE_SIZE))).toBe('EPERM');
    expect(errnoOf(() => p.fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 2 * PAGE_SIZE))).toBe('EPERM');
    expect(p.pwrite(fd, pattern(16, 1), 0)).toBe(16);
    expect(p.lseek(fd, 0, SEEK_END)).toBe(PAGE_SIZE);
  });

  it('F_SEAL_WRITE makes pwrite and hole punching fail EPERM and leaves the content as it was', () => {
    const p = vmm();
    const fd = sealable(p);
    const data = pattern(PAGE_SIZE, 2);
    p.pwrite(fd, data, 0);
    p.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE);
    expect(errnoOf(() => p.pwrite(fd, pattern(8, 3), 0))).toBe('EPERM');
    expect(errnoOf(() => p.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, PAGE_SIZE))).toBe('EPERM');
    expect(p.pread(fd, PAGE_SIZE, 0)).toEqual(data);
  });

  it('F_SEAL_FUTURE_WRITE also makes pwrite fail EPERM', () => {
    const p = vmm();
    const fd = sealable(p, PAGE_SIZE);
    p.fcntl(fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE);
    expect(errnoOf(() => p.pwrite(fd, pattern(8, 3), 0))).toBe('EPERM');
  });

  it('F_ADD_SEALS with an unknown seal bit fails EINVAL', () => {
    const p = vmm();
    const fd = sealable(p);
    expect(errnoOf(() => p.fcntl(fd, F_ADD_SEALS, 0x40))).toBe('EINVAL');
    expect(p.fcntl(fd, F_GET_SEALS)).toBe(0);
  });
});

describe('holes, punching and fallocate', () => {
  it('a write into a large file allocates only the page it touches; holes read zero and stay holes', () => {
    const p = vmm();
    const fd = memfdCreate(p, 'sparse', 0);
    p.ftruncate(fd, 4 * MiB);
    p.pwrite(fd, pattern(3, 4), MiB);
    expect(memfdResidentPages(p, fd)).toBe(1);
    expect(p.pread(fd, 2 * PAGE_SIZE, 0)).toEqual(new Uint8Array(2 * PAGE_SIZE));
    expect(p.pread(fd, 3, MiB)).toEqual(pattern(3, 4));
    expect(memfdResidentPages(p, fd)).toBe(1);
  });

  it('pwrite past the end grows the file to the end of the write', () => {
    const p = vmm();
    const fd = memfdCreate(p, 'ram', 0);
    expect(p.pwrite(fd, pattern(10, 5), 3 * PAGE_SIZE + 5)).toBe(10);
    expect(p.lseek(fd, 0, SEEK_END)).toBe(3 * PAGE_SIZE + 15);
    expect(memfdResidentPages(p, fd)).toBe(1);
  });

  it('pread stops at the end of the file', () => {
    const p = vmm();
    const fd = memfdCreate(p, 'ram', 0);
    p.pwrite(fd, pattern(100, 6), 0);
    expect(p.pread(fd, 4096, 90).length).toBe(10);
    expect(p.pread(fd, 16, 100).length).toBe(0);
  });

  it('FALLOC_FL_PUNCH_HOLE frees whole pages, zeroes partial ones and keeps the size', () => {
    const p = vmm();
    const fd = memfdCreate(p, 'ram', 0);
    p.pwrite(fd, pattern(3 * PAGE_SIZE, 7), 0);
    // Punch [100, 2 pages + 100): the tail of page 0 zeroed, page 1 freed, the head of page 2 zeroed.
    p.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 100, 2 * PAGE_SIZE);
    expect(memfdResidentPages(p, fd)).toBe(2);
    expect(p.lseek(fd, 0, SEEK_END)).toBe(3 * PAGE_SIZE);
    const want = pattern(3 * PAGE_SIZE, 7);
    want.fill(0, 100, 2 * PAGE_SIZE + 100);
    expect(p.pread(fd, 3 * PAGE_SIZE, 0)).toEqual(want);
  });

  it('FALLOC_FL_PUNCH_HOLE without FALLOC_FL_KEEP_SIZE, or an unknown mode, fails EOPNOTSUPP', () => {
    const p = vmm();
    const fd = memfdCreate(p, 'ram', 0);
    p.ftruncate(fd, PAGE_SIZE);
    expect(errnoOf(() => p.fallocate(fd, FALLOC_FL_PUNCH_HOLE, 0, PAGE_SIZE))).toBe('EOPNOTSUPP');
    expect(errnoOf(() => p.fallocate(fd, 0x10, 0, PAGE_SIZE))).toBe('EOPNOTSUPP');
  });

  it('fallocate allocates zeroed pages and grows the size; with FALLOC_FL_KEEP_SIZE the size stays', () => {
    const p = vmm();
    const fd = memfdCreate(p, 'ram', 0);
    p.fallocate(fd, 0, PAGE_SIZE, 2 * PAGE_SIZE);
    expect(memfdResidentPages(p, fd)).toBe(2);
    expect(p.lseek(fd, 0, SEEK_END)).toBe(3 * PAGE_SIZE);
    p.fallocate(fd, FALLOC_FL_KEEP_SIZE, 3 * PAGE_SIZE, 4 * PAGE_SIZE);
    expect(memfdResidentPages(p, fd)).toBe(6);
    expect(p.lseek(fd, 0, SEEK_END)).toBe(3 * PAGE_SIZE);
    expect(p.pread(fd, 3 * PAGE_SIZE, 0)).toEqual(new Uint8Array(3 * PAGE_SIZE));
  });

  it('a shrinking ftruncate frees the pages past the end and zeroes the tail of the last one', () => {
    const p = vmm();
    const fd = memfdCreate(p, 'ram', 0);
    p.pwrite(fd, pattern(3 * PAGE_SIZE, 8), 0);
    p.ftruncate(fd, 100);
    expect(memfdResidentPages(p, fd)).toBe(1);
    p.ftruncate(fd, 2 * PAGE_SIZE);
    const want = new Uint8Array(2 * PAGE_SIZE);
    want.set(pattern(3 * PAGE_SIZE, 8).subarray(0, 100));
    expect(p.pread(fd, 2 * PAGE_SIZE, 0)).toEqual(want);
  });
});

describe('lseek', () => {
  it('SEEK_END is relative to i_size, SEEK_CUR to f_pos, SEEK_SET absolute', () => {
    const p = vmm();
    const fd = memfdCreate(p, 'ram', 0);
    p.ftruncate(fd, 10_000);
    expect(p.lseek(fd, -10, SEEK_END)).toBe(9_990);
    expect(p.lseek(fd, 5, SEEK_CUR)).toBe(9_995);
    expect(p.lseek(fd, 123, SEEK_SET)).toBe(123);
  });

  it('a negative result fails EINVAL and leaves f_pos alone', () => {
    const p = vmm();
    const fd = memfdCreate(p, 'ram', 0);
    p.lseek(fd, 50, SEEK_SET);
    expect(errnoOf(() => p.lseek(fd, -1, SEEK_END))).toBe('EINVAL');
    expect(p.lseek(fd, 0, SEEK_CUR)).toBe(50);
  });

  it('write(2) stores at f_pos and advances it', () => {
    const p = vmm();
    const fd = memfdCreate(p, 'ram', 0);
    p.lseek(fd, 8, SEEK_SET);
    p.write(fd, pattern(4, 9));
    expect(p.lseek(fd, 0, SEEK_CUR)).toBe(12);
    expect(p.pread(fd, 4, 8)).toEqual(pattern(4, 9));
  });
});

describe('hugetlbfs memfds', () => {
  const HUGE = 2 * MiB;
  const hugeVmm = (): Process => vmm('kho=on liveupdate=on hugepagesz=2M hugepages=8');

  it('pwrite fails EINVAL: hugetlbfs has no write(2)', () => {
    const p = hugeVmm();
    const fd = memfdCreate(p, 'huge', MFD_HUGETLB | MFD_HUGE_2MB);
    p.ftruncate(fd, HUGE);
    expect(errnoOf(() => p.pwrite(fd, pattern(8, 1), 0))).toBe('EINVAL');
  });

  it('ftruncate to a size that is not a multiple of the huge page size fails EINVAL', () => {
    const p = hugeVmm();
    const fd = memfdCreate(p, 'huge', MFD_HUGETLB | MFD_HUGE_2MB);
    expect(errnoOf(() => p.ftruncate(fd, HUGE + PAGE_SIZE))).toBe('EINVAL');
    expect(errnoOf(() => p.ftruncate(fd, 2 * HUGE))).toBe(0);
  });

  it('a store through the mapping faults in one whole huge folio (512 pages) from the pool', () => {
    const p = hugeVmm();
    const fd = memfdCreate(p, 'huge', MFD_HUGETLB | MFD_HUGE_2MB);
    p.ftruncate(fd, 2 * HUGE);
    memfdStore(p, fd, pattern(64, 2), HUGE + 10);
    expect(memfdResidentPages(p, fd)).toBe(512);
    expect(p.pread(fd, 64, HUGE + 10)).toEqual(pattern(64, 2));
    expect(p.pread(fd, 16, 0)).toEqual(new Uint8Array(16));
  });

  it('a store past the end of the file fails EFAULT (SIGBUS)', () => {
    const p = hugeVmm();
    const fd = memfdCreate(p, 'huge', MFD_HUGETLB | MFD_HUGE_2MB);
    p.ftruncate(fd, HUGE);
    expect(errnoOf(() => memfdStore(p, fd, pattern(8, 3), HUGE))).toBe('EFAULT');
  });

  it('a fault with an empty pool fails ENOMEM', () => {
    const p = vmm('kho=on liveupdate=on hugepagesz=2M hugepages=1');
    const fd = memfdCreate(p, 'huge', MFD_HUGETLB | MFD_HUGE_2MB);
    p.ftruncate(fd, 2 * HUGE);
    memfdStore(p, fd, pattern(8, 4), 0);
    expect(errnoOf(() => memfdStore(p, fd, pattern(8, 4), HUGE))).toBe('ENOMEM');
  });
});
