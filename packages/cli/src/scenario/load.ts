/**
 * Load a scenario: a file, or one a plugin ships (`--scenario <name>`; without either, the
 * default plugin's default scenario). A file is first checked against the common fields, its
 * plugins are resolved (the npm way), and then it is validated against the schema composed from
 * those plugins' object kinds and sections: a bad field is a usage error naming the field (a
 * JSON pointer) and its line, whichever plugin the field belongs to. Checks the schema cannot
 * express follow (unique names and tokens, a machine that can exist, each kind's own checks).
 */
import { readFile } from 'node:fs/promises';
import { createMachine } from '@liveupdate/hw';
import {
  checkScenarioData, Kernel, lineOfPointer, parseScenarioJson, parseSizeStrict, SchemaError, sessionObjects,
  type ObjectKind, type Plugin, type PluginTools, type Scenario,
} from '@liveupdate/sdk';
import { cmdlineOf } from '@liveupdate/sdk/testing';
import { UsageError } from '../exit.js';
import { defaultPlugin, installedVersions, resolvePlugin, resolvePlugins, type ResolvedPlugin } from '../plugins.js';

export interface LoadedScenario {
  readonly scenario: Scenario;
  /** Where it came from: the file, or 'plugin-name:scenario-name'. */
  readonly source: string;
}

interface Issue { field: string; line?: number; message: string }

