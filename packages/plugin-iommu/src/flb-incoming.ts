/**
 * The incoming side of the IOMMU FLB (drivers/iommu/liveupdate.c iommu_liveupdate_flb_retrieve
 * and iommu_liveupdate_flb_get_incoming; drivers/iommu/intel/liveupdate.c restore): read at IOMMU
 * init, before PCI enumeration, straight from the LUO FLB list of the handover (the FLB's handler
 * registers later, at late_initcall). Restore failure is fatal: devices kept doing DMA through
 * these tables, so memory integrity cannot be confirmed.
 */
import { ErrnoError, KernelPanic, PAGE_SIZE, type Kernel } from '@liveupdate/sdk';
import {
  FLB_LAYOUTS, IOMMU_FLB_VERSIONS, IOMMU_INTEL, IOMMU_LUO_FLB_VERSION, iommuDeviceSer, iommuDomainSer, iommuFlbSer, iommuFlbSerV1,
  iommuHwSer, iommuHwSerV1, type IommuFlbVariant,
} from './abi/iommu.js';
import { readList } from './flb-arrays.js';

export interface HwRecordIn { readonly phys: number; readonly token: number; readonly type: number; readonly rootTable: number; readonly restored: boolean }
export interface DeviceRecordIn { readonly phys: number; readonly devid: number; readonly segment: number; readonly did: number; readonly domainPhys: number; readonly iommuPhys: number }
export interface DomainRecordIn { readonly phys: number; readonly topPhys: number; readonly topLevel: number; readonly vasz: number }

/** The restored FLB object (struct iommu_flb_obj of the incoming kernel). */
export interface FlbIn {
  readonly variant: IommuFlbVariant;
  readonly headerPhys: number;
  readonly hw: readonly HwRecordIn[];
  readonly devices: readonly DeviceRecordIn[];
  readonly domains: readonly DomainRecordIn[];
  /** Array pages and the header, released at FLB finish. */
  readonly pages: readonly number[];
}

export const FLB_PANIC = 'Failed to restore IOMMU Live Update FLB';

const n = (v: bigint): number => (v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v));

/** The incoming FLB of either variant named in the LUO handover, or null. */
export function findIncomingFlb(kernel: Kernel): { variant: IommuFlbVariant; data: number; count: number } | null {
  for (const e of kernel.luo.flbs.incomingList) {
    if (e.name in IOMMU_FLB_VERSIONS) return { variant: e.name as IommuFlbVariant, data: n(e.data), count: e.count };
  }
  return null;
}

/**
 * iommu_liveupdate_flb_retrieve + iommu_liveupdate_flb_get_incoming. Panics (KernelPanic
 * "Failed to restore IOMMU Live Update FLB") on a version other than 1 or a zero array address;
 * an array page that cannot be restored is a BUG (also a KernelPanic).
 */
export function retrieveFlb(kernel: Kernel, variant: IommuFlbVariant, data: number, allocFails = false): FlbIn {
  // kzalloc of the FLB object: -ENOMEM here makes liveupdate_flb_get_incoming fail, which is fatal.
  if (allocFails) throw new KernelPanic(`${FLB_PANIC} (${new ErrnoError('ENOMEM', 'iommu_liveupdate_flb_retrieve').message})`);
  const kin = kernel.khoIn;
  const mem = kernel.machine.memory;
  if (!kin || data <= 0 || data % PAGE_SIZE !== 0 || data >= mem.size || kin.restoreFolio(data) === null) {
    throw new KernelPanic(`kernel BUG at drivers/iommu/liveupdate.c: FLB data 0x${data.toString(16)} not restorable`);
  }
  const layout = FLB_LAYOUTS[variant];
  let first: { iommu: number; domain: number; device: number };
  if (variant === 'iommu-liveupdate') {
    const h = iommuFlbSer.decode(mem.read(data, iommuFlbSer.size));
    // FLB version mismatch is fatal for security reasons.
    if (h.version !== BigInt(IOMMU_LUO_FLB_VERSION)) throw new KernelPanic(`${FLB_PANIC} (version ${h.version})`);
    first = { iommu: n(h.iommu_array_phys), domain: n(h.iommu_domain_array_phys), device: n(h.device_array_phys) };
  } else {
    const h = iommuFlbSerV1.decode(mem.read(data, iommuFlbSerV1.size));
    first = { iommu: n(h.iommu_array_phys), domain: n(h.iommu_domain_array_phys), device: n(h.device_array_phys) };
  }
  // Every array exists if the FLB was created, even with nothing preserved in it.
  if (!first.iommu || !first.domain || !first.device) throw new KernelPanic(`${FLB_PANIC} (an array address is 0)`);
  const restore = (p: number): boolean => kin.restoreFolio(p) !== null;
  const lists = {
    domain: readList(mem, first.domain, layout.domainSize, restore),
    device: readList(mem, first.device, layout.deviceSize, restore),
    iommu: readList(mem, first.iommu, layout.hwSize, restore),
  };
  for (const [name, l] of Object.entries(lists)) {
    if (typeof l === 'string') throw new KernelPanic(`kernel BUG at drivers/iommu/liveupdate.c: ${name} ${l}`);
  }
  const dom = lists.domain as Exclude<typeof lists.domain, string>;
  const dev = lists.device as Exclude<typeof lists.device, string>;
  const hw = lists.iommu as Exclude<typeof lists.iommu, string>;
  return {
    variant, headerPhys: data,
    domains: dom.objects.map((phys) => {
      const r = iommuDomainSer.decode(mem.read(phys, iommuDomainSer.size));
      return { phys, topPhys: n(r.top_table_phys), topLevel: n(r.top_level), vasz: r.vasz };
    }),
    devices: dev.objects.map((phys) => {
      const r = iommuDeviceSer.decode(mem.read(phys, iommuDeviceSer.size));
      return { phys, devid: r.devid, segment: r.pci_domain_nr, did: n(r.attachment_id), domainPhys: n(r.domain_phys), iommuPhys: n(r.iommu_phys) };
    }),
    hw: hw.objects.map((phys) => {
      if (variant === 'iommu-liveupdate') {
        const r = iommuHwSer.decode(mem.read(phys, iommuHwSer.size));
        return { phys, token: n(r.token), type: n(r.type), rootTable: 0, restored: false };
      }
      const r = iommuHwSerV1.decode(mem.read(phys, iommuHwSerV1.size));
      return { phys, token: n(r.token), type: n(r.type), rootTable: n(r.root_table), restored: r.restored !== 0 };
    }),
    pages: [data, ...dom.pages, ...dev.pages, ...hw.pages],
  };
}

/** iommu_get_preserved_data(token, IOMMU_INTEL) */
export function preservedHw(inc: FlbIn, token: number): HwRecordIn | undefined {
  return inc.hw.find((h) => h.token === token && h.type === IOMMU_INTEL);
}
