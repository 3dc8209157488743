/**
 * The iommufd file handler's handover (include/linux/kho/abi/iommufd.h,
 * drivers/iommu/iommufd/liveupdate.c). Any layout change needs a new version.
 *
 * - 1.0.0 ↔ "iommufd-v1" (as posted): `iommufd_ser { u64 nr_hwpts; iommufd_hwpt_ser[] }`, 24 B
 *   per HWPT { u64 domain_data (phys of its iommu_domain_ser); u64 token; u8 reclaimed; u8 pad[7] }.
 *   Not retrievable: RETRIEVE_FD answers EOPNOTSUPP and can_finish is false.
 * - 2.0.0 ↔ "iommufd@2.0.0" (this project; the series' announced next step): the v1 header and
 *   HWPTs, then the IOAS areas so the incoming kernel can rebuild each HWPT on its restored
 *   domain: `u64 nr_areas` after the HWPT array, then 48 B per area
 *   { u64 iova; u64 length; u64 start; u64 file_token; u32 hwpt_index; u32 flags; u64 reserved }.
 * - 2.1.0 ↔ "iommufd@2.1.0" (a minor version: 2.0 readers stop after the last area and never see
 *   it): the 2.0 bytes, then `iommufd_crc_ser { u32 crc32; u32 pad (0) }`, crc32 being the CRC-32
 *   (IEEE 802.3) of every byte before it: the header, every HWPT record, nr_areas and every
 *   area record. A reader of 2.1 refuses a mismatch, or a non-zero pad, with EINVAL.
 */
import { bytes, defineStruct, u8, u32, u64 } from '@liveupdate/sdk';
import { semver } from '@liveupdate/sdk';

export const IOMMUFD_FAMILY = 'iommufd';
export const IOMMUFD_ALIASES = { 1: 'iommufd-v1' } as const;

export const iommufdSer = defineStruct('iommufd_ser', { nr_hwpts: u64 }, { size: 8 });
export const iommufdHwptSer = defineStruct('iommufd_hwpt_ser', { domain_data: u64, token: u64, reclaimed: u8, pad: bytes(7) }, { size: 24 });

export const iommufdAreasSer = defineStruct('iommufd_areas_ser(v2)', { nr_areas: u64 }, { size: 8 });
export const iommufdAreaSer = defineStruct('iommufd_area_ser(v2)', {
  iova: u64, length: u64, start: u64, file_token: u64, hwpt_index: u32, flags: u32, reserved: u64,
}, { size: 48 });

/** Bytes of a v1 handover with n HWPTs (struct_size(iommufd_ser, hwpt_array, n)). */
export const iommufdV1Size = (nrHwpts: number): number => iommufdSer.size + nrHwpts * iommufdHwptSer.size;
/** Bytes of a v2 handover. */
export const iommufdV2Size = (nrHwpts: number, nrAreas: number): number =>
  iommufdV1Size(nrHwpts) + iommufdAreasSer.size + nrAreas * iommufdAreaSer.size;

export const iommufdCrcSer = defineStruct('iommufd_crc_ser(v2.1)', { crc32: u32, pad: u32 }, { size: 8 });

/** Whether a 2.x version carries the trailing whole-metadata CRC-32 (2.1.0 and later minors). */
export const iommufdHasCrc = (version: string): boolean => semver.major(version) === 2 ? semver.minor(version) >= 1 : semver.major(version) > 2;
/** Bytes of a 2.1 handover: the 2.0 bytes, then the CRC record. */
export const iommufdV21Size = (nrHwpts: number, nrAreas: number): number => iommufdV2Size(nrHwpts, nrAreas) + iommufdCrcSer.size;
