/**
 * Bit arithmetic for hot paths. `2 ** n` with a variable n compiles to a pow() call that costs
 * tens of nanoseconds; a table lookup costs one load, so per-key code uses POW2[n].
 */
export const POW2: Float64Array = Float64Array.from({ length: 64 }, (_, i) => 2 ** i);

/** Bits set in a 32-bit word. */
export function popcount32(v: number): number {
  v -= (v >>> 1) & 0x55555555;
  v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
  return Math.imul((v + (v >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24;
}

/**
 * pfn is a multiple of 2^order (pfn a non-negative integer below 2^53). Below order 32 the
 * low 32 bits decide (ToUint32 keeps them exactly), which avoids a floating-point modulo.
 */
export function isAligned(pfn: number, order: number): boolean {
  return order < 32 ? ((pfn >>> 0) & ((POW2[order] as number) - 1)) === 0 : pfn % (POW2[order] as number) === 0;
}

/**
 * A `bits`-bit hash (1..31) of a non-negative integer below 2^53, mixing both 32-bit halves:
 * for caches indexed by ids that sit power-of-two strides apart (one per NUMA node), where
 * the low bits alone would map them all to one slot.
 */
export function hashIndex(id: number, bits: number): number {
  const lo = id >>> 0; // ToUint32 keeps the low 32 bits of an integer exactly
  const hi = (id / 0x1_0000_0000) >>> 0;
  return Math.imul(lo ^ Math.imul(hi, 0x85ebca6b), 0x9e3779b1) >>> (32 - bits);
}
