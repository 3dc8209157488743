/**
 * The page-linked arrays of the IOMMU FLB (drivers/iommu/liveupdate.c): writing objects into the
 * current page of each list (a new page is chained when one is full; deleted slots are never
 * reused), and reading the three lists back from bytes in the incoming kernel.
 */
import type { PhysMemory } from '@liveupdate/hw';
import { ErrnoError, PAGE_SIZE, type Kernel } from '@liveupdate/sdk';
import {
  FLB_LAYOUTS, IOMMU_LUO_FLB_VERSION, IOMMU_SER_FLAG_DELETED, iommuArrayHdrSer, iommuFlbSer, iommuFlbSerV1, maxObjsPerPage,
  type FlbLayout, type IommuFlbVariant,
} from './abi/iommu.js';

export type ListName = 'iommu' | 'domain' | 'device';

/** The outgoing FLB object (struct iommu_flb_obj): lives only in the kernel that writes it. */
export class FlbOut {
  readonly layout: FlbLayout;
  readonly headerPhys: number;
  /** First and current page of each list. */
  readonly first: Record<ListName, number>;
  private readonly curr: Record<ListName, number>;
  /** Every array page (for unpreserve). */
  private readonly pages: number[] = [];

  /** iommu_liveupdate_flb_preserve: the header and the first page of all three lists now. */
  constructor(private readonly kernel: Kernel, variant: IommuFlbVariant) {
    const out = kernel.khoOut;
    if (!out) throw new ErrnoError('EOPNOTSUPP', 'iommu_liveupdate_flb_preserve');
    this.layout = FLB_LAYOUTS[variant];
    const done: number[] = [];
    try {
      this.headerPhys = out.allocPreserve(this.layout.headerSize);
      done.push(this.headerPhys);
      const domain = out.allocPreserve(PAGE_SIZE); done.push(domain);
      const device = out.allocPreserve(PAGE_SIZE); done.push(device);
      const iommu = out.allocPreserve(PAGE_SIZE); done.push(iommu);
      this.first = { iommu, domain, device };
      this.curr = { iommu, domain, device };
      this.pages.push(domain, device, iommu);
    } catch (e) {
      for (const p of done.reverse()) out.unpreserveFree(p);
      throw e;
    }
    const hdr = variant === 'iommu-liveupdate'
      ? iommuFlbSer.encode({ version: BigInt(IOMMU_LUO_FLB_VERSION), iommu_array_phys: BigInt(this.first.iommu), iommu_domain_array_phys: BigInt(this.first.domain), device_array_phys: BigInt(this.first.device) })
      : iommuFlbSerV1.encode({ iommu_array_phys: BigInt(this.first.iommu), iommu_domain_array_phys: BigInt(this.first.domain), device_array_phys: BigInt(this.first.device) });
    kernel.machine.memory.write(this.headerPhys, hdr);
  }

  private objectSize(list: ListName): number {
    return list === 'iommu' ? this.layout.hwSize : list === 'domain' ? this.layout.domainSize : this.layout.deviceSize;
  }

  /** alloc_object_ser: the next slot of `list` (chaining a page when full), ref_count = 1. Returns its physical address. */
  alloc(list: ListName): number {
    const mem = this.kernel.machine.memory;
    const size = this.objectSize(list);
    let page = this.curr[list];
    let nr = mem.readU64Number(page + 8);
    if (nr >= maxObjsPerPage(size)) {
      const out = this.kernel.khoOut;
      if (!out) throw new ErrnoError('EOPNOTSUPP', 'iommu_liveupdate');
      const next = out.allocPreserve(PAGE_SIZE);
      mem.write(page, iommuArrayHdrSer.encode({ next_array_phys: BigInt(next), nr_objects: BigInt(nr) }));
      this.pages.push(next);
      this.curr[list] = next;
      page = next;
      nr = 0;
    }
    mem.write(page + 8, iommuArrayHdrSer.encode({ nr_objects: BigInt(nr + 1) }).subarray(8));
    const slot = page + iommuArrayHdrSer.size + nr * size;
    mem.write(slot, new Uint8Array([1, 0, 0, 0, 0, 0, 0, 0]));
    return slot;
  }

  setFlags(slot: number, flags: number): void {
    const mem = this.kernel.machine.memory;
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, (mem.readU32(slot + 4) | flags) >>> 0, true);
    mem.write(slot + 4, b);
  }
  markDeleted(slot: number): void { this.setFlags(slot, IOMMU_SER_FLAG_DELETED); }

  refCount(slot: number): number { return this.kernel.machine.memory.readU32(slot); }
  setRefCount(slot: number, n: number): void {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, n >>> 0, true);
    this.kernel.machine.memory.write(slot, b);
  }

  /** iommu_liveupdate_flb_free: every array page and the header. */
  free(): void {
    const out = this.kernel.khoOut;
    if (!out) return;
    for (const p of this.pages) out.unpreserveFree(p);
    out.unpreserveFree(this.headerPhys);
  }
}

/** One list read back from bytes: the objects' addresses (deleted ones skipped) and every array page. */
export interface IncomingList {
  readonly objects: number[];
  readonly pages: number[];
}

/**
 * Walk one list in the incoming kernel. `restore(phys)` claims an array page from KHO; a page
 * it cannot claim is fatal (BUG_ON in iommu_liveupdate_restore_array), returned as a message.
 * Hostile bytes: a cycle, a count beyond one page, a pointer outside memory.
 */
export function readList(memory: PhysMemory, first: number, objectSize: number, restore: (phys: number) => boolean): IncomingList | string {
  const objects: number[] = [];
  const pages: number[] = [];
  const seen = new Set<number>();
  let page = first;
  while (page !== 0) {
    if (page % PAGE_SIZE !== 0 || page < 0 || page >= memory.size) return `array page 0x${page.toString(16)} is not a page of RAM`;
    if (seen.has(page)) return `array page 0x${page.toString(16)} is linked twice`;
    seen.add(page);
    if (!restore(page)) return `array page 0x${page.toString(16)} was not preserved`;
    pages.push(page);
    const next = memory.readU64Number(page);
    const nr = memory.readU64Number(page + 8);
    if (nr > maxObjsPerPage(objectSize)) return `array page 0x${page.toString(16)} holds ${nr} objects (at most ${maxObjsPerPage(objectSize)})`;
    for (let i = 0; i < nr; i++) {
      const slot = page + iommuArrayHdrSer.size + i * objectSize;
      if (memory.readU32(slot + 4) & IOMMU_SER_FLAG_DELETED) continue;
      objects.push(slot);
    }
    page = next;
  }
  return { objects, pages };
}
