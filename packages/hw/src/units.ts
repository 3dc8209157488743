/** 4 KiB pages, as every ABI in this project assumes (PAGE_SHIFT = 12 in both kernels). */
export const PAGE_SHIFT = 12;
export const PAGE_SIZE = 1 << PAGE_SHIFT;
/** Physical addresses are plain numbers: exact up to 2^53, far above the 64 TiB (2^46) machines we model. */
export const MAX_PHYS_BITS = 52;

const SIZE_SUFFIX: Record<string, number> = {
  '': 1, b: 1,
  k: 2 ** 10, kb: 2 ** 10, kib: 2 ** 10,
  m: 2 ** 20, mb: 2 ** 20, mib: 2 ** 20,
  g: 2 ** 30, gb: 2 ** 30, gib: 2 ** 30,
  t: 2 ** 40, tb: 2 ** 40, tib: 2 ** 40,
};

export class SizeError extends Error {
  override readonly name = 'SizeError';
}

/** '64GiB', '1T', '512M', 4096 or 4096n to bytes (binary units: a kernel engineer's 'G' is 2^30). */
export function parseSize(size: string | number | bigint): number {
  if (typeof size === 'bigint') size = Number(size);
  if (typeof size === 'number') {
    if (!Number.isSafeInteger(size) || size < 0) throw new SizeError(`size ${size} is not a non-negative integer`);
    return size;
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(size);
  const mult = m ? SIZE_SUFFIX[(m[2] ?? '').toLowerCase()] : undefined;
  if (!m || mult === undefined) throw new SizeError(`cannot parse size '${size}' (expected e.g. '64GiB', '512M', '4096')`);
  const bytes = Number(m[1]) * mult;
  if (!Number.isSafeInteger(bytes)) throw new SizeError(`size '${size}' is not a whole number of bytes`);
  return bytes;
}

export function formatSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1 && v % 1024 === 0) { v /= 1024; i++; }
  if (v >= 1024 && i < units.length - 1) {
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return `${v.toFixed(1)} ${units[i]}`;
  }
  return `${v} ${units[i]}`;
}

export const pfnToPhys = (pfn: number): number => pfn * PAGE_SIZE;
export const physToPfn = (phys: number): number => Math.floor(phys / PAGE_SIZE);
export const isPageAligned = (phys: number): boolean => phys % PAGE_SIZE === 0;
