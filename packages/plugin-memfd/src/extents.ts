/**
 * memfd 4.x handover: the page cache as extents (abi/memfd-v4.ts) in a kho_vmalloc area. The
 * folios themselves are preserved one by one as they appear (as in 3.x); the extents are built
 * at freeze, from the page cache in index order, so their cost follows resident folios.
 */
import { PAGE_SIZE } from '@liveupdate/hw';
import {
  ErrnoError, khoPreserveVmalloc, khoRestoreVmalloc, khoUnpreserveVmalloc, vfree, vzalloc,
  type Kernel, type KhoVmallocDesc, type VmArea,
} from '@liveupdate/sdk';
import {
  ExtentBuilder, checkExtents, decodeExtentStream, encodeExtentStream, memfdV4Checksum,
} from './abi/memfd-v4.js';
import type { MemfdInode } from './memfd.js';

/** Folios handed over, as typed (index, pfn) pairs: no per-folio objects for TiB-scale files. */
export interface FolioList {
  readonly count: number;
  /** index of folio i at [2i], its pfn at [2i+1]. */
  readonly pairs: Float64Array;
}

/** The outgoing extent stream of one file and its vmalloc handover. */
export interface ExtentHandover {
  readonly area: VmArea | null;
  readonly desc: KhoVmallocDesc;
  readonly stream: Uint8Array;
  readonly nrExtents: number;
  readonly nrFolios: number;
}

const NO_AREA: KhoVmallocDesc = { first: 0n, total_pages: 0, flags: 0, order: 0 };

/** Build the extents of every cached folio and hand the stream over (the folios are already preserved). */
export function preserveExtents(kernel: Kernel, m: MemfdInode): ExtentHandover {
  const out = kernel.khoOut;
  if (!out) throw new ErrnoError('EOPNOTSUPP', 'freeze', 'KHO disabled');
  const b = new ExtentBuilder(m.order);
  m.cache.forEach((index, pfn) => { b.add(index, pfn); });
  const ext = b.finish();
  const stream = encodeExtentStream(ext, m.order);
  if (stream.length === 0) return { area: null, desc: NO_AREA, stream, nrExtents: 0, nrFolios: 0 };
  const area = vzalloc(kernel.mm, stream.length);
  if (!area) throw new ErrnoError('ENOMEM', 'freeze', 'extent stream');
  try {
    area.write(0, stream);
    return { area, desc: khoPreserveVmalloc(out, kernel.mm, area), stream, nrExtents: ext.count, nrFolios: m.cache.count };
  } catch (e) {
    vfree(kernel.mm, area);
    throw e;
  }
}

/** Drop the stream's handover and free it; the folios stay preserved. */
export function releaseExtents(kernel: Kernel, h: ExtentHandover): void {
  if (!h.area) return;
  const out = kernel.khoOut;
  if (out) khoUnpreserveVmalloc(out, kernel.mm, h.desc);
  vfree(kernel.mm, h.area);
}

/** What retrieve needs of a 4.x header. */
export interface V4Incoming {
  readonly headerBytes: Uint8Array;
  readonly headerPfn: number;
  readonly desc: KhoVmallocDesc;
  readonly streamBytes: number;
  readonly nrExtents: number;
  readonly nrFolios: number;
  readonly order: number;
  readonly fileFolios: number;
  readonly crc: number;
}

/** A 4.x metadata problem; `trusted` says whether the check value matched (so the folios it names may be released). */
export class ExtentError extends ErrnoError {
  constructor(message: string, readonly trusted: boolean) {
    super('EINVAL', 'retrieve', message);
  }
}

/**
 * Restore the stream, check it against the header's crc32, decode it and check every extent
 * before any folio is claimed. The stream's pages are freed before returning.
 */
export function incomingExtents(kernel: Kernel, h: V4Incoming): FolioList {
  const kin = kernel.khoIn;
  if (!kin) throw new ErrnoError('EINVAL', 'retrieve', 'not a KHO boot');
  if (h.nrExtents === 0 || h.streamBytes === 0) {
    if (h.nrExtents !== 0 || h.streamBytes !== 0 || h.nrFolios !== 0 || h.desc.first !== 0n) {
      throw new ExtentError(`nr_extents ${h.nrExtents}, stream_bytes ${h.streamBytes}, nr_folios ${h.nrFolios} disagree`, false);
    }
    if (memfdV4Checksum(h.headerBytes, new Uint8Array(0)) !== h.crc) throw new ExtentError('metadata checksum mismatch', false);
    return { count: 0, pairs: new Float64Array(0) };
  }
  const area = khoRestoreVmalloc(kin, kernel.mm, h.desc);
  if (!area) throw new ExtentError('the extent stream cannot be restored', false);
  try {
    // Counts beyond 2^53 arrive as -1.
    if (h.streamBytes < 0 || h.streamBytes > area.pageCount * PAGE_SIZE) throw new ExtentError(`stream_bytes ${h.streamBytes} beyond the ${area.pageCount}-page stream`, false);
    const stream = area.read(0, h.streamBytes);
    const crc = memfdV4Checksum(h.headerBytes, stream);
    if (crc !== h.crc) throw new ExtentError(`metadata checksum mismatch: crc32 0x${h.crc.toString(16)}, metadata 0x${crc.toString(16)}`, false);
    const ext = decodeExtentStream(stream, h.nrExtents, h.order);
    if (typeof ext === 'string') throw new ExtentError(ext, true);
    const metadataPfns = [h.headerPfn];
    const step = 2 ** area.order;
    for (const run of area.runs) for (let k = 0; k < step; k++) metadataPfns.push(run + k);
    if (h.nrFolios < 0) throw new ExtentError('nr_folios beyond 2^53', true);
    const bad = checkExtents(ext, { order: h.order, fileFolios: h.fileFolios, ramPages: kernel.machine.memory.pageCount, metadataPfns, nrFolios: h.nrFolios });
    if (bad !== null) throw new ExtentError(bad, true);
    const pairs = new Float64Array(2 * h.nrFolios);
    const folioStep = 2 ** h.order;
    let n = 0;
    for (let i = 0; i < ext.count; i++) {
      const index = ext.index[i] as number;
      const pfn = ext.pfn[i] as number;
      const len = ext.len[i] as number;
      for (let k = 0; k < len; k++, n++) {
        pairs[2 * n] = index + k;
        pairs[2 * n + 1] = pfn + k * folioStep;
      }
    }
    return { count: n, pairs };
  } finally {
    vfree(kernel.mm, area);
  }
}
