/**
 * VFIO PCI live update ABI (include/linux/kho/abi/vfio_pci.h in Vipin Sharma's and David
 * Matlack's "vfio/pci: Base live update support", v5 2026-07-14) and the VFIO uAPI numbers
 * (include/uapi/linux/vfio.h). 1.x is the posted "vfio-pci-v1" record; 2.x is this project's
 * step beyond the posted phase (the VFIO roadmap's "no reset" and "continuous DMA, noiommu"),
 * a new major because a 1.x reader would not know the device is still doing DMA.
 */
import { defineStruct, s32, u16, u32 } from '@liveupdate/sdk';

export const VFIO_FAMILY = 'vfio-pci';
export const VFIO_PCI_LUO_FH_COMPATIBLE = 'vfio-pci-v1';
export const VFIO_ALIASES = { 1: VFIO_PCI_LUO_FH_COMPATIBLE } as const;
export const VFIO_V1_VERSION = '1.0.0';
export const VFIO_V2_VERSION = '2.0.0';
export const VFIO_V2_1_VERSION = '2.1.0';

/** struct vfio_pci_core_device_ser { u32 domain; u16 bdf } __packed: 6 bytes. */
export const vfioPciCoreDeviceSer = defineStruct('vfio_pci_core_device_ser', { domain: u32, bdf: u16 }, { size: 6 });

/** 2.x: the v1 record, then flags. */
export const vfioPciCoreDeviceSerV2 = defineStruct('vfio_pci_core_device_ser(v2)', { domain: u32, bdf: u16, flags: u16 }, { size: 8 });
/** Bus mastering was left on at freeze: the device may be doing DMA; do not reset it. */
export const VFIO_PCI_SER_DMA_RUNNING = 0x1;
export const VFIO_PCI_SER_FLAGS_KNOWN = VFIO_PCI_SER_DMA_RUNNING;

/**
 * 2.1 appends 8 bytes (a 2.0 reader reads the first 8): u32 id_crc32 = CRC-32 of bytes 0..7,
 * the file's token (u64) and its session name (64 B NUL-padded, as luo_session_ser holds it;
 * SDK crc32Identity), then u32 id_pad (0). LUO's blocks carry no check: without it a swapped
 * file entry hands one device's record to another token and the wrong function is retrieved.
 */
export const vfioPciCoreDeviceSerV2_1 = defineStruct('vfio_pci_core_device_ser(v2.1)', {
  domain: u32, bdf: u16, flags: u16, id_crc32: u32, id_pad: u32,
}, { size: 16 });
export const VFIO_V2_1_ID_OFFSET = 8;

/** _IO(VFIO_TYPE, VFIO_BASE + n) with VFIO_TYPE ';' (0x3b), VFIO_BASE 100. */
const vfioIo = (n: number): number => (0x3b << 8) | (100 + n);
export const VFIO_GET_API_VERSION = vfioIo(0);
export const VFIO_GROUP_GET_DEVICE_FD = vfioIo(6);
export const VFIO_DEVICE_GET_INFO = vfioIo(7);
export const VFIO_DEVICE_SET_IRQS = vfioIo(10);
export const VFIO_DEVICE_RESET = vfioIo(11);
export const VFIO_DEVICE_BIND_IOMMUFD = vfioIo(18);
export const VFIO_DEVICE_ATTACH_IOMMUFD_PT = vfioIo(19);
export const VFIO_DEVICE_DETACH_IOMMUFD_PT = vfioIo(20);
export const VFIO_API_VERSION = 0;

/** struct vfio_device_bind_iommufd: argsz, flags, iommufd, out_devid. */
export const vfioDeviceBindIommufd = defineStruct('vfio_device_bind_iommufd', { argsz: u32, flags: u32, iommufd: s32, out_devid: u32 }, { size: 16 });

/** struct vfio_device_attach_iommufd_pt { argsz; flags; pt_id; pasid } (16 B). */
export const vfioDeviceAttachIommufdPt = defineStruct('vfio_device_attach_iommufd_pt', { argsz: u32, flags: u32, pt_id: u32, pasid: u32 }, { size: 16 });
/** struct vfio_device_detach_iommufd_pt { argsz; flags; pasid } (12 B). */
export const vfioDeviceDetachIommufdPt = defineStruct('vfio_device_detach_iommufd_pt', { argsz: u32, flags: u32, pasid: u32 }, { size: 12 });

/** struct vfio_irq_set header (data[] follows). */
export const vfioIrqSet = defineStruct('vfio_irq_set', { argsz: u32, flags: u32, index: u32, start: u32, count: u32 }, { size: 20 });
export const VFIO_IRQ_SET_DATA_NONE = 1 << 0;
export const VFIO_IRQ_SET_DATA_EVENTFD = 1 << 2;
export const VFIO_IRQ_SET_ACTION_TRIGGER = 1 << 5;
export const VFIO_PCI_INTX_IRQ_INDEX = 0;
export const VFIO_PCI_MSI_IRQ_INDEX = 1;
export const VFIO_PCI_MSIX_IRQ_INDEX = 2;

/** Region offsets in the device fd: index << 40 (VFIO_PCI_OFFSET_SHIFT). */
export const VFIO_PCI_OFFSET_SHIFT = 40;
export const VFIO_PCI_CONFIG_REGION_INDEX = 7;
export const vfioRegionOffset = (index: number): number => index * 2 ** VFIO_PCI_OFFSET_SHIFT;
