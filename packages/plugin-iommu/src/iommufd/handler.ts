/**
 * The iommufd LUO file handler (drivers/iommu/iommufd/liveupdate.c). 1.x = "iommufd-v1" as
 * posted: preserve checks every marked HWPT (a domain, EINVAL) and, once per IOAS, every area
 * (file-backed, EINVAL; sealed F_SEAL_SEAL|F_SEAL_GROW|F_SEAL_SHRINK, EINVAL; the file preserved
 * in the same session, ENOENT), makes the IOAS immutable and preserves each domain into the
 * IOMMU FLB; it is not retrievable (EOPNOTSUPP) and can_finish is false. 2.x (this project) adds
 * the areas so the incoming kernel rebuilds the HWPTs on the restored domains and can finish;
 * 2.1 closes the handover with a CRC-32 of all of it, checked before anything is restored.
 * An allocation failure in a 2.x retrieve is ENOMEM (issue 12): sticky, nothing kept, no FINISH.
 */
import { ErrnoError, KFile, PAGE_SIZE, defineFileHandler, type FileHandlerDefinition, type HandlerContext, type LuoSessionRef } from '@liveupdate/sdk';
import { semver } from '@liveupdate/sdk';
import {
  IOMMUFD_ALIASES, IOMMUFD_FAMILY, iommufdAreaSer, iommufdAreasSer, iommufdCrcSer, iommufdHasCrc, iommufdHwptSer, iommufdSer, iommufdV1Size, iommufdV21Size, iommufdV2Size,
} from '../abi/iommufd.js';
import { coreOf } from '../state.js';
import { Hwpt, Ioas, IommufdCtx, iommufdFile, isIommufd, ictxOf } from './ctx.js';
import { iommufdFops } from './ioctl.js';
import { crc32, memfdPinRuns, memfdSize } from '@liveupdate/plugin-memfd';

const F_SEAL_SEAL = 0x0001;
const F_SEAL_SHRINK = 0x0002;
const F_SEAL_GROW = 0x0004;
const REQUIRED_SEALS = F_SEAL_SEAL | F_SEAL_GROW | F_SEAL_SHRINK;

interface IommufdPreservation {
  readonly ictx: IommufdCtx;
  readonly hwpts: readonly Hwpt[];
  phys: number;
}

/** check_iopt_pages_preserved */
function checkAreas(session: LuoSessionRef, ioas: Ioas): void {
  for (const a of ioas.areas) {
    if (a.file === null) throw new ErrnoError('EINVAL', 'iommufd_liveupdate_preserve', `IOAS ${ioas.id}: area at 0x${a.iova.toString(16)} is not file-backed`);
    if ((a.seals & REQUIRED_SEALS) !== REQUIRED_SEALS) throw new ErrnoError('EINVAL', 'iommufd_liveupdate_preserve', `IOAS ${ioas.id}: the file at 0x${a.iova.toString(16)} lacks F_SEAL_SEAL|F_SEAL_GROW|F_SEAL_SHRINK`);
    if (session.tokenOf(a.file) === undefined) throw new ErrnoError('ENOENT', 'iommufd_liveupdate_preserve', `IOAS ${ioas.id}: the file at 0x${a.iova.toString(16)} is not preserved in session ${session.name}`);
  }
}

