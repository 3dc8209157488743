/**
 * The root partition driver (drivers/hv/mshv_root_main.c, hv_proc.c, mshv_root_hv_call.c):
 * partitions and VPs as the kernel sees them, hypercalls retried after depositing what the
 * hypervisor asked for, the hv_pages_deposited count (RFC 2026-01-24 patch 2) and, in builds
 * that track deposits (RFC 00/20), every deposited PFN registered in the radix tree before the
 * deposit hypercall and unregistered after the withdrawal.
 */
import { ErrnoError, PAGE_SIZE, type ErrnoCode, type Kernel } from '@liveupdate/sdk';
import { HV_PARTITION_ID_SELF, hvStatus, hvStatusName, type Hypervisor, type HvStatus } from '@liveupdate/hw';
import { MshvRadixTree } from './tracking/radix.js';

const {
  HV_STATUS_SUCCESS, HV_STATUS_INSUFFICIENT_MEMORY, HV_STATUS_INSUFFICIENT_ROOT_MEMORY,
  HV_STATUS_INSUFFICIENT_CONTIGUOUS_ROOT_MEMORY, HV_STATUS_ACCESS_DENIED, HV_DEPOSIT_MAX,
} = hvStatus;

/** Pages deposited per shortfall (HV_INIT_PARTITION_DEPOSIT_PAGES-like), and the contiguous root order. */
export const MSHV_PARTITION_DEPOSIT_PAGES = 16;
export const MSHV_ROOT_DEPOSIT_PAGES = 8;
export const MSHV_ROOT_CONTIGUOUS_ORDER = 3;
const MAX_RETRIES = 16;

/** hv_result_to_errno, with the errnos this model knows. */
export function hvErrno(status: HvStatus): ErrnoCode {
  if (status === HV_STATUS_INSUFFICIENT_MEMORY || status === HV_STATUS_INSUFFICIENT_ROOT_MEMORY || status === HV_STATUS_INSUFFICIENT_CONTIGUOUS_ROOT_MEMORY) return 'ENOMEM';
  if (status === HV_STATUS_ACCESS_DENIED) return 'EPERM';
  return 'EINVAL';
}

/** Where a deposit's pages come from: one run, or a scattered pattern (random gaps, seeded). */
export type DepositPattern = 'dense' | { readonly scattered: number };

export interface KVp { readonly index: number }
export interface KPartition {
  readonly id: bigint;
  initialized: boolean;
  readonly vps: Map<number, KVp>;
}

export class MshvRoot {
  readonly partitions = new Map<bigint, KPartition>();
  /** mshv_root.frozen: no new partition or VP, no VP dispatch. */
  frozen = false;
  /** hv_pages_deposited */
  pagesDeposited = 0;
  tracker: MshvRadixTree | null = null;
  /**
   * Why the tracking handed over in an mshv 3.x file was refused (bad bytes), or null: its pages
   * stay reserved (never handed out), and no /dev/mshv of the previous kernel is given back.
   */
  trackingRefused: string | null = null;
  /** The tracking of an mshv 3.x handover was taken over (the driver's own file was retrieved). */
  trackingAdopted = false;

  constructor(readonly kernel: Kernel, readonly hv: Hypervisor, readonly tracks: boolean) {}

  get l1vh(): boolean { return this.hv.l1vh; }

  /** A fresh tracker (alloc_tree on a cold boot, or when nothing was handed over). */
  initTracker(): void {
    const mm = this.kernel.mm;
    this.tracker = MshvRadixTree.create(mm.memory, {
      alloc: () => mm.allocZeroedPages(0),
      free: (pfn) => mm.freePages(pfn, 0),
    });
  }

  private track(pfn: number): ErrnoCode | 0 {
    if (!this.tracks) return 0;
    if (!this.tracker) return 'EOPNOTSUPP';
    return this.tracker.add(pfn);
  }

  private untrack(pfn: number): void {
    if (this.tracks && this.tracker) this.tracker.del(pfn);
  }

