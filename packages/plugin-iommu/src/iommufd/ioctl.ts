/**
 * iommufd's ioctl dispatch (drivers/iommu/iommufd/main.c iommufd_fops_ioctl): the first u32 of
 * every argument is its size; a size below the command's minimum is EINVAL; unknown commands are
 * ENOTTY. Output fields are written back into the caller's buffer.
 */
import { ErrnoError, type FileOperations, type KFile, type Process } from '@liveupdate/sdk';
import {
  IOMMU_DESTROY, IOMMU_HWPT_ALLOC, IOMMU_HWPT_LU_MARK_PRESERVE, IOMMU_IOAS_ALLOC, IOMMU_IOAS_MAP, IOMMU_IOAS_MAP_FILE, IOMMU_IOAS_UNMAP,
  iommuDestroy, iommuHwptAlloc, iommuHwptLuMarkPreserve, iommuIoasAlloc, iommuIoasMap, iommuIoasMapFile, iommuIoasUnmap,
} from '../abi/uapi.js';
import { ictxOf } from './ctx.js';

const MIN_SIZE: Readonly<Record<number, number>> = {
  [IOMMU_DESTROY]: iommuDestroy.size,
  [IOMMU_IOAS_ALLOC]: iommuIoasAlloc.size,
  [IOMMU_IOAS_MAP]: iommuIoasMap.size,
  [IOMMU_IOAS_UNMAP]: iommuIoasUnmap.size,
  [IOMMU_HWPT_ALLOC]: iommuHwptAlloc.size,
  [IOMMU_IOAS_MAP_FILE]: iommuIoasMapFile.size,
  [IOMMU_HWPT_LU_MARK_PRESERVE]: iommuHwptLuMarkPreserve.size,
};

const num = (v: bigint): number => (v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v));

function iommufdIoctl(file: KFile, cmd: number, arg: Uint8Array, proc: Process): number {
  const ictx = ictxOf(file, 'ioctl');
  const min = MIN_SIZE[cmd];
  if (min === undefined) throw new ErrnoError('ENOTTY', 'ioctl');
  if (arg.length < 4) throw new ErrnoError('EFAULT', 'ioctl');
  const size = new DataView(arg.buffer, arg.byteOffset, arg.byteLength).getUint32(0, true);
  if (size < min || arg.length < min) throw new ErrnoError('EINVAL', 'ioctl', `size ${size} < ${min}`);
  switch (cmd) {
    case IOMMU_IOAS_ALLOC: {
      const a = iommuIoasAlloc.decode(arg);
      if (a.flags) throw new ErrnoError('EOPNOTSUPP', 'iommu_ioas_alloc');
      iommuIoasAlloc.write(arg, 'out_ioas_id', ictx.ioasAlloc().id);
      return 0;
    }
    case IOMMU_IOAS_MAP_FILE: {
      const a = iommuIoasMapFile.decode(arg);
      const f = proc.fget(a.fd, 'iommu_ioas_map_file');
      try {
        const iova = ictx.mapFile(a.ioas_id, a.flags, f, num(a.start), num(a.length), num(a.iova));
        iommuIoasMapFile.write(arg, 'iova', BigInt(iova));
      } finally {
        f.put();
      }
      return 0;
    }
    case IOMMU_IOAS_MAP: {
      const a = iommuIoasMap.decode(arg);
      iommuIoasMap.write(arg, 'iova', BigInt(ictx.mapAnonymous(a.ioas_id, a.flags, num(a.length), num(a.iova))));
      return 0;
    }
    case IOMMU_IOAS_UNMAP: {
      const a = iommuIoasUnmap.decode(arg);
      iommuIoasUnmap.write(arg, 'length', BigInt(ictx.unmap(a.ioas_id, num(a.iova), num(a.length))));
      return 0;
    }
    case IOMMU_HWPT_ALLOC: {
      const a = iommuHwptAlloc.decode(arg);
      if (a.flags || a.data_type || a.__reserved) throw new ErrnoError('EOPNOTSUPP', 'iommu_hwpt_alloc');
      iommuHwptAlloc.write(arg, 'out_hwpt_id', ictx.hwptAlloc(a.dev_id, a.pt_id).id);
      return 0;
    }
    case IOMMU_HWPT_LU_MARK_PRESERVE: {
      const a = iommuHwptLuMarkPreserve.decode(arg);
      ictx.markPreserve(a.hwpt_id, a.hwpt_token);
      return 0;
    }
    case IOMMU_DESTROY: {
      ictx.destroy(iommuDestroy.decode(arg).id);
      return 0;
    }
    default:
      throw new ErrnoError('ENOTTY', 'ioctl');
  }
}

export const iommufdFops: FileOperations = {
  kind: 'anon_inode:[iommufd]',
  ioctl: iommufdIoctl,
  release: (f) => ictxOf(f, 'release').release(),
};
