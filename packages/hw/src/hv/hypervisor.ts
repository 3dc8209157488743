/**
 * The Microsoft Hypervisor below the kernel: it outlives every kexec (a Device of the
 * machine), owns the pages the root deposited (HvCallDepositMemory) until they are withdrawn
 * (HvCallWithdrawMemory), and runs partitions and their virtual processors. Any access by the
 * kernel (or a device) to a deposited page through physical memory is a fault: recorded by
 * the machine and thrown into the code that made it, as the GPF kills the kernel.
 *
 * Bookkeeping the hypervisor needs is drawn from deposits: a partition's own objects from its
 * pool (short: HV_STATUS_INSUFFICIENT_MEMORY), hypervisor-global objects from the root's pool
 * (short: HV_STATUS_INSUFFICIENT_ROOT_MEMORY, or ..._CONTIGUOUS_ROOT_MEMORY when the request
 * needs an aligned run). On an L1 virtual host (L1VH) every unused root deposit can be
 * withdrawn; a classic root's own deposits are the hypervisor's for good.
 */
import type { Device, Machine } from '../machine.js';
import type { Restore } from '../state.js';
import { PAGE_SIZE } from '../units.js';
import { DepositMap, MAX_PARTITION_SLOTS } from './deposits.js';
import {
  HV_DEPOSIT_MAX, HV_PARTITION_ID_SELF, HV_STATUS_ACCESS_DENIED, HV_STATUS_INSUFFICIENT_CONTIGUOUS_ROOT_MEMORY,
  HV_STATUS_INSUFFICIENT_MEMORY, HV_STATUS_INSUFFICIENT_ROOT_MEMORY, HV_STATUS_INVALID_PARAMETER,
  HV_STATUS_INVALID_PARTITION_ID, HV_STATUS_INVALID_PARTITION_STATE, HV_STATUS_INVALID_VP_INDEX, HV_STATUS_INVALID_VP_STATE,
  HV_STATUS_SUCCESS, HV_WITHDRAW_BATCH_SIZE, MSHV_MAX_VPS, type HvStatus,
} from './status.js';

/** Root pages (an aligned pair) a new partition's hypervisor object needs. */
export const HV_PARTITION_ROOT_PAGES = 2;
/** Partition pages HvCallInitializePartition needs. */
export const HV_INIT_PARTITION_PAGES = 16;
/** Partition pages and root pages one VP needs. */
export const HV_VP_PAGES = 4;
export const HV_VP_ROOT_PAGES = 1;

/** The id the hypervisor gives the root (or L1VH) partition itself. */
export const HV_ROOT_PARTITION_ID = 1n;

export type PartitionState = 'created' | 'initialized' | 'finalized';

export interface VpInfo {
  readonly index: number;
  /** HV_REGISTER_DISPATCH_SUSPEND: the root forbids dispatching this VP. */
  readonly dispatchSuspended: boolean;
  /** Times the VP was dispatched (ran guest code). */
  readonly dispatches: number;
}

export interface PartitionInfo {
  readonly id: bigint;
  readonly state: PartitionState;
  readonly vps: readonly VpInfo[];
  readonly depositedPages: number;
  readonly usedPages: number;
}

/** A recorded access to a deposited page. */
export interface HvFault {
  readonly pfn: number;
  readonly write: boolean;
  /** machine.bootCount when it happened: which kernel made it. */
  readonly boot: number;
  readonly clockNs: number;
}

/** Thrown into the code that touched a deposited page (the GPF the kernel dies of). */
export class DepositedPageFault extends Error {
  override readonly name = 'DepositedPageFault';
  constructor(readonly fault: HvFault) {
    super(`general protection fault: ${fault.write ? 'write to' : 'read of'} hypervisor-owned page 0x${(fault.pfn * PAGE_SIZE).toString(16)} (pfn 0x${fault.pfn.toString(16)}) by kernel boot ${fault.boot}`);
  }
}

interface Vp { readonly index: number; dispatchSuspended: boolean; dispatches: number; rootPages: number[]; pages: number[] }

interface Partition {
  readonly id: bigint;
  readonly slot: number;
  state: PartitionState;
  readonly vps: Map<number, Vp>;
  /** Root pages held for this partition's hypervisor object. */
  rootPages: number[];
}

export interface HypervisorConfig {
  /** Linux runs as an L1 virtual host: every root deposit can be withdrawn. Default false. */
  readonly l1vh?: boolean;
}

const ROOT_SLOT = 0;

