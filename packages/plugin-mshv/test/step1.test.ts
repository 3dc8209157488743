/**
 * Step 1 (RFC 2026-01-24, drivers/hv/mshv_luo.c): the "mshv-v1" handler on the in-kernel
 * session "mshv_root" vetoes the freeze: EBUSY while any VM partition exists (checked first);
 * on L1VH every deposited page is withdrawn (a failing hypercall fails the freeze); EBUSY if
 * any page is still deposited. And the upgrade story: a kernel that only reads step 1 is
 * refused before any freeze while partitions run, with the reason named.
 */
import { describe, expect, it } from 'vitest';
import { liveUpdate } from '@liveupdate/sdk/testing';
import { ErrnoError, errnoOf, FormatNegotiationError, getName, Kernel } from '@liveupdate/sdk';
import { decodeTrackingFile } from '../src/tools.js';
import { createMachine, HV_PARTITION_ID_SELF, hvStatus } from '@liveupdate/hw';
import mshv, { mshvCreatePartitionFd, mshvCreateVpFd, mshvInitializePartition, mshvOpen, mshvRoot, mshvRunVp } from '@liveupdate/plugin-mshv';
import { bootWith, CMDLINE, hvMachine } from './support.js';

const STEP1 = ['1.0.0'];

function withPartition(l1vh: boolean, writes = STEP1) {
  const { machine, hv } = hvMachine(l1vh);
  const { k, root, p } = bootWith(machine, [mshv({ writes })]);
  const dev = mshvOpen(p);
  const pfd = mshvCreatePartitionFd(p, dev);
  mshvInitializePartition(p, pfd);
  const vp = mshvCreateVpFd(p, pfd, 0);
  mshvRunVp(p, vp);
  return { machine, hv, k, root, p, pfd, vp };
}

const kexecError = (k: Kernel, plugins = [mshv({ writes: STEP1 })]): ErrnoError => {
  try { k.kexecJump({ cmdline: CMDLINE, plugins }); } catch (e) { if (e instanceof ErrnoError) return e; throw e; }
  throw new Error('kexec went through');
};

describe('step 1: the in-kernel session', () => {
  it('the driver registers "mshv-v1" and creates session mshv_root holding its own /dev/mshv file at token 0', () => {
    const { machine } = hvMachine(true);
    const { k } = bootWith(machine, [mshv({ writes: STEP1 })]);
    const s = k.luo.sessions.outgoing.find((x) => x.name === 'mshv_root');
    expect(s?.fileSet.files.map((f) => [f.token, f.handler.compatible])).toEqual([[0n, 'mshv-v1']]);
    expect(k.dmesg.lines()).toContain('mshv: mshv_root live update handler registered');
    void getName;
  });
});

describe('step 1: freeze refuses', () => {
  it('with a VM partition: EBUSY, checked before anything is withdrawn, and the kernel keeps running', () => {
    const { hv, k, p, vp } = withPartition(true);
    const before = hv.depositedPages;
    const e = kexecError(k);
    expect(e.code).toBe('EBUSY');
    expect(k.dmesg.lines()).toContain('mshv: Cannot perform live update while VMs are active');
    expect(hv.depositedPages).toBe(before);
    expect(k.isDead).toBe(false);
    mshvRunVp(p, vp);
  });

  it('with deposits on a classic root even without VMs: EBUSY, nothing withdrawn', () => {
    const { hv, k, p, pfd } = withPartition(false);
    p.close(pfd);
    expect(hv.partitionIds).toEqual([]);
    const left = hv.depositedTo(HV_PARTITION_ID_SELF);
    expect(left).toBeGreaterThan(0);
    expect(kexecError(k).code).toBe('EBUSY');
    expect(k.dmesg.lines()).toContain('mshv: Cannot perform live update while pages are deposited');
    expect(hv.depositedTo(HV_PARTITION_ID_SELF)).toBe(left);
  });

  it('on L1VH a failing withdraw hypercall fails the freeze with its error', () => {
    const { hv, k, p, pfd } = withPartition(true);
    p.close(pfd);
    hv.withdrawMemory = () => ({ status: hvStatus.HV_STATUS_INVALID_PARTITION_STATE, pfns: [] });
    expect(kexecError(k).code).toBe('EINVAL');
    expect(k.dmesg.lines().some((l) => l.startsWith('mshv: Failed to withdraw memory from L1 virtualization'))).toBe(true);
  });
});

describe('step 1: withdraw, then update (L1VH)', () => {
  it('with the partitions gone, every root deposit is withdrawn at freeze and the update goes through', () => {
    const { hv, machine } = hvMachine(true);
    let deposited = 0;
    const r = liveUpdate({ from: { plugins: [mshv({ writes: STEP1 })], release: '7.1.0' }, to: { plugins: [mshv({ writes: STEP1 })], release: '7.2.0' } }, {
      machine,
      before(k) {
        const p = k.spawn('vmm');
        const pfd = mshvCreatePartitionFd(p, mshvOpen(p));
        mshvInitializePartition(p, pfd);
        p.close(pfd);
        deposited = hv.depositedPages;
        return mshvRoot(k).pagesDeposited;
      },
      after() { /* nothing to retrieve: mshv-v1 carries no data */ },
    });
    expect(r.outcome.kind).toBe('updated');
    expect(deposited).toBeGreaterThan(0);
    expect(r.state).toBe(deposited);
    expect(hv.depositedPages).toBe(0);
    expect(hv.faultCount).toBe(0);
    expect(mshvRoot(r.to as Kernel).pagesDeposited).toBe(0);
  });
});

