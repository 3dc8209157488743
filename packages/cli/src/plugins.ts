/**
 * Which plugin build a scenario's `plugins: { "<package>": "<version>" }` means, resolved the
 * npm way: among the packages installed in the node_modules folders above the working
 * directory and above this CLI, a package whose package.json says that name and that version.
 * So the package itself (`npm i @example/kv`), other versions side by side under npm aliases
 * (`npm i kv-1.0@npm:@example/kv@1.0.0`), tarballs (`npm i kv-1.1@file:kv-1.1.0.tgz`) and
 * folders (`npm i ../kv`) all resolve, and so does a folder named in LIVEUPDATE_PLUGIN_PATH
 * (a package folder, or a folder of packages). This CLI holds no list of plugin names.
 *
 * A plugin package's default export is its factory (`() => Plugin`), or it exports `plugin`.
 */
import { readdirSync, readFileSync, realpathSync, statSync, type Dirent } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { checkSdkCopy, DuplicateSdkError, isPlugin, type Plugin } from '@liveupdate/sdk';
import { semver } from '@liveupdate/sdk';
import { DEFAULT_PLUGIN } from './defaults.js';
import { UsageError } from './exit.js';

export { DEFAULT_PLUGIN };

export interface InstalledPackage {
  readonly name: string;
  readonly version: string;
  /** The package folder (symlinks resolved). */
  readonly dir: string;
  /** How it is installed: the folder name under node_modules (an alias shows here), or the path. */
  readonly as: string;
}

export interface ResolvedPlugin {
  readonly name: string;
  readonly version: string;
  readonly dir: string;
  /** A fresh plugin instance (one per kernel). */
  create(): Plugin;
}

const readJson = (file: string): Record<string, unknown> | null => {
  try {
    const v: unknown = JSON.parse(readFileSync(file, 'utf8'));
    return typeof v === 'object' && v !== null ? v as Record<string, unknown> : null;
  } catch {
    return null;
  }
};

const isDir = (p: string): boolean => { try { return statSync(p).isDirectory(); } catch { return false; } };

function packageAt(dir: string, as: string, resolveLinks = true): InstalledPackage | null {
  const pkg = readJson(path.join(dir, 'package.json'));
  if (!pkg || typeof pkg.name !== 'string' || typeof pkg.version !== 'string') return null;
  let real = dir;
  if (resolveLinks) {
    try { real = realpathSync(dir); } catch { /* a dangling link: keep the path */ }
  }
  return { name: pkg.name, version: pkg.version, dir: real, as };
}

/**
 * Every package in one node_modules folder (scoped ones included). The folder's own path is
 * resolved once; only entries that are links (workspaces, `npm i ../folder`) are resolved one
 * by one, so a scan costs one read per package.
 */
function packagesIn(nodeModules: string, out: InstalledPackage[]): void {
  let real: string;
  let entries: Dirent[];
  try {
    real = realpathSync(nodeModules);
    entries = readdirSync(real, { withFileTypes: true });
  } catch { return; }
  const add = (dir: string, as: string, link: boolean): void => { const p = packageAt(dir, as, link); if (p) out.push(p); };
  for (const e of entries) {
    if (e.name.startsWith('.') || !(e.isDirectory() || e.isSymbolicLink())) continue;
    const full = path.join(real, e.name);
    if (e.name.startsWith('@')) {
      let inner: Dirent[];
      try { inner = readdirSync(full, { withFileTypes: true }); } catch { continue; }
      const scopeLink = e.isSymbolicLink();
      for (const i of inner) if (i.isDirectory() || i.isSymbolicLink()) add(path.join(full, i.name), `${e.name}/${i.name}`, scopeLink || i.isSymbolicLink());
    } else {
      add(full, e.name, e.isSymbolicLink());
    }
  }
}

function ancestors(dir: string): string[] {
  const out: string[] = [];
  for (let d = path.resolve(dir); ; d = path.dirname(d)) {
    out.push(d);
    if (path.dirname(d) === d) return out;
  }
}

/**
 * Where packages are looked for, first seen first (the working directory's own installs win):
 * LIVEUPDATE_PLUGIN_PATH's entries, then the node_modules folders above the working directory
 * and above this CLI. Folders are read one at a time and only as far as a lookup needs: a
 * plugin found in LIVEUPDATE_PLUGIN_PATH never makes us read every package.json of a big
 * node_modules (the order, and so which copy wins, is the same as a full scan's).
 */
function packageSources(): Array<(out: InstalledPackage[]) => void> {
  const sources: Array<(out: InstalledPackage[]) => void> = [];
  for (const extra of (process.env.LIVEUPDATE_PLUGIN_PATH ?? '').split(path.delimiter).filter(Boolean)) {
    sources.push((out) => { const p = packageAt(extra, extra); if (p) out.push(p); else if (isDir(extra)) packagesIn(extra, out); });
  }
  const here = path.dirname(fileURLToPath(import.meta.url));
  for (const r of new Set([...ancestors(process.cwd()), ...ancestors(here)])) sources.push((out) => packagesIn(path.join(r, 'node_modules'), out));
  return sources;
}

