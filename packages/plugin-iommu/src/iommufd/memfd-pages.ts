/**
 * Pinning the folios of a memfd for IOMMU_IOAS_MAP_FILE (memfd_pin_folios). plugin-memfd exports
 * `isMemfd` and the seal constants but no pinning call yet, so this reads the page cache through
 * the memfd inode's documented shape (fault(index) → pfn, folioBytes, size, seals) and checks that
 * shape at run time; it is the one place to switch to a public pin export when plugin-memfd adds it.
 */
import { isMemfd } from '@liveupdate/plugin-memfd';
import { ErrnoError, type KFile } from '@liveupdate/sdk';

interface MemfdInodeShape {
  readonly size: number;
  readonly seals: number;
  readonly folioBytes: number;
  fault(index: number): number;
}

function shapeOf(file: KFile): MemfdInodeShape {
  const owner = file.inode.owner as Partial<MemfdInodeShape> | null;
  if (!isMemfd(file) || !owner || typeof owner.fault !== 'function' || typeof owner.folioBytes !== 'number' || typeof owner.seals !== 'number') {
    throw new ErrnoError('EINVAL', 'iommu_ioas_map_file', 'not a memfd');
  }
  return owner as MemfdInodeShape;
}

export function memfdSeals(file: KFile): number { return shapeOf(file).seals; }
export function memfdSize(file: KFile): number { return shapeOf(file).size; }

/**
 * The physical runs backing [start, start + length) of the file, faulting missing folios in
 * (pinning allocates them as a write fault would). Each run: [phys, bytes], physically contiguous.
 */
export function memfdPinRuns(file: KFile, start: number, length: number): Array<[number, number]> {
  const m = shapeOf(file);
  const runs: Array<[number, number]> = [];
  const fb = m.folioBytes;
  let off = start;
  while (off < start + length) {
    const index = Math.floor(off / fb);
    const within = off % fb;
    const n = Math.min(fb - within, start + length - off);
    const phys = m.fault(index) * 4096 + within;
    const last = runs.at(-1);
    if (last && last[0] + last[1] === phys) last[1] += n;
    else runs.push([phys, n]);
    off += n;
  }
  return runs;
}
