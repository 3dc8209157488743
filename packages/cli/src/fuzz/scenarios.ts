/**
 * The scenarios a fuzz campaign forks: every built-in scenario (`plugin.tools.scenarios`) of the
 * newest installed release of every installed liveupdate plugin (a package whose package.json
 * lists the keyword 'liveupdate-plugin'), sorted by '<package>:<name>'. No plugin is named here.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Scenario } from '@liveupdate/sdk';
import { installedPackages, installedVersions, resolvePlugin } from '../plugins.js';
import { builtinScenario } from '../scenario/load.js';

export const PLUGIN_KEYWORD = 'liveupdate-plugin';

export interface FuzzScenario {
  /** '<package>:<name>': what `liveupdate fuzz --scenario` takes. */
  readonly label: string;
  readonly scenario: Scenario;
}

function isPluginPackage(dir: string): boolean {
  try {
    const pkg = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as { keywords?: unknown };
    return Array.isArray(pkg.keywords) && pkg.keywords.includes(PLUGIN_KEYWORD);
  } catch {
    return false;
  }
}

/** Every installed plugin's built-in scenarios, each checked as `run --scenario` checks it. */
export async function pluginScenarios(): Promise<FuzzScenario[]> {
  const names = [...new Set(installedPackages().filter((p) => isPluginPackage(p.dir)).map((p) => p.name))].sort();
  const out: FuzzScenario[] = [];
  for (const name of names) {
    const newest = installedVersions(name).at(-1);
    if (newest === undefined) continue;
    const plugin = await resolvePlugin(name, newest);
    for (const s of plugin.create().tools.scenarios ?? []) {
      const loaded = await builtinScenario('fuzz', s.name, plugin);
      out.push({ label: loaded.source, scenario: loaded.scenario });
    }
  }
  return out.sort((a, b) => (a.label < b.label ? -1 : a.label > b.label ? 1 : 0));
}
