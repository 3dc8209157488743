/**
 * Test-side helpers around the runtime's libliveupdate client (the same calls the SDK
 * exports): the selftests' nofile and -errno helpers.
 */
import type { Process } from '@liveupdate/runtime';

export {
  errnoOf, openLiveupdate as openLuo, createSession, retrieveSession, preserveFd, retrieveFd, finishSession, getName, nameBytes,
} from '@liveupdate/runtime';

/** luo_ensure_nofile_limit: RLIMIT_NOFILE of at least min + 32 (the test's own fds). */
export function ensureNofile(proc: Process, min: number): void {
  if (proc.nofile < min + 32) proc.nofile = min + 32;
}

