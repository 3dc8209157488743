/**
 * vfio-pci as the VMM sees it: devices bound to vfio-pci get a cdev /dev/vfio/devices/vfioN and
 * an IOMMU group /dev/vfio/<N>; the container /dev/vfio/vfio is the legacy type1 API. A cdev fd
 * is unusable (EINVAL) until VFIO_DEVICE_BIND_IOMMUFD; a frozen one (live update) answers EIO to
 * everything. The iommufd side is an interface another plugin provides (the IOMMU plugin);
 * without one, only noiommu binds (iommufd = -1 with vfio.enable_unsafe_noiommu_mode=1) work.
 */
import { chargeOp, ErrnoError, Inode, KFile, type FileOperations, type Kernel, type LuoSessionRef, type Process } from '@liveupdate/sdk';
import { pciRegs as R, type DsaDescriptor } from '@liveupdate/hw';
import {
  VFIO_API_VERSION, VFIO_DEVICE_ATTACH_IOMMUFD_PT, VFIO_DEVICE_BIND_IOMMUFD, VFIO_DEVICE_DETACH_IOMMUFD_PT, VFIO_DEVICE_GET_INFO, VFIO_DEVICE_RESET, VFIO_DEVICE_SET_IRQS, VFIO_GET_API_VERSION,
  VFIO_GROUP_GET_DEVICE_FD, VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_DATA_EVENTFD, VFIO_IRQ_SET_DATA_NONE,
  VFIO_PCI_CONFIG_REGION_INDEX, VFIO_PCI_INTX_IRQ_INDEX, VFIO_PCI_MSIX_IRQ_INDEX, VFIO_PCI_OFFSET_SHIFT,
  vfioDeviceAttachIommufdPt, vfioDeviceBindIommufd, vfioDeviceDetachIommufdPt, vfioIrqSet, vfioRegionOffset,
} from './abi/vfio.js';
import type { PciDev } from './pci-core.js';

/** The device as the IOMMU side sees it: PCI segment (domain), BDF, and its requester ID. */
export interface VfioIommuDevice {
  readonly domain: number;
  readonly bdf: number;
  readonly requesterId: number;
  /** pci_name(), e.g. "0000:03:00.0". */
  readonly name: string;
}

/**
 * What VFIO needs from an iommufd implementation (drivers/vfio/iommufd.c and the VFIO series'
 * liveupdate calls). The IOMMU plugin registers one per kernel with registerIommufdBinding;
 * plugin-pci never imports it. Every call throws ErrnoError with the kernel's errno.
 */
export interface IommufdBinding {
  /** Whether `file` is an iommufd (/dev/iommu) file. */
  isIommufd(file: KFile): boolean;
  /** iommu_probe_device when PCI enumeration adds a function (before any driver binds). */
  probe(device: VfioIommuDevice): void;
  /** VFIO_DEVICE_BIND_IOMMUFD (iommufd_device_bind): returns the devid (out_devid). */
  bind(file: KFile, device: VfioIommuDevice, owner: unknown): number;
  /** VFIO_DEVICE_ATTACH_IOMMUFD_PT. */
  attach(file: KFile, devid: number, ptId: number): void;
  /** VFIO_DEVICE_DETACH_IOMMUFD_PT. */
  detach(file: KFile, devid: number): void;
  /** Closing the cdev (iommufd_device_unbind). */
  unbind(file: KFile, devid: number): void;
  /**
   * The IOMMU part of the cdev's live update preserve, in the series' order: the iommufd's
   * outgoing token in `session` (ENOENT), the device attached (ENOENT) to a marked HWPT (EINVAL),
   * then iommu_preserve_device. Returns the iommufd's token.
   */
  preserve(session: LuoSessionRef, file: KFile, devid: number): bigint;
  /** iommu_unpreserve_device. */
  unpreserve(file: KFile, devid: number): void;
}

