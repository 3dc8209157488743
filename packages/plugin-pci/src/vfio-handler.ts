/**
 * The vfio-pci LUO file handler (drivers/vfio/pci/vfio_pci_liveupdate.c, "vfio/pci: Base live
 * update support", Vipin Sharma and David Matlack, v5 2026-07-14). 1.x ("vfio-pci-v1") is the
 * posted phase 1: freeze resets the function and turns bus mastering off. 2.x is the roadmap's
 * next step (no reset, continuous DMA with noiommu), chosen per device by the VMM and only when
 * the next kernel reads 2.x; otherwise the device is reset as in 1.x.
 */
import {
  chargeOp, defineFileHandler, ErrnoError, identityCrc32, identityProblem, type FileHandlerDefinition, type HandlerContext, type Kernel,
} from '@liveupdate/sdk';
import { pciRegs as R } from '@liveupdate/hw';
import {
  VFIO_ALIASES, VFIO_FAMILY, VFIO_PCI_SER_DMA_RUNNING, VFIO_PCI_SER_FLAGS_KNOWN, VFIO_V2_1_ID_OFFSET, vfioPciCoreDeviceSer,
  vfioPciCoreDeviceSerV2, vfioPciCoreDeviceSerV2_1,
} from './abi/vfio.js';
import { pciCoreOf } from './pci-core.js';
import { iommufdBindingOf, isVfioDeviceFile, vfioDevices, vfioFileOf, vfioRetrievedFile, type VfioDeviceFile } from './vfio.js';

export interface VfioPreservation {
  readonly vf: VfioDeviceFile;
  /**
   * The iommufd's session token returned by the IOMMU preserve (null: noiommu). The posted
   * record stays {domain, bdf}: the token is kept here, and the next kernel finds the device's
   * domain through the IOMMU FLB's device record, keyed by segment and requester ID.
   */
  readonly iommufdToken: bigint | null;
}

const major = (v: string): number => Number(v.split('.')[0]);
/** vfio-pci 2.1 and later 2.x minors bind the record to the file's (session, token). */
export const hasVfioIdentity = (v: string): boolean => major(v) === 2 && Number(v.split('.')[1]) >= 1;
/** Whom a record is written for. */
interface Identity { readonly session: string; readonly token: bigint }

/** Devices vfio-pci cannot preserve (vfio_pci_liveupdate_can_preserve's device quirks): Intel display devices. */
function unpreservable(vf: VfioDeviceFile): string | null {
  const hw = vf.vdev.pdev.hw;
  const cls = hw.config.read32(R.PCI_CLASS_REVISION) >>> 24;
  if (hw.config.read16(R.PCI_VENDOR_ID) === 0x8086 && cls === 0x03) return 'Intel display devices cannot be preserved';
  return null;
}

function writeRecord(kernel: Kernel, phys: number, version: string, vf: VfioDeviceFile, flags: number, id: Identity): void {
  const { domain, bdf } = vf.vdev.pdev;
  if (hasVfioIdentity(version)) {
    const bytes = vfioPciCoreDeviceSerV2_1.encode({ domain, bdf, flags, id_crc32: 0, id_pad: 0 });
    new DataView(bytes.buffer, bytes.byteOffset).setUint32(VFIO_V2_1_ID_OFFSET, identityCrc32(bytes, VFIO_V2_1_ID_OFFSET, id.session, id.token), true);
    kernel.machine.memory.write(phys, bytes);
    return;
  }
  const bytes = major(version) >= 2 ? vfioPciCoreDeviceSerV2.encode({ domain, bdf, flags }) : vfioPciCoreDeviceSer.encode({ domain, bdf });
  kernel.machine.memory.write(phys, bytes);
}

/** The record handed over in a given version, or EINVAL for bytes no writer produces. */
export function readVfioRecord(kernel: Kernel, data: bigint, version: string, id: Identity): { domain: number; bdf: number; flags: number } {
  const mem = kernel.machine.memory;
  const size = major(version) >= 2 ? vfioPciCoreDeviceSerV2.size : vfioPciCoreDeviceSer.size;
  if (data <= 0n || data + BigInt(size) > BigInt(mem.size)) throw new ErrnoError('EINVAL', 'retrieve', `record at 0x${data.toString(16)} is outside RAM`);
  if (hasVfioIdentity(version)) {
    const problem = identityProblem(mem, Number(data), VFIO_V2_1_ID_OFFSET, id.session, id.token);
    if (problem !== null) throw new ErrnoError('EINVAL', 'retrieve', `record at 0x${data.toString(16)} ${problem}`);
  }
  const raw = mem.read(Number(data), size);
  if (major(version) >= 2) {
    const r = vfioPciCoreDeviceSerV2.decode(raw);
    if (r.flags & ~VFIO_PCI_SER_FLAGS_KNOWN) throw new ErrnoError('EINVAL', 'retrieve', `unknown flags 0x${r.flags.toString(16)}`);
    return r;
  }
  const r = vfioPciCoreDeviceSer.decode(raw);
  return { ...r, flags: 0 };
}

