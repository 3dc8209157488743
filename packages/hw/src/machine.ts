import { KEXEC_JUMP_NS, MachineClock } from './clock.js';
import { dmarOf, type DmarState } from './iommu/dmar.js';
import { PhysMemory, type MemorySnapshot, type MemoryState } from './memory.js';
import { PfnRanges } from './ranges.js';
import { restoreAll, saveArray, type Restore, type SavesState } from './state.js';
import { PAGE_SIZE, parseSize } from './units.js';

/** A NUMA node: a contiguous range of page frames [startPfn, endPfn). */
export interface NumaNode {
  readonly id: number;
  readonly startPfn: number;
  readonly endPfn: number;
}

/**
 * What the firmware/bootloader hands the next kernel, and nothing else. On x86 the KHO part
 * travels as setup_data of type SETUP_KEXEC_KHO carrying struct kho_data; here it is the
 * same 32 bytes, opaque to the machine.
 */
export interface BootParams {
  readonly cmdline: string;
  /** SETUP_KEXEC_KHO payload (struct kho_data), or absent on a cold boot. */
  readonly khoData?: Uint8Array;
}

/**
 * Something attached to the machine that outlives a kernel: a DMA engine, an IOMMU, a
 * hypervisor. It sees the kexec boundary but no kernel object.
 */
export interface Device {
  readonly name: string;
  /** Called after the scrub, before the next kernel starts: the device keeps running. */
  onKexec?(machine: Machine): void;
  /** Its registers and internal state, for Machine.snapshot (absent: it keeps none beside memory). */
  save?(): Restore;
}

/**
 * A whole machine as it was (see Machine.snapshot): memory copy-on-write, everything else as
 * each part's own copy. Opaque; only the machine that made it restores it, while its memory
 * snapshot is the live one.
 */
export interface MachineSnapshot {
  readonly memory: MemorySnapshot;
  /** @internal Puts back the clock, boot parameters, devices and tracked parts. */
  readonly rest: Restore;
}

export interface MachineConfig {
  /** '64GiB', '64TiB', bytes. */
  readonly memory: string | number | bigint;
  /** Default 1; memory is split evenly, node boundaries aligned to 2 MiB. */
  readonly numaNodes?: number;
}

/** Structured-cloneable description to map the same machine in another worker. */
export interface MachineHandle {
  readonly memory: MemoryState;
  readonly numaNodes: readonly NumaNode[];
  readonly bootParams: BootParams;
  readonly bootCount: number;
  /** The clock's reading (ns) when the handle was made. */
  readonly clockNs?: number;
  /**
   * The VT-d units and their registers (root-table address, translation enable): hardware state
   * beside memory, so a kernel booted in another worker finds DMAR_RTADDR still pointing at the
   * old root table. Fault logs stay with the sharing side.
   */
  readonly dmar?: DmarState;
}

export interface KexecTransition {
  /** Pages whose bytes must survive; every other page becomes poison. */
  readonly survivors: PfnRanges;
  readonly params: BootParams;
}

const NODE_ALIGN_PAGES = (2 << 20) / PAGE_SIZE;

export class Machine {
  readonly memory: PhysMemory;
  readonly numaNodes: readonly NumaNode[];
  /** Nanoseconds since power-on; devices tick on it. */
  readonly clock: MachineClock;
  private params: BootParams;
  private boots: number;
  private readonly devices: Device[] = [];
  /** Hardware beside memory that is no Device (the PCI host, the DMAR platform): saved by snapshot(). */
  private readonly parts: SavesState[] = [];

  constructor(memory: PhysMemory, numaNodes: readonly NumaNode[], params: BootParams, bootCount: number, clockNs = 0) {
    this.memory = memory;
    this.clock = new MachineClock(clockNs);
    this.numaNodes = numaNodes;
    this.params = params;
    this.boots = bootCount;
  }

  get memorySize(): number { return this.memory.size; }
  /** The boot parameters the running (or next) kernel was started with. */
  get bootParams(): BootParams { return this.params; }
  /** Kernels started on this machine so far: 0 before the first boot. */
  get bootCount(): number { return this.boots; }