/** A device bound to vfio-pci in one kernel. */
export class VfioDevice {
  /** Open device files (cdev or group-obtained). */
  openCount = 0;
  constructor(readonly index: number, readonly pdev: PciDev) {}
  get cdevPath(): string { return `/dev/vfio/devices/vfio${this.index}`; }
  get groupPath(): string { return `/dev/vfio/${this.index}`; }
}

/** private_data of a VFIO device file. */
export class VfioDeviceFile {
  /** VFIO_DEVICE_BIND_IOMMUFD done (cdev) or implied by the container (group API). */
  bound: boolean;
  devid = 0;
  /** The iommufd this cdev is bound to (a reference held until release), null for noiommu. */
  iommufd: KFile | null = null;
  frozen = false;
  /** BAR mappings zapped at freeze: a later access faults. */
  zapped = false;
  /** Interrupt type enabled through VFIO_DEVICE_SET_IRQS. */
  irqs: 'none' | 'intx' | 'msix' = 'none';
  /** This project's step beyond the posted phase: keep DMA running across the update. */
  keepRunning = false;
  constructor(readonly vdev: VfioDevice, readonly viaCdev: boolean, readonly kernel: Kernel) {
    this.bound = !viaCdev;
  }
}

export class VfioGroupFile { constructor(readonly vdev: VfioDevice) {} }
export class VfioContainerFile {}

interface VfioState {
  readonly devices: VfioDevice[];
  next: number;
  iommufd: IommufdBinding | null;
  readonly noiommu: boolean;
}

const states = new WeakMap<Kernel, VfioState>();

function stateOf(kernel: Kernel): VfioState {
  let s = states.get(kernel);
  if (!s) {
    s = { devices: [], next: 0, iommufd: null, noiommu: /(^|\s)vfio\.enable_unsafe_noiommu_mode=(1|Y|y)(\s|$)/.test(kernel.cmdline) };
    states.set(kernel, s);
    const container = new Inode(new VfioContainerFile());
    kernel.registerDevice('/dev/vfio/vfio', (_p, flags) => new KFile(containerOps, container, new VfioContainerFile(), flags, kernel.id));
  }
  return s;
}

/** Let another plugin (the IOMMU plugin) provide the iommufd side of the VFIO cdev. */
export function registerIommufdBinding(kernel: Kernel, binding: IommufdBinding): void {
  stateOf(kernel).iommufd = binding;
}

/** The binding registered in `kernel`, if any. */
export function iommufdBindingOf(kernel: Kernel): IommufdBinding | null {
  return states.get(kernel)?.iommufd ?? null;
}

/** The IOMMU's view of a PCI function. */
export function iommuViewOf(pdev: PciDev): VfioIommuDevice {
  return { domain: pdev.domain, bdf: pdev.bdf, requesterId: pdev.hw.requesterId, name: pdev.name };
}

export function vfioDevices(kernel: Kernel): readonly VfioDevice[] { return stateOf(kernel).devices; }

export function isVfioDeviceFile(file: KFile): boolean { return file.privateData instanceof VfioDeviceFile; }

/** The device file's private data, or EBADF. */
export function vfioFileOf(file: KFile, syscall: string): VfioDeviceFile {
  if (!(file.privateData instanceof VfioDeviceFile)) throw new ErrnoError('EBADF', syscall, 'not a VFIO device file');
  return file.privateData;
}

/** A kernel's view of one vfio device cdev open: EBUSY while the device is incoming (only RETRIEVE_FD may have it). */
function openCdev(kernel: Kernel, vdev: VfioDevice, flags: number, viaCdev: boolean): KFile {
  if (vdev.pdev.incoming > 0) throw new ErrnoError('EBUSY', 'open', `${vdev.pdev.name} is preserved by a live update: retrieve it from its session`);
  if (vdev.pdev.driver !== 'vfio-pci' || vdev.pdev.removed) throw new ErrnoError('ENODEV', 'open', vdev.pdev.name);
  vdev.openCount++;
  // pci_enable_device at first open: memory decoding on (bus mastering is the VMM's choice).
  if (vdev.openCount === 1) vdev.pdev.hw.config.write(R.PCI_COMMAND, 2, vdev.pdev.hw.command | R.PCI_COMMAND_MEMORY);
  return new KFile(deviceOps, new Inode(vdev), new VfioDeviceFile(vdev, viaCdev, kernel), flags, kernel.id);
}

