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
