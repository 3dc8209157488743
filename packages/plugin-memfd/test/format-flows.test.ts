/**
 * The upstream selftest flows (tools/testing/selftests/liveupdate) with real content, once per
 * format: a build that writes only memfd 1.0.0 (memfd-v1, 6.19), only 2.0.0 (memfd-v2,
 * mainline), up to 3.0.0 (sparse) and the default build (memfd 3.1.0: sparse, header CRC-32).
 * Write, preserve, kexec, retrieve, read back, finish.
 */
import { describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '@liveupdate/hw';
import { finishSession, preserveFd, type Process } from '@liveupdate/sdk';
import memfd, {
  F_ADD_SEALS, F_GET_SEALS, MFD_ALLOW_SEALING, memfdAbi, memfdCheckSynthetic, memfdCreate, memfdFillSynthetic,
  memfdResidentPages, type MemfdPluginOptions,
} from '@liveupdate/plugin-memfd';
import {
  GiB, MiB, SEEK_CUR, SEEK_END, SEEK_SET, TiB, bootNext, errnoOf, handedOver, pattern, retrieveOne, sessionWith, start,
} from './support.js';

const { F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_SEAL } = memfdAbi;

interface Build {
  readonly label: string;
  readonly options: MemfdPluginOptions;
  readonly compatible: string;
  readonly keepsSeals: boolean;
  readonly keepsHoles: boolean;
}

const BUILDS: readonly Build[] = [
  { label: 'format 1 (memfd-v1)', options: { writes: ['1.0.0'] }, compatible: 'memfd-v1', keepsSeals: false, keepsHoles: false },
  { label: 'format 2 (memfd-v2)', options: { writes: ['2.0.0'] }, compatible: 'memfd-v2', keepsSeals: true, keepsHoles: false },
  { label: 'format 3 (memfd@3.0.0)', options: { writes: ['1.0.0', '2.0.0', '3.0.0'] }, compatible: 'memfd@3.0.0', keepsSeals: true, keepsHoles: true },
  { label: 'format 3.1 (memfd@3.1.0, header checksum)', options: { writes: ['3.1.0'] }, compatible: 'memfd@3.1.0', keepsSeals: true, keepsHoles: true },
  { label: 'format 3.2 (memfd@3.2.0, whole-metadata checksum)', options: { writes: ['3.2.0'] }, compatible: 'memfd@3.2.0', keepsSeals: true, keepsHoles: true },
  { label: 'format 4 (memfd@4.0.0, extents)', options: { writes: ['4.0.0'] }, compatible: 'memfd@4.0.0', keepsSeals: true, keepsHoles: true },
  { label: 'format 4.1 (memfd@4.1.0, extents bound to session and token; the default)', options: {}, compatible: 'memfd@4.1.0', keepsSeals: true, keepsHoles: true },
];

/** Preserve `fd` as token 1 of session 'vm', live-update, retrieve it: the new kernel's process and fd. */
function roundTrip(build: Build, prepare: (p: Process) => number, memory?: string) {
  const o = start([memfd(build.options)], memory ? { memory } : {});
  const fd = prepare(o.p);
  sessionWith(o, 'vm', [[fd, 1]], preserveFd);
  o.k1.kexecJump(o.cfg);
  const compatible = handedOver(o, 'vm', 1).compatible;
  const next = bootNext(o);
  const got = retrieveOne(next, 'vm', 1);
  return { o, ...next, ...got, compatible };
}

describe.each(BUILDS)('$label', (build) => {
  it(`is handed over under '${build.compatible}'`, () => {
    const { compatible } = roundTrip(build, (p) => memfdCreate(p, 'ram', 0));
    expect(compatible).toBe(build.compatible);
  });

  it('an empty memfd comes back empty: size 0, no pages', () => {
    const { p2, fd } = roundTrip(build, (p) => memfdCreate(p, 'ram', 0));
    expect(p2.lseek(fd, 0, SEEK_END)).toBe(0);
    expect(memfdResidentPages(p2, fd)).toBe(0);
  });

  it('one page of a pattern comes back byte for byte', () => {
    const { p2, fd } = roundTrip(build, (p) => {
      const fd = memfdCreate(p, 'ram', 0);
      p.pwrite(fd, pattern(PAGE_SIZE, 11), 0);
      return fd;
    });
    expect(p2.lseek(fd, 0, SEEK_END)).toBe(PAGE_SIZE);
    expect(p2.pread(fd, PAGE_SIZE, 0)).toEqual(pattern(PAGE_SIZE, 11));
    expect(memfdResidentPages(p2, fd)).toBe(1);
  });

  it('an unaligned size and a partial last page come back exactly', () => {
    const { p2, fd } = roundTrip(build, (p) => {
      const fd = memfdCreate(p, 'ram', 0);
      p.pwrite(fd, pattern(3 * PAGE_SIZE + 17, 12), 0);
      return fd;
    });
    expect(p2.lseek(fd, 0, SEEK_END)).toBe(3 * PAGE_SIZE + 17);
    expect(p2.pread(fd, 4 * PAGE_SIZE, 0)).toEqual(pattern(3 * PAGE_SIZE + 17, 12));
  });

  it('1 GiB of synthetic content comes back unchanged, page for page', { timeout: 60_000 }, () => {
    const { p2, fd } = roundTrip(build, (p) => {
      const fd = memfdCreate(p, 'ram', 0);
      p.ftruncate(fd, GiB);
      memfdFillSynthetic(p, fd, 0, GiB, 0xc0ffee);
      return fd;
    });
    expect(p2.lseek(fd, 0, SEEK_END)).toBe(GiB);
    expect(memfdResidentPages(p2, fd)).toBe(GiB / PAGE_SIZE);
    expect(memfdCheckSynthetic(p2, fd, 0, GiB, 0xc0ffee)).toBe(true);
    expect(memfdCheckSynthetic(p2, fd, 0, GiB, 0xc0ffef)).toBe(false);
  });

  it('the file position is preserved', () => {
    const { p2, fd } = roundTrip(build, (p) => {
      const fd = memfdCreate(p, 'ram', 0);
      p.ftruncate(fd, 64 * 1024);
      p.lseek(fd, 12_345, SEEK_SET);
      return fd;
    });
    expect(p2.lseek(fd, 0, SEEK_CUR)).toBe(12_345);
  });

  it('the name is lost: the retrieved file is /memfd: (deleted)', () => {
    const { p2, fd } = roundTrip(build, (p) => memfdCreate(p, 'guest-ram', 0));
    expect(p2.file(fd, 'stat').ops.kind).toBe('/memfd: (deleted)');
  });

  it(build.keepsSeals ? 'seals are preserved and enforced by the new kernel' : 'seals are lost: the file comes back unsealed and sealable', () => {
    const { p2, fd } = roundTrip(build, (p) => {
      const fd = memfdCreate(p, 'ram', MFD_ALLOW_SEALING);
      p.ftruncate(fd, 2 * PAGE_SIZE);
      p.fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
      return fd;
    });
    if (build.keepsSeals) {
      expect(p2.fcntl(fd, F_GET_SEALS)).toBe(F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
      expect(errnoOf(() => p2.ftruncate(fd, PAGE_SIZE))).toBe('EPERM');
      expect(errnoOf(() => p2.fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK))).toBe('EPERM');
    } else {
      expect(p2.fcntl(fd, F_GET_SEALS)).toBe(0);
      expect(errnoOf(() => p2.ftruncate(fd, PAGE_SIZE))).toBe(0);
    }
  });

  it('the retrieved memfd is an ordinary memfd again after FINISH: writable and resizable', () => {
    const { p2, fd, sfd, k2 } = roundTrip(build, (p) => {
      const fd = memfdCreate(p, 'ram', 0);
      p.pwrite(fd, pattern(PAGE_SIZE, 13), 0);
      return fd;
    });
    finishSession(p2, sfd);
    p2.pwrite(fd, pattern(8, 14), 2 * PAGE_SIZE);
    p2.ftruncate(fd, 4 * PAGE_SIZE);
    expect(p2.pread(fd, 8, 2 * PAGE_SIZE)).toEqual(pattern(8, 14));
    expect(k2.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
  });

  if (build.keepsHoles) {
    it('a 1 TiB memfd with 1% touched in 2 MiB runs keeps its holes: resident pages before == after', { timeout: 120_000 }, () => {
      const runs: number[] = [];
      for (let off = 0; off < TiB; off += 100 * 2 * MiB) runs.push(off);
      let before = 0;
      const { p2, fd } = roundTrip(build, (p) => {
        const fd = memfdCreate(p, 'ram', 0);
        p.ftruncate(fd, TiB);
        for (const off of runs) memfdFillSynthetic(p, fd, off, 2 * MiB, off / PAGE_SIZE);
        before = memfdResidentPages(p, fd);
        return fd;
      }, '32GiB');
      expect(runs.length).toBe(5243);
      expect(before).toBe(5243 * 512);
      expect(memfdResidentPages(p2, fd)).toBe(before);
      expect(p2.lseek(fd, 0, SEEK_END)).toBe(TiB);
      expect(runs.every((off) => memfdCheckSynthetic(p2, fd, off, 2 * MiB, off / PAGE_SIZE))).toBe(true);
      expect(p2.pread(fd, PAGE_SIZE, 2 * MiB)).toEqual(new Uint8Array(PAGE_SIZE));
      expect(memfdResidentPages(p2, fd)).toBe(before);
    });
  } else {
    it('a sparse memfd has its holes materialized: every page below i_size is resident after', { timeout: 60_000 }, () => {
      // 1 GiB, 1% touched in 2 MiB runs: runs 0, 100, ..., 500.
      const runs = [0, 100, 200, 300, 400, 500].map((r) => r * 2 * MiB);
      const { p2, fd } = roundTrip(build, (p) => {
        const fd = memfdCreate(p, 'ram', 0);
        p.ftruncate(fd, GiB);
        for (const off of runs) memfdFillSynthetic(p, fd, off, 2 * MiB, off / PAGE_SIZE);
        expect(memfdResidentPages(p, fd)).toBe(6 * 512);
        return fd;
      });
      expect(memfdResidentPages(p2, fd)).toBe(GiB / PAGE_SIZE);
      expect(runs.every((off) => memfdCheckSynthetic(p2, fd, off, 2 * MiB, off / PAGE_SIZE))).toBe(true);
      expect(p2.pread(fd, PAGE_SIZE, 2 * MiB)).toEqual(new Uint8Array(PAGE_SIZE));
    });
  }
});