/** Build a device file for a retrieved device (anonymous inode, not yet bound to an iommufd). */
export function vfioRetrievedFile(kernel: Kernel, vdev: VfioDevice): KFile {
  vdev.openCount++;
  return new KFile(deviceOps, new Inode(vdev), new VfioDeviceFile(vdev, true, kernel), 0o2, kernel.id);
}

/**
 * Bind a PCI device to vfio-pci (driver_override + bind, userspace's job after a kexec as
 * before it): creates its cdev and group nodes. EBUSY if another driver has it.
 */
export function vfioPciBind(kernel: Kernel, pdev: PciDev): VfioDevice {
  const s = stateOf(kernel);
  if (pdev.driver !== null && pdev.driver !== 'vfio-pci') throw new ErrnoError('EBUSY', 'bind', `${pdev.name} is bound to ${pdev.driver}`);
  const have = s.devices.find((d) => d.pdev === pdev);
  if (have) return have;
  pdev.driver = 'vfio-pci';
  const vdev = new VfioDevice(s.next++, pdev);
  s.devices.push(vdev);
  kernel.registerDevice(vdev.cdevPath, (_p, flags) => openCdev(kernel, vdev, flags, true));
  kernel.registerDevice(vdev.groupPath, (_p, flags) => new KFile(groupOps, new Inode(vdev), new VfioGroupFile(vdev), flags, kernel.id));
  return vdev;
}

function assertUsable(f: VfioDeviceFile, syscall: string, cmd?: number): void {
  // A frozen device (live update) is off limits until the kexec: every op is EIO.
  if (f.frozen) throw new ErrnoError('EIO', syscall, `${f.vdev.pdev.name} is frozen for live update`);
  // vfio_device_fops_unl_ioctl: a cdev fd not yet bound to an iommufd only takes BIND.
  if (!f.bound && cmd !== VFIO_DEVICE_BIND_IOMMUFD) throw new ErrnoError('EINVAL', syscall, 'bind the device to an iommufd first');
}

function configOffset(pos: number, len: number): number {
  const index = Math.floor(pos / 2 ** VFIO_PCI_OFFSET_SHIFT);
  const off = pos - vfioRegionOffset(index);
  if (index !== VFIO_PCI_CONFIG_REGION_INDEX || off + len > R.PCI_CFG_SPACE_EXP_SIZE) throw new ErrnoError('EINVAL', 'pread', `region ${index} offset ${off}`);
  return off;
}