function writeHandover(ctx: HandlerContext<IommufdPreservation>, st: IommufdPreservation, version: string): number {
  const out = ctx.kernel.khoOut;
  if (!out) throw new ErrnoError('EOPNOTSUPP', 'iommufd_liveupdate_preserve');
  const v2 = semver.major(version) >= 2;
  const ioasFirst = new Map<Ioas, number>();
  st.hwpts.forEach((h, i) => { if (!ioasFirst.has(h.ioas)) ioasFirst.set(h.ioas, i); });
  const areas = v2 ? [...ioasFirst].flatMap(([ioas, i]) => ioas.areas.map((a) => ({ a, i }))) : [];
  const withCrc = v2 && iommufdHasCrc(version);
  const size = withCrc ? iommufdV21Size(st.hwpts.length, areas.length) : v2 ? iommufdV2Size(st.hwpts.length, areas.length) : iommufdV1Size(st.hwpts.length);
  const buf = new Uint8Array(size);
  iommufdSer.encodeInto(buf, 0, { nr_hwpts: BigInt(st.hwpts.length) });
  st.hwpts.forEach((h, i) => iommufdHwptSer.encodeInto(buf, iommufdSer.size + i * iommufdHwptSer.size, {
    domain_data: BigInt(h.domain?.preservedRecord ?? 0), token: h.luToken ?? 0n, reclaimed: 0,
  }));
  if (v2) {
    let off = iommufdV1Size(st.hwpts.length);
    iommufdAreasSer.encodeInto(buf, off, { nr_areas: BigInt(areas.length) });
    off += iommufdAreasSer.size;
    for (const { a, i } of areas) {
      iommufdAreaSer.encodeInto(buf, off, {
        iova: BigInt(a.iova), length: BigInt(a.length), start: BigInt(a.start),
        file_token: a.file ? (ctx.session.tokenOf(a.file) ?? 0n) : 0n, hwpt_index: i, flags: a.flags, reserved: 0n,
      });
      off += iommufdAreaSer.size;
    }
    if (withCrc) iommufdCrcSer.encodeInto(buf, off, { crc32: crc32(buf.subarray(0, off)), pad: 0 });
  }
  const phys = out.allocPreserve(size);
  ctx.kernel.machine.memory.write(phys, buf);
  return phys;
}

function preserve(ctx: HandlerContext<IommufdPreservation>): void {
  if (!ctx.file) throw new ErrnoError('EBADF', 'iommufd_liveupdate_preserve');
  const ictx = ictxOf(ctx.file, 'iommufd_liveupdate_preserve');
  const core = coreOf(ctx.kernel);
  const hwpts = ictx.markedHwpts();
  // Pass 1: every marked HWPT must have a domain.
  for (const h of hwpts) if (!h.domain) throw new ErrnoError('EINVAL', 'iommufd_liveupdate_preserve', `HWPT ${h.id} has no domain`);
  const madeImmutable: Ioas[] = [];
  const preserved: Hwpt[] = [];
  const st: IommufdPreservation = { ictx, hwpts, phys: 0 };
  try {
    for (const h of hwpts) {
      if (!h.ioas.immutable) {
        // The IOAS is made immutable first, so its areas cannot change under the check.
        h.ioas.immutable = true;
        madeImmutable.push(h.ioas);
        checkAreas(ctx.session, h.ioas);
      }
      core.preserveDomain(h.domain as NonNullable<Hwpt['domain']>);
      h.preserved = true;
      preserved.push(h);
    }
    st.phys = writeHandover(ctx, st, ctx.version);
  } catch (e) {
    for (const h of preserved.reverse()) { if (h.domain) core.unpreserveDomain(h.domain); h.preserved = false; }
    for (const ioas of madeImmutable) ioas.immutable = false;
    throw e;
  }
  ictx.preservedToken = ctx.token;
  ctx.data = BigInt(st.phys);
  ctx.state = st;
}

function unpreserve(ctx: HandlerContext<IommufdPreservation>): void {
  const st = ctx.state;
  if (!st) return;
  const core = coreOf(ctx.kernel);
  for (const h of st.hwpts) {
    if (h.domain) core.unpreserveDomain(h.domain);
    h.ioas.immutable = false;
    h.preserved = false;
  }
  ctx.kernel.khoOut?.unpreserveFree(st.phys);
  st.ictx.preservedToken = null;
  ctx.state = undefined;
}

/** The negotiated version decides the bytes: 2.x appends the areas. */
function freeze(ctx: HandlerContext<IommufdPreservation>): void {
  const st = ctx.state;
  if (!st) return;
  const phys = writeHandover(ctx, st, ctx.version);
  ctx.kernel.khoOut?.unpreserveFree(st.phys);
  st.phys = phys;
  ctx.data = BigInt(phys);
}

