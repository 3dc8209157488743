/**
 * Format versions are semver: a major bump is a breaking layout change, a minor one adds
 * fields an older reader may skip. Prereleases are not format versions (includePrerelease is
 * never set). These helpers are the pre-flight half of the negotiation the runtime performs
 * before every kexec.
 */
import { semver } from '@liveupdate/runtime';
import {
  FormatNegotiationError, highestSatisfying, imageManifest,
  type BootConfig, type KernelManifest, type NegotiationRefusal,
} from '@liveupdate/runtime';

/** The highest version `writes` offers that `reads` accepts, or null (remembered: a pure function of the strings). */
export function pickVersion(writes: readonly string[], reads: string): string | null {
  return highestSatisfying(writes, reads);
}

/** The intersection of two ranges, distributed over their OR-sets (never by concatenation), or null. */
export function intersectRanges(a: string, b: string): string | null {
  const sets: string[] = [];
  for (const x of new semver.Range(a).set) {
    for (const y of new semver.Range(b).set) {
      const r = new semver.Range([...x, ...y].map((c) => c.value).join(' ') || '*');
      if (semver.minVersion(r) !== null) sets.push(r.range || '*');
    }
  }
  return sets.length > 0 ? sets.join(' || ') : null;
}

export interface PreflightEntry {
  readonly family: string;
  readonly owner: string;
  readonly offered: readonly string[];
  readonly accepted: string | null;
  /** The version the handover would be written in, or null when refused. */
  readonly chosen: string | null;
}

export interface PreflightReport {
  readonly from: string;
  readonly to: string;
  readonly ok: boolean;
  readonly entries: readonly PreflightEntry[];
  readonly refusals: readonly NegotiationRefusal[];
}

/**
 * Compare two kernel images before anything runs: for every family the source writes, the
 * version that would travel, or why none can. Collects every incompatibility, not the first.
 */
export function preflight(from: BootConfig | KernelManifest, to: BootConfig | KernelManifest): PreflightReport {
  const a = 'formats' in from && !('plugins' in from) ? (from as KernelManifest) : imageManifest(from as BootConfig);
  const b = 'formats' in to && !('plugins' in to) ? (to as KernelManifest) : imageManifest(to as BootConfig);
  const entries: PreflightEntry[] = [];
  const refusals: NegotiationRefusal[] = [];
  for (const [family, mine] of Object.entries(a.formats)) {
    const theirs = b.formats[family];
    const chosen = theirs ? pickVersion(mine.writes, theirs.reads) : null;
    entries.push({ family, owner: mine.owner, offered: mine.writes, accepted: theirs?.reads ?? null, chosen });
    if (chosen === null) refusals.push({ family, owner: mine.owner, offered: mine.writes, accepted: theirs?.reads ?? null });
  }
  return { from: a.release, to: b.release, ok: refusals.length === 0, entries, refusals };
}

/** Throw the same structured error a kexec would, if the pre-flight found refusals. */
export function assertPreflight(report: PreflightReport): void {
  if (!report.ok) throw new FormatNegotiationError(report.to, report.refusals);
}