  /**
   * hv_call_deposit_pages: allocate, register every page with the tracker, then deposit in
   * batches of HV_DEPOSIT_MAX; any failure unregisters and frees what this call took.
   */
  depositPages(partitionId: bigint, nrPages: number, pattern: DepositPattern = 'dense', order = 0): void {
    const mm = this.kernel.mm;
    const got: number[] = [];
    const spacers: number[] = [];
    let seed = typeof pattern === 'object' ? (pattern.scattered >>> 0) || 1 : 0;
    const rnd = (): number => { seed ^= seed << 13; seed ^= seed >>> 17; seed ^= seed << 5; return seed >>> 0; };
    const undo = (n: number): void => {
      for (let i = 0; i < n; i++) this.untrack(got[i] as number);
      for (const p of got) mm.freePages(p, 0);
    };
    try {
      if (order > 0) {
        for (let i = 0; i < nrPages; i += 2 ** order) {
          const base = mm.allocPages(order);
          if (base === null) throw new ErrnoError('ENOMEM', 'hv_call_deposit_pages');
          for (let k = 0; k < 2 ** order; k++) got.push(base + k);
        }
      } else {
        for (let i = 0; i < nrPages; i++) {
          const pfn = mm.allocPages(0);
          if (pfn === null) throw new ErrnoError('ENOMEM', 'hv_call_deposit_pages');
          got.push(pfn);
          // Scattered: leave a random gap of 0..3 pages after each deposited page.
          if (seed !== 0) for (let g = rnd() & 3; g > 0; g--) { const s = mm.allocPages(0); if (s !== null) spacers.push(s); }
        }
      }
    } catch (e) {
      for (const p of got) mm.freePages(p, 0);
      for (const s of spacers) mm.freePages(s, 0);
      throw e;
    }
    for (const s of spacers) mm.freePages(s, 0);
    for (let i = 0; i < got.length; i++) {
      const err = this.track(got[i] as number);
      if (err) { undo(i); throw new ErrnoError(err, 'mshv_register_preserve_page'); }
    }
    for (let i = 0; i < got.length; i += HV_DEPOSIT_MAX) {
      const batch = got.slice(i, i + HV_DEPOSIT_MAX);
      const status = this.hv.depositMemory(partitionId, batch);
      if (status !== HV_STATUS_SUCCESS) {
        // Pages of earlier batches stay deposited (and counted); this batch and later ones are given back.
        for (let k = i; k < got.length; k++) this.untrack(got[k] as number);
        for (let k = i; k < got.length; k++) mm.freePages(got[k] as number, 0);
        throw new ErrnoError(hvErrno(status), 'hv_call_deposit_pages', hvStatusName(status));
      }
      this.pagesDeposited += batch.length;
    }
  }

  /** hv_call_withdraw_memory(count, node, partition): withdraw until the hypervisor has no more (or count). */
  withdraw(partitionId: bigint, count = Number.MAX_SAFE_INTEGER): number {
    const mm = this.kernel.mm;
    let done = 0;
    while (done < count) {
      const r = this.hv.withdrawMemory(partitionId, count - done);
      if (r.status !== HV_STATUS_SUCCESS) throw new ErrnoError(hvErrno(r.status), 'hv_call_withdraw_memory', hvStatusName(r.status));
      if (r.pfns.length === 0) break;
      for (const pfn of r.pfns) {
        this.untrack(pfn);
        mm.freePages(pfn, 0);
      }
      this.pagesDeposited -= r.pfns.length;
      done += r.pfns.length;
    }
    return done;
  }

  /** A hypercall that may run short: deposit what the status asks for, then retry. */
  withDeposits(partitionId: bigint, call: () => HvStatus, syscall: string): void {
    for (let i = 0; i < MAX_RETRIES; i++) {
      const status = call();
      if (status === HV_STATUS_SUCCESS) return;
      if (status === HV_STATUS_INSUFFICIENT_MEMORY) this.depositPages(partitionId, MSHV_PARTITION_DEPOSIT_PAGES);
      else if (status === HV_STATUS_INSUFFICIENT_ROOT_MEMORY) this.depositPages(HV_PARTITION_ID_SELF, MSHV_ROOT_DEPOSIT_PAGES);
      else if (status === HV_STATUS_INSUFFICIENT_CONTIGUOUS_ROOT_MEMORY) this.depositPages(HV_PARTITION_ID_SELF, 2 ** MSHV_ROOT_CONTIGUOUS_ORDER, 'dense', MSHV_ROOT_CONTIGUOUS_ORDER);
      else throw new ErrnoError(hvErrno(status), syscall, hvStatusName(status));
    }
    throw new ErrnoError('ENOMEM', syscall, 'the hypervisor kept asking for memory');
  }

