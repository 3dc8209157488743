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

/** What each exit code means: the one text `--help`, every command's help footer and the README table share. */
export const EXIT_CODE_MEANINGS: Readonly<Record<ExitCode, string>> = {
  0: 'ok: the command succeeded; a live update kept every invariant',
  1: 'the live update failed an invariant (leak, data check, poisoned read) or ended otherwise than the scenario expects (refused, rolled back); `inspect` found a handover a new kernel would not trust; a `matrix` cell failed (a refusal before freeze or a "not supported by A" cell is not a failure there); a `fuzz` run ended in a wrong answer, an uncaught exception or an unexpected outcome',
  2: 'bad usage, a scenario or dump file that does not parse or validate (the message names the field and the line), a plugin version that is not installed, or an output path that cannot be written (checked before the run)',
  3: 'internal error (a bug: please report it with the output)',
};

export const EXIT_CODES_HELP = `Exit codes:\n${Object.entries(EXIT_CODE_MEANINGS).map(([code, text]) => `  ${code}  ${text}`).join('\n')}`;

/** An error the user can fix: reported without a stack trace, with exit code 2 unless told otherwise. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
  constructor(message: string, readonly details: readonly string[] = []) {
    super(message);
  }
}