describe('a target without the mshv plugin', () => {
  it('is refused before any freeze: it could not read the mshv file (nor know the hypervisor\'s pages)', () => {
    const { machine, hv } = hvMachine(true);
    const { k, root } = bootWith(machine);
    root.depositPages(HV_PARTITION_ID_SELF, 8);
    expect(() => k.kexecJump({ cmdline: CMDLINE, plugins: [] })).toThrow(FormatNegotiationError);
    expect(() => k.kexecJump({ cmdline: CMDLINE, plugins: [] })).toThrow(/mshv/);
    expect(hv.depositedPages).toBe(8);
    expect(k.isDead).toBe(false);
  });
});

describe('step 1 only on the target: the upgrade story', () => {
  it('a tracking kernel going to a step-1-only kernel is refused before any freeze while partitions run, the reason named', () => {
    const { hv, k, root, p, vp } = withPartition(true, ['1.0.0', '2.0.0', '3.0.0']);
    const before = hv.depositedPages;
    let e: unknown = null;
    try { k.kexecJump({ cmdline: CMDLINE, plugins: [mshv({ writes: STEP1 })] }); } catch (x) { e = x; }
    if (!(e instanceof FormatNegotiationError)) throw new Error(`expected a negotiation refusal, got ${String(e)}`);
    expect(e.refusals).toEqual([{ family: 'mshv', owner: '@liveupdate/plugin-mshv', offered: ['1.0.0', '2.0.0', '3.0.0'], accepted: '1.0.0' }]);
    expect(e.message).toMatch(/the target kernel reads mshv 1\.0\.0 only \(step 1, mshv-v1\), which cannot hand over 1 running VM partition/);
    // Nothing was frozen: no freeze ran, partitions run, nothing was withdrawn, the tracker still moves.
    expect(k.dmesg.lines().some((l) => l.includes('Cannot perform live update'))).toBe(false);
    expect(root.frozen).toBe(false);
    expect(root.tracker?.frozen).toBe(false);
    expect(hv.depositedPages).toBe(before);
    mshvRunVp(p, vp);
  });

  it('without partitions it negotiates mshv-v1 and updates by withdrawing everything (L1VH)', () => {
    const { hv, machine } = hvMachine(true);
    const r = liveUpdate({ from: { plugins: [mshv()], release: '7.1.0' }, to: { plugins: [mshv({ writes: STEP1 })], release: '6.19.0' } }, {
      machine,
      before(k) { mshvRoot(k).depositPages(HV_PARTITION_ID_SELF, 64, { scattered: 3 }); return null; },
      after() { /* nothing */ },
    });
    expect(r.outcome.kind).toBe('updated');
    expect(r.from.formats.chosen('mshv')).toBe('1.0.0');
    expect(hv.depositedPages).toBe(0);
    expect(hv.faultCount).toBe(0);
  });

  it('and the same kernel going to a step-2 kernel keeps its partitions across the jump', () => {
    const { hv, k } = withPartition(true, ['1.0.0', '2.0.0', '3.0.0']);
    const id = hv.partitionIds[0] as bigint;
    const k2 = k.kexec({ cmdline: CMDLINE, plugins: [mshv({ writes: ['1.0.0', '2.0.0'] })] });
    expect(k.formats.chosen('mshv')).toBe('2.0.0');
    expect(k2.dmesg.lines()).toContain(`mshv: Cleaning up stale partition ${id}`);
    expect(hv.partition(id)).toBeUndefined();
  });
});

describe('step 1: what crosses', () => {
  it('the mshv-v1 file carries no data, and the decoder says so', () => {
    const { machine } = hvMachine(true);
    const { k } = bootWith(machine, [mshv({ writes: STEP1 })]);
    k.kexecJump({ cmdline: CMDLINE, plugins: [mshv({ writes: STEP1 })] });
    const f = k.luo.sessions.outgoing.find((s) => s.name === 'mshv_root')?.fileSet.files[0];
    expect([f?.compatible, f?.serializedData]).toEqual(['mshv-v1', 0n]);
    const d = decodeTrackingFile(machine.memory, 0n, '1.0.0');
    expect(d).toEqual({ fields: { version: '1.0.0', carries: 'nothing (freeze veto)', data: '0x0' }, problems: [], pages: [] });
    expect(decodeTrackingFile(machine.memory, 0x1000n, '1.0.0').problems).toEqual(['data 0x1000 should be 0 in mshv 1.0.0']);
  });

  it('a kernel with no hypervisor below it has no /dev/mshv and no mshv_root session', () => {
    const k = Kernel.boot(createMachine({ memory: '2GiB' }), { cmdline: CMDLINE, plugins: [mshv()] });
    const p = k.spawn('vmm');
    expect(errnoOf(() => mshvOpen(p))).toBe('ENOENT');
    expect(k.luo.sessions.outgoing).toEqual([]);
  });
});
