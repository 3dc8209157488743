/**
 * The `mshv` LUO file handler: one family, three major versions, negotiated per kexec.
 * 1.x is the freeze veto of drivers/hv/mshv_luo.c (RFC 2026-01-24); 2.x lets the freeze
 * pass and hands the tracking over in the KHO subtree at reboot (RFC 00/20); 3.x writes the
 * tracking into the file itself (ours). The handler's files are /dev/mshv files: the driver's
 * own, in its in-kernel session "mshv_root", and any a VMM preserves.
 */
import { defineFileHandler, ErrnoError, Inode, KFile, PAGE_SIZE, KhoXarray, type HandlerContext, type Kernel } from '@liveupdate/sdk';
import { HV_PARTITION_ID_SELF } from '@liveupdate/hw';
import { MSHV_ALIASES, MSHV_FAMILY, MSHV_TRACK_FLAG_L1VH } from './abi/mshv.js';
import { rootOf, type MshvRoot } from './driver.js';
import { isMshvDevFile, mshvDevFops, MshvDevFile } from './device.js';
import { vacuumStalePartitions } from './subtree.js';
import { readTracking, writeTracking, type TrackingWrite } from './tracking/xarray-format.js';

/** Per kernel, per kexec attempt: how the tracking leaves (set by the first freeze). */
export interface KexecPlan { frozenAs: number | null; writer: TrackingWrite | null }
const plans = new WeakMap<Kernel, KexecPlan>();
export function planOf(kernel: Kernel): KexecPlan {
  let p = plans.get(kernel);
  if (!p) { p = { frozenAs: null, writer: null }; plans.set(kernel, p); }
  return p;
}

const major = (version: string): number => Number(version.split('.')[0]);

function driver(kernel: Kernel, op: string): MshvRoot {
  const r = rootOf(kernel);
  if (!r) throw new ErrnoError('ENODEV', op, 'no mshv driver in this kernel');
  return r;
}

/** mshv_luo_freeze (RFC 2026-01-24), checks in its order. */
function freezeV1(kernel: Kernel, root: MshvRoot): void {
  if (root.partitions.size > 0) {
    kernel.dmesg.log('warn', 'mshv', 'Cannot perform live update while VMs are active');
    throw new ErrnoError('EBUSY', 'freeze', `mshv: ${root.partitions.size} VM partition(s) exist`);
  }
  if (root.l1vh) {
    try {
      root.withdraw(HV_PARTITION_ID_SELF);
    } catch (e) {
      kernel.dmesg.log('err', 'mshv', `Failed to withdraw memory from L1 virtualization: ${e instanceof ErrnoError ? e.code : String(e)}`);
      throw e;
    }
  }
  if (root.pagesDeposited > 0) {
    kernel.dmesg.log('warn', 'mshv', 'Cannot perform live update while pages are deposited');
    throw new ErrnoError('EBUSY', 'freeze', `mshv: ${root.pagesDeposited} page(s) deposited to the hypervisor`);
  }
}

/** 3.x freeze: stop the partitions, freeze the tracker, write the tracking (once per kexec). */
function freezeV3(kernel: Kernel, root: MshvRoot, plan: KexecPlan): bigint {
  if (plan.writer) return 0n;
  const tree = root.tracker;
  if (!tree) throw new ErrnoError('EOPNOTSUPP', 'freeze', 'mshv: deposits are not tracked in this kernel');
  const ids = root.freezePartitions();
  const frozen = tree.freeze();
  try {
    if (frozen) throw new ErrnoError(frozen, 'kho_radix_tree_freeze');
    plan.writer = writeTracking(kernel, root.trackedRuns(), ids, root.l1vh ? MSHV_TRACK_FLAG_L1VH : 0);
  } catch (e) {
    if (!frozen) tree.thaw();
    root.thawPartitions();
    throw e;
  }
  return BigInt(plan.writer.headerPhys);
}

/**
 * Take 3.x tracking over from bytes: verify everything first, then claim the metadata and the
 * tracked pages, track them here, and tear the recorded partitions down.
 */
function adoptV3(kernel: Kernel, root: MshvRoot, headerPhys: number): void {
  try {
    adoptV3Checked(kernel, root, headerPhys);
  } catch (e) {
    root.trackingRefused = e instanceof Error ? e.message : String(e);
    throw e;
  }
}

