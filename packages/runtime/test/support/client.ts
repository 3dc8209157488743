/**
 * Test-side helpers around the runtime's libliveupdate client (the same calls the SDK
 * exports): the selftests' nofile and -errno helpers.
 */
import { ErrnoError, type ErrnoCode, type Process } from '@liveupdate/runtime';

export {
  openLiveupdate as openLuo, createSession, retrieveSession, preserveFd, retrieveFd, finishSession, getName, nameBytes,
} from '@liveupdate/runtime';

/** luo_ensure_nofile_limit: RLIMIT_NOFILE of at least min + 32 (the test's own fds). */
export function ensureNofile(proc: Process, min: number): void {
  if (proc.nofile < min + 32) proc.nofile = min + 32;
}

/**
 * The errno a call failed with, or 0 on success, like the selftest helpers' -errno return.
 * Anything thrown that is not an ErrnoError is rethrown: the model must never fail that way.
 */
export function errnoOf(fn: () => unknown): ErrnoCode | 0 {
  try {
    fn();
    return 0;
  } catch (e) {
    if (e instanceof ErrnoError) return e.code;
    throw e;
  }
}
