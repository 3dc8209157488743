/**
 * What kernel work costs in machine time. The kernel advances machine.clock by these after
 * each boot and shutdown phase and plugins charge their operations, so devices tick through
 * the work (a DMA engine keeps writing while the next kernel enumerates PCI) and blackout
 * windows are read off the clock. One table, so a report can name every number it used.
 *
 * The figures are orders of magnitude for a large x86 host, not measurements: a kexec boot of
 * a hypervisor host takes on the order of a second, most of it in probe; FLR is the 100 ms
 * the PCIe Base Specification (§6.6.2) makes software wait after initiating it.
 */
import type { Machine } from '@liveupdate/hw';
import type { BootPhase, ShutdownPhase } from './boot-hooks.js';

/** ns spent in each boot phase after its hooks ran. */
export const BOOT_PHASE_NS: Readonly<Record<BootPhase, number>> = Object.freeze({
  memblock: 30_000_000,
  luoEarly: 1_000_000,
  iommuInit: 15_000_000,
  pciEnumerate: 40_000_000,
  probe: 250_000_000,
  late: 20_000_000,
});

/** ns spent in each kexec shutdown phase after its hooks ran. */
export const SHUTDOWN_PHASE_NS: Readonly<Record<ShutdownPhase, number>> = Object.freeze({
  reboot: 5_000_000,
  deviceShutdown: 30_000_000,
  syscoreShutdown: 2_000_000,
  beforeJump: 1_000_000,
});

/** ns per operation, charged by whoever performs it. */
export const OP_NS = Object.freeze({
  /** One configuration-space access (ECAM read or write). */
  pciConfigAccess: 1_000,
  /** Function Level Reset: initiate, then wait 100 ms before touching the function. */
  pciFlr: 100_000_000,
  /** Preserving or restoring one PCI device record. */
  pciDeviceRecord: 2_000,
  /** A LUO ioctl round trip. */
  luoIoctl: 5_000,
});

export type KernelOp = keyof typeof OP_NS;

/** Let the time of `n` operations pass on the machine clock (devices tick through it). */
export function chargeOp(machine: Machine, op: KernelOp, n = 1): void {
  if (n > 0) machine.clock.advance(OP_NS[op] * n);
}
