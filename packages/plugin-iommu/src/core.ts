/**
 * The IOMMU core in one kernel (drivers/iommu/iommu.c with the series' drivers/iommu/liveupdate.c):
 * units, paging domains, devices and their DMA ownership, and the live-update operations
 * iommu_preserve_domain / iommu_preserve_device with the hardware record refcounted per device.
 * One instance per kernel; nothing here crosses the kexec but the bytes it writes.
 */
import { dmarOf } from '@liveupdate/hw';
import { ErrnoError, KernelPanic, PAGE_SIZE, type Kernel } from '@liveupdate/sdk';
import {
  IOMMU_INTEL, IOMMU_SER_FLAG_INCOMING, iommuDeviceSer, iommuDeviceSerV1, iommuDomainSer, iommuHwSer, iommuHwSerV1, type IommuFlbVariant,
} from './abi/iommu.js';
import { FlbOut } from './flb-arrays.js';
import type { FlbIn } from './flb-incoming.js';
import { IntelIommu } from './vtd/intel.js';
import { IoPageTable } from './vtd/pgtable.js';


/** A paging domain (struct iommu_domain with its VT-d second-level table). */
export class IommuDomain {
  /** Domain ID per unit it is attached through. */
  readonly dids = new Map<IntelIommu, number>();
  /** Phys of its iommu_domain_ser while preserved (domain->preserved_state), else 0. */
  preservedRecord = 0;
  /** Phys of the incoming record it was restored from, else 0. */
  restoredFrom = 0;
  attached = 0;
  constructor(readonly id: number, readonly unit: IntelIommu, readonly table: IoPageTable) {}
}

/** What a bus driver tells the IOMMU core about a device (iommu_probe_device). */
export interface IommuDeviceInfo {
  readonly segment: number;
  /** bus << 8 | devfn */
  readonly rid: number;
  /** dev_is_pci */
  readonly isPci: boolean;
  readonly name: string;
}

/** struct dev_iommu, reduced: the unit, the attached domain, the DMA owner, the preserved record. */
export class IommuDevice {
  domain: IommuDomain | null = null;
  /** iommu_group's DMA owner (iommufd, a restored-state claim), null when the kernel's default driver owns it. */
  owner: unknown = null;
  /** Phys of its iommu_device_ser while preserved, else 0. */
  preservedRecord = 0;
  /** The incoming record this device was restored from (its preserved DID), else null. */
  restored: { readonly record: number; readonly did: number; readonly domainRecord: number } | null = null;
  constructor(readonly info: IommuDeviceInfo, readonly unit: IntelIommu) {}
}

/** Owner value of a restored device's DMA ownership until userspace retrieves it. */
export const RESTORED_OWNER = Symbol('iommu-liveupdate-restored');

export class IommuCore {
  readonly units: IntelIommu[] = [];
  readonly devices = new Map<string, IommuDevice>();
  private nextDomainId = 1;
  /** Incoming FLB parsed at IOMMU init (null: none handed over). */
  incoming: FlbIn | null = null;
  /**
   * Incoming iommufd files still holding an FLB of the variant this build does not register
   * (read at IOMMU init all the same): the last one to finish releases its pages, as the FLB's
   * own finish would.
   */
  foreignFlbRefs = 0;
  /** The outgoing FLB object, once the first iommufd was preserved. */
  flbOutgoing: () => FlbOut | undefined = () => undefined;

  constructor(readonly kernel: Kernel, readonly variant: IommuFlbVariant) {}

  static key(segment: number, rid: number): string { return `${segment}:${rid}`; }

  unitFor(segment: number, rid: number): IntelIommu | undefined {
    const hw = dmarOf(this.kernel.machine).unitFor(segment, rid);
    return hw ? this.units.find((u) => u.hw === hw) : undefined;
  }

  /** Table pages come from the page allocator (never scratch, so they can be preserved). */
  readonly tablePages = {
    alloc: (): number | null => {
      const pfn = this.kernel.mm.allocZeroedPages(0);
      if (pfn !== null) this.kernel.machine.memory.fill(pfn * PAGE_SIZE, PAGE_SIZE, 0);
      return pfn;
    },
    free: (pfn: number): void => this.kernel.mm.freePages(pfn, 0),
  };

