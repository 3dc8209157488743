/**
 * What a VMM and an administrator call: the VFIO ioctls with their real request numbers and
 * argument structs, and the sysfs-like operations (bind a device to vfio-pci or another
 * driver, enable VFs, remove a device). Plugin syscalls take the process (or kernel) first.
 */
import { chargeOp, ErrnoError, type Kernel, type Process } from '@liveupdate/sdk';
import { parseBdf, pciRegs as R } from '@liveupdate/hw';
import {
  VFIO_DEVICE_ATTACH_IOMMUFD_PT, VFIO_DEVICE_BIND_IOMMUFD, VFIO_DEVICE_DETACH_IOMMUFD_PT, VFIO_DEVICE_RESET, VFIO_DEVICE_SET_IRQS, VFIO_GROUP_GET_DEVICE_FD, VFIO_IRQ_SET_ACTION_TRIGGER,
  VFIO_IRQ_SET_DATA_EVENTFD, VFIO_IRQ_SET_DATA_NONE, VFIO_PCI_CONFIG_REGION_INDEX, vfioDeviceAttachIommufdPt, vfioDeviceBindIommufd, vfioDeviceDetachIommufdPt, vfioIrqSet, vfioRegionOffset,
} from './abi/vfio.js';
import { pciCoreOf, type PciDev } from './pci-core.js';
import { setKeepRunning } from './vfio-handler.js';
import { iommufdBindingOf, iommuViewOf, vfioFileOf, vfioPciBind, type VfioDevice } from './vfio.js';

/** A PCI device of this kernel by BDF string ("0000:03:00.0") or hardware name ("dsa0"). */
export function pciDevice(kernel: Kernel, id: string): PciDev {
  const core = pciCoreOf(kernel);
  const b = parseBdf(id);
  const dev = b ? core.byBdf(b.domain, b.bdf) : core.devices.find((d) => d.hw.name === id && !d.removed);
  if (!dev || dev.removed) throw new ErrnoError('ENODEV', 'pci', id);
  return dev;
}

export function pciDevices(kernel: Kernel): readonly PciDev[] { return pciCoreOf(kernel).devices.filter((d) => !d.removed); }

/** echo vfio-pci > driver_override; echo $bdf > bind. Returns the device's cdev path. */
export function vfioBindDevice(kernel: Kernel, id: string): VfioDevice {
  return vfioPciBind(kernel, pciDevice(kernel, id));
}

/**
 * Another driver binds the device (upstream does not stop it from binding a preserved one).
 * Its probe enables the device and resets it, as idxd does: whatever DMA was in flight is lost
 * and vfio-pci can no longer find the device for RETRIEVE_FD.
 */
export function pciBindDriver(kernel: Kernel, id: string, driver: string): void {
  const dev = pciDevice(kernel, id);
  if (dev.driver !== null) throw new ErrnoError('EBUSY', 'bind', `${dev.name} is bound to ${dev.driver}`);
  dev.driver = driver;
  const hw = dev.hw;
  if (hw.hasFlr) {
    hw.config.write(hw.config.capExp + R.PCI_EXP_DEVCTL, 2, R.PCI_EXP_DEVCTL_BCR_FLR);
    chargeOp(kernel.machine, 'pciFlr');
  }
  hw.config.write(R.PCI_COMMAND, 2, R.PCI_COMMAND_MEMORY | R.PCI_COMMAND_MASTER);
  if (dev.incoming > 0) kernel.dmesg.log('warn', 'pci', `${dev.name}: ${driver} bound a device preserved by a live update; it was reset`);
}

/** echo $n > sriov_numvfs: VF Enable with NumVFs, and the VFs' pci_devs. */
export function pciEnableSriov(kernel: Kernel, id: string, numVfs: number): readonly PciDev[] {
  const pf = pciDevice(kernel, id);
  const s = pf.hw.config.extSriov;
  if (!s) throw new ErrnoError('EINVAL', 'sriov_numvfs', `${pf.name} has no SR-IOV capability`);
  pf.hw.config.write(s + R.PCI_SRIOV_NUM_VF, 2, numVfs);
  pf.hw.config.write(s + R.PCI_SRIOV_CTRL, 2, numVfs > 0 ? R.PCI_SRIOV_CTRL_VFE | R.PCI_SRIOV_CTRL_MSE : 0);
  const vfs = pciCoreOf(kernel).addVirtfns(pf);
  // pci_device_add of each VF probes it with the IOMMU like any function.
  const iommu = iommufdBindingOf(kernel);
  if (iommu) for (const vf of vfs) iommu.probe(iommuViewOf(vf));
  return vfs;
}

