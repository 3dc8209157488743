/**
 * The reviewers' direction on its own: a build without the in-kernel session, where the VMM
 * preserves its /dev/mshv fd and the tracking travels in that file; and what happens when no
 * one preserves a file (the radix subtree still carries the tracking).
 */
import { describe, expect, it } from 'vitest';
import { HV_PARTITION_ID_SELF } from '@liveupdate/hw';
import { createSession, finishSession, Kernel, openLiveupdate, preserveFd, retrieveFd, retrieveSession } from '@liveupdate/sdk';
import mshv, { mshvAbi, mshvCreatePartitionFd, mshvInitializePartition, mshvOpen, mshvRoot } from '@liveupdate/plugin-mshv';
import { compareTracked } from '../src/tools.js';
import { CMDLINE, hvMachine } from './support.js';

const USERSPACE = () => [mshv({ session: false })];

function setup(preserve: boolean) {
  const { machine, hv } = hvMachine(true);
  const k = Kernel.boot(machine, { cmdline: CMDLINE, plugins: USERSPACE() });
  const p = k.spawn('vmm');
  const pfd = mshvCreatePartitionFd(p, mshvOpen(p));
  mshvInitializePartition(p, pfd);
  mshvRoot(k).depositPages(HV_PARTITION_ID_SELF, 50, { scattered: 2 });
  if (preserve) {
    const s = createSession(p, openLiveupdate(p), 'vmm');
    preserveFd(p, s, mshvOpen(p), 9);
  }
  const ids = [...hv.partitionIds];
  const k2 = k.kexec({ cmdline: CMDLINE, plugins: USERSPACE() });
  return { machine, hv, k, k2, ids };
}

describe('the VMM preserves /dev/mshv (no in-kernel session)', () => {
  it('the file carries mshv@3.0.0; until it is retrieved nothing is tracked, nothing is touched and the partitions are still in the hypervisor', () => {
    const { hv, k, k2, ids } = setup(true);
    expect(k.luo.sessions.outgoing.map((s) => s.name)).toEqual(['vmm']);
    expect(k.luo.sessions.outgoing[0]?.fileSet.files[0]?.compatible).toBe('mshv@3.0.0');
    expect(k.khoOut?.subtreeList.some((s) => s.name === mshvAbi.FDT_SUBTREE_MSHV)).toBe(false);
    expect(mshvRoot(k2).tracker?.size).toBe(0);
    expect(hv.partitionIds).toEqual(ids);
    expect(hv.faultCount).toBe(0);
  });

  it('retrieving it adopts the tracking and tears the recorded partitions down', () => {
    const { hv, k2, ids } = setup(true);
    const p = k2.spawn('vmm');
    const s = retrieveSession(p, openLiveupdate(p), 'vmm');
    retrieveFd(p, s, 9);
    expect(compareTracked(hv, mshvRoot(k2))).toEqual([]);
    expect(hv.partition(ids[0] as bigint)).toBeUndefined();
    finishSession(p, s);
    expect(k2.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
  });

  it('finishing the session without retrieving still gives the partitions\' pages back', () => {
    const { hv, k2, ids } = setup(true);
    const p = k2.spawn('vmm');
    const s = retrieveSession(p, openLiveupdate(p), 'vmm');
    finishSession(p, s);
    expect(hv.partition(ids[0] as bigint)).toBeUndefined();
    expect(compareTracked(hv, mshvRoot(k2))).toEqual([]);
  });

  it('with no file preserved the radix subtree carries the tracking, as in step 2', () => {
    const { hv, k, k2, ids } = setup(false);
    expect(k.khoOut?.subtreeList.some((s) => s.name === mshvAbi.FDT_SUBTREE_MSHV)).toBe(true);
    expect(hv.partition(ids[0] as bigint)).toBeUndefined();
    expect(compareTracked(hv, mshvRoot(k2))).toEqual([]);
  });
});
