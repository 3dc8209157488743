/**
 * What the fuzzer may corrupt: every handover page the decoders know, the core's (root FDT,
 * tracker nodes, the LUO blob, session and file blocks, the FLB page) and every page the loaded
 * plugins' decoders say their files and FLBs own (`Decoded.pages`: headers, xarray nodes,
 * vmalloc chunks, folio arrays, a device's state...). No structure is named here but the
 * core's. Found on an uncorrupted run right after its jump; the handover's layout is a function
 * of the scenario, so every run of the same scenario puts the same structure on the same page.
 */
import { PAGE_SIZE, type PhysMemory } from '@liveupdate/hw';
import type { HandoverView } from '../handover/decode.js';

export interface FuzzTarget {
  /** The structure, as the summary groups runs ('root FDT', a plugin's 'memfd xarray node', ...). */
  readonly structure: string;
  /** The page's role as the decoder names it. */
  readonly role: string;
  readonly pfn: number;
  /** The page's bytes in the uncorrupted handover. */
  readonly bytes: Uint8Array;
}

/** The core's structures, in the order the summary lists them; plugins' structures follow, sorted. */
export const CORE_STRUCTURES = ['root FDT', 'tracker node', 'LUO blob', 'session block', 'file block', 'FLB page'] as const;
/** Pages the fuzzer leaves alone: boot-time data a corrupted handover cannot reach the files through. */
const NOT_FUZZED: ReadonlySet<string> = new Set(['scratch array', 'kexec-metadata', 'subtree']);

/** The structures present, core first. */
export function structuresOf(targets: readonly FuzzTarget[]): string[] {
  const present = new Set(targets.map((t) => t.structure));
  const core = CORE_STRUCTURES.filter((s) => present.has(s));
  const rest = [...present].filter((s) => !(CORE_STRUCTURES as readonly string[]).includes(s)).sort();
  return [...core, ...rest];
}

/** Every page of the handover the fuzzer may corrupt, with its bytes as they are now. */
export function fuzzTargets(memory: PhysMemory, view: HandoverView): FuzzTarget[] {
  const targets: FuzzTarget[] = [];
  for (const [pfn, role] of [...view.pages].sort((a, b) => a[0] - b[0])) {
    const structure = view.structures.get(pfn) ?? role;
    if (NOT_FUZZED.has(structure)) continue;
    targets.push({ structure, role, pfn, bytes: memory.read(pfn * PAGE_SIZE, PAGE_SIZE) });
  }
  return targets;
}
