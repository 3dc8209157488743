/**
 * iommufd and VFIO cdev uAPI (include/uapi/linux/iommufd.h, include/uapi/linux/vfio.h): request
 * numbers and argument layouts, byte for byte. iommufd requests are _IO(IOMMUFD_TYPE, nr) with
 * the size in the struct's first word; VFIO's are _IO(VFIO_TYPE, VFIO_BASE + n) with argsz.
 */
import { defineStruct, s32, u32, u64 } from '@liveupdate/sdk';

/** _IO(type, nr): no direction or size bits. */
const io = (type: number, nr: number): number => (type << 8) | nr;

export const IOMMUFD_TYPE = 0x3b; // ';'
export const IOMMU_DESTROY = io(IOMMUFD_TYPE, 0x80);
export const IOMMU_IOAS_ALLOC = io(IOMMUFD_TYPE, 0x81);
export const IOMMU_IOAS_MAP = io(IOMMUFD_TYPE, 0x85);
export const IOMMU_IOAS_UNMAP = io(IOMMUFD_TYPE, 0x86);
export const IOMMU_HWPT_ALLOC = io(IOMMUFD_TYPE, 0x89);
export const IOMMU_IOAS_MAP_FILE = io(IOMMUFD_TYPE, 0x8f);
/** IOMMU persistence series: IOMMU_HWPT_LU_MARK_PRESERVE (newest spelling IOMMU_HWPT_LIVEUPDATE_MARK_PRESERVE). */
export const IOMMU_HWPT_LU_MARK_PRESERVE = io(IOMMUFD_TYPE, 0x95);

export const IOMMU_IOAS_MAP_FIXED_IOVA = 1 << 0;
export const IOMMU_IOAS_MAP_WRITEABLE = 1 << 1;
export const IOMMU_IOAS_MAP_READABLE = 1 << 2;

export const iommuDestroy = defineStruct('iommu_destroy', { size: u32, id: u32 }, { size: 8 });
export const iommuIoasAlloc = defineStruct('iommu_ioas_alloc', { size: u32, flags: u32, out_ioas_id: u32 }, { size: 12 });
export const iommuIoasMap = defineStruct('iommu_ioas_map', {
  size: u32, flags: u32, ioas_id: u32, __reserved: u32, user_va: u64, length: u64, iova: u64,
}, { size: 40 });
export const iommuIoasMapFile = defineStruct('iommu_ioas_map_file', {
  size: u32, flags: u32, ioas_id: u32, fd: s32, start: u64, length: u64, iova: u64,
}, { size: 40 });
export const iommuIoasUnmap = defineStruct('iommu_ioas_unmap', { size: u32, ioas_id: u32, iova: u64, length: u64 }, { size: 24 });
export const iommuHwptAlloc = defineStruct('iommu_hwpt_alloc', {
  size: u32, flags: u32, dev_id: u32, pt_id: u32, out_hwpt_id: u32, __reserved: u32,
  data_type: u32, data_len: u32, data_uptr: u64, fault_id: u32, __reserved2: u32,
}, { size: 48 });
export const iommuHwptLuMarkPreserve = defineStruct('iommu_hwpt_lu_mark_preserve', { size: u32, hwpt_id: u32, hwpt_token: u64 }, { size: 16 });

export const VFIO_TYPE = 0x3b; // ';'
export const VFIO_BASE = 100;
export const VFIO_DEVICE_BIND_IOMMUFD = io(VFIO_TYPE, VFIO_BASE + 18);
export const VFIO_DEVICE_ATTACH_IOMMUFD_PT = io(VFIO_TYPE, VFIO_BASE + 19);
export const VFIO_DEVICE_DETACH_IOMMUFD_PT = io(VFIO_TYPE, VFIO_BASE + 20);

/** struct vfio_device_bind_iommufd { argsz; flags; s32 iommufd; u32 out_devid } (16 B, without the token_uuid_ptr extension). */
export const vfioDeviceBindIommufd = defineStruct('vfio_device_bind_iommufd', { argsz: u32, flags: u32, iommufd: s32, out_devid: u32 }, { size: 16 });
/** struct vfio_device_attach_iommufd_pt { argsz; flags; pt_id; pasid } (16 B). */
export const vfioDeviceAttachIommufdPt = defineStruct('vfio_device_attach_iommufd_pt', { argsz: u32, flags: u32, pt_id: u32, pasid: u32 }, { size: 16 });
export const vfioDeviceDetachIommufdPt = defineStruct('vfio_device_detach_iommufd_pt', { argsz: u32, flags: u32, pasid: u32 }, { size: 12 });
