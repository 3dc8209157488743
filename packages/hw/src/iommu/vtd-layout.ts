/**
 * Intel VT-d remapping structures as the hardware reads them (Intel VT-d specification, ch. 9;
 * drivers/iommu/intel/iommu.h): the root table (256 × 16 B, one entry per bus), legacy-mode
 * context tables (256 × 16 B per bus, one entry per devfn) and second-level paging entries
 * (8 B, 512 per 4 KiB table, 4 levels for a 48-bit address width).
 *
 * Layouts only: the hardware walk (vtd.ts) and the driver in plugin-iommu both use these, so a
 * bit moves in one place.
 */

export const ROOT_ENTRY_NR = 256;
export const ROOT_ENTRY_SIZE = 16;
export const CONTEXT_ENTRY_NR = 256;
export const CONTEXT_ENTRY_SIZE = 16;
export const SL_PTE_SIZE = 8;
export const SL_PTES_PER_TABLE = 512;

/** root_entry.lo bit 0: the context-table pointer (bits 63:12) is valid. */
export const ROOT_PRESENT = 1;
/** context_entry.lo bit 0: present; bit 1: fault processing disable; bits 3:2 translation type. */
export const CONTEXT_PRESENT = 1;
export const CONTEXT_FPD = 2;
/** TT = 00b: untranslated requests are translated through the second-level tables. */
export const CONTEXT_TT_MULTI_LEVEL = 0;
/** context_entry.hi bits 2:0: address width (1 = 39-bit 3-level, 2 = 48-bit 4-level, 3 = 57-bit 5-level). */
export const CONTEXT_AW_MASK = 7;
/** context_entry.hi bits 23:8: domain identifier. */
export const CONTEXT_DID_SHIFT = 8;
export const CONTEXT_DID_MASK = 0xffff;

/** Second-level PTE: bit 0 read, bit 1 write, bit 7 page size (a 2 MiB or 1 GiB leaf), bits 51:12 address. */
export const SL_PTE_READ = 1;
export const SL_PTE_WRITE = 2;
export const SL_PTE_LARGE_PAGE = 0x80;

/** Address width code → levels of second-level tables. */
export function levelsOfAw(aw: number): number | null {
  return aw === 1 ? 3 : aw === 2 ? 4 : aw === 3 ? 5 : null;
}
/** Levels → address width code written in a context entry. */
export function awOfLevels(levels: number): number {
  if (levels < 3 || levels > 5) throw new RangeError(`VT-d: ${levels}-level tables have no address width code`);
  return levels - 2;
}

/** The table address held in bits 51:12 of an entry whose low and high u32 halves are given. */
export function entryAddress(lo: number, hi: number): number {
  return (hi & 0xfffff) * 0x1_0000_0000 + ((lo & 0xfffff000) >>> 0);
}

/**
 * VT-d fault reasons (specification, "Non-recoverable fault conditions"). A second-level entry
 * that is not present has R = W = 0, so the hardware reports it as 5h (write) or 6h (read).
 */
export const FaultReason = Object.freeze({
  ROOT_NOT_PRESENT: 0x1,
  CONTEXT_NOT_PRESENT: 0x2,
  CONTEXT_INVALID: 0x3,
  ADDRESS_BEYOND_AW: 0x4,
  WRITE_NOT_PERMITTED: 0x5,
  READ_NOT_PERMITTED: 0x6,
  PAGING_ENTRY_ACCESS: 0x7,
  ROOT_TABLE_ACCESS: 0x8,
  CONTEXT_TABLE_ACCESS: 0x9,
} as const);
export type FaultReasonCode = (typeof FaultReason)[keyof typeof FaultReason];

const REASON_NAMES: Readonly<Record<number, string>> = {
  0x1: 'root entry not present',
  0x2: 'context entry not present',
  0x3: 'invalid context entry',
  0x4: 'address beyond the address width',
  0x5: 'write through a read-only mapping',
  0x6: 'read through a mapping without read permission',
  0x7: 'paging-structure entry unreadable (poison)',
  0x8: 'root table unreadable (poison)',
  0x9: 'context table unreadable (poison)',
};
export function faultReasonName(code: number): string {
  return REASON_NAMES[code] ?? `reason 0x${code.toString(16)}`;
}
