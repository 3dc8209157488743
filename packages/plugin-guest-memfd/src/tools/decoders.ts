/**
 * Decoders of the handover from bytes alone (inspect, report, dumps, fuzz targets): they never
 * throw on hostile bytes; every anomaly is a problem. Pages they return are the metadata an
 * object owns (headers, vmalloc chunks and record pages, xarray nodes); dataRuns the folios.
 */
import { PAGE_SIZE, type PhysMemory } from '@liveupdate/hw';
import { defineDecoder, xarrayAbi, type Decoded, type DecodeContext, type DecodedValue, type FormatDecoder, type OwnedPages } from '@liveupdate/sdk';
import { semver } from '@liveupdate/sdk';
import { KVM_VM_TYPES_MODELED } from '../abi/kvm.js';
import {
  GMEM_V2_HEADER_CRC_BYTES, GUEST_MEMFD_FAMILY, GUEST_MEMFD_LUO_FOLIO_UPTODATE, KVM_KHO_FOLIO_PA_BYTES, KVM_VCPU_FAMILY, KVM_VM_FAMILY,
  guestMemfdLuoFolioSer, guestMemfdLuoSer, guestMemfdLuoSerV2, guestMemfdLuoSerV2_1, kvmKhoFoliosSer, kvmLuoSer, kvmVcpuSer,
} from '../abi/luo.js';
import { crc32 } from '../crc32.js';
import { GMEM_LUO_FLAGS, gmemIdChecksum, hasIdChecksum } from '../handlers/gmem.js';
import { EntriesSum, entryFlags, entryPfn, sparseOrder } from '../handlers/records.js';

const KHO_VMALLOC_SIZE = 511;
/** Records decoded at most (a hostile nr_folios must not make inspect allocate or loop forever). */
const MAX_RECORDS = 1 << 24;

const inRam = (mem: PhysMemory, phys: number, len: number): boolean => Number.isSafeInteger(phys) && phys >= 0 && phys + len <= mem.size;
const hex = (n: number | bigint): string => `0x${n.toString(16)}`;

/** Contiguous [start, end) pfn runs from pfns in any order. */
function runsOf(pfns: number[], order: (i: number) => number): Array<[number, number]> {
  const idx = pfns.map((_, i) => i).sort((a, b) => (pfns[a] as number) - (pfns[b] as number));
  const out: Array<[number, number]> = [];
  for (const i of idx) {
    const s = pfns[i] as number;
    const e = s + 2 ** order(i);
    const last = out[out.length - 1];
    if (last && last[1] === s) last[1] = e; else out.push([s, e]);
  }
  return out;
}

export const kvmVmDecoder: FormatDecoder = defineDecoder({
  target: { kind: 'file', family: KVM_VM_FAMILY },
  decode(mem, data, version, { label }): Decoded {
    const problems: string[] = [];
    const pages: OwnedPages[] = [];
    const fields: Record<string, DecodedValue> = { format: version ?? 'unknown' };
    const phys = Number(data);
    if (!inRam(mem, phys, kvmLuoSer.size) || phys % PAGE_SIZE !== 0) return { fields, problems: [`kvm_luo_ser ${hex(data)} is not a page of RAM`], pages };
    pages.push({ pfn: phys / PAGE_SIZE, structure: 'kvm_luo_ser', upstream: true, role: `kvm_luo_ser (${label})`, words: [{ offset: 0, size: 8, kind: 'flags' }, { offset: 8, size: 8, kind: 'pointer' }] });
    const h = kvmLuoSer.decode(mem.read(phys, kvmLuoSer.size));
    fields.type = h.type;
    fields.kho_folios = hex(h.kho_folios);
    if (!(KVM_VM_TYPES_MODELED as readonly number[]).includes(Number(h.type))) problems.push(`VM type ${h.type} is not one this kernel creates`);
    if (h.kho_folios !== 0n) {
      const list = Number(h.kho_folios);
      if (!inRam(mem, list, PAGE_SIZE) || list % PAGE_SIZE !== 0) problems.push(`kho_folios ${hex(h.kho_folios)} is not a page of RAM`);
      else {
        pages.push({ pfn: list / PAGE_SIZE, structure: 'kvm_kho_folios_ser', upstream: true, role: `kvm_kho_folios_ser (${label})`, words: [{ offset: 0, size: 8, kind: 'count' }] });
        const n = mem.readU64(list);
        fields.nr_folios = n;
        const capacity = (PAGE_SIZE - kvmKhoFoliosSer.size) / KVM_KHO_FOLIO_PA_BYTES;
        if (n > BigInt(capacity)) problems.push(`nr_folios ${n} beyond the ${capacity} entries of its page`);
        else {
          // OrphanVM: the second-stage table's pages.
          for (let i = 0; i < Number(n); i++) {
            const pa = mem.readU64Number(list + kvmKhoFoliosSer.size + KVM_KHO_FOLIO_PA_BYTES * i);
            if (!inRam(mem, pa, PAGE_SIZE) || pa % PAGE_SIZE !== 0) { problems.push(`folios_pa[${i}] ${hex(pa)} is not a page of RAM`); continue; }
            pages.push({ pfn: pa / PAGE_SIZE, structure: 'second-stage table', upstream: true, role: `second-stage table page ${i} (${label})` });
          }
        }
      }
    }
    return { fields, problems, pages };
  },
});

