/**
 * @liveupdate/plugin-iommu: iommufd (/dev/iommu), VT-d domains and hardware state, the
 * iommu-liveupdate FLB and the iommufd LUO handler, after the IOMMU persistence series
 * (Samiullah Khawaja). The default export is the plugin factory: `boot(machine, { plugins: [memfd(), iommu()] })`.
 */
import { definePlugin, type Plugin } from '@liveupdate/sdk';
import { IOMMU_FLB_DEFAULT, type IommuFlbVariant } from './abi/iommu.js';
import { IOMMUFD_FAMILY } from './abi/iommufd.js';
import { IommufdCtx, iommufdFile } from './iommufd/ctx.js';
import { iommufdHandler } from './iommufd/handler.js';
import { iommufdFops } from './iommufd/ioctl.js';
import { iommuFlb } from './flb.js';
import { iommuInit } from './init.js';
import { coreOf } from './state.js';
import type { FlbOut } from './flb-arrays.js';
import { iommuTools } from './tools.js';
import { registerVfioBinding } from './vfio-binding.js';
import { PLUGIN_VERSION } from './version.js';

export interface IommuPluginOptions {
  /** iommufd format versions this build writes (default: DEFAULT_WRITES). 1.0.0 is upstream's "iommufd-v1". */
  readonly writes?: readonly string[];
  /** What it reads (default: DEFAULT_READS). */
  readonly reads?: string;
  /** Which stored FLB layout this build writes (default "iommu-liveupdate"); both are read. */
  readonly flb?: IommuFlbVariant;
  /** Fault injection: the FLB object allocation at IOMMU init fails (-ENOMEM). */
  readonly failFlbRetrieveAlloc?: boolean;
}

const DEFAULT_WRITES: readonly string[] = ['1.0.0', '2.0.0', '2.1.0'];
const DEFAULT_READS = '>=1.0.0 <3.0.0';

export default function iommu(options: IommuPluginOptions = {}): Plugin {
  const variant = options.flb ?? IOMMU_FLB_DEFAULT;
  const handler = iommufdHandler(options.writes ?? DEFAULT_WRITES, options.reads ?? DEFAULT_READS);
  return definePlugin({
    name: '@liveupdate/plugin-iommu',
    version: PLUGIN_VERSION,
    sdk: '^0.1.0',
    handlers: [handler],
    flbs: [{ flb: iommuFlb(variant), handlers: [IOMMUFD_FAMILY] }],
    init(kernel, hooks) {
      // vfio-pci's cdev binds, attaches and preserves through this plugin (plugin-pci's public API).
      registerVfioBinding(kernel);
      hooks.boot.iommuInit.tap((k) => { iommuInit(k, variant, { failRetrieveAlloc: options.failFlbRetrieveAlloc ?? false }); });
      hooks.shutdown.syscoreShutdown.tap((k) => coreOf(k).shutdown());
    },
    setup(kernel, api) {
      const core = coreOf(kernel);
      core.flbOutgoing = () => api.flbOutgoing(variant) as FlbOut | undefined;
      kernel.registerDevice('/dev/iommu', () => {
        return iommufdFile(kernel, new IommufdCtx(kernel, core), iommufdFops);
      });
    },
    tools: iommuTools,
  });
}

export { iommu, DEFAULT_WRITES, DEFAULT_READS, PLUGIN_VERSION };
export {
  iommuProbeDevice, iommuDeviceOf, iommufdBindDevice, iommufdAttachDevice, iommufdDetachDevice, iommufdUnbindDevice,
  iommufdOutgoingToken, iommuPreserveDevice, iommuUnpreserveDevice, iommufdHwptByToken,
  type IommuDevice, type IommuDeviceInfo, type PreservedDeviceTokens,
} from './device-api.js';
export { isIommufd } from './iommufd/ctx.js';
export { vfioBinding } from './vfio-binding.js';
export { FLB_PANIC } from './flb-incoming.js';
export * as iommuAbi from './abi/iommu.js';
export * as iommufdAbi from './abi/iommufd.js';
export * as iommuUapi from './abi/uapi.js';
export { type IommuFlbVariant } from './abi/iommu.js';
export { IoPageTable } from './vtd/pgtable.js';
