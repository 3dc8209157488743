/**
 * RETRIEVE_FD asked twice for one token: the errno of each try (0 when it succeeded). A handler
 * whose retrieve failed keeps failing (luo_file.c records the failure and answers it again), so
 * the tests of refused handovers expect the same errno both times.
 */
import { errnoOf, retrieveFd, type ErrnoCode, type Process } from '@liveupdate/sdk';

export function retrieveTwice(proc: Process, sessionFd: number, token: bigint | number): [ErrnoCode | 0, ErrnoCode | 0] {
  return [errnoOf(() => retrieveFd(proc, sessionFd, token)), errnoOf(() => retrieveFd(proc, sessionFd, token))];
}
