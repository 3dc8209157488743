/**
 * /dev/iommu: an iommufd context with its objects (drivers/iommu/iommufd/main.c, ioas.c,
 * hw_pagetable.c, device.c): IOAS with their areas, paging HWPTs (each a domain on one unit)
 * and bound devices, plus the live-update mark (the series' liveupdate.c).
 */
import { ErrnoError, Inode, KFile, PAGE_SIZE, type FileOperations, type Kernel, type Process } from '@liveupdate/sdk';
import { IommuCore, type IommuDevice, type IommuDomain } from '../core.js';
import { IOMMU_IOAS_MAP_FIXED_IOVA, IOMMU_IOAS_MAP_READABLE, IOMMU_IOAS_MAP_WRITEABLE } from '../abi/uapi.js';
import { IOMMU_READ, IOMMU_WRITE } from '../vtd/pgtable.js';
import { memfdPinRuns, memfdSeals, memfdSize } from '@liveupdate/plugin-memfd';

export interface IoasArea {
  readonly iova: number;
  readonly length: number;
  readonly flags: number;
  /** IOPT_ADDRESS_FILE: the file and the offset; anonymous memory has file null. */
  readonly file: KFile | null;
  readonly start: number;
  /** pages->seals: the file's seals when it was mapped. */
  readonly seals: number;
  /** Physical runs pinned for it. */
  readonly runs: ReadonlyArray<readonly [number, number]>;
}

export class Ioas {
  readonly kind = 'ioas';
  readonly areas: IoasArea[] = [];
  readonly hwpts = new Set<Hwpt>();
  /** iopt.liveupdate_immutable */
  immutable = false;
  constructor(readonly id: number) {}
}

export class Hwpt {
  readonly kind = 'hwpt';
  /** The token it was marked with (liveupdate_tokens), null if not marked. */
  luToken: bigint | null = null;
  /** Domain preserved for LUO (liveupdate_preserved). */
  preserved = false;
  readonly devices = new Set<BoundDevice>();
  constructor(readonly id: number, readonly ioas: Ioas, public domain: IommuDomain | null) {}
}

export class BoundDevice {
  readonly kind = 'device';
  hwpt: Hwpt | null = null;
  constructor(readonly id: number, readonly dev: IommuDevice, readonly owner: unknown) {}
}

type IommufdObject = Ioas | Hwpt | BoundDevice;

export class IommufdCtx {
  readonly objects = new Map<number, IommufdObject>();
  private nextId = 1;
  /** Preserved by LUO right now (the handler's state). */
  preservedToken: bigint | null = null;
  /** Retrieved from a handover (the newer format): its HWPTs sit on restored domains. */
  readonly retrieved: boolean;

  constructor(readonly kernel: Kernel, readonly core: IommuCore, retrieved = false) {
    this.retrieved = retrieved;
  }

  private add<T extends IommufdObject>(make: (id: number) => T): T {
    const o = make(this.nextId++);
    this.objects.set(o.id, o);
    return o;
  }

  get<K extends IommufdObject['kind']>(id: number, kind: K, syscall: string): Extract<IommufdObject, { kind: K }> {
    const o = this.objects.get(id);
    if (!o || o.kind !== kind) throw new ErrnoError('ENOENT', syscall, `no ${kind} with id ${id}`);
    return o as Extract<IommufdObject, { kind: K }>;
  }

  markedHwpts(): Hwpt[] {
    return [...this.objects.values()].filter((o): o is Hwpt => o.kind === 'hwpt' && o.luToken !== null);
  }

  ioasAlloc(): Ioas { return this.add((id) => new Ioas(id)); }

  /** A HWPT rebuilt from a handover (retrieve of the newer format): it gets this context's next ID. */
  adoptHwpt(h: Hwpt): Hwpt {
    const adopted = this.add((id) => new Hwpt(id, h.ioas, h.domain));
    adopted.luToken = h.luToken;
    h.ioas.hwpts.add(adopted);
    return adopted;
  }

  hwptByToken(token: bigint): Hwpt | undefined {
    return this.markedHwpts().find((h) => h.luToken === token);
  }

  private protOf(flags: number): number {
    return ((flags & IOMMU_IOAS_MAP_READABLE) ? IOMMU_READ : 0) | ((flags & IOMMU_IOAS_MAP_WRITEABLE) ? IOMMU_WRITE : 0);
  }

