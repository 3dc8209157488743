/** The plugin the default scenario uses (the CLI's one dependency on a plugin). */
export const DEFAULT_PLUGIN = '@liveupdate/plugin-memfd';
