/**
 * Exit codes of the liveupdate command. Scripts and CI branch on these, so they are part of
 * the CLI's contract (documented in `liveupdate --help` and the README).
 */
export const EXIT = {
  /** The command did what it was asked; a live update kept every invariant. */
  ok: 0,
  /** The live update failed an invariant (leak, data mismatch, poisoned read) or was refused. */
  failed: 1,
  /** Bad usage: unknown option, unreadable or invalid scenario or dump file. */
  usage: 2,
  /** A bug: an exception nobody expected. */
  internal: 3,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

export const EXIT_CODES_HELP = `Exit codes:
  0  ok: the command succeeded; a live update kept every invariant
  1  the live update failed an invariant (leak, data check, poisoned read) or was refused
  2  bad usage, or a scenario/dump file that does not parse or validate (the message names the field and line)
  3  internal error (a bug: please report it with the output)`;

/** An error the user can fix: reported without a stack trace, with exit code 2 unless told otherwise. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
  constructor(message: string, readonly details: readonly string[] = []) {
    super(message);
  }
}
