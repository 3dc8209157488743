/**
 * The DMA remapping port: every device write and read goes through it. With no IOMMU the
 * port is the identity (noiommu: the bus address is the physical address); an IOMMU model
 * installs its own `DmaRemapper` (VT-d: Requester ID → context entry → page tables in memory)
 * without touching any device.
 */
import type { PhysMemory } from '../memory.js';
import type { Restore } from '../state.js';

/** Translation faults, as negative results of translate(). */
export const DMA_FAULT_NOT_PRESENT = -1;
export const DMA_FAULT_PERMISSION = -2;
export const DMA_FAULT_NO_CONTEXT = -3;
export const DMA_FAULT_OUTSIDE_RAM = -4;

export interface DmaRemapper {
  readonly name: string;
  /**
   * The physical address for `size` bytes at `iova` from (segment, requesterId), never
   * crossing a 4 KiB page, or a negative DMA_FAULT_* code.
   */
  translate(segment: number, requesterId: number, iova: number, size: number, write: boolean): number;
}

/** noiommu: bus addresses are physical addresses. */
export const identityRemapper: DmaRemapper = Object.freeze({
  name: 'noiommu',
  translate: (_s: number, _r: number, iova: number) => iova,
});

export interface DmaFaultRecord {
  readonly segment: number;
  readonly requesterId: number;
  readonly iova: number;
  readonly write: boolean;
  readonly code: number;
}

/**
 * The machine's DMA port: the remapper in force and the memory behind it. A fault drops the
 * access and is logged (the fault-recording registers of an IOMMU, or a master abort).
 */
export class DmaPort {
  remapper: DmaRemapper = identityRemapper;
  readonly faults: DmaFaultRecord[] = [];
  private readonly u64 = new DataView(new ArrayBuffer(8));

  constructor(private readonly memory: PhysMemory) {}

  private resolve(segment: number, rid: number, iova: number, size: number, write: boolean): number {
    let phys = this.remapper.translate(segment, rid, iova, size, write);
    if (phys >= 0 && (phys + size > this.memory.size || !Number.isSafeInteger(phys))) phys = DMA_FAULT_OUTSIDE_RAM;
    if (phys < 0) {
      if (this.faults.length < 4096) this.faults.push({ segment, requesterId: rid, iova, write, code: phys });
      return -1;
    }
    return phys;
  }

  /** A posted write of a u64; returns the physical address written or -1 (dropped). */
  writeU64(segment: number, rid: number, iova: number, value: number): number {
    const phys = this.resolve(segment, rid, iova, 8, true);
    if (phys < 0) return -1;
    this.memory.writeU64(phys, value);
    return phys;
  }

  write(segment: number, rid: number, iova: number, data: Uint8Array): number {
    const phys = this.resolve(segment, rid, iova, data.length, true);
    if (phys < 0) return -1;
    this.memory.write(phys, data);
    return phys;
  }

  /** A read request; null when it faults (the completer would return an Unsupported Request). */
  read(segment: number, rid: number, iova: number, length: number): Uint8Array | null {
    const phys = this.resolve(segment, rid, iova, length, false);
    return phys < 0 ? null : this.memory.read(phys, length);
  }

  /** The fault log is append-only (capped): its length is its state. */
  save(): Restore {
    const n = this.faults.length;
    return () => { this.faults.length = n; };
  }

  get scratchView(): DataView { return this.u64; }
}
