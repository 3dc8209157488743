/**
 * The outgoing pci_ser writers (v6 flat array, v7 kho_block set) and the incoming readers, which
 * read bytes alone and answer hostile input with a problem instead of an exception. Readers
 * are shared by the kernel (FLB retrieve) and by the tools' decoders.
 */
import { ErrnoError, KhoBlockSet, PAGE_SIZE, type Kernel } from '@liveupdate/sdk';
import type { PhysMemory } from '@liveupdate/hw';
import { pciDevKey, pciDevSer, pciSerV6, pciSerV7 } from './abi/pci.js';

export interface PciDevRecord {
  readonly domain: number;
  readonly bdf: number;
  refcount: number;
}

/** What the PCI core needs of an outgoing pci_ser, whatever its layout. */
export interface PciSerWriter {
  /** The FLB's data: physical address of struct pci_ser. */
  readonly phys: number;
  get(key: number): PciDevRecord | undefined;
  /** A new record (ENOSPC when full). */
  add(domain: number, bdf: number, refcount: number): void;
  setRefcount(key: number, refcount: number): void;
  /** refcount 0: the slot is zeroed and given back. */
  remove(key: number): void;
  readonly size: number;
  /** Bytes of handover metadata in use. */
  readonly metadataBytes: number;
  destroy(): void;
}

/** A u64 store as two u32 stores: hot paths avoid the BigInt conversion of a u64 store. */
function writeU64Words(mem: PhysMemory, at: number, v: number): void {
  mem.writeU32(at, v % 2 ** 32);
  mem.writeU32(at + 4, Math.floor(v / 2 ** 32));
}

/** Write one pci_dev_ser { u32 domain; u16 bdf; u16 refcount } as two little-endian words. */
function writeRecord(mem: PhysMemory, at: number, r: PciDevRecord): void {
  mem.writeU32(at, r.domain);
  mem.writeU32(at + 4, (r.bdf | (r.refcount << 16)) >>> 0);
}

/**
 * v6: struct pci_ser with devices[max_nr_devices] in one preserved allocation. Slots are reused:
 * a device's slot is zeroed when its refcount reaches 0, and nr_devices counts live slots.
 */
export class FlatPciSer implements PciSerWriter {
  readonly phys: number;
  private readonly slots = new Map<number, number>();
  private readonly records = new Map<number, PciDevRecord>();
  private readonly free: number[] = [];
  private used = 0;

  constructor(private readonly kernel: Kernel, readonly maxNrDevices: number) {
    const out = kernel.khoOut;
    if (!out) throw new ErrnoError('EOPNOTSUPP', 'pci_liveupdate_flb_preserve', 'KHO is disabled');
    this.phys = out.allocPreserve(pciSerV6.size + maxNrDevices * pciDevSer.size);
    this.writeHeader();
  }

  get size(): number { return this.records.size; }
  get metadataBytes(): number { return Math.max(PAGE_SIZE, 2 ** Math.ceil(Math.log2(Math.ceil((pciSerV6.size + this.maxNrDevices * pciDevSer.size) / PAGE_SIZE))) * PAGE_SIZE); }

  private writeHeader(): void {
    const mem = this.kernel.machine.memory;
    mem.writeU32(this.phys + pciSerV6.offsets.max_nr_devices, this.maxNrDevices);
    mem.writeU32(this.phys + pciSerV6.offsets.nr_devices, this.records.size);
  }

  private slotPhys(slot: number): number { return this.phys + pciSerV6.size + slot * pciDevSer.size; }

  get(key: number): PciDevRecord | undefined { return this.records.get(key); }

  add(domain: number, bdf: number, refcount: number): void {
    // pci_liveupdate_preserve: the array was sized at the first preserve; hot-plugged devices can run out.
    if (this.records.size === this.maxNrDevices) throw new ErrnoError('ENOSPC', 'pci_liveupdate_preserve', `${this.maxNrDevices} devices already preserved`);
    const slot = this.free.length > 0 ? (this.free.pop() as number) : this.used++;
    const r = { domain, bdf, refcount };
    const key = pciDevKey(domain, bdf);
    this.slots.set(key, slot);
    this.records.set(key, r);
    writeRecord(this.kernel.machine.memory, this.slotPhys(slot), r);
    this.kernel.machine.memory.writeU32(this.phys + pciSerV6.offsets.nr_devices, this.records.size);
  }

  setRefcount(key: number, refcount: number): void {
    const r = this.records.get(key);
    const slot = this.slots.get(key);
    if (!r || slot === undefined) return;
    r.refcount = refcount;
    writeRecord(this.kernel.machine.memory, this.slotPhys(slot), r);
  }

  remove(key: number): void {
    const slot = this.slots.get(key);
    if (slot === undefined) return;
    this.kernel.machine.memory.fill(this.slotPhys(slot), pciDevSer.size, 0);
    this.slots.delete(key);
    this.records.delete(key);
    this.free.push(slot);
    this.writeHeader();
  }

