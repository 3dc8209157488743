/**
 * What other subsystems need from a memfd's page cache, as public calls instead of reaching into
 * the inode: the physical frame behind an offset (what /proc/<pid>/pagemap reports for a mapped
 * page, used by a noiommu VMM to program DMA targets) and pinning the folios behind a range
 * (memfd_pin_folios, mm/gup.c, what iommufd's IOMMU_IOAS_MAP_FILE calls).
 */
import { ErrnoError, PAGE_SIZE, type KFile } from '@liveupdate/sdk';
import { inodeOf, isMemfd } from './memfd.js';

function memfdOf(file: KFile, syscall: string): ReturnType<typeof inodeOf> {
  if (!isMemfd(file)) throw new ErrnoError('EINVAL', syscall, 'not a memfd');
  return inodeOf(file);
}

/**
 * The pfn of the 4 KiB page behind byte `offset` of a memfd, or -1 when no folio is resident
 * there (pagemap's "page present" bit clear). Never allocates.
 */
export function memfdPagemap(file: KFile, offset: number): number {
  const m = memfdOf(file, 'pagemap');
  if (!Number.isSafeInteger(offset) || offset < 0) throw new ErrnoError('EINVAL', 'pagemap', `offset ${offset}`);
  if (offset >= m.size) return -1;
  const fb = m.folioBytes;
  const head = m.cache.get(Math.floor(offset / fb));
  if (head < 0) return -1;
  return head + Math.floor((offset % fb) / PAGE_SIZE);
}

/** The seals of a memfd (F_GET_SEALS without a process, memfd_get_seals). */
export function memfdSeals(file: KFile): number { return memfdOf(file, 'memfd_get_seals').seals; }

/** i_size of a memfd. */
export function memfdSize(file: KFile): number { return memfdOf(file, 'memfd').size; }

/** memfd_pin_folios's answer: the folios of [start, end] and where `start` falls in the first. */
export interface PinnedFolios {
  /** Head pfn of each folio, in file order. */
  readonly pfns: readonly number[];
  /** Bytes per folio (4 KiB for shmem, the huge page size for hugetlbfs). */
  readonly folioBytes: number;
  /** Byte offset of `start` inside the first folio. */
  readonly offset: number;
}

/**
 * memfd_pin_folios(memfd, start, end, ...): the folios backing bytes [start, end] (inclusive,
 * as upstream), allocating missing ones as memfd_alloc_folio does. EINVAL for a range that is
 * empty, negative or beyond i_size.
 */
export function memfdPinFolios(file: KFile, start: number, end: number): PinnedFolios {
  const m = memfdOf(file, 'memfd_pin_folios');
  // memfd_pin_folios: start > end or a negative offset → -EINVAL.
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || start > end) throw new ErrnoError('EINVAL', 'memfd_pin_folios', `range [${start}, ${end}]`);
  if (end >= m.size) throw new ErrnoError('EINVAL', 'memfd_pin_folios', `end ${end} is beyond i_size ${m.size}`);
  const fb = m.folioBytes;
  const pfns: number[] = [];
  for (let i = Math.floor(start / fb); i <= Math.floor(end / fb); i++) pfns.push(m.fault(i));
  return { pfns, folioBytes: fb, offset: start % fb };
}

/**
 * The physically contiguous runs [phys, bytes] behind bytes [start, start + length): pinned
 * folios merged where they touch (how an IOMMU map call consumes them).
 */
export function memfdPinRuns(file: KFile, start: number, length: number): Array<[number, number]> {
  if (length <= 0) throw new ErrnoError('EINVAL', 'memfd_pin_folios', `length ${length}`);
  const { pfns, folioBytes, offset } = memfdPinFolios(file, start, start + length - 1);
  const runs: Array<[number, number]> = [];
  let left = length;
  for (let i = 0; i < pfns.length; i++) {
    const within = i === 0 ? offset : 0;
    const n = Math.min(folioBytes - within, left);
    const phys = (pfns[i] as number) * PAGE_SIZE + within;
    const last = runs.at(-1);
    if (last && last[0] + last[1] === phys) last[1] += n;
    else runs.push([phys, n]);
    left -= n;
  }
  return runs;
}
