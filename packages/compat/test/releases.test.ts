/**
 * The released plugin-memfd versions as installed from fixtures/: real tarballs, distinct
 * module instances reporting their own versions and formats, one shared SDK.
 */
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '@liveupdate/hw';
import { ErrnoError, createSession, isPlugin, preserveFd } from '@liveupdate/sdk';
import {
  MEMFD_RELEASES, memfdModuleVersion, memfdReleaseOf, memfdReleases, memfdSyscalls, memfdSyscallsOf,
} from '@liveupdate/compat';
import { bootA, errnoOf, pattern } from './support.js';

const require = createRequire(import.meta.url);

describe('the installed releases', () => {
  it.each([
    ['plugin-memfd-v1', '1.0.0'],
    ['plugin-memfd-v2', '2.0.0'],
    ['plugin-memfd-v3', '3.0.0'],
    ['plugin-memfd-v3.1', '3.1.0'],
  ])('%s is @liveupdate/plugin-memfd %s from its tarball: dist only, the SDK as a peer', (alias, version) => {
    const pkg = require(`${alias}/package.json`) as Record<string, unknown>;
    expect(pkg.name).toBe('@liveupdate/plugin-memfd');
    expect(pkg.version).toBe(version);
    expect(pkg.files).toEqual(['dist']);
    expect(pkg.peerDependencies).toEqual({ '@liveupdate/sdk': '^0.1.0', '@liveupdate/hw': '^0.1.0' });
    expect(pkg.exports).toEqual({ '.': { types: './dist/index.d.ts', default: './dist/index.js' }, './package.json': './package.json' });
    expect(pkg.devDependencies).toBeUndefined();
  });

  it('each release reports its own version, read from its own package.json', () => {
    expect(MEMFD_RELEASES.map((r) => memfdReleases[r]().version)).toEqual(['1.0.0', '2.0.0', '3.0.0', '3.1.0', '4.0.0']);
    expect(MEMFD_RELEASES.map(memfdModuleVersion)).toEqual(['1.0.0', '2.0.0', '3.0.0', '3.1.0', '4.0.0']);
  });

  it('the five are distinct module instances: different factories and syscalls', () => {
    expect(new Set(MEMFD_RELEASES.map((r) => memfdReleases[r])).size).toBe(5);
    expect(new Set(MEMFD_RELEASES.map((r) => memfdSyscalls[r].memfdCreate)).size).toBe(5);
  });

  it('each plugin carries the SDK brand, so no instanceof is needed across copies', () => {
    expect(MEMFD_RELEASES.map((r) => isPlugin(memfdReleases[r]()))).toEqual([true, true, true, true, true]);
  });

  it('their manifests: what each release writes and reads, and which handles hugeTLB memfds', () => {
    const formats = MEMFD_RELEASES.map((r) => memfdReleases[r]().manifest.formats.map((f) => [f.family, f.writes, f.reads]));
    expect(formats).toEqual([
      [['memfd', ['1.0.0'], '^1.0.0']],
      [['memfd', ['1.0.0', '2.0.0'], '>=1.0.0 <3.0.0']],
      [['memfd', ['1.0.0', '2.0.0', '3.0.0'], '>=1.0.0 <4.0.0'], ['hugetlb-memfd', ['1.0.0'], '^1.0.0']],
      [['memfd', ['1.0.0', '2.0.0', '3.0.0', '3.1.0'], '>=1.0.0 <4.0.0'], ['hugetlb-memfd', ['1.0.0'], '^1.0.0']],
      [['memfd', ['1.0.0', '2.0.0', '3.0.0', '3.1.0', '3.2.0', '4.0.0', '4.1.0'], '>=1.0.0 <5.0.0'], ['hugetlb-memfd', ['1.0.0', '2.0.0'], '>=1.0.0 <3.0.0']],
    ]);
  });
});

describe('one SDK for all releases', () => {
  it("an errno a release throws is the workspace SDK's ErrnoError, so LUO passes it through unchanged", () => {
    const a = bootA({ release: '1.0.0' });
    const fd = a.sys.memfdCreate(a.p, 'ram', 0);
    preserveFd(a.p, createSession(a.p, a.dev, 'vm'), fd, 1);
    let thrown: unknown;
    try { a.p.ftruncate(fd, PAGE_SIZE); } catch (e) { thrown = e; }
    expect(thrown).toBeInstanceOf(ErrnoError);
    expect((thrown as ErrnoError).code).toBe('EPERM');
  });
});

describe("a release's syscalls work on its own memfds only", () => {
  it("a 3.0.0 kernel's handler does not claim a memfd made by 2.0.0's memfdCreate: PRESERVE_FD fails ENOENT", () => {
    const a = bootA({ release: '3.0.0' });
    const foreign = memfdSyscalls['2.0.0'].memfdCreate(a.p, 'ram', 0);
    expect(errnoOf(() => preserveFd(a.p, createSession(a.p, a.dev, 'vm'), foreign, 1))).toBe('ENOENT');
  });

  it("1.0.0's memfdStore rejects a 3.0.0 memfd with EINVAL, and isMemfd says which release made it", () => {
    const a = bootA({ release: '3.0.0' });
    const fd = a.sys.memfdCreate(a.p, 'ram', 0);
    a.p.ftruncate(fd, PAGE_SIZE);
    expect(errnoOf(() => memfdSyscalls['1.0.0'].memfdStore(a.p, fd, pattern(8, 1), 0))).toBe('EINVAL');
    const file = a.p.file(fd, 'stat');
    expect(MEMFD_RELEASES.map((r) => memfdSyscalls[r].isMemfd(file))).toEqual([false, false, true, false, false]);
  });

  it('the generic file syscalls work on any release: pwrite and pread of a 1.0.0 memfd', () => {
    const a = bootA({ release: '1.0.0' });
    const fd = a.sys.memfdCreate(a.p, 'ram', 0);
    a.p.pwrite(fd, pattern(100, 2), 10);
    expect(a.p.pread(fd, 100, 10)).toEqual(pattern(100, 2));
  });

  it('memfdSyscallsOf(kernel) picks the release the kernel was booted with', () => {
    for (const r of MEMFD_RELEASES) {
      const a = bootA({ release: r }, '2GiB');
      expect(memfdReleaseOf(a.k)).toBe(r);
      expect(memfdSyscallsOf(a.k)).toBe(memfdSyscalls[r]);
    }
  });
});
