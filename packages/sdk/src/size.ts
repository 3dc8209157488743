/**
 * Sizes in scenario files: a whole number of bytes with a binary unit. The units are the
 * kernel's: B, KiB, MiB, GiB, TiB, PiB, and K, M, G, T, P meaning the same (as on the kernel
 * command line, `hugepagesz=2M`). 'KB', 'MB', 'GB', 'TB' and 'PB' are refused: a reader cannot
 * tell whether 64GB is 64 * 10^9 or 64 * 2^30 bytes. The largest size is the largest machine the
 * model addresses (52-bit physical addresses: 4 PiB).
 */
import { MAX_PHYS_BITS } from '@liveupdate/hw';
import { remembered } from '@liveupdate/runtime';

/** The largest size a scenario may name: the physical address space (4 PiB). */
export const MAX_SIZE = 2 ** MAX_PHYS_BITS;

const UNITS: Readonly<Record<string, number>> = {
  '': 1, b: 1,
  k: 2 ** 10, kib: 2 ** 10, m: 2 ** 20, mib: 2 ** 20, g: 2 ** 30, gib: 2 ** 30, t: 2 ** 40, tib: 2 ** 40, p: 2 ** 50, pib: 2 ** 50,
};
const AMBIGUOUS = new Set(['kb', 'mb', 'gb', 'tb', 'pb']);

export const SIZE_UNITS_HELP = "a whole number of bytes with B, KiB, MiB, GiB, TiB or PiB (K, M, G, T, P are the same binary units), e.g. '64GiB', '512M', '1.5GiB', up to 4PiB";

export class SizeFormatError extends RangeError {
  override readonly name = 'SizeFormatError';
}

/** Bytes of a size text, or a SizeFormatError saying why not (and what is accepted); remembered per text (scenarios repeat the same few on every run). */
export const parseSizeStrict: (text: string) => number = remembered(parseSize);

function parseSize(text: string): number {
  const m = /^\s*(\d+)(?:\.(\d+))?\s*([A-Za-z]*)\s*$/.exec(text);
  if (!m) throw new SizeFormatError(`'${text}' is not a size: use ${SIZE_UNITS_HELP}`);
  const unit = (m[3] ?? '').toLowerCase();
  if (AMBIGUOUS.has(unit)) throw new SizeFormatError(`'${text}': '${m[3]}' is ambiguous (10^n or 2^n bytes?): use ${SIZE_UNITS_HELP}`);
  const mult = UNITS[unit];
  if (mult === undefined) throw new SizeFormatError(`'${text}': unknown unit '${m[3]}': use ${SIZE_UNITS_HELP}`);
  const whole = BigInt(m[1] as string);
  const frac = m[2] ?? '';
  // Exact arithmetic: (whole + frac / 10^k) * mult must be an integer.
  const scale = 10n ** BigInt(frac.length);
  const num = (whole * scale + (frac ? BigInt(frac) : 0n)) * BigInt(mult);
  if (num % scale !== 0n) throw new SizeFormatError(`'${text}' is not a whole number of bytes`);
  const bytes = num / scale;
  if (bytes > BigInt(MAX_SIZE)) throw new SizeFormatError(`'${text}' is larger than the largest machine this model addresses (4 PiB, 52-bit physical addresses)`);
  return Number(bytes);
}

/** True when parseSizeStrict accepts the text (the schemas' 'size' format). */
export function isSize(text: string): boolean {
  try { parseSizeStrict(text); return true; } catch { return false; }
}