/** 2.x: rebuild an iommufd whose HWPTs sit on the restored domains, its IOAS areas on the retrieved memfds. */
function retrieve(ctx: HandlerContext<IommufdPreservation>): void {
  // As posted, iommufd cannot be retrieved yet.
  if (semver.major(ctx.version) < 2) throw new ErrnoError('EOPNOTSUPP', 'iommufd_liveupdate_retrieve');
  const core = coreOf(ctx.kernel);
  const kin = ctx.kernel.khoIn;
  const mem = ctx.kernel.machine.memory;
  const phys = Number(ctx.data);
  const folio = kin?.restoreFolio(phys) ?? null;
  if (!kin || folio === null) throw new ErrnoError('EINVAL', 'iommufd_liveupdate_retrieve', 'handover not preserved');
  const nrHwpts = mem.readU64Number(phys);
  if (nrHwpts > 4096) throw new ErrnoError('EINVAL', 'iommufd_liveupdate_retrieve', `${nrHwpts} HWPTs`);
  const areasAt = phys + iommufdV1Size(nrHwpts);
  const nrAreas = mem.readU64Number(areasAt);
  if (nrAreas > 65536) throw new ErrnoError('EINVAL', 'iommufd_liveupdate_retrieve', `${nrAreas} areas`);
  // The handover must lie within the folio preserved for it.
  const size = iommufdHasCrc(ctx.version) ? iommufdV21Size(nrHwpts, nrAreas) : iommufdV2Size(nrHwpts, nrAreas);
  if (phys + size > (folio.pfn + 2 ** folio.order) * PAGE_SIZE) {
    throw new ErrnoError('EINVAL', 'iommufd_liveupdate_retrieve', `${nrHwpts} HWPTs and ${nrAreas} areas overrun the handover's ${2 ** folio.order} page(s)`);
  }
  // 2.1: the CRC-32 of every byte before it, checked before any domain is restored or any file pinned.
  if (iommufdHasCrc(ctx.version)) {
    const body = size - iommufdCrcSer.size;
    const c = iommufdCrcSer.decode(mem.read(phys + body, iommufdCrcSer.size));
    const want = crc32(mem.read(phys, body));
    if (c.crc32 !== want || c.pad !== 0) {
      throw new ErrnoError('EINVAL', 'iommufd_liveupdate_retrieve', `handover CRC-32 0x${c.crc32.toString(16)} (pad ${c.pad}), computed 0x${want.toString(16)}`);
    }
  }
  // The rebuild needs working memory before it restores a domain or pins a file: the table of
  // restored HWPTs and the table of areas (kcalloc'd; freed when retrieve returns). An allocation
  // the page allocator cannot satisfy (alloc_pages returns NULL) is ENOMEM: what this retrieve
  // already allocated is released, LUO keeps the error sticky, and can_finish is false after it.
  const scratch: Array<[pfn: number, order: number]> = [];
  const releaseScratch = (): void => { for (const [pfn, order] of scratch.splice(0)) ctx.kernel.mm.freePages(pfn, order); };
  for (const [what, bytes] of [['the HWPT table', Math.max(1, nrHwpts) * 8], ['the area table', Math.max(1, nrAreas) * 16]] as const) {
    const order = Math.max(0, Math.ceil(Math.log2(Math.ceil(bytes / PAGE_SIZE))));
    const pfn = ctx.kernel.mm.allocPages(order);
    if (pfn === null) {
      releaseScratch();
      throw new ErrnoError('ENOMEM', 'iommufd_liveupdate_retrieve', `cannot allocate ${2 ** order} page(s) for ${what}`);
    }
    scratch.push([pfn, order]);
  }
  try {
    retrieveInto(ctx, core, folio, phys, nrHwpts, areasAt, nrAreas);
  } finally {
    releaseScratch();
  }
}

