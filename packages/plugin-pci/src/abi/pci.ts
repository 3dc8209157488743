/**
 * PCI core preservation ABI (include/linux/kho/abi/pci.h in David Matlack's "PCI: Live Update
 * support" series). The layout and its string moved inside the postings:
 *   v6 (2026-05-22) patch 01 "pci-v1", patch 02 "pci-v2" (padding → u16 refcount), patch 06
 *       "pci-v3" (bridges auto-preserved; refcount = preserved devices at or below):
 *       struct pci_ser { u32 max_nr_devices; u32 nr_devices; struct pci_dev_ser devices[] }
 *   v7 (2026-07-10): struct pci_ser { u32 nr_devices; u64 devices } __packed, `devices` the
 *       head of a kho_block set of pci_dev_ser, restarting at "pci-v1" and ending at "pci-v2",
 *       the same string v6 patch 02 used for the flat array.
 * Here they are majors of one `pci` format family: 2.x the v6 patch-02 array, 3.x the final v6
 * array, 4.x v7's kho_block layout; the upstream strings are aliases of x.0.0. Any change to
 * a layout below needs a new major.
 */
import { defineStruct, u16, u32, u64 } from '@liveupdate/sdk';

export const PCI_FAMILY = 'pci';
/** Upstream strings per major. 2 and 4 share "pci-v2": exact-string matching cannot tell them apart. */
export const PCI_V6_PATCH02_COMPATIBLE = 'pci-v2';
export const PCI_V6_COMPATIBLE = 'pci-v3';
export const PCI_V7_COMPATIBLE = 'pci-v2';
export const PCI_V6_PATCH02_VERSION = '2.0.0';
export const PCI_V6_VERSION = '3.0.0';
export const PCI_V7_VERSION = '4.0.0';

/** struct pci_dev_ser: 8 bytes in every version. */
export const pciDevSer = defineStruct('pci_dev_ser', { domain: u32, bdf: u16, refcount: u16 }, { size: 8 });

/** v6 struct pci_ser header; devices[] follow at offset 8. */
export const pciSerV6 = defineStruct('pci_ser(v6)', { max_nr_devices: u32, nr_devices: u32 }, { size: 8 });

/** v7 struct pci_ser, __packed: 12 bytes. */
export const pciSerV7 = defineStruct('pci_ser(v7)', { nr_devices: u32, devices: u64 }, { size: 12 });

/** The xarray key the incoming kernel looks devices up by. */
export const pciDevKey = (domain: number, bdf: number): number => domain * 0x10000 + bdf;