/** echo 1 > remove. */
export function pciRemove(kernel: Kernel, id: string): void {
  pciCoreOf(kernel).remove(pciDevice(kernel, id));
}

// ---- VFIO uAPI ----------------------------------------------------------------------------

/** VFIO_DEVICE_BIND_IOMMUFD; iommufd -1 is the noiommu bind. Returns out_devid. */
export function vfioBindIommufd(p: Process, fd: number, iommufd = -1): number {
  const arg = vfioDeviceBindIommufd.encode({ argsz: vfioDeviceBindIommufd.size, flags: 0, iommufd, out_devid: 0 });
  p.ioctl(fd, VFIO_DEVICE_BIND_IOMMUFD, arg);
  return vfioDeviceBindIommufd.read(arg, 'out_devid');
}

/** VFIO_DEVICE_ATTACH_IOMMUFD_PT to an IOAS or HWPT id. */
export function vfioAttachIommufdPt(p: Process, fd: number, ptId: number): void {
  p.ioctl(fd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, vfioDeviceAttachIommufdPt.encode({ argsz: vfioDeviceAttachIommufdPt.size, flags: 0, pt_id: ptId, pasid: 0 }));
}

/** VFIO_DEVICE_DETACH_IOMMUFD_PT. */
export function vfioDetachIommufdPt(p: Process, fd: number): void {
  p.ioctl(fd, VFIO_DEVICE_DETACH_IOMMUFD_PT, vfioDeviceDetachIommufdPt.encode({ argsz: vfioDeviceDetachIommufdPt.size, flags: 0, pasid: 0 }));
}

/** VFIO_DEVICE_SET_IRQS for one index: count > 0 enables (eventfds), 0 disables. */
export function vfioSetIrqs(p: Process, fd: number, index: number, count: number): void {
  const flags = VFIO_IRQ_SET_ACTION_TRIGGER | (count > 0 ? VFIO_IRQ_SET_DATA_EVENTFD : VFIO_IRQ_SET_DATA_NONE);
  const arg = new Uint8Array(vfioIrqSet.size + 4 * count);
  vfioIrqSet.encodeInto(arg, 0, { argsz: arg.length, flags, index, start: 0, count });
  p.ioctl(fd, VFIO_DEVICE_SET_IRQS, arg);
}

export function vfioReset(p: Process, fd: number): void {
  p.ioctl(fd, VFIO_DEVICE_RESET, new Uint8Array(0));
}

/** VFIO_GROUP_GET_DEVICE_FD with the device name (its BDF). */
export function vfioGroupGetDeviceFd(p: Process, groupFd: number, name: string): number {
  return p.ioctl(groupFd, VFIO_GROUP_GET_DEVICE_FD, new TextEncoder().encode(`${name}\0`));
}

/** pread of the config region. */
export function vfioConfigRead(p: Process, fd: number, off: number, size: 1 | 2 | 4): number {
  const b = p.pread(fd, size, vfioRegionOffset(VFIO_PCI_CONFIG_REGION_INDEX) + off);
  let v = 0;
  for (let i = size - 1; i >= 0; i--) v = v * 256 + (b[i] as number);
  return v;
}

/** pwrite of the config region (e.g. Command with Bus Master Enable). */
export function vfioConfigWrite(p: Process, fd: number, off: number, size: 1 | 2 | 4, value: number): void {
  const b = new Uint8Array(size);
  for (let i = 0; i < size; i++) b[i] = (value >>> (8 * i)) & 0xff;
  p.pwrite(fd, b, vfioRegionOffset(VFIO_PCI_CONFIG_REGION_INDEX) + off);
}

/** Ask that the device keep DMA running through the next live update (vfio-pci 2.x). */
export function vfioKeepRunning(p: Process, fd: number, on = true): void {
  setKeepRunning(vfioFileOf(p.file(fd, 'ioctl'), 'ioctl'), on);
}
