import { describe, expect, it } from 'vitest';
import {
  attachHypervisor, createMachine, DepositedPageFault, hvStatus, hvStatusName, hypervisorOf, HV_INIT_PARTITION_PAGES,
  HV_PARTITION_ID_SELF, HV_ROOT_PARTITION_ID, HV_VP_PAGES, PAGE_SIZE, PfnRanges,
} from '../src/index.js';

const { HV_STATUS_SUCCESS, HV_STATUS_INSUFFICIENT_MEMORY, HV_STATUS_INSUFFICIENT_ROOT_MEMORY, HV_STATUS_INSUFFICIENT_CONTIGUOUS_ROOT_MEMORY } = hvStatus;
const range = (start: number, n: number, step = 1): number[] => Array.from({ length: n }, (_, i) => start + i * step);

function setup(l1vh = false) {
  const machine = createMachine({ memory: '1GiB' });
  const hv = attachHypervisor(machine, { l1vh });
  return { machine, hv };
}

describe('hypervisor: deposits', () => {
  it('is a device of the machine and found again by hypervisorOf', () => {
    const { machine, hv } = setup();
    expect(hypervisorOf(machine)).toBe(hv);
    expect(() => attachHypervisor(machine)).toThrow(/already attached/);
  });

  it('HvCallDepositMemory takes at most 511 distinct, not yet deposited pages of RAM, all or nothing', () => {
    const { hv, machine } = setup();
    expect(hv.depositMemory(HV_PARTITION_ID_SELF, range(100, 512))).toBe(hvStatus.HV_STATUS_INVALID_PARAMETER);
    expect(hv.depositMemory(HV_PARTITION_ID_SELF, [5, 5])).toBe(hvStatus.HV_STATUS_INVALID_PARAMETER);
    expect(hv.depositMemory(HV_PARTITION_ID_SELF, [machine.memory.pageCount])).toBe(hvStatus.HV_STATUS_INVALID_PARAMETER);
    expect(hv.depositMemory(HV_PARTITION_ID_SELF, range(100, 511))).toBe(HV_STATUS_SUCCESS);
    expect(hv.depositMemory(HV_PARTITION_ID_SELF, [99, 100])).toBe(hvStatus.HV_STATUS_INVALID_PARAMETER);
    expect(hv.depositedPages).toBe(511);
    expect(hv.isDeposited(99)).toBe(false);
    expect(hv.ownerOf(100)).toBe(HV_ROOT_PARTITION_ID);
  });

  it('an unknown partition id is HV_STATUS_INVALID_PARTITION_ID', () => {
    const { hv } = setup();
    expect(hv.depositMemory(77n, [1])).toBe(hvStatus.HV_STATUS_INVALID_PARTITION_ID);
    expect(hvStatusName(hv.withdrawMemory(77n).status)).toBe('HV_STATUS_INVALID_PARTITION_ID');
  });

  it('on L1VH every unused root deposit is withdrawn, 511 per call, ascending', () => {
    const { hv } = setup(true);
    for (let i = 0; i < 2; i++) expect(hv.depositMemory(HV_PARTITION_ID_SELF, range(1000 + i * 511 * 2, 511, 2))).toBe(HV_STATUS_SUCCESS);
    const first = hv.withdrawMemory(HV_PARTITION_ID_SELF, Number.MAX_SAFE_INTEGER);
    expect(first.status).toBe(HV_STATUS_SUCCESS);
    expect(first.pfns).toEqual(range(1000, 511, 2));
    expect(hv.withdrawMemory(HV_PARTITION_ID_SELF).pfns.length).toBe(511);
    expect(hv.withdrawMemory(HV_PARTITION_ID_SELF).pfns).toEqual([]);
    expect(hv.depositedPages).toBe(0);
  });

  it('a classic root never gets its own deposits back (HV_STATUS_ACCESS_DENIED)', () => {
    const { hv } = setup(false);
    hv.depositMemory(HV_PARTITION_ID_SELF, [1, 2, 3]);
    expect(hv.withdrawMemory(HV_PARTITION_ID_SELF)).toEqual({ status: hvStatus.HV_STATUS_ACCESS_DENIED, pfns: [] });
    expect(hv.depositedPages).toBe(3);
  });

  it('lists deposited pages as merged runs across its 32768-page chunks', () => {
    const { hv } = setup(true);
    hv.depositMemory(HV_PARTITION_ID_SELF, range(32760, 16));
    hv.depositMemory(HV_PARTITION_ID_SELF, [40000]);
    const runs: Array<[number, number]> = [];
    hv.forEachDepositedRun((s, e) => runs.push([s, e]));
    expect(runs).toEqual([[32760, 32776], [40000, 40001]]);
  });
});

