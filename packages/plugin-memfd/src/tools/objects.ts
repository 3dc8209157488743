/**
 * The scenario object kinds of plugin-memfd: 'memfd' (shmem) and 'hugetlb-memfd' (2 MiB
 * hugeTLB pages). Kernel A's release creates the file with its own memfd_create, fills it
 * (pattern bytes, synthetic pages or nothing) and preserves it; kernel B's release retrieves
 * it and checks it. The check walks the resident folios of the restored page cache, so its
 * cost follows resident pages, never the file size: a folio the scenario wrote is compared
 * with what was written, a folio it never wrote must be zero (upstream formats materialize
 * holes), and a hole is checked through the structure (it is absent, so it reads zero).
 */
import { PAGE_SIZE } from '@liveupdate/hw';
import { defineObjectKind, type ObjectCheck, type ObjectKind, type SessionStepContext } from '@liveupdate/sdk';
import { F_SEAL_SEAL, MEMFD_ALIASES } from '../abi/memfd.js';
import {
  F_ADD_SEALS, F_GET_SEALS, inodeOf, memfdCheckSynthetic, memfdCreate, memfdFillSynthetic, memfdStore,
  MFD_ALLOW_SEALING, MFD_CLOEXEC, MFD_HUGETLB, type MemfdInode,
} from '../memfd.js';
import {
  CHUNK_BYTES, dataFolios, dataPages, guestFile, HUGE_PAGE_BYTES, SEAL_BITS, sharedPatternBytes, stepFolios, touchedRunList,
  type GuestFile, type MemfdSpec, type PfnRun,
} from './guest-file.js';

const sizeSchema = { type: 'string', format: 'size' };

const properties = {
  size: sizeSchema,
  fill: { type: 'string', enum: ['pattern', 'synthetic', 'zero'] },
  touched: { type: 'number', minimum: 0, maximum: 1 },
  seals: { type: 'array', items: { type: 'string', enum: Object.keys(SEAL_BITS) } },
  /** 'device-written': guest RAM a passthrough device writes; see `Contents`. */
  contents: { type: 'string', enum: ['device-written'] },
};

/** Host bytes a pattern page costs the tool (its bytes exist twice while written: generated and stored). */
const PATTERN_HOST_BYTES_PER_PAGE = PAGE_SIZE;

function create(ctx: SessionStepContext, spec: MemfdSpec): { fd: number; preservedPages: number; expect: GuestFile } {
  const g = guestFile(ctx.session, spec);
  const { vmm } = ctx;
  const flags = MFD_CLOEXEC | (g.seals ? MFD_ALLOW_SEALING : 0) | (g.type === 'hugetlb-memfd' ? MFD_HUGETLB : 0);
  const fd = memfdCreate(vmm, `guest-ram:${g.session}:${g.token}`, flags);
  vmm.ftruncate(fd, g.size);
  const per = stepFolios(g);
  for (const run of touchedRunList(g)) {
    for (let f = run[0]; f < run[1]; f += per) {
      const offset = f * g.folioBytes;
      const length = Math.min(per, run[1] - f) * g.folioBytes;
      if (g.fill === 'pattern') memfdStore(vmm, fd, sharedPatternBytes(g.seed, offset, length), offset);
      else if (g.fill === 'zero') memfdStore(vmm, fd, new Uint8Array(length), offset);
      else memfdFillSynthetic(vmm, fd, offset, length, g.seed);
      ctx.tick(length / PAGE_SIZE);
    }
  }
  // Seals last, so a write seal does not stop the fill.
  if (g.seals) vmm.fcntl(fd, F_ADD_SEALS, g.seals);
  ctx.preserve(fd, g.token);
  const m = inodeOf(vmm.file(fd, 'stat'));
  const expect = g.contents === 'device-written' ? { ...g, pfnRuns: pfnRuns(m) } : g;
  return { fd, preservedPages: m.cache.count * 2 ** m.order, expect };
}

