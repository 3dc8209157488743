/**
 * Format versions, negotiated before the blackout. Upstream matches exact compatible strings
 * and fails after the kexec; here every kernel publishes what it reads (the analogue of the
 * proposed .liveupdate_versions section), and the outgoing kernel picks, per format family in
 * use, the highest version it writes that the target reads. No match → the kexec is refused
 * before anything is frozen.
 */
import semver from 'semver';
import { remembered } from '../lib/remembered.js';
import { KHO_ABI_VERSION } from '../abi/kho.js';
import { LUO_ABI_VERSION } from '../abi/luo.js';

export interface FormatSpec {
  /** Format family, e.g. 'memfd'. */
  readonly family: string;
  /** Concrete versions this kernel can write. */
  readonly writes: readonly string[];
  /** Versions this kernel can read, as a semver range. */
  readonly reads: string;
  /** Upstream compatible strings by major, e.g. { 1: 'memfd-v1', 2: 'memfd-v2' }: x.0.0 is written under the alias. */
  readonly aliases?: Readonly<Record<number, string>>;
  /** The plugin that owns it. */
  readonly owner: string;
  /**
   * Families whose state a preserved file of this family depends on (the format of an FLB its
   * handler registers, e.g. vfio-pci → pci): negotiated with it, so a target that cannot read
   * them refuses the kexec before freeze even though no preserved file carries them.
   */
  readonly dependsOn?: readonly string[];
}

export interface ManifestEntry {
  readonly reads: string;
  readonly writes: readonly string[];
  readonly owner: string;
}

/** What a kernel image declares it reads and writes: the .liveupdate_versions analogue. */
export interface KernelManifest {
  readonly release: string;
  readonly formats: Readonly<Record<string, ManifestEntry>>;
}

/** The core formats every kernel of this runtime reads and writes. */
export function coreFormats(overrides: { kho?: string; luo?: string } = {}): FormatSpec[] {
  return [
    { family: 'kho', writes: [KHO_ABI_VERSION], reads: overrides.kho ?? `^${KHO_ABI_VERSION}`, aliases: { 4: 'kho-v4' }, owner: 'kernel' },
    { family: 'luo', writes: [LUO_ABI_VERSION], reads: overrides.luo ?? `^${LUO_ABI_VERSION}`, aliases: { 5: 'luo-v5' }, owner: 'kernel' },
  ];
}

export const FAMILY_RE = /^[a-z][a-z0-9_-]{0,30}$/;

/** The compatible string a version is written under: the upstream alias for x.0.0, else "family@version". */
export function compatibleFor(spec: Pick<FormatSpec, 'family' | 'aliases'>, version: string): string {
  const v = parsedVersion(version);
  const alias = v && v.minor === 0 && v.patch === 0 && v.prerelease.length === 0 ? spec.aliases?.[v.major] : undefined;
  return alias ?? `${spec.family}@${version}`;
}

/** The inverse of compatibleFor for one family: the version a compatible string carries, or null. */
export function versionOf(spec: Pick<FormatSpec, 'family' | 'aliases'>, compatible: string): string | null {
  for (const [major, alias] of Object.entries(spec.aliases ?? {})) if (alias === compatible) return `${major}.0.0`;
  const prefix = `${spec.family}@`;
  if (!compatible.startsWith(prefix)) return null;
  return validVersion(compatible.slice(prefix.length));
}

export interface NegotiationRefusal {
  readonly family: string;
  readonly owner: string;
  /** Versions the outgoing kernel writes. */
  readonly offered: readonly string[];
  /** The range the target reads, or null if the target does not know the family at all. */
  readonly accepted: string | null;
}

/** The kexec is refused before freeze: the structured refusal names each handler and both sides. */
export class FormatNegotiationError extends Error {
  override readonly name = 'FormatNegotiationError';
  readonly code = 'LIVEUPDATE_FORMAT_UNSUPPORTED';
  constructor(readonly target: string, readonly refusals: readonly NegotiationRefusal[]) {
    super(refusals.map((r) => r.accepted === null
      ? `${r.owner}: format '${r.family}' (writes ${r.offered.join(', ')}) is not read by kernel ${target} at all`
      : `${r.owner}: format '${r.family}' writes ${r.offered.join(', ')} but kernel ${target} reads '${r.accepted}'`).join('; '));
  }
}

/** A plugin built against an SDK range this runtime does not satisfy. */
export class PluginLoadError extends Error {
  override readonly name = 'PluginLoadError';
  readonly code = 'LIVEUPDATE_PLUGIN_SDK_RANGE';
  constructor(readonly plugin: string, readonly range: string, readonly sdkVersion: string) {
    super(`plugin ${plugin} was built for SDK '${range}'; this runtime implements SDK ${sdkVersion}`);
  }
}

