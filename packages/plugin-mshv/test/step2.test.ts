/**
 * Step 2 (RFC 00/20, 2026-05-27) rule by rule: the partition freeze before the jump, the
 * KernelPanic when the tree cannot be handed over, the next kernel's restore (fresh tree
 * without a subtree, panic on an incompatible or broken one), the memblock reservation of
 * every tracked page, and why it is needed.
 */
import { describe, expect, it } from 'vitest';
import { DepositedPageFault, HV_PARTITION_ID_SELF, PAGE_SIZE, type Machine } from '@liveupdate/hw';
import { ErrnoError, errnoOf, fdtCreate, fdtNode, Kernel, KernelPanic } from '@liveupdate/sdk';
import mshv, {
  mshvAbi, mshvCreatePartitionFd, mshvCreateVpFd, mshvInitializePartition, mshvOpen, mshvRoot, mshvRunVp,
} from '@liveupdate/plugin-mshv';
import { bootWith, CMDLINE, depositedRuns, hvMachine } from './support.js';

const V2 = [mshv({ writes: ['1.0.0', '2.0.0'] })];

function running() {
  const { machine, hv } = hvMachine(true);
  const { k, root, p } = bootWith(machine);
  const dev = mshvOpen(p);
  const pfd = mshvCreatePartitionFd(p, dev);
  mshvInitializePartition(p, pfd);
  const vp = mshvCreateVpFd(p, pfd, 0);
  mshvRunVp(p, vp);
  root.depositPages(HV_PARTITION_ID_SELF, 100, { scattered: 5 });
  return { machine, hv, k, root, p, dev, pfd, vp };
}

/** Jump with 2.x, let `edit` change the subtree page, then boot the next kernel. */
function bootAfterEdit(edit: (m: Machine, fdtPhys: number) => void): () => Kernel {
  const { machine, k } = running();
  k.kexecJump({ cmdline: CMDLINE, plugins: V2 });
  const sub = k.khoOut?.subtreeList.find((s) => s.name === mshvAbi.FDT_SUBTREE_MSHV);
  edit(machine, sub?.phys as number);
  return () => Kernel.boot(machine, { cmdline: CMDLINE, plugins: V2 });
}

describe('before the jump: partitions frozen', () => {
  it('blocks new partitions and VPs, and VP runs, with EBUSY; every VP is suspended and the ids come back ascending', () => {
    const { hv, root, p, dev, pfd, vp } = running();
    const ids = root.freezePartitions();
    expect(ids).toEqual(hv.partitionIds);
    expect(errnoOf(() => mshvCreatePartitionFd(p, dev))).toBe('EBUSY');
    expect(errnoOf(() => mshvCreateVpFd(p, pfd, 1))).toBe('EBUSY');
    expect(errnoOf(() => mshvRunVp(p, vp))).toBe('EBUSY');
    expect(hv.partition(ids[0] as bigint)?.vps.every((v) => v.dispatchSuspended)).toBe(true);
  });

  it('the reboot path freezes them after LUO froze and before the jump, and records their ids in the subtree', () => {
    const { hv, k, root } = running();
    let seen: { frozen: boolean; suspended: boolean } | undefined;
    k.shutdownHooks.deviceShutdown.tap('test', () => { seen = { frozen: root.frozen, suspended: hv.partition(hv.partitionIds[0] as bigint)?.vps[0]?.dispatchSuspended ?? false }; });
    k.kexecJump({ cmdline: CMDLINE, plugins: V2 });
    expect(seen).toEqual({ frozen: true, suspended: true });
    expect(k.dmesg.lines()).toContain('mshv: Frozen 1 partition(s) for kexec');
  });

  it('a failure to hand the tree over panics: the kernel must not kexec', () => {
    const { k } = running();
    k.khoOut?.addSubtree(mshvAbi.FDT_SUBTREE_MSHV, 0x1000, PAGE_SIZE);
    expect(() => k.kexecJump({ cmdline: CMDLINE, plugins: V2 })).toThrow(KernelPanic);
    expect(() => { throw k.dmesg.lines().find((l) => l.includes('kho_add_subtree() failed')); }).toThrow(/-EEXIST/);
  });
});

