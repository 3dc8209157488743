/**
 * /dev/mshv and the fds it hands out (drivers/hv/mshv_root_main.c): MSHV_CREATE_PARTITION on
 * /dev/mshv returns a partition fd; MSHV_INITIALIZE_PARTITION and MSHV_CREATE_VP on it (the
 * latter returns a VP fd); MSHV_RUN_VP on a VP fd. Closing the last partition fd destroys the
 * partition (finalize, withdraw, delete). Syscalls are functions taking the process first.
 */
import { ErrnoError, Inode, KFile, type FileOperations, type Kernel, type Process } from '@liveupdate/sdk';
import {
  MSHV_CREATE_PARTITION, MSHV_CREATE_VP, MSHV_INITIALIZE_PARTITION, MSHV_RUN_VP, MSHV_RUN_VP_SIZE, mshvCreatePartition, mshvCreateVp,
} from './abi/mshv.js';
import { rootOf, type KPartition, type KVp, type MshvRoot } from './driver.js';

/** private_data of a /dev/mshv file: the driver it belongs to. */
export class MshvDevFile { constructor(readonly root: MshvRoot) {} }
class PartitionFile { constructor(readonly root: MshvRoot, readonly partition: KPartition) {} }
class VpFile { constructor(readonly root: MshvRoot, readonly partition: KPartition, readonly vp: KVp) {} }

const vpFops: FileOperations = {
  kind: 'anon_inode:mshv_vp',
  ioctl(file, cmd, arg) {
    const v = file.privateData as VpFile;
    if (cmd !== MSHV_RUN_VP) throw new ErrnoError('ENOTTY', 'ioctl');
    if (arg.length < MSHV_RUN_VP_SIZE) throw new ErrnoError('EFAULT', 'MSHV_RUN_VP');
    v.root.runVp(v.partition, v.vp);
    arg.fill(0, 0, MSHV_RUN_VP_SIZE);
    return 0;
  },
};

function partitionFops(kernel: Kernel): FileOperations {
  return {
    kind: 'anon_inode:mshv_partition',
    ioctl(file, cmd, arg, proc) {
      const pf = file.privateData as PartitionFile;
      if (cmd === MSHV_INITIALIZE_PARTITION) { pf.root.initializePartition(pf.partition); return 0; }
      if (cmd === MSHV_CREATE_VP) {
        if (arg.length < mshvCreateVp.size) throw new ErrnoError('EFAULT', 'MSHV_CREATE_VP');
        const vp = pf.root.createVp(pf.partition, mshvCreateVp.decode(arg).vp_index);
        return proc.fdInstall(new KFile(vpFops, new Inode(), new VpFile(pf.root, pf.partition, vp), 0o2, kernel.id), true);
      }
      throw new ErrnoError('ENOTTY', 'ioctl');
    },
    release(file) {
      const pf = file.privateData as PartitionFile;
      if (pf.root.partitions.has(pf.partition.id)) pf.root.destroyPartition(pf.partition);
    },
  };
}

export function mshvDevFops(kernel: Kernel): FileOperations {
  const pfops = partitionFops(kernel);
  return {
    kind: '/dev/mshv',
    ioctl(file, cmd, arg, proc) {
      const dev = file.privateData as MshvDevFile;
      if (cmd !== MSHV_CREATE_PARTITION) throw new ErrnoError('ENOTTY', 'ioctl');
      if (arg.length < mshvCreatePartition.size) throw new ErrnoError('EFAULT', 'MSHV_CREATE_PARTITION');
      const a = mshvCreatePartition.decode(arg);
      if (a.pt_flags !== 0n || a.pt_isolation !== 0n) throw new ErrnoError('EINVAL', 'MSHV_CREATE_PARTITION', 'flags');
      const p = dev.root.createPartition();
      try {
        return proc.fdInstall(new KFile(pfops, new Inode(), new PartitionFile(dev.root, p), 0o2, kernel.id), true);
      } catch (e) {
        dev.root.destroyPartition(p);
        throw e;
      }
    },
  };
}

export const isMshvDevFile = (file: KFile): boolean => file.privateData instanceof MshvDevFile;

// ---- syscalls -------------------------------------------------------------------------------

/** open("/dev/mshv") */
export const mshvOpen = (proc: Process): number => proc.open('/dev/mshv');

/** ioctl(MSHV_CREATE_PARTITION): a partition fd. */
export function mshvCreatePartitionFd(proc: Process, mshvFd: number): number {
  return proc.ioctl(mshvFd, MSHV_CREATE_PARTITION, mshvCreatePartition.encode({ pt_flags: 0n, pt_isolation: 0n }));
}

export function mshvInitializePartition(proc: Process, partitionFd: number): void {
  proc.ioctl(partitionFd, MSHV_INITIALIZE_PARTITION, new Uint8Array(0));
}

/** ioctl(MSHV_CREATE_VP): a VP fd. */
export function mshvCreateVpFd(proc: Process, partitionFd: number, vpIndex: number): number {
  return proc.ioctl(partitionFd, MSHV_CREATE_VP, mshvCreateVp.encode({ vp_index: vpIndex }));
}

export function mshvRunVp(proc: Process, vpFd: number): void {
  proc.ioctl(vpFd, MSHV_RUN_VP, new Uint8Array(MSHV_RUN_VP_SIZE));
}

/** The partition id behind a partition fd (what /sys/kernel/debug/mshv shows). */
export function mshvPartitionId(proc: Process, partitionFd: number): bigint {
  const f = proc.fget(partitionFd, 'mshv_partition_id');
  try {
    if (!(f.privateData instanceof PartitionFile)) throw new ErrnoError('EINVAL', 'mshv_partition_id', 'not a partition fd');
    return f.privateData.partition.id;
  } finally { f.put(); }
}

/** The driver of a kernel, for in-kernel users and tests. */
export function mshvRoot(kernel: Kernel): MshvRoot {
  const r = rootOf(kernel);
  if (!r) throw new ErrnoError('ENODEV', 'mshv', 'no Microsoft Hypervisor below this kernel (or the mshv plugin is not loaded)');
  return r;
}