describe('hypervisor: hypercalls that run short ask for deposits', () => {
  it('create partition: 0x73 without root pages, 0x83 when the root pages are not an aligned pair', () => {
    const { hv } = setup(true);
    expect(hv.createPartition().status).toBe(HV_STATUS_INSUFFICIENT_ROOT_MEMORY);
    hv.depositMemory(HV_PARTITION_ID_SELF, [11, 13, 15]);
    expect(hv.createPartition().status).toBe(HV_STATUS_INSUFFICIENT_CONTIGUOUS_ROOT_MEMORY);
    hv.depositMemory(HV_PARTITION_ID_SELF, [20, 21]);
    const r = hv.createPartition();
    expect(r.status).toBe(HV_STATUS_SUCCESS);
    expect(hv.partition(r.partitionId)?.state).toBe('created');
  });

  it('initialize and create VP: HV_STATUS_INSUFFICIENT_MEMORY until the partition has its pages', () => {
    const { hv } = setup(true);
    hv.depositMemory(HV_PARTITION_ID_SELF, range(20, 8));
    const id = hv.createPartition().partitionId;
    expect(hv.initializePartition(id)).toBe(HV_STATUS_INSUFFICIENT_MEMORY);
    hv.depositMemory(id, range(1000, HV_INIT_PARTITION_PAGES));
    expect(hv.initializePartition(id)).toBe(HV_STATUS_SUCCESS);
    expect(hv.createVp(id, 0)).toBe(HV_STATUS_INSUFFICIENT_MEMORY);
    hv.depositMemory(id, range(2000, HV_VP_PAGES));
    expect(hv.createVp(id, 0)).toBe(HV_STATUS_SUCCESS);
    expect(hv.partition(id)?.usedPages).toBe(HV_INIT_PARTITION_PAGES + HV_VP_PAGES);
  });

  it('a live partition\'s used pages are not withdrawable; after finalize all come back, then delete succeeds', () => {
    const { hv } = setup(true);
    hv.depositMemory(HV_PARTITION_ID_SELF, range(20, 8));
    const id = hv.createPartition().partitionId;
    hv.depositMemory(id, range(1000, HV_INIT_PARTITION_PAGES + 3));
    hv.initializePartition(id);
    expect(hv.withdrawMemory(id).pfns.length).toBe(3);
    expect(hv.deletePartition(id)).toBe(hvStatus.HV_STATUS_INVALID_PARTITION_STATE);
    expect(hv.finalizePartition(id)).toBe(HV_STATUS_SUCCESS);
    expect(hv.deletePartition(id)).toBe(hvStatus.HV_STATUS_INVALID_PARTITION_STATE);
    expect(hv.withdrawMemory(id).pfns.length).toBe(HV_INIT_PARTITION_PAGES);
    expect(hv.deletePartition(id)).toBe(HV_STATUS_SUCCESS);
    expect(hv.partitionIds).toEqual([]);
    // Its root pair is unused again: on L1VH all 8 root pages come back.
    expect(hv.withdrawMemory(HV_PARTITION_ID_SELF).pfns.length).toBe(8);
  });

  it('a VP with dispatch suspended does not run; a finalized partition runs nothing', () => {
    const { hv } = setup(true);
    hv.depositMemory(HV_PARTITION_ID_SELF, range(20, 8));
    const id = hv.createPartition().partitionId;
    hv.depositMemory(id, range(1000, HV_INIT_PARTITION_PAGES + HV_VP_PAGES));
    hv.initializePartition(id);
    hv.createVp(id, 3);
    expect(hv.dispatchVp(id, 3)).toBe(HV_STATUS_SUCCESS);
    hv.setDispatchSuspend(id, 3, true);
    expect(hv.dispatchVp(id, 3)).toBe(hvStatus.HV_STATUS_INVALID_VP_STATE);
    expect(hv.partition(id)?.vps).toEqual([{ index: 3, dispatchSuspended: true, dispatches: 1 }]);
    hv.finalizePartition(id);
    expect(hv.dispatchVp(id, 3)).toBe(hvStatus.HV_STATUS_INVALID_PARTITION_STATE);
  });
});

