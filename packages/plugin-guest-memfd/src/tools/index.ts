import type { PluginTools } from '@liveupdate/sdk';
export const guestMemfdTools: PluginTools = {};