  private pickIova(ioas: Ioas, flags: number, iova: number, length: number): number {
    if (flags & IOMMU_IOAS_MAP_FIXED_IOVA) {
      if (iova % PAGE_SIZE) throw new ErrnoError('EINVAL', 'iommu_ioas_map', 'unaligned iova');
      for (const a of ioas.areas) if (iova < a.iova + a.length && a.iova < iova + length) throw new ErrnoError('EEXIST', 'iommu_ioas_map', 'iova in use');
      return iova;
    }
    const end = ioas.areas.reduce((m, a) => Math.max(m, a.iova + a.length), 0);
    return Math.ceil(Math.max(end, 2 ** 21) / 2 ** 21) * 2 ** 21;
  }

  private addArea(ioas: Ioas, area: IoasArea): void {
    const done: IommuDomain[] = [];
    try {
      for (const h of ioas.hwpts) {
        if (!h.domain) continue;
        this.mapInto(h.domain, area);
        done.push(h.domain);
      }
    } catch (e) {
      for (const d of done) d.table.unmap(area.iova, area.length);
      throw e;
    }
    ioas.areas.push(area);
  }

  mapInto(domain: IommuDomain, area: IoasArea): void {
    let off = 0;
    for (const [phys, bytes] of area.runs) {
      domain.table.map(area.iova + off, phys, bytes, this.protOf(area.flags));
      off += bytes;
    }
  }

  private checkMutable(ioas: Ioas, syscall: string): void {
    // The IOAS is immutable while a HWPT on it is preserved: its mappings cannot change.
    if (ioas.immutable) throw new ErrnoError('EBUSY', syscall, `IOAS ${ioas.id} is preserved for live update`);
  }

  /** IOMMU_IOAS_MAP_FILE */
  mapFile(ioasId: number, flags: number, file: KFile, start: number, length: number, iova: number): number {
    const ioas = this.get(ioasId, 'ioas', 'iommu_ioas_map_file');
    if (flags & ~(IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE)) throw new ErrnoError('EOPNOTSUPP', 'iommu_ioas_map_file');
    if (!length || start % PAGE_SIZE || length % PAGE_SIZE) throw new ErrnoError('EINVAL', 'iommu_ioas_map_file');
    this.checkMutable(ioas, 'iommu_ioas_map_file');
    const seals = memfdSeals(file);
    // Only pages of the file can be pinned: a range beyond its end is EINVAL.
    if (start + length > memfdSize(file)) throw new ErrnoError('EINVAL', 'iommu_ioas_map_file', 'beyond the end of the file');
    const at = this.pickIova(ioas, flags, iova, length);
    const runs = memfdPinRuns(file, start, length);
    file.get();
    try {
      this.addArea(ioas, { iova: at, length, flags, file, start, seals, runs });
    } catch (e) {
      file.put();
      throw e;
    }
    return at;
  }

  /** IOMMU_IOAS_MAP of anonymous user memory: pinned pages that no file owns (gone after a kexec). */
  mapAnonymous(ioasId: number, flags: number, length: number, iova: number): number {
    const ioas = this.get(ioasId, 'ioas', 'iommu_ioas_map');
    if (!length || length % PAGE_SIZE) throw new ErrnoError('EINVAL', 'iommu_ioas_map');
    this.checkMutable(ioas, 'iommu_ioas_map');
    const at = this.pickIova(ioas, flags, iova, length);
    const runs: Array<[number, number]> = [];
    for (let off = 0; off < length; off += PAGE_SIZE) {
      const pfn = this.kernel.mm.allocZeroedPages(0);
      if (pfn === null) throw new ErrnoError('ENOMEM', 'iommu_ioas_map');
      runs.push([pfn * PAGE_SIZE, PAGE_SIZE]);
    }
    this.addArea(ioas, { iova: at, length, flags, file: null, start: 0, seals: 0, runs });
    return at;
  }

  /** IOMMU_IOAS_UNMAP of whole areas inside [iova, iova + length). */
  unmap(ioasId: number, iova: number, length: number): number {
    const ioas = this.get(ioasId, 'ioas', 'iommu_ioas_unmap');
    this.checkMutable(ioas, 'iommu_ioas_unmap');
    let unmapped = 0;
    for (const a of [...ioas.areas]) {
      if (a.iova < iova || a.iova + a.length > iova + length) continue;
      for (const h of ioas.hwpts) h.domain?.table.unmap(a.iova, a.length);
      ioas.areas.splice(ioas.areas.indexOf(a), 1);
      a.file?.put();
      unmapped += a.length;
    }
    if (unmapped === 0) throw new ErrnoError('ENOENT', 'iommu_ioas_unmap');
    return unmapped;
  }

