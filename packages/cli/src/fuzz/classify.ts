/**
 * The outcome classes of a fuzzed run (shared by `liveupdate fuzz` and the campaign):
 *
 *   updated            B restored everything; the data check passed
 *   file-error         B runs, but a file operation failed (a sticky retrieve error, ENOENT, EIO)
 *   refused-incoming   B refused the handover (KHO revival disabled, LUO refused, /dev/liveupdate EIO)
 *
 * and the findings: 'wrong-answer' (a byte, the size or the seals differ from what was written),
 * 'uncaught' (an exception the harness does not classify) and 'unexpected' (an outcome a
 * corruption after the jump cannot cause, such as a rollback).
 */
import type { ScenarioRunResult } from '@liveupdate/sdk/testing';

export const FUZZ_CLASSES = ['updated', 'file-error', 'refused-incoming', 'wrong-answer', 'uncaught', 'unexpected'] as const;
export type FuzzClass = (typeof FUZZ_CLASSES)[number];

/** One mutated handover and how it ended: what `liveupdate fuzz` and the campaign both report per run. */
export interface MutatedRun {
  readonly seed: number;
  readonly structure: string;
  /** The page's role as its decoder names it. */
  readonly role: string;
  /** What the mutation wrote, in words. */
  readonly what: string;
  /** Every byte changed, as the XOR of its old and new value. */
  readonly bytes: ReadonlyArray<{ readonly offset: number; readonly xor: number }>;
  readonly outcome: FuzzClass;
  /** Why (the refusal, the errno, the data check problem, the exception); null for a clean update. */
  readonly detail: string | null;
  /** Invariants an 'updated' run broke where upstream would not (violations.ts): findings, listed. */
  readonly violations: readonly string[];
  /** Invariants an 'updated' run broke as upstream does for this corruption (a page whose only reference was corrupted, leaked). */
  readonly accepted: readonly string[];
}
/** The outcome classes a corrupted handover may end in. */
export const ACCEPTED: ReadonlySet<FuzzClass> = new Set<FuzzClass>(['updated', 'file-error', 'refused-incoming']);

/**
 * The harness's outcome class, plus the checks only the scenario can make. A wrong byte in any
 * object (or a failed section check) is a wrong answer whatever else happened in the run: a
 * file error on one file does not excuse another file that came back with another's page.
 */
export function classify(r: ScenarioRunResult): { outcome: FuzzClass; detail: string | null } {
  const firstLine = (s: string | null): string | null => s?.split('\n')[0] ?? null;
  if (r.harnessOutcome === 'updated' || r.harnessOutcome === 'file-error') {
    const wrong = r.objects.find((o) => o.check !== null && !o.check.ok);
    if (wrong) return { outcome: 'wrong-answer', detail: (wrong.check?.problems ?? []).join('; ') || `session ${wrong.session} token ${wrong.token}: check failed` };
    const section = r.sectionChecks.find((c) => !c.ok);
    if (section) return { outcome: 'wrong-answer', detail: `section ${section.section}: ${section.problems.join('; ')}` };
  }
  switch (r.harnessOutcome) {
    case 'refused-incoming': return { outcome: 'refused-incoming', detail: firstLine(r.error) };
    case 'file-error': return { outcome: 'file-error', detail: firstLine(r.error) };
    case 'rolled-back': return { outcome: 'unexpected', detail: `rolled back: ${r.error ?? ''}` };
    case null: return { outcome: r.outcome === 'not-supported' ? 'unexpected' : 'uncaught', detail: firstLine(r.error) ?? 'the harness threw' };
    case 'updated': {
      // The runner keeps going past an object whose RETRIEVE_FD failed: that is the file-error class.
      const failed = r.objects.find((o) => o.error !== null);
      if (failed) return { outcome: 'file-error', detail: failed.error };
      const unchecked = r.objects.find((o) => o.check === null);
      if (unchecked) return { outcome: 'wrong-answer', detail: `session ${unchecked.session} token ${unchecked.token}: not checked` };
      return { outcome: 'updated', detail: null };
    }
  }
}