  domainAlloc(unit: IntelIommu): IommuDomain {
    return new IommuDomain(this.nextDomainId++, unit, IoPageTable.create(this.kernel.machine.memory, this.tablePages));
  }

  domainFree(d: IommuDomain): void {
    if (d.attached > 0) throw new ErrnoError('EBUSY', 'iommu_domain_free');
    for (const [unit, did] of d.dids) unit.dids.delete(did);
    d.table.freeAll();
  }

  /** iommu_probe_device */
  probeDevice(info: IommuDeviceInfo): IommuDevice {
    const key = IommuCore.key(info.segment, info.rid);
    const have = this.devices.get(key);
    if (have) return have;
    const unit = this.unitFor(info.segment, info.rid);
    if (!unit) throw new ErrnoError('ENODEV', 'iommu_probe_device', `${info.name}: no remapping unit covers it`);
    const dev = new IommuDevice(info, unit);
    this.devices.set(key, dev);
    this.restoreDevice(dev);
    return dev;
  }

  /** iommu_attach_device: the context entry now points at the domain. */
  attach(dev: IommuDevice, domain: IommuDomain): void {
    if (domain.unit !== dev.unit) throw new ErrnoError('EINVAL', 'iommu_attach_device', 'domain of another unit');
    if (dev.domain === domain) return;
    let did = domain.dids.get(dev.unit);
    if (did === undefined) { did = dev.unit.allocDid(); domain.dids.set(dev.unit, did); }
    if (dev.domain) this.detach(dev);
    dev.unit.setContext(dev.info.rid, domain.table.topPhys, domain.table.levels, did);
    dev.domain = domain;
    domain.attached++;
  }

  detach(dev: IommuDevice): void {
    const d = dev.domain;
    if (!d) return;
    dev.unit.clearContext(dev.info.rid);
    dev.domain = null;
    d.attached--;
  }

  // ---- outgoing: domains ------------------------------------------------------------------

  private flb(syscall: string): FlbOut {
    const f = this.flbOutgoing();
    // liveupdate_flb_get_outgoing fails when no dependent file (iommufd) was preserved yet.
    if (!f) throw new ErrnoError('ENOENT', syscall, 'IOMMU FLB not preserved');
    return f;
  }

  /** iommu_preserve_domain: a record, then every table page preserved (generic_pt preserve). */
  preserveDomain(d: IommuDomain): number {
    const flb = this.flb('iommu_preserve_domain');
    // A domain already preserved: EBUSY (domain->preserved_state).
    if (d.preservedRecord) throw new ErrnoError('EBUSY', 'iommu_preserve_domain');
    const slot = flb.alloc('domain');
    const out = this.kernel.khoOut;
    const done: number[] = [];
    try {
      for (const pfn of d.table.tablePfns()) { out?.preserveFolio(pfn, 0); done.push(pfn); }
    } catch (e) {
      for (const pfn of done) out?.unpreserveFolio(pfn, 0);
      flb.markDeleted(slot);
      throw e;
    }
    this.kernel.machine.memory.write(slot, iommuDomainSer.encode({
      ref_count: 1, flags: 0, top_table_phys: BigInt(d.table.topPhys), top_level: BigInt(d.table.topLevel), vasz: d.table.vasz, sign_extend: 0, restored_domain: 0n,
    }));
    d.preservedRecord = slot;
    return slot;
  }

  /** iommu_unpreserve_domain: no check for attached devices (the session tears everything down). */
  unpreserveDomain(d: IommuDomain): void {
    const flb = this.flbOutgoing();
    if (!flb || !d.preservedRecord) return;
    for (const pfn of d.table.tablePfns()) this.kernel.khoOut?.unpreserveFolio(pfn, 0);
    flb.markDeleted(d.preservedRecord);
    d.preservedRecord = 0;
  }

  // ---- outgoing: devices and hardware ---------------------------------------------------------