/** The resident folios as (index, pfn, count) runs, in one pass over the page cache. */
function pfnRuns(m: MemfdInode): PfnRun[] {
  const runs: Array<[number, number, number]> = [];
  const step = 2 ** m.order;
  m.cache.forEach((index, pfn) => {
    const last = runs[runs.length - 1];
    if (last && last[0] + last[2] === index && last[1] + last[2] * step === pfn) last[2]++;
    else runs.push([index, pfn, 1]);
  });
  return runs;
}

/** The checks every restored memfd gets first: size and folio size. Problems are capped at 8. */
function checkShape(ctx: SessionStepContext, fd: number, g: GuestFile) {
  const problems: string[] = [];
  const problem = (p: string): void => { if (problems.length < 8) problems.push(p); };
  const where = `session ${g.session} token ${g.token}`;
  const size = ctx.vmm.lseek(fd, 0, 2);
  if (size !== g.size) problem(`${where}: size ${size}, expected ${g.size}`);
  const m = inodeOf(ctx.vmm.file(fd, 'check'));
  if (m.folioBytes !== g.folioBytes) problem(`${where}: folios of ${m.folioBytes} bytes, expected ${g.folioBytes}`);
  return { problems, problem, where, m };
}

/**
 * Seals as written. Without MFD_ALLOW_SEALING a memfd starts sealed with F_SEAL_SEAL; memfd-v1
 * does not carry seals, so there the VMM re-applies them (and we check that works).
 */
function checkSeals(ctx: SessionStepContext, fd: number, g: GuestFile, resealV1: boolean, problem: (p: string) => void, where: string): void {
  const { vmm } = ctx;
  const wantSeals = g.seals || F_SEAL_SEAL;
  let seals = vmm.fcntl(fd, F_GET_SEALS);
  if (resealV1 && seals !== wantSeals) {
    vmm.fcntl(fd, F_ADD_SEALS, wantSeals);
    seals = vmm.fcntl(fd, F_GET_SEALS);
  }
  if (seals !== wantSeals) problem(`${where}: seals 0x${seals.toString(16)}, expected 0x${wantSeals.toString(16)}`);
}

/**
 * Device-written memory: the bytes belong to the device's reference model (a scenario section),
 * so this checks what the file itself promises: size, seals, every folio back at the physical
 * page it had when preserved (the device's DMA addresses stay valid), and no page reads poison.
 */
function verifyDeviceWritten(ctx: SessionStepContext, fd: number, g: GuestFile, resealV1: boolean): ObjectCheck {
  const { problems, problem, where, m } = checkShape(ctx, fd, g);
  const want = g.pfnRuns ?? [];
  const step = 2 ** m.order;
  const mem = m.kernel.machine.memory;
  let r = 0;
  let moved = 0;
  let extra = 0;
  let poisoned = 0;
  let resident = 0;
  m.cache.forEach((index, pfn) => {
    resident++;
    while (r < want.length && (want[r] as PfnRun)[0] + (want[r] as PfnRun)[2] <= index) r++;
    const run = want[r];
    if (!run || index < run[0]) { extra++; return; }
    if (pfn !== run[1] + (index - run[0]) * step) { if (moved++ === 0) problem(`${where}: byte 0x${(index * m.folioBytes).toString(16)} came back at pfn 0x${pfn.toString(16)}, was 0x${(run[1] + (index - run[0]) * step).toString(16)}`); }
    for (let k = 0; k < step; k++) if (mem.pageKind(pfn + k) === 'poison') poisoned++;
  });
  const wantFolios = want.reduce((n, x) => n + x[2], 0);
  if (moved > 1) problem(`${where}: ${moved} folios came back at another physical page`);
  if (extra > 0) problem(`${where}: ${extra} folio(s) resident that were not when preserved`);
  if (resident - extra < wantFolios) problem(`${where}: ${wantFolios - (resident - extra)} preserved folio(s) came back as holes`);
  if (poisoned > 0) problem(`${where}: ${poisoned} page(s) read poison`);
  checkSeals(ctx, fd, g, resealV1, problem, where);
  ctx.tick(resident * step);
  const pages = (resident - extra - moved) * step;
  return {
    ok: problems.length === 0,
    summary: `${pages} device-written pages back at their physical pages, none poisoned (bytes checked by the device's section)`,
    problems,
    counts: { 'device-written pages back in place': pages },
  };
}

