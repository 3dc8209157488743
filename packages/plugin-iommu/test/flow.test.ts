/**
 * IOMMU-only flows with the test cdev of ./support.ts. The end-to-end proof (continuous DMA through
 * the update, the posted selftest's order and after-kexec checks, an unpreserved device) runs with
 * plugin-pci's real vfio-pci cdev and DSA engine in proof.test.ts.
 */
import { describe, it, expect } from 'vitest';
import { FormatNegotiationError, retrieveFd, retrieveSession } from '@liveupdate/sdk';
import { DEV_A, GUEST_IOVA, bootNext, dma, errnoOf, handedOverFiles, passthrough, preserveAll, world } from './support.js';

describe('the restored device', () => {
  it('keeps its preserved DID and its context entry, and the DID stays reserved', () => {
    const w = world({ iommu: { writes: ['1.0.0'] } });
    const x = passthrough(w);
    const did = w.unit.contextDomainId(DEV_A.rid);
    preserveAll(w, x);
    w.k1.kexecJump(w.next);
    bootNext(w);
    expect(did).toBe(1);
    expect(w.unit.contextDomainId(DEV_A.rid)).toBe(did);
  });
});

describe('the iommufd format is negotiated with the target kernel', () => {
  it('a target that reads only 1.x gets "iommufd-v1" from a build that writes 1.0.0 and 2.0.0', () => {
    const w = world({ nextIommu: { reads: '^1.0.0' } });
    preserveAll(w, passthrough(w));
    w.k1.kexecJump(w.next);
    expect(handedOverFiles(w).find((f) => f.token === 2n)?.compatible).toBe('iommufd-v1');
    const { p2, dev2 } = bootNext(w);
    expect(errnoOf(() => retrieveFd(p2, retrieveSession(p2, dev2, 'vm0'), 2))).toBe('EOPNOTSUPP');
  });

  it('a build that writes only 2.0.0 is refused by a 1.x target before anything is frozen, and keeps running', () => {
    const w = world({ iommu: { writes: ['2.0.0'] }, nextIommu: { reads: '^1.0.0' } });
    const x = passthrough(w);
    preserveAll(w, x);
    expect(() => w.k1.kexecJump(w.next)).toThrow(FormatNegotiationError);
    expect(w.k1.isDead).toBe(false);
    expect(dma(w.machine, DEV_A, GUEST_IOVA, new Uint8Array([1]))).toBe(true);
  });
});