/** Walk a kho_vmalloc chunk chain, bounded; returns the data pages or a problem. */
function vmallocRuns(mem: PhysMemory, first: bigint, totalPages: number, order: number, label: string, pages: OwnedPages[], problems: string[]): number[] {
  const runs: number[] = [];
  const seen = new Set<number>();
  const maxRuns = Math.ceil(totalPages / 2 ** order);
  let next = Number(first);
  while (next !== 0) {
    if (!inRam(mem, next, PAGE_SIZE) || next % PAGE_SIZE !== 0) { problems.push(`vmalloc chunk ${hex(next)} is not a page of RAM`); break; }
    if (seen.has(next) || seen.size > maxRuns / KHO_VMALLOC_SIZE + 1) { problems.push(`vmalloc chunk chain loops or is too long at ${hex(next)}`); break; }
    seen.add(next);
    pages.push({ pfn: next / PAGE_SIZE, structure: 'kho_vmalloc chunk', upstream: true, role: `folio array chunk (${label})`, words: [{ offset: 0, size: 8, kind: 'pointer' }, { offset: 8, size: 8, kind: 'pointer' }] });
    for (let i = 0; i < KHO_VMALLOC_SIZE; i++) {
      const pa = mem.readU64Number(next + 8 + 8 * i);
      if (pa === 0) break;
      if (pa % PAGE_SIZE !== 0 || !inRam(mem, pa, PAGE_SIZE) || runs.length >= maxRuns) { problems.push(`vmalloc run ${hex(pa)} is bad or beyond total_pages`); return runs; }
      runs.push(pa / PAGE_SIZE);
    }
    next = mem.readU64Number(next);
  }
  if (runs.length * 2 ** order !== totalPages) problems.push(`folio array: ${runs.length * 2 ** order} pages in its chunks, total_pages ${totalPages}`);
  return runs;
}

/** Check folios in index order: ascending, inside the file, flags known. Returns pfns and orders for dataRuns. */
function checkFolio(index: number, flags: number, v1: boolean, filePages: number, prevEnd: { v: number }, problems: string[], n: number): number {
  const order = v1 ? 0 : sparseOrder(flags);
  if (v1 && (flags & ~GUEST_MEMFD_LUO_FOLIO_UPTODATE)) problems.push(`folio ${n}: unknown flags ${hex(flags)}`);
  if (!v1 && order !== 0 && order !== 9) problems.push(`folio ${n}: order ${order}`);
  if (index < prevEnd.v) problems.push(`folio ${n}: index ${index} not after the previous folio (duplicate or unsorted)`);
  if (index % 2 ** order !== 0 || index + 2 ** order > filePages) problems.push(`folio ${n}: index ${index} outside the ${filePages}-page file`);
  prevEnd.v = index + 2 ** order;
  return order;
}

