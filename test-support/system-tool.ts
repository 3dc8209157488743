/**
 * Tests that need a program outside Node (chromium, dtc). Where the program is present they run;
 * where it is absent they are skipped with a printed reason, except under CI=true (`.ci/run`
 * installs them), where they run and fail with how to install the program.
 */
import { spawnSync } from 'node:child_process';

export interface SystemTool {
  /** The command to run (an absolute path from the environment, or the name on PATH). */
  readonly command: string;
  /** True when the tests should run: the program is there, or CI=true wants its absence to fail. */
  readonly run: boolean;
  readonly present: boolean;
}

const reported = new Set<string>();

/** Whether `command` runs (`command --version` exits 0). */
function runs(command: string, versionArg: string): boolean {
  const r = spawnSync(command, [versionArg], { stdio: 'ignore', timeout: 30_000 });
  return !r.error && r.status === 0;
}

export function systemTool(command: string, what: string, install: string, versionArg = '--version'): SystemTool {
  const present = runs(command, versionArg);
  const ci = process.env.CI === 'true';
  if (!present && !reported.has(command)) {
    reported.add(command);
    process.stderr.write(ci
      ? `\n[system tool] ${command} is missing: the ${what} tests will FAIL (CI=true). Install it: ${install}\n`
      : `\n[system tool] ${command} is missing: the ${what} tests are SKIPPED. Install it to run them: ${install} (CI=true makes its absence a failure)\n`);
  }
  return { command, present, run: present || ci };
}