export class Hypervisor implements Device {
  readonly name = 'mshv';
  readonly l1vh: boolean;
  private readonly deposits = new DepositMap();
  private readonly partitions = new Map<bigint, Partition>();
  private readonly freeSlots: number[] = [];
  private nextSlot = 1;
  private nextId = 2n;
  private readonly faultLog: HvFault[] = [];
  /** Crash MSR P2 (HV_MSR_CRASH_P2): survives kexec like every hypervisor register. */
  crashP2 = 0n;

  constructor(private readonly machine: Machine, config: HypervisorConfig = {}) {
    this.l1vh = config.l1vh ?? false;
  }

  // ---- the fault path ----------------------------------------------------------------------

  /** The memory guard: every access overlapping a deposited page faults. */
  readonly guard = (phys: number, length: number, write: boolean): void => {
    if (this.deposits.depositedPages === 0 || length === 0) return;
    const first = Math.floor(phys / PAGE_SIZE);
    const end = Math.floor((phys + length - 1) / PAGE_SIZE) + 1;
    const pfn = this.deposits.firstDepositedIn(first, end);
    if (pfn < 0) return;
    const fault: HvFault = { pfn, write, boot: this.machine.bootCount, clockNs: this.machine.clock.now };
    this.faultLog.push(fault);
    throw new DepositedPageFault(fault);
  };

  get faults(): readonly HvFault[] { return this.faultLog; }
  get faultCount(): number { return this.faultLog.length; }

  // ---- deposits ------------------------------------------------------------------------------

  private resolve(partitionId: bigint): Partition | 'root' | undefined {
    if (partitionId === HV_PARTITION_ID_SELF || partitionId === HV_ROOT_PARTITION_ID) return 'root';
    return this.partitions.get(partitionId);
  }

  private slotOf(p: Partition | 'root'): number { return p === 'root' ? ROOT_SLOT : p.slot; }

  /**
   * HvCallDepositMemory: at most HV_DEPOSIT_MAX pages per call, each a page of RAM that is not
   * deposited yet; all or nothing.
   */
  depositMemory(partitionId: bigint, pfns: ArrayLike<number>): HvStatus {
    const p = this.resolve(partitionId);
    if (!p) return HV_STATUS_INVALID_PARTITION_ID;
    if (p !== 'root' && p.state === 'finalized') return HV_STATUS_INVALID_PARTITION_STATE;
    if (pfns.length === 0 || pfns.length > HV_DEPOSIT_MAX) return HV_STATUS_INVALID_PARAMETER;
    const pages = this.machine.memory.pageCount;
    const seen = new Set<number>();
    for (let i = 0; i < pfns.length; i++) {
      const pfn = pfns[i] as number;
      if (!Number.isSafeInteger(pfn) || pfn < 0 || pfn >= pages || seen.has(pfn) || this.deposits.isDeposited(pfn)) return HV_STATUS_INVALID_PARAMETER;
      seen.add(pfn);
    }
    const slot = this.slotOf(p);
    for (let i = 0; i < pfns.length; i++) this.deposits.add(pfns[i] as number, slot);
    return HV_STATUS_SUCCESS;
  }

  /**
   * HvCallWithdrawMemory: up to HV_WITHDRAW_BATCH_SIZE unused pages of the partition come
   * back (in no particular order upstream; ascending here). A classic root's own deposits
   * never come back.
   */
  withdrawMemory(partitionId: bigint, maxPages = HV_WITHDRAW_BATCH_SIZE): { status: HvStatus; pfns: number[] } {
    const p = this.resolve(partitionId);
    if (!p) return { status: HV_STATUS_INVALID_PARTITION_ID, pfns: [] };
    if (p === 'root' && !this.l1vh) return { status: HV_STATUS_ACCESS_DENIED, pfns: [] };
    const n = Math.max(0, Math.min(maxPages, HV_WITHDRAW_BATCH_SIZE));
    return { status: HV_STATUS_SUCCESS, pfns: this.deposits.takeFree(this.slotOf(p), n) };
  }

  get depositedPages(): number { return this.deposits.depositedPages; }
  isDeposited(pfn: number): boolean { return this.deposits.isDeposited(pfn); }
  /** Pages deposited to `partitionId` (HV_PARTITION_ID_SELF for the root). */
  depositedTo(partitionId: bigint): number {
    const p = this.resolve(partitionId);
    return p ? this.deposits.depositedOf(this.slotOf(p)) : 0;
  }
  /** The partition a deposited page belongs to (HV_ROOT_PARTITION_ID for the root), or null. */
  ownerOf(pfn: number): bigint | null {
    const slot = this.deposits.ownerOf(pfn);
    if (slot < 0) return null;
    if (slot === ROOT_SLOT) return HV_ROOT_PARTITION_ID;
    for (const p of this.partitions.values()) if (p.slot === slot) return p.id;
    return null;
  }

