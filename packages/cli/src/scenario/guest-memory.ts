/**
 * Guest RAM as a VMM lays it out in memfds: real pattern bytes, synthetic pages (generated
 * per page from a seed, so GiBs cost no host memory), sparse files whose untouched folios stay
 * holes, and files never written at all. Every byte is a pure function of (seed, offset), so
 * the incoming side checks the memory it got back without a copy of what was written.
 */
import { PAGE_SIZE, parseSize } from '@liveupdate/hw';
import { F_ADD_SEALS, F_GET_SEALS, MFD_ALLOW_SEALING, MFD_CLOEXEC, MFD_HUGETLB, memfdAbi } from '@liveupdate/plugin-memfd';
import type { Process, ScenarioFile } from '@liveupdate/sdk';
import type { MemfdSyscalls } from '../plugins.js';

/** hugeTLB memfds in scenarios use 2 MiB pages (hugepagesz=2M). */
export const HUGE_PAGE_BYTES = 2 << 20;
const PAGE_WORDS = PAGE_SIZE / 4;
/** Bytes generated and compared per step: large enough to amortize a syscall, small enough for smooth progress. */
const CHUNK_BYTES = 4 << 20;
const PATTERN_MAGIC = 0x4750554c; // "LUPG"

const SEAL_BITS: Readonly<Record<string, number>> = {
  seal: memfdAbi.F_SEAL_SEAL, shrink: memfdAbi.F_SEAL_SHRINK, grow: memfdAbi.F_SEAL_GROW,
  write: memfdAbi.F_SEAL_WRITE, future_write: memfdAbi.F_SEAL_FUTURE_WRITE, exec: memfdAbi.F_SEAL_EXEC,
};

/** One scenario file with its sizes resolved and its content seed fixed. */
export interface GuestFile {
  readonly session: string;
  readonly token: number;
  readonly type: ScenarioFile['type'];
  readonly fill: ScenarioFile['fill'];
  readonly size: number;
  readonly folioBytes: number;
  /** Fraction of folios written (1 = all). */
  readonly touched: number;
  readonly seals: number;
  readonly sealNames: readonly string[];
  readonly seed: number;
}

/** FNV-1a: a stable content seed per (session, token). */
function seedOf(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

export function guestFile(session: string, f: ScenarioFile): GuestFile {
  const folioBytes = f.type === 'hugetlb-memfd' ? HUGE_PAGE_BYTES : PAGE_SIZE;
  const size = parseSize(f.size);
  if (size % folioBytes !== 0) {
    throw new RangeError(`size ${f.size} is not a multiple of the ${f.type === 'hugetlb-memfd' ? '2 MiB huge page' : '4 KiB page'}`);
  }
  const sealNames = f.seals ?? [];
  return {
    session, token: f.token, type: f.type, fill: f.fill, size, folioBytes,
    touched: f.fill === 'zero' ? 0 : (f.touched ?? 1),
    seals: sealNames.reduce((m, s) => m | (SEAL_BITS[s] ?? 0), 0), sealNames,
    seed: seedOf(`${session}/${f.token}`),
  };
}

/** Folios that hold data, as ascending [start, end) runs spread evenly over the file. */
export function* touchedRuns(g: GuestFile): Generator<[start: number, end: number]> {
  const folios = g.size / g.folioBytes;
  if (folios === 0 || g.touched <= 0) return;
  if (g.touched >= 1) { yield [0, folios]; return; }
  const n = Math.max(1, Math.round(folios * g.touched));
  const stride = folios / n;
  let start = -1;
  let end = -1;
  for (let j = 0; j < n; j++) {
    const i = Math.floor(j * stride);
    if (i === end) { end++; continue; }
    if (start >= 0) yield [start, end];
    start = i;
    end = i + 1;
  }
  if (start >= 0) yield [start, end];
}

/** Pages that will hold data: the resident footprint a sparse format preserves. */
export function dataPages(g: GuestFile): number {
  let folios = 0;
  for (const [s, e] of touchedRuns(g)) folios += e - s;
  return (folios * g.folioBytes) / PAGE_SIZE;
}

/** The bytes of page `page` of a pattern file: a header naming it, then a xorshift stream. */
export function patternPage(dst: Uint32Array, at: number, seed: number, page: number): void {
  let x = Math.imul((seed ^ Math.imul((page + 1) >>> 0, 0x9e3779b1)) >>> 0, 0x85ebca6b) >>> 0;
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35) >>> 0;
  if (x === 0) x = 0x2545f491;
  dst[at] = PATTERN_MAGIC;
  dst[at + 1] = seed;
  dst[at + 2] = page >>> 0;
  dst[at + 3] = ~page >>> 0;
  for (let i = 4; i < PAGE_WORDS; i++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    dst[at + i] = x >>> 0;
  }
}

function patternBytes(seed: number, offset: number, length: number): Uint8Array {
  const words = new Uint32Array(length / 4);
  const first = offset / PAGE_SIZE;
  for (let p = 0; p < length / PAGE_SIZE; p++) patternPage(words, p * PAGE_WORDS, seed, first + p);
  return new Uint8Array(words.buffer);
}

