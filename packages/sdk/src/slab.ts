/**
 * KhoSlab: a preserved slab cache for small fixed-size records (PCI device records, IOMMU
 * device entries) that would waste a KHO xarray page or a vmalloc chunk each. Objects are
 * packed into preserved slab pages chained from a per-cache descriptor; an object's physical
 * address is stable across the kexec, so other structures may point at it. The incoming side
 * validates every page (bounded walk, cycle, bitmap against inuse, totals against the
 * descriptor) before it restores any, and refuses the cache as a whole with EINVAL.
 */
import { PAGE_SIZE } from '@liveupdate/hw';
import { ErrnoError, type Kernel } from '@liveupdate/runtime';
import { bitmapBytes, KHO_SLAB_MAGIC, khoSlabPageSer, khoSlabSer, objsPerSlab } from './abi/slab.js';

const HDR = khoSlabPageSer.size;
/** A descriptor naming more slabs than this is corrupt (256 GiB of 4 KiB slabs). */
const KHO_SLAB_MAX_SLABS = 1 << 26;

export class KhoSlab {
  readonly objsPerSlab: number;
  /** Slab pages in chain order. */
  private readonly slabs: number[] = [];
  private readonly inuse: number[] = [];
  /** Per slab: no free slot below this bitmap word (outgoing only). */
  private readonly hint: number[] = [];
  /** Slabs with a free slot (indices into `slabs`). */
  private readonly partial = new Set<number>();
  private objects = 0;
  private released = false;

  private constructor(
    private readonly kernel: Kernel,
    readonly name: string,
    readonly objSize: number,
    /** Physical address of the descriptor (kho_slab_ser). */
    readonly descPhys: number,
    readonly incoming: boolean,
  ) {
    this.objsPerSlab = objsPerSlab(objSize, PAGE_SIZE);
  }

  private static geometry(name: string, objSize: number): void {
    if (!Number.isInteger(objSize) || objSize < 1 || objsPerSlab(objSize, PAGE_SIZE) < 2) throw new ErrnoError('EINVAL', 'kho_slab_create', `object size ${objSize}`);
    if (new TextEncoder().encode(name).length >= 32) throw new ErrnoError('EINVAL', 'kho_slab_create', `name '${name}' is longer than 31 bytes`);
  }

  /** An empty outgoing cache; its descriptor is preserved at once. */
  static create(kernel: Kernel, name: string, objSize: number): KhoSlab {
    KhoSlab.geometry(name, objSize);
    const out = kernel.khoOut;
    if (!out) throw new ErrnoError('EOPNOTSUPP', 'kho_slab_create', 'KHO is disabled');
    const s = new KhoSlab(kernel, name, objSize, out.allocPreserve(khoSlabSer.size), false);
    s.writeDesc();
    return s;
  }

  get nrObjects(): number { return this.objects; }
  get nrSlabs(): number { return this.slabs.length; }
  /** Handover bytes: the descriptor page and every slab page. */
  get metadataBytes(): number { return PAGE_SIZE * (1 + this.slabs.length); }

  private get mem() { return this.kernel.machine.memory; }

  private writeDesc(): void {
    this.mem.write(this.descPhys, khoSlabSer.encode({
      magic: KHO_SLAB_MAGIC, obj_size: this.objSize, objs_per_slab: this.objsPerSlab, reserved: 0,
      nr_slabs: BigInt(this.slabs.length), nr_objects: BigInt(this.objects), first: BigInt(this.slabs[0] ?? 0), name: this.name,
    }));
  }

  /** nr_objects only, the common case of alloc and free: two u32 stores (a u64 store goes through BigInt). */
  private writeCount(): void {
    const at = this.descPhys + khoSlabSer.offsets.nr_objects;
    this.mem.writeU32(at, this.objects % 2 ** 32);
    this.mem.writeU32(at + 4, Math.floor(this.objects / 2 ** 32));
  }

  private objPhys(slab: number, slot: number): number {
    return slab + HDR + bitmapBytes(this.objsPerSlab) + slot * this.objSize;
  }

