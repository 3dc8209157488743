/**
 * Load a scenario: the embedded default, or a file validated by the SDK's schema. A bad file
 * is a usage error whose message names the field (a JSON pointer) and the line; so are the
 * checks the schema cannot express (sizes in whole pages, unique names and tokens, a machine
 * that can exist).
 */
import { readFile } from 'node:fs/promises';
import { createMachine } from '@liveupdate/hw';
import { lineOfPointer, parseScenario, SchemaError, type Scenario } from '@liveupdate/sdk';
import { UsageError } from '../exit.js';
import { resolvePlugin } from '../plugins.js';
import { DEFAULT_SCENARIO } from './default-scenario.js';
import { guestFile } from './guest-memory.js';

/** Semantic checks after the schema: each problem as { pointer, message }. */
function semanticIssues(s: Scenario): Array<{ field: string; message: string }> {
  const issues: Array<{ field: string; message: string }> = [];
  try {
    createMachine({ memory: s.machine.memory, ...(s.machine.numaNodes ? { numaNodes: s.machine.numaNodes } : {}) });
  } catch (e) {
    issues.push({ field: '/machine', message: e instanceof Error ? e.message : String(e) });
  }
  const names = new Set<string>();
  s.sessions.forEach((session, i) => {
    if (names.has(session.name)) issues.push({ field: `/sessions/${i}/name`, message: `duplicate session name '${session.name}'` });
    names.add(session.name);
    const tokens = new Set<number>();
    session.files.forEach((f, j) => {
      if (tokens.has(f.token)) issues.push({ field: `/sessions/${i}/files/${j}/token`, message: `duplicate token ${f.token} in session '${session.name}'` });
      tokens.add(f.token);
      try {
        guestFile(session.name, f);
      } catch (e) {
        issues.push({ field: `/sessions/${i}/files/${j}/size`, message: e instanceof Error ? e.message : String(e) });
      }
    });
  });
  return issues;
}

function usageFromIssues(file: string, issues: ReadonlyArray<{ field: string; line?: number; message: string }>): UsageError {
  const lines = issues.map((i) => `${file}${i.line ? `:${i.line}` : ''}: ${i.field || '/'}: ${i.message}`);
  return new UsageError(lines[0] ?? `${file}: invalid scenario`, lines);
}

/** Validate a scenario object (the default one, or one built in code). */
export function checkScenario(s: Scenario, file = 'scenario', text?: string): Scenario {
  const issues = semanticIssues(s).map((i) => {
    const line = text === undefined ? undefined : lineOfPointer(text, i.field);
    return line === undefined ? i : { ...i, line };
  });
  if (issues.length > 0) throw usageFromIssues(file, issues);
  return s;
}

/** Every plugin version must be loadable before anything boots (a version this CLI cannot load is a bad file). */
async function pluginIssues(s: Scenario): Promise<Array<{ field: string; message: string }>> {
  const issues: Array<{ field: string; message: string }> = [];
  for (const side of ['from', 'to'] as const) {
    for (const [name, version] of Object.entries(s[side].plugins)) {
      try {
        await resolvePlugin(name, version);
      } catch (e) {
        if (!(e instanceof UsageError)) throw e;
        issues.push({ field: `/${side}/plugins/${name.replace(/~/g, '~0').replace(/\//g, '~1')}`, message: e.message });
      }
    }
  }
  return issues;
}

export async function loadScenario(file: string | undefined): Promise<Scenario> {
  if (file === undefined) return checkScenario(DEFAULT_SCENARIO, 'default scenario');
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new UsageError(`cannot read scenario ${file}: ${e instanceof Error ? e.message : String(e)}`);
  }
  let scenario: Scenario;
  try {
    scenario = parseScenario(text, file);
  } catch (e) {
    if (e instanceof SchemaError) throw usageFromIssues(file, e.issues);
    throw e;
  }
  checkScenario(scenario, file, text);
  const issues = (await pluginIssues(scenario)).map((i) => {
    const line = lineOfPointer(text, i.field);
    return line === undefined ? i : { ...i, line };
  });
  if (issues.length > 0) throw usageFromIssues(file, issues);
  return scenario;
}
