/** The plugin surface for tools: the 'kvm-vm' object kind, decoders of both families, built-in scenarios. */
import type { ObjectKind, PluginTools } from '@liveupdate/sdk';
import { guestMemfdDecoder, kvmVcpuDecoder, kvmVmDecoder } from './decoders.js';
import { relaxedFaultScenario, vmScenario } from './scenarios.js';
import { vmKind } from './vm-kind.js';

export const guestMemfdTools: PluginTools = {
  objects: [vmKind as unknown as ObjectKind<never, never>],
  decoders: [kvmVmDecoder, guestMemfdDecoder, kvmVcpuDecoder],
  scenarios: [vmScenario, relaxedFaultScenario],
};
export { vmKind, guestMemfdDecoder, kvmVmDecoder, kvmVcpuDecoder };