/** Every page of the folio at pfn reads zero (a zero page is known without reading it). */
function folioIsZero(m: MemfdInode, pfn: number): boolean {
  const mem = m.kernel.machine.memory;
  for (let k = 0; k < 2 ** m.order; k++) {
    const kind = mem.pageKind(pfn + k);
    if (kind === 'zero') continue;
    if (kind !== 'data') return false;
    const page = mem.read((pfn + k) * PAGE_SIZE, PAGE_SIZE);
    for (let i = 0; i < page.length; i++) if (page[i] !== 0) return false;
  }
  return true;
}

/** The compatible string kernel B's LUO holds for (session, token), before it is retrieved. */
function incomingCompatible(ctx: SessionStepContext, token: number): string | null {
  for (const s of ctx.kernel.luo.sessions.incoming) {
    if (s.name !== ctx.session) continue;
    for (const f of s.fileSet.files) if (f.token === BigInt(token)) return f.compatible;
  }
  return null;
}

/**
 * Check a restored file against what was written, at a cost of O(resident folios + written
 * runs): the written folios are compared (pattern bytes, synthetic seeds), the resident folios
 * the scenario never wrote must be zero, and every written folio must be resident.
 */
export function verifyGuestFile(ctx: SessionStepContext, fd: number, g: GuestFile, resealV1: boolean): ObjectCheck {
  const { vmm } = ctx;
  const { problems, problem, where, m } = checkShape(ctx, fd, g);

  // One pass over the resident folios, merged with the (ascending) written runs.
  const runs = touchedRunList(g);
  let r = 0;
  const written: Array<[number, number]> = [];
  let zeroFolios = 0;
  let writtenResident = 0;
  let beyondEnd = 0;
  m.cache.forEach((index, pfn) => {
    while (r < runs.length && (runs[r] as [number, number])[1] <= index) r++;
    const run = runs[r];
    if (index * m.folioBytes >= g.size) { beyondEnd++; return; }
    if (run && index >= run[0]) {
      writtenResident++;
      const last = written[written.length - 1];
      if (last && last[1] === index) last[1]++; else written.push([index, index + 1]);
      return;
    }
    // A folio the scenario never wrote: a materialized hole, which must read zero.
    zeroFolios++;
    if (!folioIsZero(m, pfn)) problem(`${where}: byte 0x${(index * m.folioBytes).toString(16)} differs (hole)`);
  });
  if (beyondEnd > 0) problem(`${where}: ${beyondEnd} folio(s) beyond the end of the file`);
  const wantWritten = dataFolios(g);
  if (writtenResident !== wantWritten) {
    // Find the first written folio that came back as a hole (bounded by the runs, not the file).
    let missing = -1;
    let w = 0;
    outer: for (const [s, e] of runs) {
      for (let i = s; i < e; i++) {
        while (w < written.length && (written[w] as [number, number])[1] <= i) w++;
        const got = written[w];
        if (!got || i < got[0]) { missing = i; break outer; }
      }
    }
    problem(`${where}: ${wantWritten - writtenResident} written folio(s) came back as holes${missing >= 0 ? `, first at byte 0x${(missing * g.folioBytes).toString(16)}` : ''}`);
  }

  let patternChecked = 0;
  let syntheticPages = 0;
  const per = stepFolios(g);
  for (const run of written) {
    for (let f = run[0]; f < run[1]; f += per) {
      const offset = f * g.folioBytes;
      const length = Math.min(per, run[1] - f) * g.folioBytes;
      if (g.fill === 'pattern') {
        const got = vmm.pread(fd, length, offset);
        const want = sharedPatternBytes(g.seed, offset, length);
        if (!Buffer.from(got.buffer, got.byteOffset, got.length).equals(Buffer.from(want.buffer))) {
          let at = got.length === length ? 0 : got.length;
          while (at < length && got[at] === want[at]) at++;
          problem(`${where}: byte 0x${(offset + at).toString(16)} differs (pattern)`);
        }
        patternChecked += length;
      } else if (g.fill === 'synthetic') {
        if (!memfdCheckSynthetic(vmm, fd, offset, length, g.seed)) {
          problem(`${where}: synthetic pages at 0x${offset.toString(16)}+0x${length.toString(16)} do not carry their seed`);
        }
        syntheticPages += length / PAGE_SIZE;
      }
      ctx.tick(length / PAGE_SIZE);
    }
  }

  checkSeals(ctx, fd, g, resealV1, problem, where);
  const residentPages = m.cache.count * 2 ** m.order;
  const holePages = Math.max(0, g.size / PAGE_SIZE - residentPages);
  const counts: Record<string, number> = {};
  if (patternChecked > 0) counts['pattern pages compared byte for byte'] = patternChecked / PAGE_SIZE;
  if (syntheticPages > 0) counts['synthetic pages checked by seed'] = syntheticPages;
  if (zeroFolios > 0) counts['unwritten resident pages read zero'] = (zeroFolios * g.folioBytes) / PAGE_SIZE;
  if (holePages > 0) counts['hole pages absent (read zero)'] = holePages;
  return {
    ok: problems.length === 0,
    summary: Object.entries(counts).map(([k, v]) => `${v} ${k}`).join(', ') || 'empty file',
    problems,
    counts,
  };
}

