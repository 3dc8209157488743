/**
 * A machine's PCI host: the topology, the DMA port every device writes through, and the DMA
 * engines ticking on the machine clock. It belongs to the machine, below any kernel: it
 * survives kexec with whatever state the devices and bridges hold.
 */
import type { Machine } from '../machine.js';
import { dmarOf } from '../iommu/dmar.js';
import { dmarRemapper } from '../iommu/remap.js';
import type { Restore, SavesState } from '../state.js';
import { DmaPort } from './dma.js';
import { DsaEngine, type DsaOptions } from './dsa.js';
import type { PciFunction } from './function.js';
import { PciTopology, type PciTopologySpec } from './topology.js';

export class PciHost implements SavesState {
  readonly dma: DmaPort;
  readonly topology: PciTopology;
  readonly engines = new Map<string, DsaEngine>();

  constructor(readonly machine: Machine, spec: PciTopologySpec, dsa: DsaOptions = {}) {
    this.dma = new DmaPort(machine.memory);
    // Every DMA goes through the platform's remapping hardware (VT-d units added before or after
    // the PCI host); a requester no unit covers is untranslated (noiommu).
    this.dma.remapper = dmarRemapper(dmarOf(machine));
    this.topology = PciTopology.build(spec, (fn, s) => {
      if (s.model === 'dsa') this.engines.set(s.name, new DsaEngine(fn, this.dma, machine.clock, dsa));
    });
  }

  /** The hierarchy, config spaces (bus numbers, BARs, command bits), VFs and the DMA port's fault log; engines tick on the clock, which saves them. */
  save(): Restore {
    const topology = this.topology.save();
    const dma = this.dma.save();
    return () => { topology(); dma(); };
  }

  engine(name: string): DsaEngine {
    const e = this.engines.get(name);
    if (!e) throw new RangeError(`no DMA engine '${name}'`);
    return e;
  }

  fn(name: string): PciFunction {
    const f = this.topology.byName(name);
    if (!f) throw new RangeError(`no PCI function '${name}'`);
    return f;
  }
}

const hosts = new WeakMap<Machine, PciHost>();

/** Install a PCI hierarchy on the machine (before its first kernel boots). */
export function attachPci(machine: Machine, spec: PciTopologySpec, dsa: DsaOptions = {}): PciHost {
  if (hosts.has(machine)) throw new Error('this machine already has a PCI host');
  const h = new PciHost(machine, spec, dsa);
  hosts.set(machine, h);
  machine.track(h);
  return h;
}

/** The machine's PCI host, or undefined on a machine without PCI. */
export function pciHostOf(machine: Machine): PciHost | undefined {
  return hosts.get(machine);
}

/**
 * The bare-metal rig of the PCI and VFIO series' cover letters (Intel Emerald Rapids): eight
 * DSA engines and one NVMe drive, each behind its own root port.
 */
export function bareMetalRig(): PciTopologySpec {
  const devices = [];
  for (let i = 0; i < 8; i++) {
    devices.push({ kind: 'root-port' as const, name: `rp${i}`, slot: 1 + i, children: [{ kind: 'endpoint' as const, name: `dsa${i}`, slot: 0, model: 'dsa' as const }] });
  }
  devices.push({ kind: 'root-port' as const, name: 'rp8', slot: 9, children: [{ kind: 'endpoint' as const, name: 'nvme0', slot: 0, model: 'nvme' as const }] });
  return { segments: [{ domain: 0, devices }] };
}