function decodeV1(mem: PhysMemory, phys: number, label: string, fields: Record<string, DecodedValue>, problems: string[], pages: OwnedPages[]): Decoded['dataRuns'] {
  const h = guestMemfdLuoSer.decode(mem.read(phys, guestMemfdLuoSer.size));
  Object.assign(fields, { size: h.size, flags: hex(h.flags), nr_folios: h.nr_folios, vm_token: h.vm_token, folios_first: hex(h.folios_first), folios_total_pages: h.folios_total_pages, folios_order: h.folios_order });
  const filePages = Number(h.size / BigInt(PAGE_SIZE));
  if (h.flags & ~BigInt(GMEM_LUO_FLAGS)) problems.push(`flags ${hex(h.flags)} beyond MMAP|INIT_SHARED`);
  if (h.size === 0n || h.size % BigInt(PAGE_SIZE) !== 0n) problems.push(`size ${h.size} is not a whole number of pages`);
  if (h.nr_folios === 0n) return [];
  const runs = vmallocRuns(mem, h.folios_first, h.folios_total_pages, h.folios_order, label, pages, problems);
  const capacity = runs.length * 2 ** h.folios_order * PAGE_SIZE / guestMemfdLuoFolioSer.size;
  if (h.nr_folios > BigInt(Math.min(capacity, MAX_RECORDS))) { problems.push(`nr_folios ${h.nr_folios} beyond the ${capacity}-record array`); return []; }
  for (const r of runs) pages.push({ pfn: r, count: 2 ** h.folios_order, structure: 'guest_memfd_luo_folio_ser[]', upstream: true, role: `folio records (${label})` });
  const pfns: number[] = [];
  const prevEnd = { v: 0 };
  const perPage = PAGE_SIZE / guestMemfdLuoFolioSer.size;
  for (let i = 0; i < Number(h.nr_folios); i++) {
    const at = (runs[Math.floor(i / perPage)] as number) * PAGE_SIZE + (i % perPage) * guestMemfdLuoFolioSer.size;
    const lo = mem.readU32(at);
    const hi = mem.readU32(at + 4);
    const index = mem.readU64Number(at + 8);
    checkFolio(index, entryFlags(hi), true, filePages, prevEnd, problems, i);
    pfns.push(entryPfn(lo, hi));
    if (problems.length > 32) break;
  }
  return runsOf(pfns, () => 0);
}

/** 2.1: id_crc32 against the (session, token) the caller found the file under, when it knows them. */
function decodeIdentity(mem: PhysMemory, phys: number, file: DecodeContext['file'], fields: Record<string, DecodedValue>, problems: string[]): void {
  const raw = mem.read(phys, guestMemfdLuoSerV2_1.size);
  const h = guestMemfdLuoSerV2_1.decode(raw);
  fields.id_crc32 = hex(h.id_crc32);
  if (h.id_pad !== 0) problems.push(`id_pad ${hex(h.id_pad)} (must be 0)`);
  if (!file) return;
  const want = gmemIdChecksum(raw, file.session, file.token);
  if (want !== h.id_crc32) problems.push(`id_crc32 ${hex(h.id_crc32)}, expected ${hex(want)} for session ${file.session} token ${file.token}: the header was written for another file`);
}

function decodeV2(mem: PhysMemory, phys: number, label: string, fields: Record<string, DecodedValue>, problems: string[], pages: OwnedPages[]): Decoded['dataRuns'] {
  const raw = mem.read(phys, guestMemfdLuoSerV2.size);
  const h = guestMemfdLuoSerV2.decode(raw);
  Object.assign(fields, { size: h.size, flags: hex(h.flags), nr_folios: h.nr_folios, vm_token: h.vm_token, folios_xa: hex(h.folios_xa), entries_sum: hex(h.entries_sum), header_crc32: hex(h.header_crc32) });
  const want = crc32(raw.subarray(0, GMEM_V2_HEADER_CRC_BYTES));
  if (want !== h.header_crc32) problems.push(`header checksum ${hex(h.header_crc32)}, header ${hex(want)}`);
  if (h.flags & ~BigInt(GMEM_LUO_FLAGS)) problems.push(`flags ${hex(h.flags)} beyond MMAP|INIT_SHARED`);
  const filePages = Number(h.size / BigInt(PAGE_SIZE));
  if (h.folios_xa === 0n) return [];
  // Walk the xarray: table nodes hold node addresses, leaves entries; every node once, depth fixed.
  const seen = new Set<number>();
  const crc = new EntriesSum();
  const prevEnd = { v: 0 };
  const pfns: number[] = [];
  const orders: number[] = [];
  const walk = (node: number, level: number, base: number): void => {
    if (!inRam(mem, node, PAGE_SIZE) || node % PAGE_SIZE !== 0 || seen.has(node)) { problems.push(`xarray node ${hex(node)} is not a page of RAM or is reached twice`); return; }
    seen.add(node);
    pages.push({ pfn: node / PAGE_SIZE, structure: 'kho xarray node', role: `folio xarray level ${level} (${label})` });
    for (let slot = 0; slot < xarrayAbi.KHO_XA_SLOTS; slot++) {
      const lo = mem.readU32(node + 8 * slot);
      const hi = mem.readU32(node + 8 * slot + 4);
      if ((lo | hi) === 0) continue;
      const key = base * xarrayAbi.KHO_XA_SLOTS + slot;
      if (level > 0) { walk(hi * 0x1_0000_0000 + lo, level - 1, key); continue; }
      crc.add(key, lo, hi);
      orders.push(checkFolio(key, entryFlags(hi), false, filePages, prevEnd, problems, pfns.length));
      pfns.push(entryPfn(lo, hi));
    }
  };
  walk(Number(h.folios_xa), xarrayAbi.KHO_XA_DEPTH - 1, 0);
  if (BigInt(pfns.length) !== h.nr_folios) problems.push(`nr_folios ${h.nr_folios} but ${pfns.length} entries`);
  if (crc.value !== h.entries_sum) problems.push(`entries checksum ${hex(h.entries_sum)}, entries ${hex(crc.value)}`);
  return runsOf(pfns, (i) => orders[i] as number);
}