  // ---- partitions ------------------------------------------------------------------------------

  createPartition(): KPartition {
    if (this.frozen) throw new ErrnoError('EBUSY', 'MSHV_CREATE_PARTITION', 'frozen for kexec');
    let id = 0n;
    this.withDeposits(HV_PARTITION_ID_SELF, () => { const r = this.hv.createPartition(); id = r.partitionId; return r.status; }, 'MSHV_CREATE_PARTITION');
    const p: KPartition = { id, initialized: false, vps: new Map() };
    this.partitions.set(id, p);
    return p;
  }

  initializePartition(p: KPartition): void {
    if (p.initialized) throw new ErrnoError('EINVAL', 'MSHV_INITIALIZE_PARTITION', 'already initialized');
    this.withDeposits(p.id, () => this.hv.initializePartition(p.id), 'MSHV_INITIALIZE_PARTITION');
    p.initialized = true;
  }

  createVp(p: KPartition, index: number): KVp {
    // mshv_partition_ioctl_create_vp: frozen is checked first.
    if (this.frozen) throw new ErrnoError('EBUSY', 'MSHV_CREATE_VP', 'frozen for kexec');
    if (!p.initialized) throw new ErrnoError('EINVAL', 'MSHV_CREATE_VP', 'partition not initialized');
    this.withDeposits(p.id, () => this.hv.createVp(p.id, index), 'MSHV_CREATE_VP');
    const vp: KVp = { index };
    p.vps.set(index, vp);
    return vp;
  }

  /** MSHV_RUN_VP: -EBUSY once frozen for kexec. */
  runVp(p: KPartition, vp: KVp): void {
    if (this.frozen) throw new ErrnoError('EBUSY', 'MSHV_RUN_VP', 'frozen for kexec');
    const status = this.hv.dispatchVp(p.id, vp.index);
    if (status !== HV_STATUS_SUCCESS) throw new ErrnoError(hvErrno(status), 'MSHV_RUN_VP', hvStatusName(status));
  }

  /** destroy_partition: finalize, withdraw every deposited page, delete; the pages go back to the kernel. */
  destroyPartition(p: KPartition): void {
    this.hv.finalizePartition(p.id);
    this.withdraw(p.id);
    const status = this.hv.deletePartition(p.id);
    this.partitions.delete(p.id);
    if (status !== HV_STATUS_SUCCESS) this.kernel.dmesg.log('warn', 'mshv', `delete partition ${p.id} failed: ${hvStatusName(status)}`);
  }

  /**
   * mshv_freeze_and_get_partition_ids: block new partitions and VPs, suspend dispatch of every
   * VP and drain them (VP runs here are synchronous, so a suspended VP is a drained one), and
   * return every partition id, ascending.
   */
  freezePartitions(): bigint[] {
    this.frozen = true;
    const ids = [...this.partitions.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    for (const id of ids) for (const vp of (this.partitions.get(id) as KPartition).vps.values()) this.hv.setDispatchSuspend(id, vp.index, true);
    return ids;
  }

  /** A rolled-back kexec: partitions run again. */
  thawPartitions(): void {
    this.frozen = false;
    for (const p of this.partitions.values()) for (const vp of p.vps.values()) this.hv.setDispatchSuspend(p.id, vp.index, false);
  }

  /** The tracked set as runs (for checks and the 3.x format). */
  trackedRuns(): Array<[number, number]> {
    const out: Array<[number, number]> = [];
    this.tracker?.walk({ run: (s, e) => { out.push([s, e]); return undefined; } });
    return out;
  }
}

/** One driver per kernel. */
const roots = new WeakMap<Kernel, MshvRoot>();
export const rootOf = (kernel: Kernel): MshvRoot | undefined => roots.get(kernel);
export const setRoot = (kernel: Kernel, root: MshvRoot): void => { roots.set(kernel, root); };
export const pagePhys = (pfn: number): number => pfn * PAGE_SIZE;