  nodeOfPfn(pfn: number): number {
    for (const n of this.numaNodes) if (pfn >= n.startPfn && pfn < n.endPfn) return n.id;
    return -1;
  }

  attach(device: Device): void { this.devices.push(device); }
  get attachedDevices(): readonly Device[] { return this.devices; }

  /** Include `part` in every snapshot (hardware state that lives beside the machine, not as a Device). */
  track(part: SavesState): void { this.parts.push(part); }

  /**
   * Everything a kernel can change on this machine: memory (copy on write: O(1) now, a restore
   * costs the chunks written since), the clock and its tickers (DMA engines, caretakers), the
   * boot parameters and boot count, the attached devices and their state (VT-d registers, the
   * hypervisor's deposits, partitions and VPs), PCI config spaces, bus numbers, BARs and VFs.
   * Cost follows device state, never memory size. One snapshot is live at a time (memory's rule).
   */
  snapshot(): MachineSnapshot {
    const memory = this.memory.snapshot();
    const { params, boots } = this;
    const fns: Restore[] = [
      this.clock.save(), saveArray(this.devices), saveArray(this.parts),
      ...this.devices.map((d) => d.save?.()).filter((f): f is Restore => f !== undefined),
      ...this.parts.map((p) => p.save()),
      () => { this.params = params; this.boots = boots; },
    ];
    return { memory, rest: restoreAll(fns) };
  }

  /** Put the machine back as it was at `s` (which stays usable: restore as often as wanted). */
  restore(s: MachineSnapshot): void {
    this.memory.restore(s.memory);
    s.rest();
  }

  /** The first kernel of a power cycle: boot parameters come from the user. */
  powerOn(cmdline: string): BootParams {
    this.params = { cmdline };
    this.boots++;
    return this.params;
  }

  /**
   * The kexec boundary: scrub every page that is not a survivor, let devices observe the jump,
   * record the boot parameters for the next kernel, and let the jump's time pass (devices
   * tick through it: DMA keeps flowing while no kernel runs). Whatever the old kernel held in
   * JavaScript is gone from here on; only memory and `params` remain.
   */
  kexec(t: KexecTransition): BootParams {
    this.memory.scrub(t.survivors);
    for (const d of this.devices) d.onKexec?.(this);
    this.params = t.params;
    this.boots++;
    this.clock.advance(KEXEC_JUMP_NS);
    return this.params;
  }

  share(): MachineHandle {
    const dmar = dmarOf(this).exportState();
    return {
      memory: this.memory.exportState(), numaNodes: this.numaNodes, bootParams: this.params, bootCount: this.boots, clockNs: this.clock.now,
      ...(dmar.length > 0 ? { dmar } : {}),
    };
  }
}

export function createMachine(config: MachineConfig): Machine {
  const size = parseSize(config.memory);
  if (size === 0 || size % PAGE_SIZE !== 0) throw new RangeError(`memory ${String(config.memory)} must be a positive multiple of 4 KiB`);
  const nodes = config.numaNodes ?? 1;
  if (!Number.isInteger(nodes) || nodes < 1 || nodes > 64) throw new RangeError(`numaNodes ${nodes} must be an integer in 1..64`);
  const pages = size / PAGE_SIZE;
  const per = Math.floor(pages / nodes / NODE_ALIGN_PAGES) * NODE_ALIGN_PAGES;
  if (per === 0 && nodes > 1) throw new RangeError(`memory ${String(config.memory)} is too small for ${nodes} NUMA nodes`);
  const numa: NumaNode[] = [];
  for (let i = 0; i < nodes; i++) numa.push({ id: i, startPfn: i * per, endPfn: i === nodes - 1 ? pages : (i + 1) * per });
  return new Machine(new PhysMemory(size), numa, { cmdline: '' }, 0);
}

/** Map a machine shared by another worker: same memory bytes, same boot parameters. */
export function attachMachine(handle: MachineHandle): Machine {
  const m = new Machine(new PhysMemory(handle.memory.size, handle.memory), handle.numaNodes, handle.bootParams, handle.bootCount, handle.clockNs ?? 0);
  if (handle.dmar) dmarOf(m).importState(handle.dmar);
  return m;
}