const escapePointer = (t: string): string => t.replace(/~/g, '~0').replace(/\//g, '~1');

function usageFromIssues(file: string, issues: readonly Issue[]): UsageError {
  const lines = issues.map((i) => `${file}${i.line ? `:${i.line}` : ''}: ${i.field || '/'}: ${i.message}`);
  return new UsageError(lines[0] ?? `${file}: invalid scenario`, lines);
}

/** Checks after the schema: each problem as { pointer, message }. */
function semanticIssues(s: Scenario, plugins: readonly Plugin[]): Issue[] {
  const issues: Issue[] = [];
  try {
    const memory = parseSizeStrict(s.machine.memory);
    const machine = createMachine({ memory, ...(s.machine.numaNodes ? { numaNodes: s.machine.numaNodes } : {}) });
    // A dry boot: a machine too small for the kernel and its KHO scratch areas has no live update at all.
    const k = Kernel.boot(machine, { cmdline: cmdlineOf(s, plugins), release: s.from.release });
    if (!k.luo.enabled) {
      const why = k.dmesg.lines().find((l) => /KHO|scratch/.test(l)) ?? 'KHO is disabled';
      issues.push({ field: '/machine/memory', message: `a ${s.machine.memory} machine is too small for the kernel and its KHO scratch areas (${why}): give it at least 256MiB` });
    }
  } catch (e) {
    issues.push({ field: '/machine/memory', message: e instanceof Error ? e.message : String(e) });
  }
  const kinds = new Map<string, ObjectKind<never, unknown>>();
  for (const p of plugins) for (const k of p.tools.objects ?? []) if (!kinds.has(k.type)) kinds.set(k.type, k);
  const names = new Set<string>();
  s.sessions.forEach((session, i) => {
    if (names.has(session.name)) issues.push({ field: `/sessions/${i}/name`, message: `duplicate session name '${session.name}'` });
    names.add(session.name);
    const tokens = new Set<number>();
    for (const { object, pointer } of sessionObjects(session, i)) {
      if (tokens.has(object.token)) issues.push({ field: `${pointer}/token`, message: `duplicate token ${object.token} in session '${session.name}'` });
      tokens.add(object.token);
      const kind = kinds.get(object.type) as ObjectKind<typeof object, unknown> | undefined;
      for (const p of kind?.validate?.(object) ?? []) issues.push({ field: p.field ? `${pointer}/${escapePointer(p.field)}` : pointer, message: p.message });
    }
  });
  return issues;
}

const withLines = (issues: readonly Issue[], text: string | undefined): Issue[] => issues.map((i) => {
  const line = text === undefined ? undefined : lineOfPointer(text, i.field) ?? lineOfPointer(text, i.field.split('/').slice(0, -1).join('/'));
  return line === undefined ? i : { ...i, line };
});

type NamedPlugins = Readonly<Record<'from' | 'to', { readonly plugins: Readonly<Record<string, string>> }>>;

/** The plugin versions the data names, when `from.plugins` and `to.plugins` are maps of strings (else null). */
function namedPlugins(data: unknown): NamedPlugins | null {
  const rec = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  if (!rec(data)) return null;
  for (const side of ['from', 'to'] as const) {
    const s = data[side];
    if (!rec(s) || !rec(s.plugins) || !Object.values(s.plugins).every((v) => typeof v === 'string')) return null;
  }
  return data as unknown as NamedPlugins;
}

/** Every plugin version a scenario names, resolved; each one that is not installed is an issue at its field. */
async function pluginsOf(s: NamedPlugins): Promise<{ from: ResolvedPlugin[]; to: ResolvedPlugin[]; issues: Issue[] }> {
  const issues: Issue[] = [];
  const out = { from: [] as ResolvedPlugin[], to: [] as ResolvedPlugin[] };
  for (const side of ['from', 'to'] as const) {
    for (const [name, version] of Object.entries(s[side].plugins)) {
      try {
        out[side].push(await resolvePlugin(name, version));
      } catch (e) {
        if (!(e instanceof UsageError)) throw e;
        issues.push({ field: `/${side}/plugins/${escapePointer(name)}`, message: e.message });
      }
    }
  }
  return { ...out, issues };
}

/**
 * Validate scenario data against the vocabulary of its plugins (and, for a matrix, of `extra`
 * plugins too). The checks, in the order their problems are reported: the common fields (the
 * open schema), the plugins named (installed?), the schema composed from those plugins, then
 * what no schema can say. Valid data compiles and runs the composed schema only: the open one
 * runs when something is wrong, to report the common fields' problems first, as documented.
 */
export async function checkScenario(data: unknown, source: string, text?: string, extra: readonly Plugin[] = []): Promise<Scenario> {
  const checkOpen = (): Scenario => {
    try {
      return checkScenarioData(data, source, null, text);
    } catch (e) {
      if (e instanceof SchemaError) throw usageFromIssues(source, e.issues);
      throw e;
    }
  };
  const { from, to, issues } = await pluginsOf(namedPlugins(data) ?? checkOpen());
  if (issues.length > 0) {
    checkOpen();
    throw usageFromIssues(source, withLines(issues, text));
  }
  const plugins = [...from, ...to].map((p) => p.create());
  const all = [...plugins, ...extra];
  let scenario: Scenario;
  try {
    scenario = checkScenarioData(data, source, all.map((p): PluginTools => p.tools), text);
  } catch (e) {
    if (!(e instanceof SchemaError)) throw e;
    checkOpen();
    throw usageFromIssues(source, e.issues);
  }
  const more = semanticIssues(scenario, all);
  if (more.length > 0) throw usageFromIssues(source, withLines(more, text));
  return scenario;
}

/** A scenario a plugin ships, by name (the plugin's default for `use` when no name is given). */
export async function builtinScenario(use: 'run' | 'matrix' | 'fuzz', name?: string, plugin?: ResolvedPlugin): Promise<LoadedScenario> {
  const p = plugin ?? await defaultPlugin();
  const list = p.create().tools.scenarios ?? [];
  const chosen = name === undefined ? list.find((s) => s.defaultFor?.includes(use)) ?? list[0] : list.find((s) => s.name === name);
  if (!chosen) {
    throw new UsageError(name === undefined
      ? `${p.name}@${p.version} ships no scenario: name a scenario file`
      : `${p.name}@${p.version} has no scenario '${name}' (it has: ${list.map((s) => s.name).join(', ') || 'none'})`);
  }
  const source = `${p.name}:${chosen.name}`;
  return { scenario: await checkScenario(structuredClone(chosen.scenario), source), source };
}

export async function loadScenarioFile(file: string, extra: readonly Plugin[] = []): Promise<LoadedScenario> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new UsageError(`cannot read scenario ${file}: ${e instanceof Error ? e.message : String(e)}`);
  }
  let data: unknown;
  try {
    data = parseScenarioJson(text, file);
  } catch (e) {
    if (e instanceof SchemaError) throw usageFromIssues(file, e.issues);
    throw e;
  }
  return { scenario: await checkScenario(data, file, text, extra), source: file };
}

/**
 * A file, a scenario a plugin ships (`<name>` of the default plugin, or `<package>:<name>` of
 * the newest installed release of any plugin), or the default plugin's default.
 */
export async function loadScenario(file: string | undefined, builtin?: string): Promise<LoadedScenario> {
  if (file !== undefined && builtin !== undefined) throw new UsageError('give a scenario file or --scenario <name>, not both');
  if (file !== undefined) return loadScenarioFile(file);
  const at = builtin?.lastIndexOf(':') ?? -1;
  if (builtin !== undefined && at > 0) {
    const pkg = builtin.slice(0, at);
    const newest = installedVersions(pkg).at(-1);
    if (newest === undefined) throw new UsageError(`--scenario ${builtin}: plugin ${pkg} is not installed`);
    return builtinScenario('run', builtin.slice(at + 1), await resolvePlugin(pkg, newest));
  }
  return builtinScenario('run', builtin);
}

export { resolvePlugins };
