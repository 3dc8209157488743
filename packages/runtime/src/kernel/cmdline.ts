/**
 * Kernel command line: early parameters kho=, liveupdate=, kho_scratch=. Each parser returns
 * the kernel's errno name on failure; the boot logs "Malformed early option" and continues.
 */
import type { ErrnoCode } from '../errno.js';

/** Split "a=b c d=e" into ordered (name, value) pairs; a bare word has value undefined. */
export function splitCmdline(cmdline: string): Array<[name: string, value: string | undefined]> {
  const out: Array<[string, string | undefined]> = [];
  for (const word of cmdline.trim().split(/\s+/)) {
    if (!word) continue;
    const eq = word.indexOf('=');
    out.push(eq < 0 ? [word, undefined] : [word.slice(0, eq), word.slice(eq + 1)]);
  }
  return out;
}

/** kstrtobool: y/Y/1/on → true, n/N/0/off → false, by the first (two) characters. */
export function kstrtobool(s: string | undefined): boolean | ErrnoCode {
  if (s === undefined || s.length === 0) return 'EINVAL';
  switch (s[0]) {
    case 'y': case 'Y': case '1': return true;
    case 'n': case 'N': case '0': return false;
    case 'o': case 'O':
      if (s[1] === 'n' || s[1] === 'N') return true;
      if (s[1] === 'f' || s[1] === 'F') return false;
      return 'EINVAL';
    default: return 'EINVAL';
  }
}

/** memparse: a number (0x hex, leading-0 octal, decimal) with an optional K/M/G/T/P/E suffix; returns value and characters used. */
export function memparse(s: string): { value: number; used: number } {
  const m = /^(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)/.exec(s);
  if (!m) return { value: 0, used: 0 };
  const digits = m[1] as string;
  let value = digits.startsWith('0x') || digits.startsWith('0X') ? parseInt(digits.slice(2), 16)
    : digits.length > 1 && digits.startsWith('0') ? parseInt(digits.slice(1), 8) : parseInt(digits, 10);
  let used = digits.length;
  const shift: Record<string, number> = { k: 10, m: 20, g: 30, t: 40, p: 50, e: 60 };
  const suffix = s[used]?.toLowerCase();
  if (suffix !== undefined && shift[suffix] !== undefined) { value *= 2 ** (shift[suffix] as number); used++; }
  return { value, used };
}

export type ScratchSizing =
  | { readonly kind: 'scale'; readonly percent: number }
  | { readonly kind: 'explicit'; readonly lowmem: number; readonly global: number; readonly pernode: number };

/** The default: 200% of the memory the kernel reserved. */
export const DEFAULT_SCRATCH: ScratchSizing = { kind: 'scale', percent: 200 };

/** kho_scratch=N% or kho_scratch=L,G,P (memparse sizes); explicit sizes set the scale to 0. */
export function parseKhoScratch(p: string | undefined): ScratchSizing | ErrnoCode {
  if (p === undefined || p.length === 0) return 'EINVAL';
  if (p.endsWith('%')) {
    const digits = p.slice(0, -1);
    // At most 10 digits, as kstrtouint into an 11-byte buffer allows.
    if (digits.length === 0 || digits.length > 10 || !/^\+?[0-9]+$/.test(digits)) return 'EINVAL';
    const percent = Number(digits.replace('+', ''));
    if (percent > 0xffffffff) return 'ERANGE';
    return { kind: 'scale', percent };
  }
  const sizes: number[] = [];
  let rest = p;
  for (let i = 0; i < 3; i++) {
    if (i > 0) {
      if (rest[0] !== ',') return 'EINVAL';
      rest = rest.slice(1);
    }
    const { value, used } = memparse(rest);
    if (used === 0) return 'EINVAL';
    sizes.push(value);
    rest = rest.slice(used);
  }
  if (rest.length > 0) return 'EINVAL';
  const [lowmem, global, pernode] = sizes as [number, number, number];
  if (lowmem === 0 && global === 0 && pernode === 0) return 'EINVAL';
  return { kind: 'explicit', lowmem, global, pernode };
}

export interface BootOptions {
  readonly kho: boolean;
  readonly liveupdate: boolean;
  readonly scratch: ScratchSizing;
  /** "Malformed early option" lines to log. */
  readonly errors: readonly string[];
}

/** CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT=n and liveupdate off unless given, as upstream. */
export function parseBootOptions(cmdline: string): BootOptions {
  let kho = false;
  let liveupdate = false;
  let scratch: ScratchSizing = DEFAULT_SCRATCH;
  const errors: string[] = [];
  for (const [name, value] of splitCmdline(cmdline)) {
    if (name === 'kho') {
      const r = kstrtobool(value);
      if (typeof r === 'boolean') kho = r; else errors.push(`Malformed early option 'kho'`);
    } else if (name === 'liveupdate') {
      const r = kstrtobool(value);
      if (typeof r === 'boolean') liveupdate = r; else errors.push(`Malformed early option 'liveupdate'`);
    } else if (name === 'kho_scratch') {
      const r = parseKhoScratch(value);
      if (typeof r === 'object') scratch = r; else errors.push(`Malformed early option 'kho_scratch'`);
    }
  }
  return { kho, liveupdate, scratch, errors };
}
