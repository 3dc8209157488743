import type { PluginTools } from '@liveupdate/sdk';

export const iommuTools: PluginTools = {};