describe('the next kernel', () => {
  it('without a subtree starts a fresh, empty tree', () => {
    const { machine } = hvMachine(true);
    const k1 = Kernel.boot(machine, { cmdline: CMDLINE, plugins: [] });
    const k2 = k1.kexec({ cmdline: CMDLINE, plugins: V2 });
    expect(mshvRoot(k2).tracker?.size).toBe(0);
    expect(k2.isKhoBoot).toBe(true);
  });

  it('reserves every tracked page in memblock before the page allocator starts', () => {
    const { machine, hv, k } = running();
    let reservedAtMemblock: boolean[] = [];
    const probe = { name: 'probe', version: '0.0.0', init(kk: Kernel) { kk.bootHooks.memblock.tap('probe', (x) => { reservedAtMemblock = depositedRuns(hv).map(([s, e]) => x.mm.memblock.reserved.covers(s, e)); }); }, setup() { /* nothing */ } };
    k.kexecJump({ cmdline: CMDLINE, plugins: V2 });
    Kernel.boot(machine, { cmdline: CMDLINE, plugins: [...V2, probe] });
    expect(reservedAtMemblock.length).toBeGreaterThan(0);
    expect(reservedAtMemblock.every(Boolean)).toBe(true);
  });

  it.each([
    ['an incompatible compatible string', (m: Machine, phys: number) => m.memory.write(phys + 0x38 + 8 + 12 + 8, Buffer.from('v2'))],
    ['no root_table', (m: Machine, phys: number) => { m.memory.fill(phys, PAGE_SIZE, 0); m.memory.write(phys, noRootTable()); }],
    ['a short root_table', (m: Machine, phys: number) => { m.memory.fill(phys, PAGE_SIZE, 0); m.memory.write(phys, shortRootTable()); }],
    ['a root_table that is not a page', (m: Machine, phys: number) => m.memory.writeU8(phys + 0x38 + 8 + 24 + 12, 0x08)],
    ['a table entry looping back to the root', (m: Machine, phys: number) => { const rt = m.memory.readU64Number(phys + 0x38 + 8 + 24 + 12); m.memory.writeU64(rt + 511 * 8, rt); }],
  ])('panics on %s', (_what, edit) => {
    expect(bootAfterEdit(edit)).toThrow(KernelPanic);
  });

  it('without any tracking the next kernel allocates a deposited page and dies of the fault while booting (a KernelPanic caused by the GPF)', () => {
    const { machine, hv } = hvMachine(true);
    const k1 = Kernel.boot(machine, { cmdline: CMDLINE, plugins: [] });
    const pfns: number[] = [];
    for (let i = 0; i < 64; i++) pfns.push(k1.mm.allocPages(0) as number);
    hv.depositMemory(HV_PARTITION_ID_SELF, pfns);
    let thrown: unknown;
    try { k1.kexec({ cmdline: CMDLINE, plugins: [] }); } catch (e) { thrown = e; }
    expect(thrown).toBeInstanceOf(KernelPanic);
    expect((thrown as Error).cause).toBeInstanceOf(DepositedPageFault);
    expect(hv.faults.map((f) => [f.boot, f.write, pfns.includes(f.pfn)])).toEqual([[2, true, true]]);
  });

  it('with KHO disabled deposits fail (nothing could be handed over)', () => {
    const { machine } = hvMachine(true);
    const k = Kernel.boot(machine, { cmdline: 'kho=off', plugins: [mshv()] });
    expect(k.dmesg.lines()).toContain('mshv: KHO is disabled; page deposits will fail.');
    expect(() => mshvRoot(k).depositPages(HV_PARTITION_ID_SELF, 1)).toThrow(ErrnoError);
  });
});

function noRootTable(): Uint8Array {
  return fdtWith({ compatible: Buffer.from('mshv_kho-v1\0', 'latin1') });
}
function shortRootTable(): Uint8Array {
  return fdtWith({ compatible: Buffer.from('mshv_kho-v1\0', 'latin1'), root_table: Buffer.from([0, 0x10, 0, 0]) });
}
function fdtWith(props: Record<string, Uint8Array>): Uint8Array { return fdtCreate(fdtNode('', props)); }