  /** iommu_preserve_locked: the unit's hw record, refcounted per device. */
  private preserveUnit(unit: IntelIommu, flb: FlbOut): void {
    if (unit.outgoingRecord) {
      flb.setRefCount(unit.outgoingRecord, flb.refCount(unit.outgoingRecord) + 1);
      return;
    }
    const slot = flb.alloc('iommu');
    try {
      unit.preserveRoot();
    } catch (e) {
      flb.markDeleted(slot);
      throw e;
    }
    this.writeHwRecord(unit, slot, flb);
    unit.outgoingRecord = slot;
  }

  private writeHwRecord(unit: IntelIommu, slot: number, flb: FlbOut): void {
    const refCount = flb.refCount(slot);
    const bytes = flb.layout.variant === 'iommu-liveupdate'
      ? iommuHwSer.encode({ ref_count: refCount, flags: 0, token: BigInt(unit.token), type: BigInt(IOMMU_INTEL) })
      : iommuHwSerV1.encode({
        ref_count: refCount, flags: 0, token: BigInt(unit.token), type: BigInt(IOMMU_INTEL),
        restored: 0, phys_addr: BigInt(unit.token), root_table: BigInt(unit.rootPfn * PAGE_SIZE), context_tables_bitmap: unit.contextBitmapBytes(),
      });
    this.kernel.machine.memory.write(slot, bytes);
  }

  private unpreserveUnit(unit: IntelIommu, flb: FlbOut): void {
    const slot = unit.outgoingRecord;
    if (!slot) return;
    const n = flb.refCount(slot) - 1;
    flb.setRefCount(slot, n);
    if (n > 0) return;
    unit.outgoingRecord = 0;
    unit.unpreserveAll();
    flb.markDeleted(slot);
  }

  /**
   * iommu_preserve_device, in the posted order: a PCI device (EOPNOTSUPP), DMA ownership
   * claimed (EINVAL), the FLB (its error), the domain preserved (EINVAL), not already
   * preserved (EBUSY); then the device record, the unit's hw record, the VT-d state (context
   * tables, the DID as attachment_id). Every failure undoes what came before it.
   */
  preserveDevice(domain: IommuDomain, dev: IommuDevice): number {
    if (!dev.info.isPci) throw new ErrnoError('EOPNOTSUPP', 'iommu_preserve_device', `${dev.info.name} is not a PCI device`);
    if (dev.owner === null) throw new ErrnoError('EINVAL', 'iommu_preserve_device', 'DMA ownership not claimed');
    const flb = this.flb('iommu_preserve_device');
    if (!domain.preservedRecord) throw new ErrnoError('EINVAL', 'iommu_preserve_device', 'domain not preserved');
    if (dev.preservedRecord) throw new ErrnoError('EBUSY', 'iommu_preserve_device', `${dev.info.name} already preserved`);
    const slot = flb.alloc('device');
    try {
      this.preserveUnit(dev.unit, flb);
    } catch (e) {
      flb.markDeleted(slot);
      throw e;
    }
    try {
      // intel_iommu_preserve_device: the device must be attached (info->domain).
      if (dev.domain !== domain) throw new ErrnoError('EINVAL', 'intel_iommu_preserve_device', 'not attached to the domain');
      dev.unit.preserveContextTables();
    } catch (e) {
      flb.markDeleted(slot);
      this.unpreserveUnit(dev.unit, flb);
      throw e;
    }
    const did = domain.dids.get(dev.unit) ?? 0;
    const fields = {
      ref_count: 1, flags: 0, devid: dev.info.rid, pci_domain_nr: dev.info.segment,
      attachment_id: BigInt(did), domain_phys: BigInt(domain.preservedRecord), iommu_phys: BigInt(dev.unit.outgoingRecord),
    };
    this.kernel.machine.memory.write(slot, flb.layout.variant === 'iommu-liveupdate'
      ? iommuDeviceSer.encode(fields)
      : iommuDeviceSerV1.encode({ ...fields, pasid_table: 0n, max_pasid: 0n }));
    // The VT-d variant's hw record carries the bitmap of preserved context tables: rewrite it.
    this.writeHwRecord(dev.unit, dev.unit.outgoingRecord, flb);
    dev.preservedRecord = slot;
    return slot;
  }

