/**
 * plugin-memfd's surface for tools (`plugin.tools`): the 'memfd' and 'hugetlb-memfd' scenario
 * objects, decoders of every format this plugin writes and of the hugetlb FLB, and the
 * scenarios it ships. Only this surface is what `liveupdate` run, inspect, report, fuzz and
 * matrix know about memfds.
 */
import type { PluginTools } from '@liveupdate/sdk';
import { memfdDecoders } from './decoders.js';
import { hugetlbObjectKind, memfdObjectKind } from './objects.js';
import { memfdScenarios } from './scenarios.js';

export function memfdTools(options: { readonly hugetlb: boolean }): PluginTools {
  return {
    objects: [memfdObjectKind(), hugetlbObjectKind(options.hugetlb)],
    decoders: memfdDecoders(),
    // Built when asked for (run --scenario, fuzz), fresh each time: a plugin instance is made
    // for every kernel a matrix cell boots, and none of those reads them.
    get scenarios() { return memfdScenarios(); },
  };
}

export { guestFile, touchedRuns, dataPages, patternPage, patternBytes, HUGE_PAGE_BYTES, type GuestFile, type MemfdSpec } from './guest-file.js';
export { verifyGuestFile } from './objects.js';
