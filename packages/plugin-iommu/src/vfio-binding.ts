/**
 * plugin-iommu as vfio-pci's iommufd (drivers/vfio/iommufd.c, drivers/vfio/pci/vfio_pci_liveupdate.c
 * of the VFIO series): registered per kernel through plugin-pci's public registerIommufdBinding.
 * The dependency points one way, plugin-iommu → plugin-pci's public API; plugin-pci knows only the
 * IommufdBinding interface and works alone (noiommu) when no IOMMU plugin is loaded.
 */
import { registerIommufdBinding, type IommufdBinding, type VfioIommuDevice } from '@liveupdate/plugin-pci';
import { ErrnoError, type Kernel } from '@liveupdate/sdk';
import {
  iommuDeviceOf, iommuPreserveDevice, iommuProbeDevice, iommuUnpreserveDevice, iommufdAttachDevice, iommufdBindDevice,
  iommufdDetachDevice, iommufdUnbindDevice,
} from './device-api.js';
import { isIommufd } from './iommufd/ctx.js';
import type { IommuDevice } from './core.js';

const infoOf = (d: VfioIommuDevice): { segment: number; rid: number; isPci: true; name: string } => ({ segment: d.domain, rid: d.requesterId, isPci: true, name: d.name });

/** The probed IOMMU device of a PCI function; a function no remapping unit covers → ENODEV. */
function deviceOf(kernel: Kernel, d: VfioIommuDevice): IommuDevice {
  return iommuDeviceOf(kernel, d.domain, d.requesterId) ?? iommuProbeDevice(kernel, infoOf(d));
}

export function vfioBinding(kernel: Kernel): IommufdBinding {
  return {
    isIommufd,
    probe(d) {
      try {
        iommuProbeDevice(kernel, infoOf(d));
      } catch (e) {
        // A function outside every DMAR scope is not translated: nothing to probe.
        if (!(e instanceof ErrnoError && e.code === 'ENODEV')) throw e;
      }
    },
    bind: (file, d, owner) => iommufdBindDevice(kernel, file, deviceOf(kernel, d), owner),
    attach: (file, devid, ptId) => iommufdAttachDevice(kernel, file, devid, ptId),
    detach: (file, devid) => iommufdDetachDevice(kernel, file, devid),
    unbind: (file, devid) => iommufdUnbindDevice(kernel, file, devid),
    preserve: (session, file, devid) => iommuPreserveDevice(kernel, session, file, devid).iommufdToken,
    unpreserve: (file, devid) => iommuUnpreserveDevice(kernel, file, devid),
  };
}

/** Make this kernel's vfio-pci cdevs bind, attach and preserve through plugin-iommu. */
export function registerVfioBinding(kernel: Kernel): void {
  registerIommufdBinding(kernel, vfioBinding(kernel));
}
