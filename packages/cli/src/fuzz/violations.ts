/**
 * Which invariants an 'updated' run of a corrupted handover may break because upstream does the
 * same for that corruption (accepted), and which are findings. The harness checks them on every
 * run (r.violations); the fuzzer and the campaign count both kinds, each in its own column.
 *
 *   liveupdate_num not advanced by one, after a corruption of the LUO blob: upstream takes the
 *     number as handed over (kernel/liveupdate/luo_core.c, luo_early_startup():
 *     `luo_global.liveupdate_num = luo_ser->liveupdate_num`, unchecked) and hands over n+1.
 *   preserved pages neither restored nor released, after a corruption of the core's handover
 *     metadata (root FDT, tracker node, LUO blob, session/file block, FLB page): upstream
 *     reserves every page the incoming KHO bitmaps mark (kernel/liveupdate/kexec_handover.c,
 *     kho_mem_deserialize()) and gives one back only through kho_restore_folio()/_pages(); a
 *     page whose only reference was corrupted (a retargeted subtree or FLB data pointer, a
 *     count that hides an entry, a bitmap bit set) is never restored, and nothing walks an
 *     unreachable or refused object's pages to free them (luo_flb.c does not free the data of
 *     an FLB it cannot match or whose retrieve failed; luo_session.c likewise for files).
 *
 * Anything else is a finding: a leak after a corruption of a plugin's own page (the decoder
 * that refused or skipped data must release it), a read of poisoned memory, an unfinished session.
 */
import { CORE_STRUCTURES } from './targets.js';

const CORE = new Set<string>(CORE_STRUCTURES);
const LEAK = /^\d+ preserved block\(s\) \(\d+ pages\) neither restored nor released/;
const NUM = /^liveupdate_num \d+ after \d+: not advanced by one$/;

export interface ViolationVerdict {
  /** Upstream-defined for this corruption (see above). */
  readonly accepted: readonly string[];
  /** Findings. */
  readonly findings: readonly string[];
}

/** Sort an 'updated' run's violations by the structure its mutation hit. */
export function judgeViolations(structure: string, violations: readonly string[]): ViolationVerdict {
  const accepted: string[] = [];
  const findings: string[] = [];
  for (const v of violations) {
    const ok = (NUM.test(v) && structure === 'LUO blob') || (LEAK.test(v) && CORE.has(structure));
    (ok ? accepted : findings).push(v);
  }
  return { accepted, findings };
}