/** The scan so far: packages seen (each name@version once, first seen first) and the folders not read yet. */
let scan: { readonly found: InstalledPackage[]; readonly keys: Set<string>; readonly rest: Array<(out: InstalledPackage[]) => void> } | null = null;

/** Read the next folder; false when every folder has been read. */
function scanNext(): boolean {
  scan ??= { found: [], keys: new Set(), rest: packageSources() };
  const source = scan.rest.shift();
  if (!source) return false;
  const batch: InstalledPackage[] = [];
  source(batch);
  for (const p of batch) {
    const key = `${p.name}@${p.version}`;
    if (scan.keys.has(key)) continue;
    scan.keys.add(key);
    scan.found.push(p);
  }
  return true;
}

/** The first installed copy of name@version, reading folders only until it shows up. */
function findInstalled(name: string, version: string): InstalledPackage | undefined {
  const key = `${name}@${version}`;
  for (;;) {
    if (scan?.keys.has(key)) return scan.found.find((p) => p.name === name && p.version === version);
    if (!scanNext()) return undefined;
  }
}

/** Every installed package this CLI can see, first seen first (the working directory's own installs win). */
export function installedPackages(): readonly InstalledPackage[] {
  while (scanNext()) { /* read every folder */ }
  return scan?.found ?? [];
}

/** The installed versions of one package, oldest first. */
export function installedVersions(name: string): string[] {
  return semver.sort(installedPackages().filter((p) => p.name === name && semver.valid(p.version)).map((p) => p.version));
}

const cache = new Map<string, Promise<ResolvedPlugin>>();

async function load(pkg: InstalledPackage): Promise<ResolvedPlugin> {
  // Self-reference: the package resolves its own name through its "exports", from its own folder.
  let entry: string;
  try {
    entry = createRequire(path.join(pkg.dir, 'package.json')).resolve(pkg.name);
  } catch (e) {
    throw new UsageError(`${pkg.name}@${pkg.version} (${pkg.as}) has no loadable entry point: ${e instanceof Error ? e.message : String(e)}`);
  }
  let mod: Record<string, unknown>;
  try {
    mod = await import(pathToFileURL(entry).href) as Record<string, unknown>;
  } catch (e) {
    throw new UsageError(`${pkg.name}@${pkg.version} (${pkg.as}) does not load: ${e instanceof Error ? e.message : String(e)}`);
  }
  const factory = [mod.default, mod.plugin].find((f): f is () => unknown => typeof f === 'function');
  if (!factory) throw new UsageError(`${pkg.name}@${pkg.version} (${pkg.as}) is not a liveupdate plugin: it exports no factory (default export or 'plugin')`);
  const create = (): Plugin => {
    const p = factory();
    if (!isPlugin(p)) throw new UsageError(`${pkg.name}@${pkg.version} (${pkg.as}): its factory did not return a plugin made by definePlugin()`);
    // A plugin that bundles its own @liveupdate/sdk or runtime would not share errors or kernels with us.
    try {
      checkSdkCopy(p, `${pkg.name}@${pkg.version} (${pkg.as})`);
    } catch (e) {
      if (e instanceof DuplicateSdkError) throw new UsageError(e.message);
      throw e;
    }
    if (p.name !== pkg.name || p.version !== pkg.version) {
      throw new UsageError(`${pkg.as}: package ${pkg.name}@${pkg.version} made plugin ${p.name}@${p.version}; they must agree`);
    }
    return p;
  };
  create();
  return { name: pkg.name, version: pkg.version, dir: pkg.dir, create };
}

/** `name@version` as a loadable build, or a UsageError naming the versions that are installed. */
export function resolvePlugin(name: string, version: string): Promise<ResolvedPlugin> {
  const key = `${name}@${version}`;
  let p = cache.get(key);
  if (!p) {
    const pkg = findInstalled(name, version);
    if (!pkg) {
      const have = installedVersions(name);
      return Promise.reject(new UsageError(have.length > 0
        ? `${name}@${version} is not installed (installed: ${have.join(', ')}); install it beside the others, e.g. npm i ${name.replace(/^@[^/]+\//, '')}-${version}@npm:${name}@${version}`
        : `plugin ${name} is not installed (npm i ${name}, or npm i <alias>@npm:${name}@${version} for a second version)`));
    }
    p = load(pkg);
    cache.set(key, p);
  }
  return p;
}

/** Every plugin of one kernel side, in the scenario's order. */
export async function resolvePlugins(plugins: Readonly<Record<string, string>>): Promise<ResolvedPlugin[]> {
  const out: ResolvedPlugin[] = [];
  for (const [name, version] of Object.entries(plugins)) out.push(await resolvePlugin(name, version));
  return out;
}

/** The default plugin as this CLI depends on it (its own dependency, whatever else is installed). */
export async function defaultPlugin(): Promise<ResolvedPlugin> {
  const pkgJson = createRequire(import.meta.url).resolve(`${DEFAULT_PLUGIN}/package.json`);
  const pkg = packageAt(path.dirname(pkgJson), DEFAULT_PLUGIN);
  if (!pkg) throw new UsageError(`${DEFAULT_PLUGIN} (the default scenario's plugin) is not installed`);
  return resolvePlugin(pkg.name, pkg.version);
}