/** Split [start, end) folios into steps of at most CHUNK_BYTES (and at least one folio). */
function* steps(g: GuestFile, start: number, end: number): Generator<[offset: number, length: number]> {
  const per = Math.max(1, Math.floor(CHUNK_BYTES / g.folioBytes));
  for (let f = start; f < end; f += per) yield [f * g.folioBytes, Math.min(per, end - f) * g.folioBytes];
}

/**
 * memfd_create + ftruncate + the guest's writes (through the shared mapping, as a VMM's
 * guest does) + seals last, so a write seal does not stop the fill. Returns the fd.
 */
export function createGuestFile(sys: MemfdSyscalls, vmm: Process, g: GuestFile, tick: (pages: number) => void): number {
  const flags = MFD_CLOEXEC | (g.seals ? MFD_ALLOW_SEALING : 0) | (g.type === 'hugetlb-memfd' ? MFD_HUGETLB : 0);
  const fd = sys.memfdCreate(vmm, `guest-ram:${g.session}:${g.token}`, flags);
  vmm.ftruncate(fd, g.size);
  for (const [start, end] of touchedRuns(g)) {
    for (const [offset, length] of steps(g, start, end)) {
      if (g.fill === 'pattern') sys.memfdStore(vmm, fd, patternBytes(g.seed, offset, length), offset);
      else sys.memfdFillSynthetic(vmm, fd, offset, length, g.seed);
      tick(length / PAGE_SIZE);
    }
  }
  if (g.seals) vmm.fcntl(fd, F_ADD_SEALS, g.seals);
  return fd;
}

export interface GuestFileCheck {
  readonly ok: boolean;
  /** Bytes compared against the pattern. */
  readonly patternBytes: number;
  /** Pages whose synthetic seed was checked. */
  readonly syntheticPages: number;
  /** Bytes of holes (never written) read back and found zero. */
  readonly holeBytes: number;
  /** Pages present in the restored page cache. */
  readonly residentPages: number;
  readonly problems: readonly string[];
}

const ZERO = new Uint8Array(CHUNK_BYTES);

function firstDifference(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

/**
 * Compare every byte of the restored file with what the scenario wrote: pattern pages byte
 * for byte, synthetic pages by seed, holes as zeros; then size and seals. `resealV1`: the
 * memfd-v1 format does not carry seals, so the VMM re-applies them (and we check that works).
 */
export function verifyGuestFile(
  sys: MemfdSyscalls, vmm: Process, fd: number, g: GuestFile, tick: (pages: number) => void, resealV1 = false,
): GuestFileCheck {
  const problems: string[] = [];
  let patternChecked = 0;
  let syntheticPages = 0;
  let holeBytes = 0;
  const where = `session ${g.session} token ${g.token}`;
  const size = vmm.lseek(fd, 0, 2);
  if (size !== g.size) problems.push(`${where}: size ${size}, expected ${g.size}`);

  const compare = (offset: number, expected: Uint8Array | null, length: number): void => {
    const got = vmm.pread(fd, length, offset);
    const want = expected ?? ZERO.subarray(0, length);
    if (got.length !== length || !Buffer.from(got.buffer, got.byteOffset, got.length).equals(Buffer.from(want.buffer, want.byteOffset, length))) {
      const at = got.length !== length ? got.length : firstDifference(got, want);
      if (problems.length < 8) problems.push(`${where}: byte 0x${(offset + at).toString(16)} differs (${expected ? 'pattern' : 'hole'})`);
    }
  };
  const checkHoles = (from: number, to: number): void => {
    for (let off = from; off < to; off += CHUNK_BYTES) {
      const len = Math.min(CHUNK_BYTES, to - off);
      compare(off, null, len);
      holeBytes += len;
      tick(len / PAGE_SIZE);
    }
  };

  let cursor = 0;
  for (const [start, end] of touchedRuns(g)) {
    checkHoles(cursor, start * g.folioBytes);
    for (const [offset, length] of steps(g, start, end)) {
      if (g.fill === 'pattern') {
        compare(offset, patternBytes(g.seed, offset, length), length);
        patternChecked += length;
      } else {
        if (!sys.memfdCheckSynthetic(vmm, fd, offset, length, g.seed) && problems.length < 8) {
          problems.push(`${where}: synthetic pages at 0x${offset.toString(16)}+0x${length.toString(16)} do not carry their seed`);
        }
        syntheticPages += length / PAGE_SIZE;
      }
      tick(length / PAGE_SIZE);
    }
    cursor = end * g.folioBytes;
  }
  checkHoles(cursor, g.size);

  // Without MFD_ALLOW_SEALING a memfd starts sealed with F_SEAL_SEAL.
  const wantSeals = g.seals || memfdAbi.F_SEAL_SEAL;
  let seals = vmm.fcntl(fd, F_GET_SEALS);
  if (resealV1 && seals !== wantSeals) {
    vmm.fcntl(fd, F_ADD_SEALS, wantSeals);
    seals = vmm.fcntl(fd, F_GET_SEALS);
  }
  if (seals !== wantSeals) problems.push(`${where}: seals 0x${seals.toString(16)}, expected 0x${wantSeals.toString(16)}`);
  return { ok: problems.length === 0, patternBytes: patternChecked, syntheticPages, holeBytes, residentPages: sys.memfdResidentPages(vmm, fd), problems };
}