describe('hypervisor: the kernel must not touch deposited pages', () => {
  it('a read or write of a deposited page faults, is recorded with the boot that made it, and changes nothing', () => {
    const { hv, machine } = setup(true);
    machine.powerOn('');
    hv.depositMemory(HV_PARTITION_ID_SELF, [300]);
    const mem = machine.memory;
    expect(() => mem.readU8(300 * PAGE_SIZE + 5)).toThrow(DepositedPageFault);
    expect(() => mem.write(299 * PAGE_SIZE + 4090, new Uint8Array(10))).toThrow(/write to hypervisor-owned page 0x12c000/);
    expect(() => mem.mapPage(300)).toThrow(DepositedPageFault);
    expect(() => mem.fill(0, 2 * 1024 * 1024, 0)).toThrow(DepositedPageFault);
    expect(hv.faults.map((f) => [f.pfn, f.write, f.boot])).toEqual([[300, false, 1], [300, true, 1], [300, true, 1], [300, true, 1]]);
    expect(mem.pageKind(299)).toBe('zero');
    mem.writeU32(301 * PAGE_SIZE, 7);
    expect(mem.readU32(301 * PAGE_SIZE)).toBe(7);
    expect(hv.faultCount).toBe(4);
  });

  it('the fault goes through the installed fault trap (the running kernel\'s vector) once; the guard records it once', () => {
    const { hv, machine } = setup(true);
    machine.powerOn('');
    hv.depositMemory(HV_PARTITION_ID_SELF, [300]);
    const seen: Array<[unknown, number, number, boolean]> = [];
    machine.memory.setGuardFaultTrap((fault, phys, length, write) => { seen.push([fault, phys, length, write]); return new Error('trapped'); });
    expect(() => machine.memory.writeU32(300 * PAGE_SIZE + 8, 1)).toThrow('trapped');
    expect(seen).toEqual([[expect.any(DepositedPageFault), 300 * PAGE_SIZE + 8, 4, true]]);
    machine.memory.readU32(301 * PAGE_SIZE);
    expect(seen).toHaveLength(1);
    machine.memory.setGuardFaultTrap(null);
    expect(() => machine.memory.readU8(300 * PAGE_SIZE)).toThrow(DepositedPageFault);
    expect(hv.faults.map((f) => [f.pfn, f.write])).toEqual([[300, true], [300, false]]);
  });

  it('a withdrawn page is ordinary memory again', () => {
    const { hv, machine } = setup(true);
    hv.depositMemory(HV_PARTITION_ID_SELF, [300]);
    hv.withdrawMemory(HV_PARTITION_ID_SELF);
    machine.memory.writeU8(300 * PAGE_SIZE, 1);
    expect(machine.memory.readU8(300 * PAGE_SIZE)).toBe(1);
    expect(hv.faultCount).toBe(0);
  });

  it('survives the kexec: deposits and partitions stay, the scrub does not fault', () => {
    const { hv, machine } = setup(true);
    machine.powerOn('');
    hv.depositMemory(HV_PARTITION_ID_SELF, range(20, 8));
    const id = hv.createPartition().partitionId;
    machine.kexec({ survivors: new PfnRanges(), params: { cmdline: '' } });
    expect(hv.depositedPages).toBe(8);
    expect(hv.partition(id)?.state).toBe('created');
    expect(hv.faultCount).toBe(0);
  });
});