const deviceOps: FileOperations = {
  kind: 'anon_inode:[vfio-device]',
  ioctl(file, cmd, arg, proc) {
    const f = vfioFileOf(file, 'ioctl');
    assertUsable(f, 'ioctl', cmd);
    const hw = f.vdev.pdev.hw;
    switch (cmd) {
      case VFIO_DEVICE_BIND_IOMMUFD: {
        if (f.bound) throw new ErrnoError('EINVAL', 'VFIO_DEVICE_BIND_IOMMUFD', 'already bound');
        const a = vfioDeviceBindIommufd.decode(arg);
        if (a.argsz < vfioDeviceBindIommufd.size || a.flags !== 0) throw new ErrnoError('EINVAL', 'VFIO_DEVICE_BIND_IOMMUFD');
        const s = stateOf(f.kernel);
        if (a.iommufd < 0) {
          // noiommu: bind without an iommufd (vfio.enable_unsafe_noiommu_mode=1).
          if (!s.noiommu) throw new ErrnoError('EINVAL', 'VFIO_DEVICE_BIND_IOMMUFD', 'iommufd -1 needs vfio.enable_unsafe_noiommu_mode=1');
          f.devid = 0;
        } else {
          const ictx = proc.fget(a.iommufd, 'VFIO_DEVICE_BIND_IOMMUFD');
          try {
            if (!s.iommufd || !s.iommufd.isIommufd(ictx)) throw new ErrnoError('EBADF', 'VFIO_DEVICE_BIND_IOMMUFD', 'not an iommufd');
            f.devid = s.iommufd.bind(ictx, iommuViewOf(f.vdev.pdev), f);
          } catch (e) {
            ictx.put();
            throw e;
          }
          // The cdev holds the iommufd until it is closed (vfio_df_iommufd_bind keeps the ictx).
          f.iommufd = ictx;
        }
        f.bound = true;
        vfioDeviceBindIommufd.write(arg, 'out_devid', f.devid);
        return 0;
      }
      case VFIO_DEVICE_ATTACH_IOMMUFD_PT: {
        const a = vfioDeviceAttachIommufdPt.decode(arg);
        // vfio_df_ioctl_attach_pt: argsz too small or unknown flags → EINVAL; noiommu has nothing to attach.
        if (a.argsz < vfioDeviceAttachIommufdPt.size || a.flags !== 0) throw new ErrnoError('EINVAL', 'VFIO_DEVICE_ATTACH_IOMMUFD_PT');
        const s = stateOf(f.kernel);
        if (!f.iommufd || !s.iommufd) throw new ErrnoError('EINVAL', 'VFIO_DEVICE_ATTACH_IOMMUFD_PT', 'not bound to an iommufd');
        s.iommufd.attach(f.iommufd, f.devid, a.pt_id);
        return 0;
      }
      case VFIO_DEVICE_DETACH_IOMMUFD_PT: {
        const a = vfioDeviceDetachIommufdPt.decode(arg);
        if (a.argsz < vfioDeviceDetachIommufdPt.size || a.flags !== 0) throw new ErrnoError('EINVAL', 'VFIO_DEVICE_DETACH_IOMMUFD_PT');
        const s = stateOf(f.kernel);
        if (!f.iommufd || !s.iommufd) throw new ErrnoError('EINVAL', 'VFIO_DEVICE_DETACH_IOMMUFD_PT', 'not bound to an iommufd');
        s.iommufd.detach(f.iommufd, f.devid);
        return 0;
      }
      case VFIO_DEVICE_RESET:
        if (!hw.hasFlr) throw new ErrnoError('EINVAL', 'VFIO_DEVICE_RESET', 'no reset method');
        hw.config.write(hw.config.capExp + R.PCI_EXP_DEVCTL, 2, R.PCI_EXP_DEVCTL_BCR_FLR);
        chargeOp(f.kernel.machine, 'pciFlr');
        f.irqs = 'none';
        return 0;
      case VFIO_DEVICE_SET_IRQS: {
        const s = vfioIrqSet.decode(arg);
        if (!(s.flags & VFIO_IRQ_SET_ACTION_TRIGGER)) throw new ErrnoError('EINVAL', 'VFIO_DEVICE_SET_IRQS', 'only ACTION_TRIGGER is modelled');
        const enable = (s.flags & VFIO_IRQ_SET_DATA_EVENTFD) !== 0 && s.count > 0;
        const disable = (s.flags & VFIO_IRQ_SET_DATA_NONE) !== 0 && s.count === 0;
        if (!enable && !disable) throw new ErrnoError('EINVAL', 'VFIO_DEVICE_SET_IRQS');
        if (s.index === VFIO_PCI_MSIX_IRQ_INDEX) {
          if (!hw.config.capMsix) throw new ErrnoError('EINVAL', 'VFIO_DEVICE_SET_IRQS', 'no MSI-X');
          const flags = hw.config.read16(hw.config.capMsix + R.PCI_MSIX_FLAGS);
          hw.config.write(hw.config.capMsix + R.PCI_MSIX_FLAGS, 2, enable ? flags | R.PCI_MSIX_FLAGS_ENABLE : flags & ~R.PCI_MSIX_FLAGS_ENABLE);
          f.irqs = enable ? 'msix' : 'none';
        } else if (s.index === VFIO_PCI_INTX_IRQ_INDEX) {
          hw.config.write(R.PCI_COMMAND, 2, enable ? hw.command & ~R.PCI_COMMAND_INTX_DISABLE : hw.command | R.PCI_COMMAND_INTX_DISABLE);
          f.irqs = enable ? 'intx' : 'none';
        } else {
          throw new ErrnoError('EINVAL', 'VFIO_DEVICE_SET_IRQS', `irq index ${s.index}`);
        }
        return 0;
      }
      case VFIO_DEVICE_GET_INFO:
        return 0;
      default:
        throw new ErrnoError('ENOTTY', 'ioctl', `0x${cmd.toString(16)}`);
    }
  },
  read(file, dst, pos) {
    const f = vfioFileOf(file, 'pread');
    assertUsable(f, 'pread');
    const off = configOffset(pos, dst.length);
    for (let i = 0; i < dst.length; i++) dst[i] = f.vdev.pdev.hw.config.read8(off + i);
    return dst.length;
  },
  write(file, src, pos) {
    const f = vfioFileOf(file, 'pwrite');
    assertUsable(f, 'pwrite');
    const off = configOffset(pos, src.length);
    if (src.length !== 1 && src.length !== 2 && src.length !== 4) throw new ErrnoError('EINVAL', 'pwrite', 'config writes are 1, 2 or 4 bytes');
    let v = 0;
    for (let i = src.length - 1; i >= 0; i--) v = v * 256 + (src[i] as number);
    f.vdev.pdev.hw.config.write(off, src.length, v);
    chargeOp(f.kernel.machine, 'pciConfigAccess');
    return src.length;
  },
  release(file) {
    const f = file.privateData as VfioDeviceFile;
    f.vdev.openCount--;
    // vfio_df_unbind_iommufd on the last close of the cdev.
    const ictx = f.iommufd;
    if (ictx) {
      f.iommufd = null;
      try { stateOf(f.kernel).iommufd?.unbind(ictx, f.devid); } finally { ictx.put(); }
    }
  },
};

