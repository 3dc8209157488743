/** The plugin surface for tools: the 'kvm-vm' object kind, decoders of both families, built-in scenarios. */
import type { PluginTools } from '@liveupdate/sdk';
import { guestMemfdDecoder, kvmVcpuDecoder, kvmVmDecoder } from './decoders.js';
import { relaxedFaultScenario, twoVmsScenario, vmScenario, vmWithMemfdScenario } from './scenarios.js';
import { vmKind } from './vm-kind.js';

export const guestMemfdTools: PluginTools = {
  objects: [vmKind],
  decoders: [kvmVmDecoder, guestMemfdDecoder, kvmVcpuDecoder],
  scenarios: [vmScenario, relaxedFaultScenario, twoVmsScenario, vmWithMemfdScenario],
};
export { vmKind, guestMemfdDecoder, kvmVmDecoder, kvmVcpuDecoder };