  /** Every deposited page as ascending runs [start, end). */
  forEachDepositedRun(fn: (start: number, end: number) => void): void {
    let s = -1;
    let e = -1;
    this.deposits.forEachRun((a, b) => {
      if (a === e) { e = b; return; }
      if (s >= 0) fn(s, e);
      s = a; e = b;
    });
    if (s >= 0) fn(s, e);
  }

  // ---- partitions and VPs --------------------------------------------------------------------

  /** HvCallCreatePartition: the new partition's object takes an aligned pair of root pages. */
  createPartition(): { status: HvStatus; partitionId: bigint } {
    const rootFree = this.deposits.freeOf(ROOT_SLOT);
    if (rootFree < HV_PARTITION_ROOT_PAGES) return { status: HV_STATUS_INSUFFICIENT_ROOT_MEMORY, partitionId: 0n };
    const slot = this.freeSlots.pop() ?? this.nextSlot++;
    if (slot > MAX_PARTITION_SLOTS) return { status: HV_STATUS_INSUFFICIENT_MEMORY, partitionId: 0n };
    const rootPages = this.deposits.use(ROOT_SLOT, HV_PARTITION_ROOT_PAGES, HV_PARTITION_ROOT_PAGES);
    if (!rootPages) {
      this.freeSlots.push(slot);
      return { status: HV_STATUS_INSUFFICIENT_CONTIGUOUS_ROOT_MEMORY, partitionId: 0n };
    }
    const id = this.nextId++;
    this.partitions.set(id, { id, slot, state: 'created', vps: new Map(), rootPages });
    return { status: HV_STATUS_SUCCESS, partitionId: id };
  }

  /** HvCallInitializePartition: draws HV_INIT_PARTITION_PAGES from the partition's pool. */
  initializePartition(partitionId: bigint): HvStatus {
    const p = this.partitions.get(partitionId);
    if (!p) return HV_STATUS_INVALID_PARTITION_ID;
    if (p.state !== 'created') return HV_STATUS_INVALID_PARTITION_STATE;
    if (!this.deposits.use(p.slot, HV_INIT_PARTITION_PAGES)) return HV_STATUS_INSUFFICIENT_MEMORY;
    p.state = 'initialized';
    return HV_STATUS_SUCCESS;
  }

  /** HvCallCreateVp: partition pages first, then a root page. */
  createVp(partitionId: bigint, index: number): HvStatus {
    const p = this.partitions.get(partitionId);
    if (!p) return HV_STATUS_INVALID_PARTITION_ID;
    if (p.state !== 'initialized') return HV_STATUS_INVALID_PARTITION_STATE;
    if (!Number.isInteger(index) || index < 0 || index >= MSHV_MAX_VPS || p.vps.has(index)) return HV_STATUS_INVALID_VP_INDEX;
    const pages = this.deposits.use(p.slot, HV_VP_PAGES);
    if (!pages) return HV_STATUS_INSUFFICIENT_MEMORY;
    const rootPages = this.deposits.use(ROOT_SLOT, HV_VP_ROOT_PAGES);
    if (!rootPages) {
      this.deposits.release(p.slot, pages);
      return HV_STATUS_INSUFFICIENT_ROOT_MEMORY;
    }
    p.vps.set(index, { index, dispatchSuspended: false, dispatches: 0, rootPages, pages });
    return HV_STATUS_SUCCESS;
  }

  /** HvCallDispatchVp (root scheduler): the VP runs guest code once, unless dispatch is suspended. */
  dispatchVp(partitionId: bigint, index: number): HvStatus {
    const p = this.partitions.get(partitionId);
    if (!p) return HV_STATUS_INVALID_PARTITION_ID;
    if (p.state !== 'initialized') return HV_STATUS_INVALID_PARTITION_STATE;
    const vp = p.vps.get(index);
    if (!vp) return HV_STATUS_INVALID_VP_INDEX;
    if (vp.dispatchSuspended) return HV_STATUS_INVALID_VP_STATE;
    vp.dispatches++;
    return HV_STATUS_SUCCESS;
  }