// semver's answers are pure functions of their strings, and every boot asks the same few (each
// plugin's writes and reads, each negotiation, each handler op's compatible string).
const isValidVersion = remembered((v) => semver.valid(v) !== null);
const isValidRange = remembered((r) => semver.validRange(r) !== null);
const validVersion = remembered((v) => semver.valid(v));
const parsedVersion = remembered((v) => semver.parse(v));
const maxSatisfied = remembered((key) => {
  const cut = key.indexOf('\u0000');
  return semver.maxSatisfying(key.slice(0, cut).split(' '), key.slice(cut + 1));
});
const newestOfKey = remembered((key) => semver.rsort(key.split(' '))[0]);
const satisfiedKey = remembered((key) => {
  const cut = key.indexOf('\u0000');
  return semver.satisfies(key.slice(0, cut), key.slice(cut + 1));
});

/** semver.maxSatisfying(versions, range), remembered (versions are concrete: no spaces). */
export function highestSatisfying(versions: readonly string[], range: string): string | null {
  if (versions.length === 0 || versions.some((v) => v === '' || v.includes(' ') || v.includes('\u0000')) || range.includes('\u0000')) {
    return semver.maxSatisfying([...versions], range);
  }
  return maxSatisfied(`${versions.join(' ')}\u0000${range}`);
}

/** The newest of concrete versions (semver.rsort's first), remembered. */
export function newestVersion(versions: readonly string[]): string | undefined {
  if (versions.length === 0 || versions.some((v) => v === '' || v.includes(' '))) return semver.rsort([...versions])[0];
  return newestOfKey(versions.join(' '));
}

/** semver.satisfies(version, range), remembered. */
export function versionSatisfies(version: string, range: string): boolean {
  if (version.includes('\u0000') || range.includes('\u0000')) return semver.satisfies(version, range);
  return satisfiedKey(`${version}\u0000${range}`);
}

export class FormatRegistry {
  private readonly specs = new Map<string, FormatSpec>();
  /** Per family: the version chosen for the pending kexec. */
  private readonly chosenVersions = new Map<string, string>();

  constructor(readonly release: string, core: readonly FormatSpec[]) {
    for (const s of core) this.specs.set(s.family, s);
  }

  register(spec: FormatSpec): void {
    if (!FAMILY_RE.test(spec.family)) throw new TypeError(`format family '${spec.family}' must match ${FAMILY_RE}`);
    if (spec.writes.length === 0 || spec.writes.some((w) => !isValidVersion(w))) throw new TypeError(`format '${spec.family}': writes must be concrete semver versions`);
    if (!isValidRange(spec.reads)) throw new TypeError(`format '${spec.family}': reads '${spec.reads}' is not a semver range`);
    const existing = this.specs.get(spec.family);
    if (existing && existing.owner !== spec.owner) throw new TypeError(`format '${spec.family}' is already owned by ${existing.owner}`);
    this.specs.set(spec.family, spec);
  }

  get(family: string): FormatSpec | undefined { return this.specs.get(family); }
  get families(): string[] { return [...this.specs.keys()]; }

  manifest(): KernelManifest {
    const formats: Record<string, ManifestEntry> = {};
    for (const [f, s] of this.specs) formats[f] = { reads: s.reads, writes: [...s.writes], owner: s.owner };
    return { release: this.release, formats };
  }

  /** The highest version written for `family`: the negotiated one during a kexec, else the newest. */
  chosen(family: string): string | undefined {
    const c = this.chosenVersions.get(family);
    if (c) return c;
    const s = this.specs.get(family);
    return s ? newestVersion(s.writes) : undefined;
  }

  /**
   * Negotiate against a target manifest for the families in use (plus the core ones). All
   * refusals are collected, as a pre-flight report should; nothing is recorded unless all agree.
   */
  negotiate(target: KernelManifest, inUse: Iterable<string>): Map<string, string> {
    const families = new Set<string>(['kho', 'luo', ...inUse]);
    // The FLB families a family in use depends on are in use too (transitively).
    for (const f of families) for (const d of this.specs.get(f)?.dependsOn ?? []) families.add(d);
    const picked = new Map<string, string>();
    const refusals: NegotiationRefusal[] = [];
    for (const family of families) {
      const spec = this.specs.get(family);
      if (!spec) continue;
      const theirs = target.formats[family];
      const v = theirs ? highestSatisfying(spec.writes, theirs.reads) : null;
      if (v === null) refusals.push({ family, owner: spec.owner, offered: spec.writes, accepted: theirs?.reads ?? null });
      else picked.set(family, v);
    }
    if (refusals.length > 0) throw new FormatNegotiationError(target.release, refusals);
    this.chosenVersions.clear();
    for (const [f, v] of picked) this.chosenVersions.set(f, v);
    return picked;
  }

  /** Forget the negotiated versions (the kexec failed and the kernel keeps running). */
  reset(): void { this.chosenVersions.clear(); }
}

/** The SDK contract this runtime implements: plugins declare the range they were built against. */
export const SDK_API_VERSION = '0.1.0';

export function checkPluginSdk(plugin: string, range: string | undefined): void {
  if (range === undefined) return;
  if (!isValidRange(range) || highestSatisfying([SDK_API_VERSION], range) === null) throw new PluginLoadError(plugin, range, SDK_API_VERSION);
}