  destroy(): void { this.kernel.khoOut?.unpreserveFree(this.phys); }
}

/** v7: a 12-byte pci_ser pointing at a kho_block set of pci_dev_ser, kept dense (last record fills a hole). */
export class BlockPciSer implements PciSerWriter {
  readonly phys: number;
  private readonly set: KhoBlockSet;
  private readonly order: PciDevRecord[] = [];
  private readonly index = new Map<number, number>();

  constructor(private readonly kernel: Kernel) {
    const out = kernel.khoOut;
    if (!out) throw new ErrnoError('EOPNOTSUPP', 'pci_liveupdate_flb_preserve', 'KHO is disabled');
    this.phys = out.allocPreserve(pciSerV7.size);
    this.set = new KhoBlockSet(kernel.mm, pciDevSer.size, { out, in: null });
    this.writeHeader();
  }

  get size(): number { return this.order.length; }
  get metadataBytes(): number { return PAGE_SIZE + this.set.nblocks * PAGE_SIZE; }

  private writeHeader(): void {
    const mem = this.kernel.machine.memory;
    mem.writeU32(this.phys + pciSerV7.offsets.nr_devices, this.order.length);
    writeU64Words(mem, this.phys + pciSerV7.offsets.devices, this.set.headPa);
  }

  get(key: number): PciDevRecord | undefined {
    const i = this.index.get(key);
    return i === undefined ? undefined : this.order[i];
  }

  /** Write entry i in place and make its block's count cover it. */
  private put(i: number): void {
    const at = this.set.entryPhys(i);
    const r = this.order[i];
    if (at === undefined || !r) return;
    const mem = this.kernel.machine.memory;
    writeRecord(mem, at, r);
    const slot = i % this.set.countPerBlock;
    const block = at - 16 - slot * pciDevSer.size;
    if (mem.readU32(block + 8) < slot + 1) writeU64Words(mem, block + 8, slot + 1);
  }

  add(domain: number, bdf: number, refcount: number): void {
    this.set.grow(this.order.length + 1);
    const key = pciDevKey(domain, bdf);
    this.index.set(key, this.order.length);
    this.order.push({ domain, bdf, refcount });
    this.put(this.order.length - 1);
    this.writeHeader();
  }

  setRefcount(key: number, refcount: number): void {
    const i = this.index.get(key);
    if (i === undefined) return;
    (this.order[i] as PciDevRecord).refcount = refcount;
    this.put(i);
  }

  remove(key: number): void {
    const i = this.index.get(key);
    if (i === undefined) return;
    const lastIdx = this.order.length - 1;
    const last = this.order[lastIdx] as PciDevRecord;
    this.index.delete(key);
    if (i !== lastIdx) {
      this.order[i] = last;
      this.index.set(pciDevKey(last.domain, last.bdf), i);
      this.put(i);
    }
    this.order.pop();
    // The last block's count drops by one; an emptied block is given back.
    const at = this.set.entryPhys(lastIdx);
    if (at !== undefined) {
      const slot = lastIdx % this.set.countPerBlock;
      const mem = this.kernel.machine.memory;
      mem.fill(at, pciDevSer.size, 0);
      writeU64Words(mem, at - 16 - slot * pciDevSer.size + 8, slot);
    }
    this.set.shrink(this.order.length);
    this.writeHeader();
  }

  destroy(): void {
    this.set.destroy();
    this.kernel.khoOut?.unpreserveFree(this.phys);
  }
}

// ---- incoming: bytes alone ----------------------------------------------------------------

export interface PciSerRead {
  /** Live records (refcount > 0), in serialized order. */
  readonly devices: PciDevRecord[];
  readonly problems: string[];
  readonly fields: Record<string, number>;
  /** Pages the structure occupies: [pfn, count, role]. */
  readonly pages: Array<{ pfn: number; count: number; role: string }>;
}

const KHO_BLOCK_HDR = 16;
const KHO_MAX_BLOCKS = 10000;
const COUNT_PER_BLOCK = Math.floor((PAGE_SIZE - KHO_BLOCK_HDR) / pciDevSer.size);

function inRam(mem: PhysMemory, phys: number, len: number): boolean {
  return Number.isSafeInteger(phys) && phys > 0 && len >= 0 && phys + len <= mem.size;
}

/** Duplicate keys are an error at FLB retrieve (v6: "duplicate entries"), checked for both layouts. */
function checkDuplicates(devices: readonly PciDevRecord[], problems: string[]): void {
  const seen = new Set<number>();
  for (const d of devices) {
    const k = pciDevKey(d.domain, d.bdf);
    if (seen.has(k)) problems.push(`duplicate device ${d.domain.toString(16).padStart(4, '0')}:${(d.bdf >> 8).toString(16).padStart(2, '0')}:${((d.bdf >> 3) & 31).toString(16).padStart(2, '0')}.${d.bdf & 7}`);
    seen.add(k);
  }
}

