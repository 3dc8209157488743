/**
 * The platform's DMA remapping hardware as the PCI host's DmaRemapper: every request of a DMA
 * engine is translated by the VT-d unit whose scope covers its requester (root entry, context
 * entry, second-level tables walked in emulated memory). A fault is in that unit's fault log and
 * the access is dropped (negative DMA_FAULT_* code); requesters no unit covers, and units with
 * translation off, pass through untranslated as on real hardware.
 */
import { DMA_FAULT_NO_CONTEXT, DMA_FAULT_NOT_PRESENT, DMA_FAULT_PERMISSION, type DmaRemapper } from '../pci/dma.js';
import type { DmaRemapping } from './dmar.js';
import { FaultReason } from './vtd-layout.js';

/** The DMA port's fault class of a VT-d fault: no usable context, a permission, or nothing mapped. */
function faultCode(code: number, reason: string): number {
  switch (code) {
    case FaultReason.ROOT_NOT_PRESENT:
    case FaultReason.CONTEXT_NOT_PRESENT:
    case FaultReason.CONTEXT_INVALID:
    case FaultReason.ROOT_TABLE_ACCESS:
    case FaultReason.CONTEXT_TABLE_ACCESS:
      return DMA_FAULT_NO_CONTEXT;
    case FaultReason.WRITE_NOT_PERMITTED:
    case FaultReason.READ_NOT_PERMITTED:
      // A non-present second-level entry is reported with the permission reasons (no R/W bit).
      return reason.includes('entry not present') ? DMA_FAULT_NOT_PRESENT : DMA_FAULT_PERMISSION;
    default:
      return DMA_FAULT_NOT_PRESENT;
  }
}

/** Adapt DmaRemapping.translate (per page, {ok, phys, bytes}) to DmaRemapper.translate (phys or a negative fault). */
export function dmarRemapper(dmar: DmaRemapping): DmaRemapper {
  return {
    name: 'vt-d',
    translate(segment, requesterId, iova, size, write) {
      const t = dmar.translate(segment, requesterId, iova, write);
      if (!t.ok) return faultCode(t.code, t.reason);
      // An access that runs into the next page must find it physically contiguous, else it is dropped.
      let covered = t.bytes;
      while (covered < size) {
        const n = dmar.translate(segment, requesterId, iova + covered, write);
        if (!n.ok) return faultCode(n.code, n.reason);
        if (n.phys !== t.phys + covered) return DMA_FAULT_NOT_PRESENT;
        covered += n.bytes;
      }
      return t.phys;
    },
  };
}