  /** kmem_cache_alloc: a zeroed object in a preserved page; returns its physical address. */
  alloc(): number {
    if (this.incoming) throw new ErrnoError('EINVAL', 'kho_slab_alloc', 'incoming cache');
    let i = this.partial.values().next().value;
    const grew = i === undefined;
    if (i === undefined) {
      const out = this.kernel.khoOut;
      if (!out) throw new ErrnoError('EOPNOTSUPP', 'kho_slab_alloc');
      const page = out.allocPreserve(PAGE_SIZE);
      const prev = this.slabs[this.slabs.length - 1];
      if (prev !== undefined) this.mem.writeU64(prev, page);
      this.slabs.push(page);
      this.inuse.push(0);
      this.hint.push(0);
      i = this.slabs.length - 1;
      this.partial.add(i);
    }
    const slab = this.slabs[i] as number;
    const slot = this.findFree(slab, i);
    this.setBit(slab, slot, true);
    const used = (this.inuse[i] as number) + 1;
    this.inuse[i] = used;
    this.mem.writeU32(slab + 8, used);
    if (used === this.objsPerSlab) this.partial.delete(i);
    this.objects++;
    if (grew) this.writeDesc(); else this.writeCount();
    const at = this.objPhys(slab, slot);
    this.mem.fill(at, this.objSize, 0);
    return at;
  }

  private findFree(slab: number, i: number): number {
    const words = bitmapBytes(this.objsPerSlab) / 4;
    for (let w = this.hint[i] ?? 0; w < words; w++) {
      const v = this.mem.readU32(slab + HDR + 4 * w);
      if (v === 0xffffffff) { this.hint[i] = w + 1; continue; }
      for (let b = 0; b < 32; b++) if (!(v & (1 << b))) { const slot = w * 32 + b; if (slot < this.objsPerSlab) return slot; }
    }
    throw new Error('kho_slab: a partial slab has no free slot');
  }

  private setBit(slab: number, slot: number, on: boolean): void {
    const at = slab + HDR + 4 * (slot >>> 5);
    const v = this.mem.readU32(at);
    this.mem.writeU32(at, (on ? v | (1 << (slot & 31)) : v & ~(1 << (slot & 31))) >>> 0);
  }

  private locate(phys: number, syscall: string): { i: number; slab: number; slot: number } {
    const slab = Math.floor(phys / PAGE_SIZE) * PAGE_SIZE;
    const i = this.slabs.indexOf(slab);
    const off = phys - slab - HDR - bitmapBytes(this.objsPerSlab);
    const slot = off / this.objSize;
    if (i < 0 || !Number.isInteger(slot) || slot < 0 || slot >= this.objsPerSlab) throw new ErrnoError('EINVAL', syscall, `0x${phys.toString(16)} is not an object of ${this.name}`);
    return { i, slab, slot };
  }

  /** kmem_cache_free. An emptied slab page leaves the chain and is unpreserved. */
  free(phys: number): void {
    if (this.incoming) throw new ErrnoError('EINVAL', 'kho_slab_free', 'incoming cache');
    const { i, slab, slot } = this.locate(phys, 'kho_slab_free');
    this.setBit(slab, slot, false);
    this.hint[i] = Math.min(this.hint[i] ?? 0, slot >>> 5);
    const used = (this.inuse[i] as number) - 1;
    this.inuse[i] = used;
    this.objects--;
    if (used > 0) {
      this.mem.writeU32(slab + 8, used);
      this.partial.add(i);
      this.writeCount();
      return;
    } else {
      const next = this.mem.readU64Number(slab);
      const prev = this.slabs[i - 1];
      if (prev !== undefined) this.mem.writeU64(prev, next);
      this.slabs.splice(i, 1);
      this.inuse.splice(i, 1);
      this.hint.splice(i, 1);
      this.partial.clear();
      this.inuse.forEach((u, k) => { if (u < this.objsPerSlab) this.partial.add(k); });
      this.kernel.khoOut?.unpreserveFree(slab);
    }
    this.writeDesc();
  }

  /** Every live object's physical address, slab by slab. */
  *objectsPhys(): IterableIterator<number> {
    const words = bitmapBytes(this.objsPerSlab) / 4;
    for (const slab of this.slabs) {
      for (let w = 0; w < words; w++) {
        const v = this.mem.readU32(slab + HDR + 4 * w);
        for (let b = 0; v !== 0 && b < 32; b++) if (v & (1 << b)) yield this.objPhys(slab, w * 32 + b);
      }
    }
  }