/**
 * v6 pci_ser. `allocBytes` bounds the array when the caller knows the preserved allocation
 * (the kernel restored the folio); otherwise max_nr_devices is bounded by RAM and 2^16 pages.
 */
export function readPciSerV6(mem: PhysMemory, phys: number, allocBytes?: number): PciSerRead {
  const problems: string[] = [];
  const devices: PciDevRecord[] = [];
  if (!inRam(mem, phys, pciSerV6.size) || phys % PAGE_SIZE !== 0) {
    return { devices, problems: [`pci_ser at 0x${phys.toString(16)} is not a page of RAM`], fields: {}, pages: [] };
  }
  const hdr = pciSerV6.decode(mem.read(phys, pciSerV6.size));
  const fields = { max_nr_devices: hdr.max_nr_devices, nr_devices: hdr.nr_devices };
  const bytes = pciSerV6.size + hdr.max_nr_devices * pciDevSer.size;
  const limit = allocBytes ?? 2 ** 16 * PAGE_SIZE;
  const pages = [{ pfn: phys / PAGE_SIZE, count: Math.ceil(Math.min(bytes, limit) / PAGE_SIZE), role: 'pci_ser (v6 flat array)' }];
  if (bytes > limit || !inRam(mem, phys, bytes)) {
    problems.push(`max_nr_devices ${hdr.max_nr_devices} runs past the preserved allocation (${limit} bytes)`);
    return { devices, problems, fields, pages };
  }
  if (hdr.nr_devices > hdr.max_nr_devices) problems.push(`nr_devices ${hdr.nr_devices} > max_nr_devices ${hdr.max_nr_devices}`);
  const raw = mem.read(phys + pciSerV6.size, hdr.max_nr_devices * pciDevSer.size);
  for (let i = 0; i < hdr.max_nr_devices; i++) {
    const d = pciDevSer.decode(raw, i * pciDevSer.size);
    // A slot at refcount 0 is free (or a finished device): not incoming.
    if (d.refcount > 0) devices.push({ domain: d.domain, bdf: d.bdf, refcount: d.refcount });
  }
  if (devices.length !== hdr.nr_devices) problems.push(`nr_devices ${hdr.nr_devices} but ${devices.length} slots are in use`);
  checkDuplicates(devices, problems);
  return { devices, problems, fields, pages };
}

/** v7 pci_ser: the kho_block chain is walked with a visited set and KHO_MAX_BLOCKS, each count in 1..count_per_block. */
export function readPciSerV7(mem: PhysMemory, phys: number): PciSerRead {
  const problems: string[] = [];
  const devices: PciDevRecord[] = [];
  if (!inRam(mem, phys, pciSerV7.size)) return { devices, problems: [`pci_ser at 0x${phys.toString(16)} is outside RAM`], fields: {}, pages: [] };
  const hdr = pciSerV7.decode(mem.read(phys, pciSerV7.size));
  const head = hdr.devices;
  const fields = { nr_devices: hdr.nr_devices, devices: Number(head > BigInt(Number.MAX_SAFE_INTEGER) ? -1 : head) };
  const pages = [{ pfn: Math.floor(phys / PAGE_SIZE), count: 1, role: 'pci_ser (v7)' }];
  const seen = new Set<number>();
  let p = head > BigInt(Number.MAX_SAFE_INTEGER) ? -1 : Number(head);
  if (p === 0 && hdr.nr_devices !== 0) problems.push(`nr_devices ${hdr.nr_devices} with no block set`);
  while (p !== 0) {
    if (!inRam(mem, p, PAGE_SIZE) || p % PAGE_SIZE !== 0) { problems.push(`block 0x${p.toString(16)} is not a page of RAM`); break; }
    if (seen.has(p)) { problems.push('cycle in the block chain'); break; }
    if (seen.size >= KHO_MAX_BLOCKS) { problems.push(`more than ${KHO_MAX_BLOCKS} blocks`); break; }
    seen.add(p);
    pages.push({ pfn: p / PAGE_SIZE, count: 1, role: `pci_dev_ser block ${seen.size - 1}` });
    const count = mem.readU64(p + 8);
    if (count < 1n || count > BigInt(COUNT_PER_BLOCK)) { problems.push(`block 0x${p.toString(16)} count ${count} outside 1..${COUNT_PER_BLOCK}`); break; }
    const raw = mem.read(p + KHO_BLOCK_HDR, Number(count) * pciDevSer.size);
    for (let i = 0; i < Number(count); i++) {
      const d = pciDevSer.decode(raw, i * pciDevSer.size);
      devices.push({ domain: d.domain, bdf: d.bdf, refcount: d.refcount });
    }
    const next = mem.readU64(p);
    p = next > BigInt(Number.MAX_SAFE_INTEGER) ? -1 : Number(next);
  }
  if (problems.length === 0 && devices.length !== hdr.nr_devices) problems.push(`nr_devices ${hdr.nr_devices} but the block set holds ${devices.length}`);
  checkDuplicates(devices, problems);
  return { devices: devices.filter((d) => d.refcount > 0), problems, fields, pages };
}

