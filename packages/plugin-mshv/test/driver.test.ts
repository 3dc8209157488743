/**
 * The driver against the hypervisor: hypercalls that run short are retried after the deposit
 * the status asks for, and the tracked set equals the hypervisor's deposited set after every
 * operation (a property over random sequences of partition and deposit operations).
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { HV_INIT_PARTITION_PAGES, HV_PARTITION_ID_SELF, HV_VP_PAGES } from '@liveupdate/hw';
import { errnoOf, Kernel } from '@liveupdate/sdk';
import mshv, { mshvCreatePartitionFd, mshvCreateVpFd, mshvInitializePartition, mshvOpen, mshvPartitionId, mshvRoot, walkRadix } from '@liveupdate/plugin-mshv';
import { compareTracked } from '../src/tools.js';
import { bootWith, CMDLINE, hvMachine } from './support.js';

describe('deposits on demand', () => {
  it('create partition deposits to the root (an aligned run for 0x83), initialize and VPs deposit to the partition', () => {
    const { machine, hv } = hvMachine(true);
    const { root, p } = bootWith(machine);
    const dev = mshvOpen(p);
    const pfd = mshvCreatePartitionFd(p, dev);
    const id = mshvPartitionId(p, pfd);
    expect(hv.depositedTo(HV_PARTITION_ID_SELF)).toBeGreaterThanOrEqual(2);
    expect(hv.depositedTo(id)).toBe(0);
    mshvInitializePartition(p, pfd);
    expect(hv.depositedTo(id)).toBeGreaterThanOrEqual(HV_INIT_PARTITION_PAGES);
    mshvCreateVpFd(p, pfd, 0);
    expect(hv.partition(id)?.usedPages).toBe(HV_INIT_PARTITION_PAGES + HV_VP_PAGES);
    expect(root.pagesDeposited).toBe(hv.depositedPages);
    expect(compareTracked(hv, root)).toEqual([]);
  });

  it('closing the partition fd destroys it: finalize, withdraw, delete; the pages return to the kernel', () => {
    const { machine, hv } = hvMachine(true);
    const { root, p } = bootWith(machine);
    const pfd = mshvCreatePartitionFd(p, mshvOpen(p));
    mshvInitializePartition(p, pfd);
    const id = mshvPartitionId(p, pfd);
    p.close(pfd);
    expect(hv.partition(id)).toBeUndefined();
    expect(hv.depositedTo(id)).toBe(0);
    expect(root.pagesDeposited).toBe(hv.depositedPages);
    expect(compareTracked(hv, root)).toEqual([]);
  });

  it('unknown ioctls are ENOTTY and bad partition flags EINVAL', () => {
    const { machine } = hvMachine(true);
    const { p } = bootWith(machine);
    const dev = mshvOpen(p);
    expect(errnoOf(() => p.ioctl(dev, 0x1234, new Uint8Array(16)))).toBe('ENOTTY');
    const arg = new Uint8Array(16);
    arg[0] = 1;
    expect(errnoOf(() => p.ioctl(dev, 0x4010b800, arg))).toBe('EINVAL');
  });
});

describe('the tracked set equals the deposited set at every step', () => {
  it('over random sequences of create, deposit, VP, destroy and root withdraw', () => {
    fc.assert(fc.property(fc.array(fc.record({ op: fc.constantFrom('create', 'deposit', 'vp', 'destroy', 'root', 'withdraw'), n: fc.integer({ min: 1, max: 300 }) }), { maxLength: 25 }), (ops) => {
      const { machine, hv } = hvMachine(true, '2GiB');
      const { root, p } = bootWith(machine);
      const dev = mshvOpen(p);
      const fds: number[] = [];
      for (const { op, n } of ops) {
        if (op === 'create') { const fd = mshvCreatePartitionFd(p, dev); mshvInitializePartition(p, fd); fds.push(fd); }
        else if (op === 'deposit' && fds.length) root.depositPages(mshvPartitionId(p, fds[n % fds.length] as number), n, n % 2 ? { scattered: n } : 'dense');
        else if (op === 'vp' && fds.length) { try { mshvCreateVpFd(p, fds[n % fds.length] as number, n % 256); } catch { /* index taken */ } }
        else if (op === 'destroy' && fds.length) p.close(fds.splice(n % fds.length, 1)[0] as number);
        else if (op === 'root') root.depositPages(HV_PARTITION_ID_SELF, n);
        else if (op === 'withdraw') root.withdraw(HV_PARTITION_ID_SELF, n);
        if (compareTracked(hv, root).length > 0 || root.pagesDeposited !== hv.depositedPages) return false;
      }
      return true;
    }), { numRuns: 25, seed: 42 });
  });
});

describe('the crash hand-off (RFC 00/20 patch 18)', () => {
  it('crash MSR P2 holds the tracker root, in every kernel, and the tree there is the deposited set', () => {
    const { machine, hv } = hvMachine(true);
    const { k, root } = bootWith(machine);
    root.depositPages(HV_PARTITION_ID_SELF, 77, { scattered: 5 });
    expect(hv.crashP2).toBe(BigInt(root.tracker?.rootPhys ?? -1));
    const k2 = k.kexec({ cmdline: CMDLINE, plugins: [mshv()] }) as Kernel;
    const r2 = mshvRoot(k2);
    expect(hv.crashP2).toBe(BigInt(r2.tracker?.rootPhys ?? -1));
    let n = 0;
    walkRadix(machine.memory, Number(hv.crashP2), { run: (s, e) => { n += e - s; return undefined; } });
    expect(n).toBe(77);
  });
});

describe('plugin options', () => {
  it('refuses format versions this plugin has no writer for, naming the option', () => {
    expect(() => mshv({ writes: [] })).toThrow(/mshv\(\{ writes \}\)/);
    expect(() => mshv({ writes: ['4.0.0'] })).toThrow(TypeError);
    expect(mshv({ writes: ['1.0.0'] }).manifest.formats).toEqual([{ family: 'mshv', writes: ['1.0.0'], reads: '>=1.0.0 <2.0.0', aliases: { 1: 'mshv-v1' } }]);
  });
});
