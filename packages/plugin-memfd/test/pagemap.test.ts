/**
 * The public page-cache calls other subsystems use: memfdPagemap (the pfn behind an offset, as
 * /proc/<pid>/pagemap reports it) and memfdPinFolios / memfdPinRuns (memfd_pin_folios, what
 * iommufd's IOMMU_IOAS_MAP_FILE pins).
 */
import { describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '@liveupdate/hw';
import memfd, {
  MFD_ALLOW_SEALING, MFD_HUGETLB, MFD_HUGE_2MB, F_ADD_SEALS, memfdAbi, memfdCreate, memfdPagemap, memfdPinFolios, memfdPinRuns, memfdResidentPages,
  memfdSeals, memfdSize,
} from '@liveupdate/plugin-memfd';
import { CMDLINE, MiB, errnoOf, start } from './support.js';

describe('memfdPagemap', () => {
  it('gives the pfn of a resident page, -1 for a hole or beyond i_size, and never allocates', () => {
    const { p } = start([memfd()], { memory: '1GiB' });
    const fd = memfdCreate(p, 'ram', 0);
    p.ftruncate(fd, 4 * PAGE_SIZE);
    p.pwrite(fd, new Uint8Array([1]), 2 * PAGE_SIZE + 5);
    const file = p.file(fd, 't');
    const pfn = memfdPagemap(file, 2 * PAGE_SIZE + 100);
    expect(pfn).toBeGreaterThan(0);
    expect(p.kernel.machine.memory.read(pfn * PAGE_SIZE + 5, 1)).toEqual(new Uint8Array([1]));
    expect(memfdPagemap(file, 0)).toBe(-1);
    expect(memfdPagemap(file, 4 * PAGE_SIZE)).toBe(-1);
    expect(memfdResidentPages(p, fd)).toBe(1);
    expect(errnoOf(() => memfdPagemap(file, -1))).toBe('EINVAL');
  });

  it('inside a 2 MiB hugeTLB folio: the head pfn plus the 4 KiB page index', () => {
    const { p } = start([memfd()], { memory: '1GiB', cmdline: `${CMDLINE} hugepagesz=2M hugepages=4` });
    const fd = memfdCreate(p, 'huge', MFD_HUGETLB | MFD_HUGE_2MB);
    p.ftruncate(fd, 2 * MiB);
    const head = memfdPinFolios(p.file(fd, 't'), 0, 0).pfns[0] as number;
    expect(memfdPagemap(p.file(fd, 't'), 7 * PAGE_SIZE + 1)).toBe(head + 7);
  });

  it('a file that is not a memfd → EINVAL', () => {
    const { p, dev } = start([memfd()], { memory: '1GiB' });
    expect(errnoOf(() => memfdPagemap(p.file(dev, 't'), 0))).toBe('EINVAL');
  });
});

describe('memfdPinFolios / memfdPinRuns', () => {
  it('pins [start, end] inclusive, faulting holes in, and reports where start falls in the first folio', () => {
    const { p } = start([memfd()], { memory: '1GiB' });
    const fd = memfdCreate(p, 'ram', 0);
    p.ftruncate(fd, 8 * PAGE_SIZE);
    const file = p.file(fd, 't');
    const pinned = memfdPinFolios(file, PAGE_SIZE + 16, 3 * PAGE_SIZE);
    expect(pinned.pfns).toHaveLength(3);
    expect(pinned.folioBytes).toBe(PAGE_SIZE);
    expect(pinned.offset).toBe(16);
    expect(memfdResidentPages(p, fd)).toBe(3);
    expect(pinned.pfns.map((_, i) => memfdPagemap(file, (i + 1) * PAGE_SIZE))).toEqual(pinned.pfns);
  });

  it('start > end, a negative start, or an end at or beyond i_size → EINVAL', () => {
    const { p } = start([memfd()], { memory: '1GiB' });
    const fd = memfdCreate(p, 'ram', 0);
    p.ftruncate(fd, 2 * PAGE_SIZE);
    const file = p.file(fd, 't');
    expect(errnoOf(() => memfdPinFolios(file, 10, 9))).toBe('EINVAL');
    expect(errnoOf(() => memfdPinFolios(file, -1, 9))).toBe('EINVAL');
    expect(errnoOf(() => memfdPinFolios(file, 0, 2 * PAGE_SIZE))).toBe('EINVAL');
    expect(errnoOf(() => memfdPinRuns(file, 0, 0))).toBe('EINVAL');
  });

  it('runs merge physically adjacent folios and cover exactly the bytes asked for', () => {
    const { p } = start([memfd()], { memory: '1GiB' });
    const fd = memfdCreate(p, 'ram', 0);
    p.ftruncate(fd, 16 * PAGE_SIZE);
    const runs = memfdPinRuns(p.file(fd, 't'), 512, 4 * PAGE_SIZE);
    expect(runs.reduce((n, [, b]) => n + b, 0)).toBe(4 * PAGE_SIZE);
    const pfns = memfdPinFolios(p.file(fd, 't'), 0, 5 * PAGE_SIZE - 1).pfns;
    expect(runs[0]?.[0]).toBe((pfns[0] as number) * PAGE_SIZE + 512);
    for (let i = 1; i < runs.length; i++) expect((runs[i - 1] as [number, number])[0] + (runs[i - 1] as [number, number])[1]).not.toBe((runs[i] as [number, number])[0]);
  });

  it('memfdSeals and memfdSize read the inode', () => {
    const { p } = start([memfd()], { memory: '1GiB' });
    const fd = memfdCreate(p, 'ram', MFD_ALLOW_SEALING);
    p.ftruncate(fd, 3 * PAGE_SIZE);
    p.fcntl(fd, F_ADD_SEALS, memfdAbi.F_SEAL_GROW | memfdAbi.F_SEAL_SHRINK);
    expect(memfdSeals(p.file(fd, 't'))).toBe(memfdAbi.F_SEAL_GROW | memfdAbi.F_SEAL_SHRINK);
    expect(memfdSize(p.file(fd, 't'))).toBe(3 * PAGE_SIZE);
  });
});
