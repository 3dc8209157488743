/**
 * @liveupdate/plugin-pci: PCI core preservation and the vfio-pci live update handler. The
 * default export is the plugin factory: `boot(machine, { plugins: [memfd(), pci()] })`.
 */
import { defineFlb, definePlugin, type FormatSpec, type Kernel, type Plugin } from '@liveupdate/sdk';
import {
  PCI_FAMILY, PCI_V6_COMPATIBLE, PCI_V6_PATCH02_COMPATIBLE, PCI_V6_PATCH02_VERSION, PCI_V6_VERSION, PCI_V7_COMPATIBLE, PCI_V7_VERSION,
} from './abi/pci.js';
import { VFIO_FAMILY, VFIO_V1_VERSION, VFIO_V2_1_VERSION, VFIO_V2_VERSION } from './abi/vfio.js';
import { createPciCore, pciCoreOf, type PciAbi } from './pci-core.js';
import { pciTools } from './tools.js';
import { vfioHandler } from './vfio-handler.js';
import { iommufdBindingOf, iommuViewOf } from './vfio.js';
import { DEFAULT_PCI_ABI, PLUGIN_VERSION } from './version.js';

export interface PciPluginOptions {
  /** The pci_ser this kernel build writes: 'v7' (default, kho_block), 'v6' (flat array, "pci-v3"), 'v6-patch02' ("pci-v2" flat). */
  readonly abi?: PciAbi;
  /** pci format versions this build reads (default: its own major; v7 also reads v6's 3.x). */
  readonly pciReads?: string;
  /** vfio-pci versions written (default 1.0.0 and 2.0.0) and read (default >=1 <3). */
  readonly vfioWrites?: readonly string[];
  readonly vfioReads?: string;
}

const ABI: Record<PciAbi, { version: string; compatible: string; reads: string; aliases: Record<number, string> }> = {
  'v6-patch02': { version: PCI_V6_PATCH02_VERSION, compatible: PCI_V6_PATCH02_COMPATIBLE, reads: '^2.0.0', aliases: { 2: PCI_V6_PATCH02_COMPATIBLE } },
  v6: { version: PCI_V6_VERSION, compatible: PCI_V6_COMPATIBLE, reads: '^3.0.0', aliases: { 3: PCI_V6_COMPATIBLE } },
  v7: { version: PCI_V7_VERSION, compatible: PCI_V7_COMPATIBLE, reads: '>=3.0.0 <5.0.0', aliases: { 3: PCI_V6_COMPATIBLE, 4: PCI_V7_COMPATIBLE } },
};

/** The compatible strings a build reads, with the version each names (exact strings, as upstream matches them). */
function readTable(abi: PciAbi, reads: string): Array<{ compatible: string; version: string }> {
  const a = ABI[abi];
  const all = Object.entries(a.aliases).map(([m, c]) => ({ compatible: c, version: `${m}.0.0` }));
  return all.filter((e) => satisfiesMajor(e.version, reads));
}

function satisfiesMajor(version: string, range: string): boolean {
  const m = Number(version.split('.')[0]);
  const lo = /(?:>=|\^)(\d+)/.exec(range);
  const hi = /<(\d+)/.exec(range);
  const min = lo ? Number(lo[1]) : 0;
  const max = hi ? Number(hi[1]) : range.startsWith('^') ? min + 1 : Infinity;
  return m >= min && m < max;
}

export default function pci(options: PciPluginOptions = {}): Plugin {
  const abi = options.abi ?? DEFAULT_PCI_ABI;
  const a = ABI[abi];
  const pciReads = options.pciReads ?? a.reads;
  const flb = defineFlb<unknown>({
    compatible: a.compatible,
    preserve(ctx) {
      const w = pciCoreOf(ctx.kernel).startOutgoing();
      ctx.data = BigInt(w.phys);
      ctx.obj = w;
    },
    unpreserve(ctx) { pciCoreOf(ctx.kernel).stopOutgoing(); },
    // Read at enumeration (pci_liveupdate_setup_device needs it before any driver probes).
    retrieve(ctx) { ctx.obj = pciCoreOf(ctx.kernel).incomingSource ?? undefined; },
    // The pages go back when the last incoming device finishes (pci_liveupdate_finish).
    finish() { /* nothing beyond the per-device references */ },
  });
  const base = definePlugin({
    name: '@liveupdate/plugin-pci',
    version: PLUGIN_VERSION,
    sdk: '^0.1.0',
    handlers: [vfioHandler(options.vfioWrites ?? [VFIO_V1_VERSION, VFIO_V2_VERSION, VFIO_V2_1_VERSION], options.vfioReads ?? '>=1.0.0 <3.0.0')],
    flbs: [{ flb, handlers: [VFIO_FAMILY] }],
    init(kernel: Kernel, hooks) {
      const core = createPciCore(kernel, abi);
      hooks.boot.pciEnumerate.tap((k) => {
        if (k.luo.enabled) core.readIncoming(k.luo.flbs.incomingList, readTable(abi, pciReads));
        core.enumerate();
        // iommu_probe_device for every function found, before any driver binds (a preserved one
        // is re-attached to its restored domain here); no IOMMU plugin → nothing to probe.
        const iommu = iommufdBindingOf(k);
        if (iommu) for (const d of core.devices) if (!d.removed) iommu.probe(iommuViewOf(d));
      });
      hooks.shutdown.reboot.tap(() => { core.frozen = true; });
      hooks.shutdown.deviceShutdown.tap(() => core.shutdown());
    },
    tools: pciTools,
  });
  // The pci family is the FLB's format: declared so manifests and pre-flight checks carry it.
  const pciFormat: FormatSpec = { family: PCI_FAMILY, writes: [a.version], reads: pciReads, aliases: a.aliases, owner: base.name };
  return {
    ...base,
    // vfio-pci records only make sense with the PCI FLB: negotiate `pci` whenever vfio-pci is in use.
    formats: [...(base.formats ?? []).map((f) => (f.family === VFIO_FAMILY ? { ...f, dependsOn: [PCI_FAMILY] } : f)), pciFormat],
    manifest: { ...base.manifest, formats: [...base.manifest.formats, { family: PCI_FAMILY, writes: [a.version], reads: pciReads, aliases: { ...a.aliases } }] },
  };
}

export { pci, PLUGIN_VERSION };
export { PciCore, PciDev, pciCoreOf, type PciAbi } from './pci-core.js';
export { FlatPciSer, BlockPciSer, readPciSerV6, readPciSerV7, type PciSerWriter, type PciDevRecord, type PciSerRead } from './pci-ser.js';
export {
  VfioDevice, VfioDeviceFile, registerIommufdBinding, iommufdBindingOf, vfioDevices, vfioMmapPortal, isVfioDeviceFile,
  type IommufdBinding, type VfioIommuDevice, type VfioPortal,
} from './vfio.js';
export { readVfioRecord } from './vfio-handler.js';
export {
  pciDevice, pciDevices, vfioBindDevice, pciBindDriver, pciEnableSriov, pciRemove,
  vfioBindIommufd, vfioAttachIommufdPt, vfioDetachIommufdPt, vfioSetIrqs, vfioReset, vfioGroupGetDeviceFd, vfioConfigRead, vfioConfigWrite, vfioKeepRunning,
} from './syscalls.js';
export * as pciAbi from './abi/pci.js';
export * as vfioAbi from './abi/vfio.js';
