/**
 * The IOMMU File-Lifecycle-Bound data (IOMMU persistence series, Samiullah Khawaja:
 * include/linux/kho/abi/iommu.h, drivers/iommu/liveupdate.c). One family, two stored layouts
 * that exist in the postings:
 *
 * - version 2.0.0 ↔ "iommu-liveupdate": `iommu_flb_ser` starts with `u64 version` (= 1,
 *   IOMMU_LUO_FLB_VERSION) and the records are the generic ones (hw 24 B, device 40 B,
 *   domain 40 B). This is what the newest drivers/iommu/liveupdate.c writes; THIS BUILD WRITES
 *   IT BY DEFAULT.
 * - version 1.0.0 ↔ "iommu-liveupdate-v1": no version field; the records carry the VT-d unions
 *   (hw 112 B with the root table and a bitmap of preserved context tables, device 56 B with the
 *   PASID table). The VT-d driver's liveupdate code (drivers/iommu/intel/liveupdate.c) uses it.
 *
 * Each of the three lists is a chain of pages: { u64 next_array_phys; u64 nr_objects } then
 * objects, every object starting with { u32 ref_count; u32 flags }. All three first pages are
 * allocated when the FLB is created. Deleted objects keep their slot (never reused).
 * Any change to a layout here needs a new version.
 */
import { PAGE_SIZE, bytes, defineStruct, u8, u32, u64 } from '@liveupdate/sdk';

export const IOMMU_FLB_FAMILY = 'iommu-liveupdate';
/** The versioned header's stored version (IOMMU_LUO_FLB_VERSION). */
export const IOMMU_LUO_FLB_VERSION = 1;

export type IommuFlbVariant = 'iommu-liveupdate' | 'iommu-liveupdate-v1';
/** Family version ↔ compatible string. */
export const IOMMU_FLB_VERSIONS: Readonly<Record<IommuFlbVariant, string>> = {
  'iommu-liveupdate-v1': '1.0.0',
  'iommu-liveupdate': '2.0.0',
};
export const IOMMU_FLB_DEFAULT: IommuFlbVariant = 'iommu-liveupdate';

/** enum iommu_type_ser */
export const IOMMU_INVALID = 0;
export const IOMMU_INTEL = 1;

export const IOMMU_SER_FLAG_DELETED = 1 << 0;
export const IOMMU_SER_FLAG_INCOMING = 1 << 1;

/** struct iommu_flb_ser, versioned ("iommu-liveupdate"): 32 bytes. */
export const iommuFlbSer = defineStruct('iommu_flb_ser', {
  version: u64, iommu_array_phys: u64, iommu_domain_array_phys: u64, device_array_phys: u64,
}, { size: 32 });
/** struct iommu_flb_ser of "iommu-liveupdate-v1": 24 bytes, no version. */
export const iommuFlbSerV1 = defineStruct('iommu_flb_ser(v1)', {
  iommu_array_phys: u64, iommu_domain_array_phys: u64, device_array_phys: u64,
}, { size: 24 });

/** struct iommu_array_hdr_ser: 16 bytes at the start of every array page. */
export const iommuArrayHdrSer = defineStruct('iommu_array_hdr_ser', { next_array_phys: u64, nr_objects: u64 }, { size: 16 });

/** struct iommu_domain_ser: hdr, top_table_phys, top_level, vasz, sign_extend:1, restored_domain (a pointer, 0 on the wire). */
export const iommuDomainSer = defineStruct('iommu_domain_ser', {
  ref_count: u32, flags: u32, top_table_phys: u64, top_level: u64, vasz: u32, sign_extend: u32, restored_domain: u64,
}, { size: 40 });

/** struct iommu_device_ser (generic): hdr, devid, pci_domain_nr, iommu_dev_map_ser { attachment_id, domain_phys, iommu_phys }. */
export const iommuDeviceSer = defineStruct('iommu_device_ser', {
  ref_count: u32, flags: u32, devid: u32, pci_domain_nr: u32, attachment_id: u64, domain_phys: u64, iommu_phys: u64,
}, { size: 40 });
/** The VT-d variant: + iommu_device_intel_ser { pasid_table, max_pasid }. */
export const iommuDeviceSerV1 = defineStruct('iommu_device_ser(v1)', {
  ref_count: u32, flags: u32, devid: u32, pci_domain_nr: u32, attachment_id: u64, domain_phys: u64, iommu_phys: u64,
  pasid_table: u64, max_pasid: u64,
}, { size: 56 });

/** struct iommu_hw_ser (generic): hdr, token, type. */
export const iommuHwSer = defineStruct('iommu_hw_ser', { ref_count: u32, flags: u32, token: u64, type: u64 }, { size: 24 });
/** The VT-d variant: + iommu_intel_ser { u8 restored; u8 padding[7]; phys_addr; root_table; u64 context_tables_bitmap[8] }. */
export const iommuHwSerV1 = defineStruct('iommu_hw_ser(v1)', {
  ref_count: u32, flags: u32, token: u64, type: u64,
  restored: u8, padding: bytes(7), phys_addr: u64, root_table: u64, context_tables_bitmap: bytes(64),
}, { size: 112 });

/** The layouts of one variant. */
export interface FlbLayout {
  readonly variant: IommuFlbVariant;
  readonly headerSize: number;
  readonly hwSize: number;
  readonly deviceSize: number;
  readonly domainSize: number;
}
export const FLB_LAYOUTS: Readonly<Record<IommuFlbVariant, FlbLayout>> = {
  'iommu-liveupdate': { variant: 'iommu-liveupdate', headerSize: iommuFlbSer.size, hwSize: iommuHwSer.size, deviceSize: iommuDeviceSer.size, domainSize: iommuDomainSer.size },
  'iommu-liveupdate-v1': { variant: 'iommu-liveupdate-v1', headerSize: iommuFlbSerV1.size, hwSize: iommuHwSerV1.size, deviceSize: iommuDeviceSerV1.size, domainSize: iommuDomainSer.size },
};

/** iommu_max_objs_per_page: (PAGE_SIZE - sizeof(hdr)) / sizeof(object). */
export function maxObjsPerPage(objectSize: number): number {
  return Math.floor((PAGE_SIZE - iommuArrayHdrSer.size) / objectSize);
}

/** CONTEXT_TABLE_PRESERVED_BIT(bus, devfn): 2 tables per bus in scalable mode, the upper at the odd bit. */
export function contextTableBit(bus: number, devfn: number): number {
  return (bus << 1) + (devfn >> 7);
}
