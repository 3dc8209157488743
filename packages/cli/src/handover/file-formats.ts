/**
 * What a preserved file's compatible string means: its format family and version (through the
 * plugins' declared formats and upstream aliases) and, for formats whose layout the CLI
 * knows, the fields of the header luo_file_ser.data points to.
 */
import { PAGE_SIZE, type PhysMemory } from '@liveupdate/hw';
import memfd, { crc32, memfdAbi } from '@liveupdate/plugin-memfd';
import { versionOf, type FormatSpec } from '@liveupdate/sdk';
import { bytes } from '../output/format.js';
import type { LuoFileView } from './decode.js';

export interface FileFormat {
  readonly family: string | null;
  readonly version: string | null;
  readonly owner: string | null;
  /** Decoded header fields, or null when the layout is unknown or its page is not available. */
  readonly header: Readonly<Record<string, string>> | null;
}

let specsCache: readonly FormatSpec[] | null = null;

/** Format families the CLI's plugins declare (the same specs a kernel manifest is built from). */
export function knownFormats(): readonly FormatSpec[] {
  specsCache ??= memfd().formats ?? [];
  return specsCache;
}

const hex = (n: number | bigint): string => `0x${n.toString(16)}`;
const MiB = (n: bigint): string => (n <= BigInt(Number.MAX_SAFE_INTEGER) ? bytes(Number(n)) : `${n} bytes`);

function memfdHeader(memory: PhysMemory, phys: number, version: string, family: string): Record<string, string> | null {
  const [major = 0, minor = 0] = version.split('.').map(Number);
  if (family === memfdAbi.MEMFD_FAMILY && major === 3 && minor >= 1) {
    // memfd@3.1 and later 3.x: the 3.0 header, then a CRC-32 of its 48 bytes.
    const raw = memory.read(phys, memfdAbi.memfdLuoSerV3_1.size);
    const h = memfdAbi.memfdLuoSerV3_1.decode(raw);
    const ok = h.crc32 === crc32(raw.subarray(0, memfdAbi.MEMFD_V3_1_CRC_BYTES));
    return {
      size: MiB(h.size), nr_folios: String(h.nr_folios), order: String(h.order), seals: hex(h.seals), folios_xa: hex(h.folios_xa), pos: String(h.pos),
      crc32: `${hex(h.crc32)} (${ok ? 'ok' : 'mismatch'})`,
    };
  }
  if (family === memfdAbi.HUGETLB_FAMILY || major === 3) {
    const h = memfdAbi.memfdLuoSerV3.decode(memory.read(phys, memfdAbi.memfdLuoSerV3.size));
    return { size: MiB(h.size), nr_folios: String(h.nr_folios), order: String(h.order), seals: hex(h.seals), folios_xa: hex(h.folios_xa), pos: String(h.pos) };
  }
  if (major === 2) {
    const h = memfdAbi.memfdLuoSerV2.decode(memory.read(phys, memfdAbi.memfdLuoSerV2.size));
    return { size: MiB(h.size), nr_folios: String(h.nr_folios), seals: hex(h.seals), folios_first: hex(h.folios_first), folios_total_pages: String(h.folios_total_pages), pos: String(h.pos) };
  }
  if (major === 1) {
    const h = memfdAbi.memfdLuoSerV1.decode(memory.read(phys, memfdAbi.memfdLuoSerV1.size));
    return { size: MiB(h.size), nr_folios: String(h.nr_folios), folios_first: hex(h.folios_first), folios_total_pages: String(h.folios_total_pages), pos: String(h.pos) };
  }
  return null;
}

/** Identify a file's format; decode its header when `available(pfn)` says its page is there. */
export function describeFile(memory: PhysMemory, f: LuoFileView, available: (pfn: number) => boolean): FileFormat {
  for (const spec of knownFormats()) {
    const version = versionOf(spec, f.compatible);
    if (version === null) continue;
    const phys = Number(f.data);
    let header: Record<string, string> | null = null;
    const readable = f.data % BigInt(PAGE_SIZE) === 0n && phys < memory.size && available(phys / PAGE_SIZE);
    if (readable && (spec.family === memfdAbi.MEMFD_FAMILY || spec.family === memfdAbi.HUGETLB_FAMILY)) {
      header = memfdHeader(memory, phys, version, spec.family);
    }
    return { family: spec.family, version, owner: spec.owner, header };
  }
  return { family: null, version: null, owner: null, header: null };
}