const groupOps: FileOperations = {
  kind: 'vfio-group',
  ioctl(file, cmd, arg, proc) {
    const g = file.privateData as VfioGroupFile;
    if (cmd !== VFIO_GROUP_GET_DEVICE_FD) throw new ErrnoError('ENOTTY', 'ioctl');
    const name = new TextDecoder().decode(arg).replace(/\0.*$/s, '');
    if (name !== g.vdev.pdev.name) throw new ErrnoError('ENODEV', 'VFIO_GROUP_GET_DEVICE_FD', name);
    const dev = openCdev(proc.kernel, g.vdev, 0o2, false);
    return proc.fdInstall(dev, false);
  },
};

const containerOps: FileOperations = {
  kind: 'vfio-container',
  ioctl(_file, cmd) {
    if (cmd === VFIO_GET_API_VERSION) return VFIO_API_VERSION;
    throw new ErrnoError('ENOTTY', 'ioctl');
  },
};

/** A VMM's mmap of a DSA engine's portal BAR through its VFIO device fd. */
export interface VfioPortal {
  submit(desc: DsaDescriptor): boolean;
}

/**
 * mmap of the portal BAR: accesses after freeze fault (the mapping was zapped), and after a
 * reset the portal takes no work until memory decoding is enabled again.
 */
export function vfioMmapPortal(proc: Process, fd: number, engine: { submit(d: DsaDescriptor): boolean }): VfioPortal {
  const file = proc.fget(fd, 'mmap');
  const f = vfioFileOf(file, 'mmap');
  try { assertUsable(f, 'mmap'); } finally { file.put(); }
  return {
    submit: (desc) => {
      if (f.zapped) throw new ErrnoError('EFAULT', 'store', 'SIGBUS: the BAR mapping was zapped');
      if (f.frozen) throw new ErrnoError('EIO', 'store');
      return engine.submit(desc);
    },
  };
}