export function vfioHandler(writes: readonly string[], reads: string): FileHandlerDefinition<VfioPreservation> {
  return defineFileHandler<VfioPreservation>({
    format: { family: VFIO_FAMILY, writes, reads, aliases: VFIO_ALIASES },
    // Only a cdev-opened device file, and not a VF: group-obtained device fds, group and container fds → ENOENT.
    canPreserve: (file) => isVfioDeviceFile(file) && vfioFileOf(file, 'preserve').viaCdev && !vfioFileOf(file, 'preserve').vdev.pdev.isVirtfn,
    preserve(ctx) {
      const vf = vfioFileOf(ctx.file as NonNullable<typeof ctx.file>, 'preserve');
      const why = unpreservable(vf);
      if (why) throw new ErrnoError('EINVAL', 'preserve', why);
      const kernel = ctx.kernel;
      // The IOMMU first (iommufd token, attached to a marked HWPT, iommu_preserve_device), then the PCI core.
      const binding = iommufdBindingOf(kernel);
      const ictx = vf.iommufd;
      const iommufdToken = ictx && binding ? binding.preserve(ctx.session, ictx, vf.devid) : null;
      const undoIommu = (): void => { if (ictx && binding && iommufdToken !== null) binding.unpreserve(ictx, vf.devid); };
      try {
        // The PCI core's error is the preserve's error.
        pciCoreOf(kernel).preserve(vf.vdev.pdev);
      } catch (e) {
        undoIommu();
        throw e;
      }
      let phys: number;
      try {
        phys = (kernel.khoOut as NonNullable<Kernel['khoOut']>).allocPreserve(vfioPciCoreDeviceSerV2_1.size);
      } catch (e) {
        pciCoreOf(kernel).unpreserve(vf.vdev.pdev);
        undoIommu();
        throw e;
      }
      writeRecord(kernel, phys, ctx.version, vf, 0, { session: ctx.session.name, token: ctx.token });
      ctx.data = BigInt(phys);
      ctx.state = { vf, iommufdToken };
    },
    unpreserve(ctx) {
      const st = ctx.state;
      if (!st) return;
      pciCoreOf(ctx.kernel).unpreserve(st.vf.vdev.pdev);
      const binding = iommufdBindingOf(ctx.kernel);
      if (st.iommufdToken !== null && st.vf.iommufd && binding) binding.unpreserve(st.vf.iommufd, st.vf.devid);
      ctx.kernel.khoOut?.unpreserveFree(Number(ctx.data));
    },
    freeze(ctx) { freezeDevice(ctx); },
    // No unfreeze in the posted series: after a failed kexec the fd stays frozen (EIO).
    retrieve(ctx) {
      const rec = readVfioRecord(ctx.kernel, ctx.data, ctx.version, { session: ctx.session.name, token: ctx.token });
      const vdev = vfioDevices(ctx.kernel).find((d) => d.pdev.domain === rec.domain && d.pdev.bdf === rec.bdf && !d.pdev.removed);
      if (!vdev) throw new ErrnoError('ENODEV', 'retrieve', `no vfio-pci device ${rec.domain.toString(16).padStart(4, '0')}:${(rec.bdf >> 8).toString(16).padStart(2, '0')}:${((rec.bdf >> 3) & 31).toString(16).padStart(2, '0')}.${rec.bdf & 7}`);
      const file = vfioRetrievedFile(ctx.kernel, vdev);
      ctx.file = file;
      ctx.state = { vf: vfioFileOf(file, 'retrieve'), iommufdToken: null };
    },
    // FINISH waits until the VMM retrieved the device and bound it to an iommufd.
    canFinish: (ctx) => ctx.retrieveStatus === 1 && ctx.state?.vf.bound === true,
    finish(ctx) {
      const st = ctx.state;
      if (st) pciCoreOf(ctx.kernel).finish(st.vf.vdev.pdev);
      ctx.kernel.khoIn?.restoreFree(Number(ctx.data));
    },
  });
}

/**
 * Freeze, in the posted order: EINVAL if interrupts are still enabled or the device is not in
 * D0 (the kexec then fails); otherwise zap BAR mappings, reset the function and leave Command
 * = INTx Disable only, and mark the device frozen. With 2.x and a device the VMM asked to keep
 * running, the reset and the Command write are skipped: bus mastering stays on.
 */
function freezeDevice(ctx: HandlerContext<VfioPreservation>): void {
  const st = ctx.state;
  if (!st) throw new ErrnoError('EINVAL', 'freeze', 'not preserved');
  const { vf } = st;
  const hw = vf.vdev.pdev.hw;
  if (vf.irqs !== 'none' || hw.msixEnabled) throw new ErrnoError('EINVAL', 'freeze', `${vf.vdev.pdev.name}: interrupts are still enabled`);
  if (hw.powerState !== 0) throw new ErrnoError('EINVAL', 'freeze', `${vf.vdev.pdev.name} is in D${hw.powerState}, not D0`);
  const keepRunning = vf.keepRunning && major(ctx.version) >= 2;
  if (!keepRunning) {
    vf.zapped = true;
    hw.config.write(hw.config.capExp + R.PCI_EXP_DEVCTL, 2, R.PCI_EXP_DEVCTL_BCR_FLR);
    chargeOp(ctx.kernel.machine, 'pciFlr');
    hw.config.write(R.PCI_COMMAND, 2, R.PCI_COMMAND_INTX_DISABLE);
  }
  vf.frozen = true;
  writeRecord(ctx.kernel, Number(ctx.data), ctx.version, vf, keepRunning && hw.busMaster ? VFIO_PCI_SER_DMA_RUNNING : 0, { session: ctx.session.name, token: ctx.token });
}

/** This project's extension (no uAPI upstream yet): ask that `fd`'s device keep DMA running through the update. */
export function setKeepRunning(vf: VfioDeviceFile, on: boolean): void {
  if (vf.frozen) throw new ErrnoError('EIO', 'ioctl');
  vf.keepRunning = on;
}

export { VFIO_FAMILY };
