import { createRequire } from 'node:module';

/** The version of this copy of the plugin, from its own package.json (so side-by-side copies differ). */
export const PLUGIN_VERSION: string = (createRequire(import.meta.url)('../package.json') as { version: string }).version;
