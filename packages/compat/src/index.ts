/**
 * Released versions of @liveupdate/plugin-memfd side by side, for this repository's
 * version-mixing tests and examples (a private test package: the `liveupdate` CLI does not use
 * it; it resolves plugin versions from node_modules the npm way). 1.0.0, 2.0.0, 3.0.0 and 3.1.0 are
 * the packed tarballs in fixtures/ (rebuilt by scripts/make-plugin-memfd-release.mjs), installed
 * as the root devDependencies plugin-memfd-v1, plugin-memfd-v2, plugin-memfd-v3 and
 * plugin-memfd-v3.1 (npm aliases of file: tarballs); 4.0.0 is the workspace package. Each is its
 * own module instance, all five share the one @liveupdate/sdk (a peer dependency).
 *
 *   release  writes                       reads            hugeTLB   as
 *   1.0.0    1.0.0                        ^1.0.0           no        Linux 6.19 (memfd-v1)
 *   2.0.0    1.0.0, 2.0.0                 >=1.0.0 <3.0.0   no        mainline (memfd-v2)
 *   3.0.0    1.0.0, 2.0.0, 3.0.0          >=1.0.0 <4.0.0   yes       sparse format (memfd@3.0.0)
 *   3.1.0    1.0.0, 2.0.0, 3.0.0, 3.1.0   >=1.0.0 <4.0.0   yes       memfd@3.1.0: + header CRC-32
 *   4.0.0    1.0.0 .. 3.2.0, 4.0.0, 4.1.0 >=1.0.0 <5.0.0   yes       this project (memfd@3.2.0: + CRC-32 over
 *                                                                    all metadata; memfd@4.0.0: extents;
 *                                                                    memfd@4.1.0: + a CRC-32 binding the
 *                                                                    header to its session and token)
 *
 * 3.1.0 is a minor format version: a 3.0.0 reader restores a memfd@3.1.0 header by reading its
 * first 48 bytes and skipping the checksum; 3.2.0 likewise for 3.0 and 3.1 readers. 4.0.0 is a
 * new major: releases before 4.0.0 cannot read it, so 4.0.0 → 3.x negotiates memfd@3.2.0. 4.1.0
appends 8 bytes a 4.0 reader does not read.
 *
 * The syscalls of a release work only on memfds of that release: a file is a memfd when its
 * inode is an instance of the module's own MemfdInode class, so release 2.0.0's memfdCreate
 * makes files that release 4.0.0's handler does not claim (PRESERVE_FD fails ENOENT) and that
 * 4.0.0's memfdStore rejects (EINVAL). A VMM must use the syscalls of the release its kernel
 * runs: memfdSyscallsOf(kernel). The generic file syscalls on Process (pread, pwrite,
 * ftruncate, lseek, fallocate, fcntl) work on any release's memfds.
 */
import * as current from '@liveupdate/plugin-memfd';
import type { Kernel, Plugin } from '@liveupdate/sdk';
import * as v1 from 'plugin-memfd-v1';
import * as v2 from 'plugin-memfd-v2';
import * as v3 from 'plugin-memfd-v3';
import * as v3_1 from 'plugin-memfd-v3.1';

export type MemfdRelease = '1.0.0' | '2.0.0' | '3.0.0' | '3.1.0' | '4.0.0';
export const MEMFD_RELEASES: readonly MemfdRelease[] = Object.freeze(['1.0.0', '2.0.0', '3.0.0', '3.1.0', '4.0.0'] as const);
/** The package name every release carries: the owner named in negotiation refusals. */
export const MEMFD_PLUGIN_NAME = '@liveupdate/plugin-memfd';

export type MemfdPluginOptions = current.MemfdPluginOptions;

/** The plugin-specific syscalls and helpers of one release (each bound to its module instance). */
export interface MemfdSyscalls {
  readonly memfdCreate: typeof current.memfdCreate;
  readonly memfdStore: typeof current.memfdStore;
  readonly memfdFillSynthetic: typeof current.memfdFillSynthetic;
  readonly memfdCheckSynthetic: typeof current.memfdCheckSynthetic;
  readonly memfdResidentPages: typeof current.memfdResidentPages;
  readonly isMemfd: typeof current.isMemfd;
  readonly hugetlbPools: typeof current.hugetlbPools;
}

type ReleaseModule = MemfdSyscalls & { readonly default: (options?: MemfdPluginOptions) => Plugin; readonly PLUGIN_VERSION: string };

const MODULES: Readonly<Record<MemfdRelease, ReleaseModule>> = { '1.0.0': v1, '2.0.0': v2, '3.0.0': v3, '3.1.0': v3_1, '4.0.0': current };

const syscallsOf = (m: ReleaseModule): MemfdSyscalls => Object.freeze({
  memfdCreate: m.memfdCreate, memfdStore: m.memfdStore, memfdFillSynthetic: m.memfdFillSynthetic,
  memfdCheckSynthetic: m.memfdCheckSynthetic, memfdResidentPages: m.memfdResidentPages, isMemfd: m.isMemfd, hugetlbPools: m.hugetlbPools,
});

/** Each release's plugin factory: memfdReleases['2.0.0']() is the plugin as mainline-era 2.0.0 shipped it. */
export const memfdReleases: Readonly<Record<MemfdRelease, (options?: MemfdPluginOptions) => Plugin>> = Object.freeze({
  '1.0.0': v1.default, '2.0.0': v2.default, '3.0.0': v3.default, '3.1.0': v3_1.default, '4.0.0': current.default,
});

/** Each release's syscalls; they only accept memfds created by the same release. */
export const memfdSyscalls: Readonly<Record<MemfdRelease, MemfdSyscalls>> = Object.freeze({
  '1.0.0': syscallsOf(MODULES['1.0.0']), '2.0.0': syscallsOf(MODULES['2.0.0']), '3.0.0': syscallsOf(MODULES['3.0.0']),
  '3.1.0': syscallsOf(MODULES['3.1.0']), '4.0.0': syscallsOf(MODULES['4.0.0']),
});

/** The version a release's module reports about itself (read from its own package.json). */
export const memfdModuleVersion = (release: MemfdRelease): string => MODULES[release].PLUGIN_VERSION;

function isMemfdRelease(v: string): v is MemfdRelease {
  return (MEMFD_RELEASES as readonly string[]).includes(v);
}

/** The memfd release a kernel was booted with (its plugin's version), or undefined if it has none. */
export function memfdReleaseOf(kernel: Kernel): MemfdRelease | undefined {
  const plugin = kernel.plugins.find((p) => p.name === MEMFD_PLUGIN_NAME);
  return plugin && isMemfdRelease(plugin.version) ? plugin.version : undefined;
}

/** The syscalls a process on `kernel` must use for memfds. */
export function memfdSyscallsOf(kernel: Kernel): MemfdSyscalls {
  const release = memfdReleaseOf(kernel);
  if (!release) throw new TypeError(`kernel ${kernel.release} was not booted with a known ${MEMFD_PLUGIN_NAME} release`);
  return memfdSyscalls[release];
}