  /** IOMMU_HWPT_ALLOC: a paging domain on the device's unit, holding every area of the IOAS. */
  hwptAlloc(devId: number, ptId: number): Hwpt {
    const bd = this.get(devId, 'device', 'iommu_hwpt_alloc');
    const ioas = this.get(ptId, 'ioas', 'iommu_hwpt_alloc');
    const domain = this.core.domainAlloc(bd.dev.unit);
    try {
      for (const a of ioas.areas) this.mapInto(domain, a);
    } catch (e) {
      this.core.domainFree(domain);
      throw e;
    }
    const h = this.add((id) => new Hwpt(id, ioas, domain));
    ioas.hwpts.add(h);
    return h;
  }

  /**
   * IOMMU_HWPT_LU_MARK_PRESERVE: unknown (or non-paging) HWPT → ENOENT; a token another marked
   * HWPT of this iommufd uses → EADDRINUSE. There is no unmark.
   */
  markPreserve(hwptId: number, token: bigint): void {
    const h = this.get(hwptId, 'hwpt', 'iommu_hwpt_lu_mark_preserve');
    for (const o of this.markedHwpts()) if (o !== h && o.luToken === token) throw new ErrnoError('EADDRINUSE', 'iommu_hwpt_lu_mark_preserve', `token ${token}`);
    h.luToken = token;
  }

  /** IOMMU_DESTROY */
  destroy(id: number): void {
    const o = this.objects.get(id);
    if (!o) throw new ErrnoError('ENOENT', 'iommu_destroy');
    if (o.kind === 'ioas') {
      if (o.hwpts.size > 0) throw new ErrnoError('EBUSY', 'iommu_destroy');
      for (const a of o.areas) a.file?.put();
    } else if (o.kind === 'hwpt') {
      // A marked HWPT is referenced by the token table until the iommufd goes away.
      if (o.luToken !== null || o.devices.size > 0) throw new ErrnoError('EBUSY', 'iommu_destroy');
      o.ioas.hwpts.delete(o);
      if (o.domain) this.core.domainFree(o.domain);
    } else {
      throw new ErrnoError('EINVAL', 'iommu_destroy', 'devices are unbound by closing their file');
    }
    this.objects.delete(id);
  }

  // ---- devices (called from a VFIO cdev) -----------------------------------------------------

  bind(dev: IommuDevice, owner: unknown): BoundDevice {
    // iommu_device_claim_dma_owner: another owner holds it → EBUSY.
    if (dev.owner !== null && dev.owner !== owner) throw new ErrnoError('EBUSY', 'iommufd_device_bind', `${dev.info.name} has another DMA owner`);
    dev.owner = owner;
    return this.add((id) => new BoundDevice(id, dev, owner));
  }

  unbind(bd: BoundDevice): void {
    if (bd.hwpt) this.detach(bd);
    if (bd.dev.owner === bd.owner) bd.dev.owner = null;
    this.objects.delete(bd.id);
  }

  attach(bd: BoundDevice, hwpt: Hwpt): void {
    // iommufd_device_is_preserved: a preserved device cannot change its attachment.
    if (bd.dev.preservedRecord) throw new ErrnoError('EBUSY', 'iommufd_device_attach', `${bd.dev.info.name} is preserved`);
    if (!hwpt.domain) throw new ErrnoError('EINVAL', 'iommufd_device_attach');
    if (bd.hwpt) this.detach(bd);
    this.core.attach(bd.dev, hwpt.domain);
    bd.hwpt = hwpt;
    hwpt.devices.add(bd);
  }

  detach(bd: BoundDevice): void {
    if (bd.dev.preservedRecord) throw new ErrnoError('EBUSY', 'iommufd_device_detach', `${bd.dev.info.name} is preserved`);
    if (!bd.hwpt) return;
    this.core.detach(bd.dev);
    bd.hwpt.devices.delete(bd);
    bd.hwpt = null;
  }

  /** Last close of /dev/iommu. */
  release(): void {
    for (const o of [...this.objects.values()]) if (o.kind === 'device') this.unbind(o);
    for (const o of [...this.objects.values()]) if (o.kind === 'hwpt') { o.luToken = null; o.ioas.hwpts.delete(o); if (o.domain && o.domain.attached === 0 && !o.domain.restoredFrom) this.core.domainFree(o.domain); }
    for (const o of [...this.objects.values()]) if (o.kind === 'ioas') for (const a of o.areas) a.file?.put();
    this.objects.clear();
  }
}

export function isIommufd(file: KFile): boolean { return file.privateData instanceof IommufdCtx; }

export function ictxOf(file: KFile, syscall: string): IommufdCtx {
  if (!(file.privateData instanceof IommufdCtx)) throw new ErrnoError('EBADF', syscall, 'not an iommufd');
  return file.privateData;
}

export function iommufdFile(kernel: Kernel, ictx: IommufdCtx, fops: FileOperations): KFile {
  return new KFile(fops, new Inode(ictx), ictx, 0o2, kernel.id);
}

export type { Process };
