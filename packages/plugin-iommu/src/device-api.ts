/**
 * The device side of IOMMU live update, for a VFIO cdev handler (drivers/vfio/vfio_main.c,
 * drivers/vfio/iommufd.c, drivers/vfio/pci/vfio_pci_liveupdate.c of the VFIO series, and
 * iommu_preserve_device of the IOMMU series). plugin-pci's vfio-pci cdev calls these; nothing here
 * knows PCI config space or BARs.
 *
 * - `iommuProbeDevice(kernel, info)`: iommu_probe_device when the bus driver finds the device. In a
 *   kernel booted from a handover, a device with a preserved record is re-attached to its restored
 *   domain with its preserved DID and its DMA ownership stays claimed until userspace retrieves it.
 * - `iommufdBindDevice(kernel, iommufdFile, dev, owner)`: VFIO_DEVICE_BIND_IOMMUFD → the devid.
 * - `iommufdAttachDevice(kernel, iommufdFile, devid, ptId)`: VFIO_DEVICE_ATTACH_IOMMUFD_PT.
 * - `iommufdOutgoingToken(session, iommufdFile)`: liveupdate_get_token_outgoing for the iommufd.
 * - `iommuPreserveDevice(...)`: the IOMMU part of the cdev preserve, in the series' order.
 */
import { ErrnoError, type KFile, type Kernel, type LuoSessionRef } from '@liveupdate/sdk';
import { RESTORED_OWNER, type IommuDevice, type IommuDeviceInfo } from './core.js';
import { ictxOf, type BoundDevice } from './iommufd/ctx.js';
import { coreOf } from './state.js';

export type { IommuDevice, IommuDeviceInfo };

export function iommuProbeDevice(kernel: Kernel, info: IommuDeviceInfo): IommuDevice {
  return coreOf(kernel, 'iommu_probe_device').probeDevice(info);
}

/** The device by segment and requester ID, if probed. */
export function iommuDeviceOf(kernel: Kernel, segment: number, rid: number): IommuDevice | undefined {
  return coreOf(kernel).devices.get(`${segment}:${rid}`);
}

/**
 * VFIO_DEVICE_BIND_IOMMUFD. A device restored from a handover stays claimed for live update: binding
 * it to an iommufd that was not retrieved from the same handover is EPERM (as posted); an iommufd
 * retrieved in the newer format takes it over.
 */
export function iommufdBindDevice(_kernel: Kernel, iommufdFile: KFile, dev: IommuDevice, owner: unknown): number {
  const ictx = ictxOf(iommufdFile, 'vfio_device_bind_iommufd');
  if (dev.owner === RESTORED_OWNER) {
    const d = dev.domain;
    const ours = ictx.retrieved && d !== null && ictx.markedHwpts().some((h) => h.domain === d);
    if (!ours) throw new ErrnoError('EPERM', 'vfio_device_bind_iommufd', `${dev.info.name} is restored for live update`);
    dev.owner = owner;
    const bd = ictx.bind(dev, owner);
    const hwpt = ictx.markedHwpts().find((h) => h.domain === d);
    if (hwpt) { bd.hwpt = hwpt; hwpt.devices.add(bd); }
    return bd.id;
  }
  return ictx.bind(dev, owner).id;
}

function boundOf(iommufdFile: KFile, devid: number, syscall: string): BoundDevice {
  return ictxOf(iommufdFile, syscall).get(devid, 'device', syscall);
}

/** VFIO_DEVICE_ATTACH_IOMMUFD_PT to a HWPT; a preserved device → EBUSY. */
export function iommufdAttachDevice(_kernel: Kernel, iommufdFile: KFile, devid: number, ptId: number): void {
  const ictx = ictxOf(iommufdFile, 'vfio_device_attach_iommufd_pt');
  ictx.attach(boundOf(iommufdFile, devid, 'vfio_device_attach_iommufd_pt'), ictx.get(ptId, 'hwpt', 'vfio_device_attach_iommufd_pt'));
}

export function iommufdDetachDevice(_kernel: Kernel, iommufdFile: KFile, devid: number): void {
  ictxOf(iommufdFile, 'vfio_device_detach_iommufd_pt').detach(boundOf(iommufdFile, devid, 'vfio_device_detach_iommufd_pt'));
}

/** Closing the VFIO cdev: unbind (iommufd_device_unbind). */
export function iommufdUnbindDevice(kernel: Kernel, iommufdFile: KFile, devid: number): void {
  const ictx = ictxOf(iommufdFile, 'vfio_device_unbind');
  const bd = ictx.objects.get(devid);
  if (bd && bd.kind === 'device') {
    if (bd.dev.preservedRecord) coreOf(kernel).unpreserveDevice(bd.dev);
    ictx.unbind(bd);
  }
}

/** liveupdate_get_token_outgoing(session, iommufd): ENOENT if the iommufd is not preserved in this session. */
export function iommufdOutgoingToken(session: LuoSessionRef, iommufdFile: KFile): bigint {
  const t = session.tokenOf(iommufdFile);
  if (t === undefined) throw new ErrnoError('ENOENT', 'liveupdate_get_token_outgoing', `iommufd not preserved in session ${session.name}`);
  return t;
}

export interface PreservedDeviceTokens {
  /** The iommufd's token in the session (what the VFIO record stores). */
  readonly iommufdToken: bigint;
  /** The marked HWPT's token. */
  readonly hwptToken: bigint;
  /** The device record's physical address in the IOMMU FLB. */
  readonly record: number;
}

/**
 * The IOMMU part of the VFIO cdev preserve (iommufd_device_preserve): the iommufd's outgoing
 * token (ENOENT when iommufd is not preserved in the session), the device attached (ENOENT), to
 * a marked HWPT (EINVAL), then iommu_preserve_device (EOPNOTSUPP / EINVAL / EBUSY).
 */
export function iommuPreserveDevice(kernel: Kernel, session: LuoSessionRef, iommufdFile: KFile, devid: number): PreservedDeviceTokens {
  const iommufdToken = iommufdOutgoingToken(session, iommufdFile);
  const bd = boundOf(iommufdFile, devid, 'iommufd_device_preserve');
  if (!bd.hwpt) throw new ErrnoError('ENOENT', 'iommufd_device_preserve', `${bd.dev.info.name} is not attached`);
  const h = bd.hwpt;
  if (h.luToken === null || !h.preserved || !h.domain) throw new ErrnoError('EINVAL', 'iommufd_device_preserve', `HWPT ${h.id} is not marked for preservation`);
  const record = coreOf(kernel).preserveDevice(h.domain, bd.dev);
  return { iommufdToken, hwptToken: h.luToken, record };
}

/** iommu_unpreserve_device (the cdev's unpreserve). */
export function iommuUnpreserveDevice(kernel: Kernel, iommufdFile: KFile, devid: number): void {
  coreOf(kernel).unpreserveDevice(boundOf(iommufdFile, devid, 'iommufd_device_unpreserve').dev);
}

/** The model's lookup for userspace: the ID of the HWPT a retrieved iommufd holds under `token`. */
export function iommufdHwptByToken(iommufdFile: KFile, token: bigint): number {
  const h = ictxOf(iommufdFile, 'iommufd').hwptByToken(token);
  if (!h) throw new ErrnoError('ENOENT', 'iommufd', `no HWPT with token ${token}`);
  return h.id;
}