export const guestMemfdDecoder: FormatDecoder = defineDecoder({
  target: { kind: 'file', family: GUEST_MEMFD_FAMILY },
  decode(mem, data, version, { label, file }): Decoded {
    const problems: string[] = [];
    const pages: OwnedPages[] = [];
    const fields: Record<string, DecodedValue> = { format: version ?? 'unknown' };
    const phys = Number(data);
    if (!inRam(mem, phys, PAGE_SIZE) || phys % PAGE_SIZE !== 0) return { fields, problems: [`guest_memfd_luo_ser ${hex(data)} is not a page of RAM`], pages };
    const major = version && semver.valid(version) ? semver.major(version) : 0;
    if (major !== 1 && major !== 2) return { fields, problems: [`no decoder for guest_memfd ${version ?? '(no version)'}`], pages };
    pages.push({
      pfn: phys / PAGE_SIZE, structure: 'guest_memfd_luo_ser', role: `guest_memfd_luo_ser (${label})`, upstream: major === 1,
      words: [
        { offset: 0, size: 8, kind: 'count' }, { offset: 8, size: 8, kind: 'flags' }, { offset: 16, size: 8, kind: 'count' },
        { offset: 24, size: 8, kind: 'index' }, { offset: 32, size: 8, kind: 'pointer' },
      ],
    });
    try {
      const dataRuns = major === 1 ? decodeV1(mem, phys, label, fields, problems, pages) : decodeV2(mem, phys, label, fields, problems, pages);
      if (major === 2 && hasIdChecksum(version ?? '2.0.0')) decodeIdentity(mem, phys, file, fields, problems);
      return { fields, problems, pages, ...(dataRuns ? { dataRuns } : {}) };
    } catch (e) {
      return { fields, problems: [...problems, `undecodable: ${e instanceof Error ? e.message : String(e)}`], pages };
    }
  },
});

export const kvmVcpuDecoder: FormatDecoder = defineDecoder({
  target: { kind: 'file', family: KVM_VCPU_FAMILY },
  decode(mem, data, version, { label }): Decoded {
    const fields: Record<string, DecodedValue> = { format: version ?? 'unknown' };
    const problems: string[] = [];
    const pages: OwnedPages[] = [];
    const phys = Number(data);
    if (!inRam(mem, phys, PAGE_SIZE) || phys % PAGE_SIZE !== 0) return { fields, problems: [`kvm_vcpu_ser ${hex(data)} is not a page of RAM`], pages };
    pages.push({ pfn: phys / PAGE_SIZE, structure: 'kvm_vcpu_ser', upstream: true, role: `kvm_vcpu_ser (${label})`, words: [{ offset: 0, size: 4, kind: 'index' }, { offset: 4, size: 4, kind: 'flags' }, { offset: 8, size: 8, kind: 'index' }, { offset: 16, size: 8, kind: 'pointer' }, { offset: 24, size: 8, kind: 'pointer' }] });
    const h = kvmVcpuSer.decode(mem.read(phys, kvmVcpuSer.size));
    Object.assign(fields, { vcpu_id: h.vcpu_id, flags: hex(h.flags), vm_token: h.vm_token, arch_state: hex(h.arch_state), cb: hex(h.cb) });
    if (h.flags !== 0) problems.push(`flags ${hex(h.flags)}`);
    for (const [what, pa] of [['arch_state', Number(h.arch_state)], ['caretaker block', Number(h.cb)]] as const) {
      if (!inRam(mem, pa, PAGE_SIZE) || pa % PAGE_SIZE !== 0) problems.push(`${what} ${hex(pa)} is not a page of RAM`);
      else pages.push({ pfn: pa / PAGE_SIZE, structure: what, role: `${what} (${label})` });
    }
    if (problems.length === 0) {
      const cb = Number(h.cb);
      fields.caretaker_state = mem.readU32(cb + 4);
      fields.caretaker_stop = mem.readU32(cb + 8);
      fields.orphan_retired = mem.readU64(cb + 32);
      fields.pc = mem.readU64(Number(h.arch_state) + 64);
    }
    return { fields, problems, pages };
  },
});