  /** Outgoing: unpreserve and free everything. Incoming: give the restored pages back (after finish). */
  destroy(): void {
    if (this.released) return;
    this.released = true;
    if (this.incoming) {
      for (const p of [this.descPhys, ...this.slabs]) this.kernel.mm.freePages(p / PAGE_SIZE, 0);
    } else {
      for (const p of this.slabs) this.kernel.khoOut?.unpreserveFree(p);
      this.kernel.khoOut?.unpreserveFree(this.descPhys);
    }
    this.slabs.length = 0;
  }

  /**
   * Restore a cache from the descriptor at `descPhys`, which the caller expects to hold
   * `objSize` objects. Everything is checked before any page is restored; any mismatch is
   * EINVAL with the reason, and nothing is restored.
   */
  static restore(kernel: Kernel, descPhys: number, objSize: number): KhoSlab {
    const bad = (why: string): never => {
      kernel.dmesg.log('err', 'kho_slab', `cache at 0x${descPhys.toString(16)} is corrupted: ${why}`);
      throw new ErrnoError('EINVAL', 'kho_slab_restore', why);
    };
    const mem = kernel.machine.memory;
    const kin = kernel.khoIn;
    if (!kin) throw new ErrnoError('ENOENT', 'kho_slab_restore', 'not a KHO boot');
    if (!Number.isSafeInteger(descPhys) || descPhys <= 0 || descPhys % PAGE_SIZE !== 0 || descPhys + PAGE_SIZE > mem.size) bad('descriptor is not a page of RAM');
    const d = khoSlabSer.decode(mem.read(descPhys, khoSlabSer.size));
    const per = objsPerSlab(objSize, PAGE_SIZE);
    if (d.magic !== KHO_SLAB_MAGIC) bad(`magic 0x${d.magic.toString(16)}`);
    if (d.obj_size !== objSize || d.objs_per_slab !== per || d.reserved !== 0) bad(`geometry ${d.obj_size}x${d.objs_per_slab}, expected ${objSize}x${per}`);
    if (d.nr_slabs > BigInt(KHO_SLAB_MAX_SLABS) || d.nr_objects > d.nr_slabs * BigInt(per)) bad(`${d.nr_objects} objects in ${d.nr_slabs} slabs`);
    const s = new KhoSlab(kernel, d.name, objSize, descPhys, true);
    const seen = new Set<number>();
    let total = 0;
    const words = bitmapBytes(per) / 4;
    for (let p = d.first; p !== 0n;) {
      if (seen.size >= Number(d.nr_slabs)) bad(`more slab pages than nr_slabs ${d.nr_slabs}`);
      const at = Number(p);
      if (p > BigInt(mem.size - PAGE_SIZE) || at % PAGE_SIZE !== 0 || at === descPhys) bad(`slab 0x${p.toString(16)} is not a page of RAM`);
      if (seen.has(at)) bad('cycle in the slab chain');
      seen.add(at);
      const h = khoSlabPageSer.decode(mem.read(at, HDR));
      let bits = 0;
      for (let w = 0; w < words; w++) {
        let v = mem.readU32(at + HDR + 4 * w);
        // Bits past objs_per_slab must be clear.
        if (w === words - 1 && per % 32 !== 0 && (v >>> (per % 32)) !== 0) bad(`slab 0x${at.toString(16)}: bitmap marks slots past ${per}`);
        for (; v !== 0; v &= v - 1) bits++;
      }
      if (h.inuse === 0 || h.inuse !== bits || h.reserved !== 0) bad(`slab 0x${at.toString(16)}: inuse ${h.inuse}, bitmap ${bits}`);
      s.slabs.push(at);
      s.inuse.push(h.inuse);
      total += h.inuse;
      p = h.next;
    }
    if (s.slabs.length !== Number(d.nr_slabs)) bad(`nr_slabs ${d.nr_slabs}, chain has ${s.slabs.length}`);
    if (total !== Number(d.nr_objects)) bad(`nr_objects ${d.nr_objects}, slabs hold ${total}`);
    // Every page must be one KHO preserved: restore them all, or give back what was restored.
    const restored: number[] = [];
    for (const p of [descPhys, ...s.slabs]) {
      const f = kin.restoreFolio(p);
      if (!f || f.order !== 0) {
        for (const r of restored) kernel.mm.freePages(r / PAGE_SIZE, 0);
        if (f) kernel.mm.freePages(f.pfn, f.order);
        bad(`page 0x${p.toString(16)} was not preserved as one page`);
      }
      restored.push(p);
    }
    s.objects = total;
    return s;
  }
}