function adoptV3Checked(kernel: Kernel, root: MshvRoot, headerPhys: number): void {
  const kin = kernel.khoIn;
  if (!kin) throw new ErrnoError('EINVAL', 'retrieve', 'mshv: not a KHO boot');
  // Every metadata page must be a preserved block head: a pointer elsewhere (a deposited page) is never followed.
  const t = readTracking(kernel.mm.memory, headerPhys, (pfn) => kin.heads.peek(pfn) >= 0);
  if (typeof t === 'string') {
    kernel.dmesg.log('err', 'mshv', `tracking file: ${t}`);
    throw new ErrnoError('EINVAL', 'retrieve', `mshv: ${t}`);
  }
  KhoXarray.restore(kernel, t.xaRoot).destroy();
  for (const [s, e] of t.runs) {
    if (!kin.restorePages(s * PAGE_SIZE, e - s)) throw new ErrnoError('EINVAL', 'retrieve', `mshv: tracked pages 0x${s.toString(16)}.. were not preserved`);
  }
  if (!root.tracker) root.initTracker();
  for (const [s, e] of t.runs) {
    const err = root.tracker?.addRun(s, e);
    if (err) throw new ErrnoError(err, 'retrieve', 'mshv: tracking the inherited deposits');
  }
  root.pagesDeposited += t.nrPages;
  const ids = { idsPhys: t.idsPhys, nrIds: t.ids.length, idsProblem: null };
  vacuumStalePartitions(kernel, root, ids);
  kin.restoreFree(headerPhys);
  root.trackingAdopted = true;
}

function devFile(kernel: Kernel, root: MshvRoot): KFile {
  return new KFile(mshvDevFops(kernel), new Inode(), new MshvDevFile(root), 0o2, kernel.id);
}

export function mshvHandler(writes: readonly string[], reads: string) {
  return defineFileHandler<{ adopted: boolean }>({
    format: { family: MSHV_FAMILY, writes, reads, aliases: MSHV_ALIASES },
    canPreserve: (file, kernel) => isMshvDevFile(file) && file.kernelId === kernel.id,
    // mshv_luo_preserve: nothing to do until freeze.
    preserve(ctx) { ctx.state = { adopted: false }; },
    unpreserve() { /* mshv_luo_unpreserve */ },
    freeze(ctx) {
      const root = driver(ctx.kernel, 'freeze');
      const plan = planOf(ctx.kernel);
      const m = major(ctx.version);
      plan.frozenAs = m;
      if (m === 1) { freezeV1(ctx.kernel, root); ctx.data = 0n; return; }
      if (m === 2) { ctx.data = 0n; return; }
      ctx.data = freezeV3(ctx.kernel, root, plan);
    },
    unfreeze(ctx) {
      const plan = planOf(ctx.kernel);
      if (major(ctx.version) === 3 && plan.writer && ctx.data !== 0n) {
        plan.writer.release();
        plan.writer = null;
        const root = driver(ctx.kernel, 'unfreeze');
        root.tracker?.thaw();
        root.thawPartitions();
      }
      plan.frozenAs = null;
      ctx.data = 0n;
    },
    retrieve(ctx) {
      const root = driver(ctx.kernel, 'retrieve');
      if (major(ctx.version) === 3 && ctx.data !== 0n) adoptV3(ctx.kernel, root, Number(ctx.data));
      // The kernel refused the hypervisor's page tracking: a VMM must not get /dev/mshv back as if
      // the deposits it made were known (they stay reserved; the sticky error is the file's).
      else if (root.trackingRefused !== null) throw new ErrnoError('EINVAL', 'retrieve', `mshv: the hypervisor page tracking handed over was refused (${root.trackingRefused})`);
      // A 3.x /dev/mshv without the tracking of the driver's own session (lost with its LUO entry):
      // the deposits are unknown here, so the previous kernel's /dev/mshv is not given back.
      else if (major(ctx.version) === 3 && !root.trackingAdopted) throw new ErrnoError('EINVAL', 'retrieve', 'mshv: no hypervisor page tracking was handed over with this file');
      ctx.file = devFile(ctx.kernel, root);
    },
    finish(ctx: HandlerContext<{ adopted: boolean }>) {
      // Never retrieved: the tracked pages must still come back (or stay reserved if the bytes are bad).
      if (ctx.retrieveStatus === 0 && major(ctx.version) === 3 && ctx.data !== 0n) {
        const root = rootOf(ctx.kernel);
        if (!root) return;
        try { adoptV3(ctx.kernel, root, Number(ctx.data)); } catch (e) {
          ctx.kernel.dmesg.log('err', 'mshv', `finish: tracking not adopted (${e instanceof Error ? e.message : String(e)}); its pages stay reserved`);
        }
      }
    },
  });
}
