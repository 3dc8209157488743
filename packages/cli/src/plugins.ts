/**
 * Which plugin build a scenario's `plugins: { name: version }` means. Version resolution is
 * this one function: the current @liveupdate/plugin-memfd answers for its own version, and
 * the other released versions come from @liveupdate/compat (loaded only when asked for).
 *
 * A release's memfd syscalls only work on memfds of that same release (a file is a memfd when
 * its inode is that module's MemfdInode), so a resolved plugin carries its syscalls: the VMM in
 * a kernel uses the syscalls of the release that kernel booted with.
 */
import type { MemfdSyscalls } from '@liveupdate/compat';
import * as current from '@liveupdate/plugin-memfd';
import type { Plugin } from '@liveupdate/sdk';
import { UsageError } from './exit.js';

export type { MemfdSyscalls };

export const MEMFD_PLUGIN = '@liveupdate/plugin-memfd';
/** Short names a scenario may use instead of the package name. */
const ALIASES: Readonly<Record<string, string>> = { memfd: MEMFD_PLUGIN, 'plugin-memfd': MEMFD_PLUGIN };

export interface ResolvedPlugin {
  /** The package name (aliases resolved). */
  readonly name: string;
  readonly version: string;
  /** A fresh plugin instance (one per kernel). */
  create(): Plugin;
  /** The memfd syscalls of this release, for plugin-memfd. */
  readonly memfd: MemfdSyscalls;
}

/** `name@version` as a loadable build, or a UsageError naming what is available. */
export async function resolvePlugin(name: string, version: string): Promise<ResolvedPlugin> {
  const pkg = ALIASES[name] ?? name;
  if (pkg !== MEMFD_PLUGIN) {
    throw new UsageError(`unknown plugin '${name}': this CLI knows ${MEMFD_PLUGIN} (alias 'memfd')`);
  }
  if (version === current.PLUGIN_VERSION) return { name: pkg, version, create: () => current.default(), memfd: current };
  let compat: typeof import('@liveupdate/compat');
  try {
    compat = await import('@liveupdate/compat');
  } catch (e) {
    throw new UsageError(`${MEMFD_PLUGIN}@${version} needs @liveupdate/compat, which does not load (${e instanceof Error ? e.message : String(e)})`);
  }
  const releases: Readonly<Record<string, ((options?: current.MemfdPluginOptions) => Plugin) | undefined>> = compat.memfdReleases;
  const factory = releases[version];
  const syscalls: MemfdSyscalls | undefined = (compat.memfdSyscalls as Readonly<Record<string, MemfdSyscalls | undefined>>)[version];
  if (!factory || !syscalls) {
    throw new UsageError(`${MEMFD_PLUGIN}@${version} is not available: this CLI can load ${Object.keys(releases).sort().join(', ')}`);
  }
  return { name: pkg, version, create: () => factory(), memfd: syscalls };
}

/** Every plugin of one kernel side, in the scenario's order. */
export async function resolvePlugins(plugins: Readonly<Record<string, string>>): Promise<ResolvedPlugin[]> {
  const out: ResolvedPlugin[] = [];
  for (const [name, version] of Object.entries(plugins)) out.push(await resolvePlugin(name, version));
  return out;
}

/** The memfd syscalls a VMM on a kernel with these plugins must use (the current release if it has none). */
export function memfdSyscallsOf(plugins: readonly ResolvedPlugin[]): MemfdSyscalls {
  return plugins.find((p) => p.name === MEMFD_PLUGIN)?.memfd ?? current;
}
