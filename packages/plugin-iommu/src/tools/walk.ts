/**
 * Read-only walks over handover bytes for the tools (inspect, report, fuzz): bounded, cycle- and
 * alias-safe, never throwing; every surprise is a problem sentence. Poisoned pages are detected
 * before they are read.
 */
import { vtdLayout, type PhysMemory } from '@liveupdate/hw';
import { PAGE_SIZE, type OwnedPages } from '@liveupdate/sdk';
import { iommuArrayHdrSer, maxObjsPerPage, IOMMU_SER_FLAG_DELETED } from '../abi/iommu.js';

const { SL_PTE_READ, SL_PTE_WRITE, SL_PTE_LARGE_PAGE, ROOT_PRESENT, entryAddress } = vtdLayout;

export const hex = (n: number): string => `0x${n.toString(16)}`;

export function isPage(memory: PhysMemory, phys: number): boolean {
  return Number.isSafeInteger(phys) && phys > 0 && phys % PAGE_SIZE === 0 && phys + PAGE_SIZE <= memory.size;
}

export function readable(memory: PhysMemory, phys: number, problems: string[], what: string): boolean {
  if (!Number.isSafeInteger(phys) || phys <= 0 || phys + 8 > memory.size) { problems.push(`${what} at ${hex(phys)} is outside memory`); return false; }
  if (memory.pageKind(Math.floor(phys / PAGE_SIZE)) === 'poison') { problems.push(`${what} at ${hex(phys)} reads as poison`); return false; }
  return true;
}

/** One FLB list: live objects' addresses and every array page, with the pages' meaningful words. */
export function walkList(memory: PhysMemory, first: number, objectSize: number, name: string, problems: string[], pages: OwnedPages[], seen: Set<number>): number[] {
  const objects: number[] = [];
  let page = first;
  let n = 0;
  while (page !== 0) {
    if (!isPage(memory, page)) { problems.push(`${name} array page ${hex(page)} is not a page of RAM`); break; }
    if (seen.has(page)) { problems.push(`${name} array page ${hex(page)} is linked twice (a cycle or two lists sharing it)`); break; }
    seen.add(page);
    if (!readable(memory, page, problems, `${name} array page`)) break;
    pages.push({
      pfn: page / PAGE_SIZE, structure: 'iommu FLB array', role: `${name} array page ${n++}`, upstream: true,
      words: [{ offset: 0, size: 8, kind: 'pointer' }, { offset: 8, size: 8, kind: 'count' }],
    });
    const nr = memory.readU64Number(page + 8);
    const max = maxObjsPerPage(objectSize);
    if (nr > max) problems.push(`${name} array page ${hex(page)} holds ${nr} objects (at most ${max})`);
    for (let i = 0; i < Math.min(nr, max); i++) {
      const slot = page + iommuArrayHdrSer.size + i * objectSize;
      if (memory.readU32(slot + 4) & IOMMU_SER_FLAG_DELETED) continue;
      objects.push(slot);
    }
    page = memory.readU64Number(page);
  }
  return objects;
}

/** Every table page of a second-level table from its top (the pages a domain owns). */
export function walkTables(memory: PhysMemory, top: number, levels: number, label: string, problems: string[], pages: OwnedPages[], seen: Set<number>): void {
  if (levels < 3 || levels > 5) { problems.push(`${label}: ${levels} levels is not a VT-d table depth`); return; }
  const stack: Array<[number, number]> = [[top, levels]];
  let budget = 1 << 20;
  while (stack.length > 0 && budget-- > 0) {
    const [phys, level] = stack.pop() as [number, number];
    if (!isPage(memory, phys)) { problems.push(`${label}: level ${level} table ${hex(phys)} is not a page of RAM`); continue; }
    if (seen.has(phys)) { problems.push(`${label}: table page ${hex(phys)} is reached twice`); continue; }
    seen.add(phys);
    if (!readable(memory, phys, problems, `${label} level ${level} table`)) continue;
    pages.push({ pfn: phys / PAGE_SIZE, structure: 'iommu page table', role: `${label} level ${level} table`, upstream: true });
    if (level === 1) continue;
    for (let i = 0; i < 512; i++) {
      const lo = memory.readU32(phys + i * 8);
      if (!(lo & (SL_PTE_READ | SL_PTE_WRITE)) || (lo & SL_PTE_LARGE_PAGE)) continue;
      stack.push([entryAddress(lo, memory.readU32(phys + i * 8 + 4)), level - 1]);
    }
  }
  if (budget < 0) problems.push(`${label}: more than 2^20 table pages`);
}

/** A root table and the context tables it references. */
export function walkRoot(memory: PhysMemory, root: number, label: string, problems: string[], pages: OwnedPages[], seen: Set<number>): void {
  if (!isPage(memory, root)) { problems.push(`${label}: root table ${hex(root)} is not a page of RAM`); return; }
  if (!readable(memory, root, problems, `${label} root table`)) return;
  seen.add(root);
  pages.push({ pfn: root / PAGE_SIZE, structure: 'iommu root/context table', role: `${label} root table`, upstream: true });
  for (let bus = 0; bus < 256; bus++) {
    const lo = memory.readU32(root + bus * 16);
    if (!(lo & ROOT_PRESENT)) continue;
    const ctx = entryAddress(lo, memory.readU32(root + bus * 16 + 4));
    if (!isPage(memory, ctx)) { problems.push(`${label}: bus ${bus} context table ${hex(ctx)} is not a page of RAM`); continue; }
    if (seen.has(ctx)) continue;
    seen.add(ctx);
    if (!readable(memory, ctx, problems, `${label} bus ${bus} context table`)) continue;
    pages.push({ pfn: ctx / PAGE_SIZE, structure: 'iommu root/context table', role: `${label} bus ${bus} context table`, upstream: true });
  }
}