  /** HV_REGISTER_DISPATCH_SUSPEND for one VP. */
  setDispatchSuspend(partitionId: bigint, index: number, suspended: boolean): HvStatus {
    const vp = this.partitions.get(partitionId)?.vps.get(index);
    if (!vp) return HV_STATUS_INVALID_VP_INDEX;
    vp.dispatchSuspended = suspended;
    return HV_STATUS_SUCCESS;
  }

  /** HvCallFinalizePartition: the partition stops for good and its pool becomes withdrawable. */
  finalizePartition(partitionId: bigint): HvStatus {
    const p = this.partitions.get(partitionId);
    if (!p) return HV_STATUS_INVALID_PARTITION_ID;
    if (p.state === 'finalized') return HV_STATUS_INVALID_PARTITION_STATE;
    p.state = 'finalized';
    for (const vp of p.vps.values()) vp.dispatchSuspended = true;
    this.deposits.release(p.slot);
    return HV_STATUS_SUCCESS;
  }

  /** HvCallDeletePartition: only once finalized and emptied; its root pages become unused. */
  deletePartition(partitionId: bigint): HvStatus {
    const p = this.partitions.get(partitionId);
    if (!p) return HV_STATUS_INVALID_PARTITION_ID;
    if (p.state !== 'finalized' || this.deposits.depositedOf(p.slot) > 0) return HV_STATUS_INVALID_PARTITION_STATE;
    this.deposits.release(ROOT_SLOT, p.rootPages);
    for (const vp of p.vps.values()) this.deposits.release(ROOT_SLOT, vp.rootPages);
    this.partitions.delete(partitionId);
    this.freeSlots.push(p.slot);
    return HV_STATUS_SUCCESS;
  }

  partition(partitionId: bigint): PartitionInfo | undefined {
    const p = this.partitions.get(partitionId);
    if (!p) return undefined;
    return {
      id: p.id, state: p.state,
      vps: [...p.vps.values()].map((v) => ({ index: v.index, dispatchSuspended: v.dispatchSuspended, dispatches: v.dispatches })),
      depositedPages: this.deposits.depositedOf(p.slot), usedPages: this.deposits.usedOf(p.slot),
    };
  }

  get partitionIds(): readonly bigint[] { return [...this.partitions.keys()]; }

  /**
   * Deposits, partitions and their VPs, slot and id allocation, the fault log and the crash
   * MSR. Partitions and VPs are few (at most MSHV_MAX_VPS per partition): copied as records.
   */
  save(): Restore {
    const deposits = this.deposits.save();
    const parts = [...this.partitions.values()].map((p) => ({
      id: p.id, slot: p.slot, state: p.state, rootPages: p.rootPages.slice(),
      vps: [...p.vps.values()].map((v) => ({ ...v, rootPages: v.rootPages.slice(), pages: v.pages.slice() })),
    }));
    const freeSlots = this.freeSlots.slice();
    const { nextSlot, nextId, crashP2 } = this;
    const faults = this.faultLog.length;
    return () => {
      deposits();
      this.partitions.clear();
      for (const p of parts) {
        const vps = new Map<number, Vp>(p.vps.map((v) => [v.index, { ...v, rootPages: v.rootPages.slice(), pages: v.pages.slice() }]));
        this.partitions.set(p.id, { id: p.id, slot: p.slot, state: p.state, rootPages: p.rootPages.slice(), vps });
      }
      this.freeSlots.length = 0;
      this.freeSlots.push(...freeSlots);
      this.nextSlot = nextSlot;
      this.nextId = nextId;
      this.crashP2 = crashP2;
      this.faultLog.length = faults;
    };
  }

  /** The hypervisor keeps running across the jump: partitions, VPs and deposits stay as they are. */
  onKexec(): void { /* nothing of the hypervisor belongs to a kernel */ }
}

/** Put a hypervisor below the machine's kernels: attached as a device, guarding memory. */
export function attachHypervisor(machine: Machine, config: HypervisorConfig = {}): Hypervisor {
  if (hypervisorOf(machine)) throw new Error('machine: a hypervisor is already attached');
  const hv = new Hypervisor(machine, config);
  machine.attach(hv);
  machine.memory.setAccessGuard(hv.guard);
  return hv;
}

/** The hypervisor below `machine`, if any (what hv_root_partition()/hv_l1vh_partition() ask). */
export function hypervisorOf(machine: Machine): Hypervisor | undefined {
  return machine.attachedDevices.find((d): d is Hypervisor => d instanceof Hypervisor);
}