  /** iommu_unpreserve_device */
  unpreserveDevice(dev: IommuDevice): void {
    const flb = this.flbOutgoing();
    if (!flb || !dev.preservedRecord) return;
    flb.markDeleted(dev.preservedRecord);
    dev.preservedRecord = 0;
    this.unpreserveUnit(dev.unit, flb);
  }

  // ---- shutdown -------------------------------------------------------------------------------

  /**
   * intel_iommu_shutdown at kexec: a unit holding preserved state keeps translating, with the
   * context entries of every unpreserved device and the root entries of unpreserved context
   * tables cleared; a unit with nothing preserved has translation disabled, as on any kexec.
   */
  shutdown(): void {
    for (const unit of this.units) {
      if (unit.outgoingRecord) {
        const unpreserved: number[] = [];
        for (const dev of this.devices.values()) if (dev.unit === unit && !dev.preservedRecord) unpreserved.push(dev.info.rid);
        unit.clearUnpreserved(unpreserved);
      } else {
        unit.hw.setTranslationEnabled(false);
      }
    }
  }

  // ---- incoming -----------------------------------------------------------------------------

  /** At probe: a device with a preserved record is re-attached to its restored domain with its preserved DID. */
  private restoreDevice(dev: IommuDevice): void {
    const inc = this.incoming;
    if (!inc) return;
    const rec = inc.devices.find((d) => d.devid === dev.info.rid && d.segment === dev.info.segment);
    if (!rec) return;
    const hw = inc.hw.find((h) => h.phys === rec.iommuPhys);
    if (!hw || hw.token !== dev.unit.token) return;
    const domain = this.restoreDomain(rec.domainPhys, dev.unit);
    if (typeof domain === 'string') throw new KernelPanic(`iommu: Failed to restore the domain of ${dev.info.name}: ${domain}`);
    const ctx = dev.unit.readContext(dev.info.rid);
    if (!ctx || ctx.did !== rec.did || ctx.top !== domain.table.topPhys) {
      throw new KernelPanic(`iommu: preserved context entry of ${dev.info.name} does not match its record`);
    }
    // domain_reattach_iommu: the DID must be one reserved at IOMMU init.
    if (!dev.unit.dids.has(rec.did)) throw new KernelPanic(`iommu: preserved DID ${rec.did} of ${dev.info.name} was not reserved`);
    domain.dids.set(dev.unit, rec.did);
    dev.domain = domain;
    domain.attached++;
    dev.restored = { record: rec.phys, did: rec.did, domainRecord: rec.domainPhys };
    // iommu_group_claim_dma_owner: blocked for every other driver until userspace retrieves it.
    dev.owner = RESTORED_OWNER;
  }

  private readonly restoredDomains = new Map<number, IommuDomain>();

  /** The domain of an incoming domain record (restored once, shared by its devices). */
  restoreDomain(recordPhys: number, unit: IntelIommu): IommuDomain | string {
    const have = this.restoredDomains.get(recordPhys);
    if (have) return have;
    const inc = this.incoming;
    const rec = inc?.domains.find((d) => d.phys === recordPhys);
    if (!inc || !rec) return `no domain record at 0x${recordPhys.toString(16)}`;
    const table = IoPageTable.adopt(this.kernel.machine.memory, rec.topPhys, rec.topLevel + 1,
      (pfn) => this.kernel.khoIn?.restoreFolio(pfn * PAGE_SIZE) !== null && this.kernel.khoIn !== null, this.tablePages);
    if (typeof table === 'string') return table;
    const d = new IommuDomain(this.nextDomainId++, unit, table);
    d.restoredFrom = recordPhys;
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, IOMMU_SER_FLAG_INCOMING, true);
    this.kernel.machine.memory.write(recordPhys + 4, b);
    this.restoredDomains.set(recordPhys, d);
    return d;
  }

  get restoredDomainList(): readonly IommuDomain[] { return [...this.restoredDomains.values()]; }

  /** iommu_liveupdate_flb_finish for an incoming FLB: folio_put of every array page and the header. */
  releaseIncoming(): void {
    const inc = this.incoming;
    if (!inc) return;
    for (const p of inc.pages) this.kernel.mm.freePages(p / PAGE_SIZE, 0);
    this.incoming = null;
  }
}
