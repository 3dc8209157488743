/** This plugin's CLI test helpers: the shared ones (test-support/plugin-cli.ts) bound to @liveupdate/plugin-mshv. */
import { pluginCli } from '../../../test-support/plugin-cli.js';

export { BIN, corruptDump, json, removeDir, scenarioFile, type CliRun } from '../../../test-support/plugin-cli.js';
export const { cli, tempDir, pinnedBuild } = pluginCli('plugin-mshv', '@liveupdate/plugin-mshv');