function retrieveInto(
  ctx: HandlerContext<IommufdPreservation>, core: ReturnType<typeof coreOf>, folio: { pfn: number; order: number }, phys: number, nrHwpts: number, areasAt: number, nrAreas: number,
): void {
  const mem = ctx.kernel.machine.memory;
  const ictx = new IommufdCtx(ctx.kernel, core, true);
  const hwpts: Hwpt[] = [];
  for (let i = 0; i < nrHwpts; i++) {
    const r = iommufdHwptSer.decode(mem.read(phys + iommufdSer.size + i * iommufdHwptSer.size, iommufdHwptSer.size));
    const recordPhys = Number(r.domain_data);
    const rec = core.incoming?.domains.find((d) => d.phys === recordPhys);
    const dev = core.incoming?.devices.find((d) => d.domainPhys === recordPhys);
    const unit = dev ? core.units.find((u) => core.incoming?.hw.some((h) => h.phys === dev.iommuPhys && h.token === u.token)) : core.units[0];
    if (!rec || !unit) throw new ErrnoError('EINVAL', 'iommufd_liveupdate_retrieve', `HWPT ${i}: no domain record at 0x${recordPhys.toString(16)}`);
    const domain = core.restoreDomain(recordPhys, unit);
    if (typeof domain === 'string') throw new ErrnoError('EINVAL', 'iommufd_liveupdate_retrieve', domain);
    const ioas = ictx.ioasAlloc();
    const h = new Hwpt(0, ioas, domain);
    hwpts.push(h);
    h.luToken = r.token;
  }
  const held: KFile[] = [];
  try {
    for (let k = 0; k < nrAreas; k++) {
      const a = iommufdAreaSer.decode(mem.read(areasAt + iommufdAreasSer.size + k * iommufdAreaSer.size, iommufdAreaSer.size));
      const h = hwpts[a.hwpt_index];
      if (!h) throw new ErrnoError('EINVAL', 'iommufd_liveupdate_retrieve', `area ${k}: HWPT index ${a.hwpt_index}`);
      const iova = Number(a.iova);
      const length = Number(a.length);
      const start = Number(a.start);
      if (!length || length % PAGE_SIZE || iova % PAGE_SIZE || start % PAGE_SIZE || iova + length > 2 ** 48) {
        throw new ErrnoError('EINVAL', 'iommufd_liveupdate_retrieve', `area ${k}: iova 0x${iova.toString(16)} + 0x${length.toString(16)} @0x${start.toString(16)}`);
      }
      const file = ctx.session.fileByToken(a.file_token);
      if (start + length > memfdSize(file)) throw new ErrnoError('EINVAL', 'iommufd_liveupdate_retrieve', `area ${k}: beyond the end of its file`);
      const runs = memfdPinRuns(file, start, length);
      // The restored tables must map the area onto the retrieved file's pages, page for page.
      let off = 0;
      for (const [p, n] of runs) {
        for (let x = 0; x < n; x += 4096) {
          if (h.domain?.table.lookup(iova + off + x) !== p + x) throw new ErrnoError('EINVAL', 'iommufd_liveupdate_retrieve', `area ${k}: iova 0x${(iova + off + x).toString(16)} does not map the file's page`);
        }
        off += n;
      }
      held.push(file.get());
      h.ioas.areas.push({ iova, length, flags: a.flags, file, start: Number(a.start), seals: REQUIRED_SEALS, runs });
    }
  } catch (e) {
    // A refused handover keeps nothing: the files this retrieve pinned are put back.
    for (const f of held) f.put();
    throw e;
  }
  for (const h of hwpts) ictx.adoptHwpt(h);
  ctx.file = iommufdFile(ctx.kernel, ictx, iommufdFops);
  ctx.kernel.mm.freePages(folio.pfn, folio.order);
}

export function iommufdHandler(writes: readonly string[], reads: string): FileHandlerDefinition<IommufdPreservation> {
  return defineFileHandler<IommufdPreservation>({
    format: { family: IOMMUFD_FAMILY, writes, reads, aliases: IOMMUFD_ALIASES },
    canPreserve: (file: KFile) => isIommufd(file),
    preserve,
    unpreserve,
    freeze,
    retrieve,
    // As posted can_finish is false: FINISH of a session holding iommufd fails.
    canFinish: (ctx) => semver.major(ctx.version) >= 2 && ctx.retrieveStatus >= 0,
    finish: (ctx) => {
      if (semver.major(ctx.version) >= 2 && ctx.retrieveStatus === 0) ctx.kernel.khoIn?.restoreFree(Number(ctx.data));
      const core = coreOf(ctx.kernel);
      if (core.foreignFlbRefs > 0 && --core.foreignFlbRefs === 0) core.releaseIncoming();
    },
  });
}
