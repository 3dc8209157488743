/**
 * What the fuzzer may corrupt: the handover pages the dump logic decodes (root FDT, tracker
 * nodes, the LUO blob, session and file blocks, the FLB page, file headers and FLB data), plus
 * the node pages of each memfd@3 header's KHO xarray (walked here from the header, bounded).
 * Found on an uncorrupted run right after its jump; the handover's layout is a function of the
 * scenario, so every fuzz run of the same scenario puts the same structure on the same page.
 */
import { PAGE_SIZE, type PhysMemory } from '@liveupdate/hw';
import { memfdAbi } from '@liveupdate/plugin-memfd';
import { xarrayAbi } from '@liveupdate/sdk';
import type { HandoverView } from '../handover/decode.js';
import { describeFile } from '../handover/file-formats.js';

export interface FuzzTarget {
  /** The structure, as the summary groups runs ('root FDT', 'memfd xarray node', ...). */
  readonly structure: string;
  /** The page's role as the decoder names it. */
  readonly role: string;
  readonly pfn: number;
  /** The page's bytes in the uncorrupted handover. */
  readonly bytes: Uint8Array;
}

/** Structures in the order the summary lists them (the order runs choose from). */
export const STRUCTURES = [
  'root FDT', 'tracker node', 'LUO blob', 'session block', 'file block', 'FLB page', 'memfd header', 'memfd xarray node', 'FLB data',
] as const;
export type Structure = (typeof STRUCTURES)[number];

/** A decoder role → the structure it belongs to; roles outside the fuzzed set (scratch array, kexec-metadata) → null. */
function structureOf(role: string): Structure | null {
  if (role === 'kho root fdt') return 'root FDT';
  if (role === 'kho tracker node') return 'tracker node';
  if (role === 'luo_ser') return 'LUO blob';
  if (role === 'luo session block') return 'session block';
  if (role === 'luo file block') return 'file block';
  if (role === 'luo flb page') return 'FLB page';
  if (role.startsWith('file data')) return 'memfd header';
  if (role.startsWith('flb data')) return 'FLB data';
  return null;
}

/** Cap on the xarray nodes listed per file (a 54-bit, six-level map of a few MiB has a handful). */
const MAX_XA_NODES = 4096;

/** The node pages of a KHO xarray, root first (table nodes hold child addresses; leaves hold values). */
export function xarrayNodePfns(memory: PhysMemory, rootPhys: number): number[] {
  const out: number[] = [];
  const seen = new Set<number>();
  const walk = (phys: number, level: number): void => {
    if (out.length >= MAX_XA_NODES || !Number.isSafeInteger(phys) || phys <= 0 || phys % PAGE_SIZE !== 0 || phys + PAGE_SIZE > memory.size) return;
    const pfn = phys / PAGE_SIZE;
    if (seen.has(pfn)) return;
    seen.add(pfn);
    out.push(pfn);
    if (level === 0) return;
    const page = memory.read(phys, PAGE_SIZE);
    const view = new DataView(page.buffer, page.byteOffset, page.byteLength);
    for (let slot = 0; slot < xarrayAbi.KHO_XA_SLOTS; slot++) {
      const child = view.getBigUint64(slot * 8, true);
      if (child !== 0n && child <= BigInt(Number.MAX_SAFE_INTEGER)) walk(Number(child), level - 1);
    }
  };
  walk(rootPhys, xarrayAbi.KHO_XA_DEPTH - 1);
  return out;
}

/** Every page of the handover the fuzzer may corrupt, with its bytes as they are now. */
export function fuzzTargets(memory: PhysMemory, view: HandoverView): FuzzTarget[] {
  const targets: FuzzTarget[] = [];
  const taken = new Set<number>();
  const add = (structure: Structure, role: string, pfn: number): void => {
    if (taken.has(pfn)) return;
    taken.add(pfn);
    targets.push({ structure, role, pfn, bytes: memory.read(pfn * PAGE_SIZE, PAGE_SIZE) });
  };
  for (const [pfn, role] of [...view.pages].sort((a, b) => a[0] - b[0])) {
    const s = structureOf(role);
    if (s) add(s, role, pfn);
  }
  for (const session of view.luo?.sessions ?? []) {
    for (const f of session.files) {
      const fmt = describeFile(memory, f, () => true);
      const phys = Number(f.data);
      if (fmt.family !== memfdAbi.MEMFD_FAMILY || fmt.version === null || !fmt.version.startsWith('3.')) continue;
      if (phys % PAGE_SIZE !== 0 || phys + PAGE_SIZE > memory.size) continue;
      const header = memfdAbi.memfdLuoSerV3.decode(memory.read(phys, memfdAbi.memfdLuoSerV3.size));
      for (const pfn of xarrayNodePfns(memory, Number(header.folios_xa))) add('memfd xarray node', `memfd xarray node (${session.name} token ${f.token})`, pfn);
    }
  }
  return targets;
}