function restore(ctx: SessionStepContext, spec: MemfdSpec, expect: GuestFile): { fd: number; restoredPages: number; check: ObjectCheck } {
  const g = expect ?? guestFile(ctx.session, spec);
  const resealV1 = incomingCompatible(ctx, g.token) === MEMFD_ALIASES[1];
  const fd = ctx.retrieve(g.token);
  const m = inodeOf(ctx.vmm.file(fd, 'stat'));
  const check = g.contents === 'device-written' ? verifyDeviceWritten(ctx, fd, g, resealV1) : verifyGuestFile(ctx, fd, g, resealV1);
  return { fd, restoredPages: m.cache.count * 2 ** m.order, check };
}

/** Host memory creating the file costs the tool: the bytes of its pattern pages (synthetic and zero pages cost none). */
function hostBytes(spec: MemfdSpec): number {
  try {
    const g = guestFile('host', spec);
    return g.fill === 'pattern' ? dataPages(g) * PATTERN_HOST_BYTES_PER_PAGE + CHUNK_BYTES : 0;
  } catch {
    return 0;
  }
}

function validate(spec: MemfdSpec): Array<{ field: string; message: string }> {
  try {
    guestFile('validate', spec);
    return [];
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    return [{ field: message.startsWith('device-written') ? 'touched' : 'size', message }];
  }
}

function units(spec: MemfdSpec): number {
  try { return dataPages(guestFile('units', spec)); } catch { return 0; }
}

export function memfdObjectKind(): ObjectKind<MemfdSpec, GuestFile> {
  return defineObjectKind<MemfdSpec, GuestFile>({
    type: 'memfd',
    description: 'a shmem memfd (guest RAM): size, fill pattern|synthetic|zero, touched fraction, seals, contents device-written (a DMA target: bytes left to the device\'s section)',
    properties,
    required: ['size', 'fill'],
    validate,
    hostBytes,
    units,
    create,
    restore,
  });
}

export function hugetlbObjectKind(supported: boolean): ObjectKind<MemfdSpec, GuestFile> {
  return defineObjectKind<MemfdSpec, GuestFile>({
    type: 'hugetlb-memfd',
    description: 'a hugeTLB memfd on 2 MiB pages (guest RAM): size, fill, touched fraction, seals',
    properties,
    required: ['size', 'fill'],
    validate,
    // The pool the scenario's hugeTLB files need, in 2 MiB pages.
    cmdline: (specs) => {
      let n = 0;
      for (const s of specs) { try { n += guestFile('pool', s).size / HUGE_PAGE_BYTES; } catch { /* the schema check reports it */ } }
      return n > 0 ? `hugepagesz=2M hugepages=${n}` : '';
    },
    hostBytes,
    units,
    supports: () => supported || 'this release does not preserve hugeTLB memfds',
    create,
    restore,
  });
}
