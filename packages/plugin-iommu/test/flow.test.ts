import { describe, it, expect } from 'vitest';
import { FormatNegotiationError, createSession, finishSession, preserveFd, retrieveFd, retrieveSession } from '@liveupdate/sdk';
import {
  DEV_A, DEV_B, GUEST_IOVA, MiB, PAGE_SIZE, attach, bind, bootNext, dma, errnoOf, handedOverFiles, openCdev, passthrough, preserveAll, world,
} from './support.js';

describe('DMA into guest RAM keeps flowing through the update (upstream formats: iommufd-v1)', () => {
  it('before the freeze, through the jump, during boot and after RETRIEVE_FD the engine writes guest RAM and nothing faults', () => {
    const w = world({ iommu: { writes: ['1.0.0'] } });
    const x = passthrough(w);
    const written: Array<[number, number]> = [];
    const write = (iova: number, byte: number): void => {
      expect(dma(w.machine, DEV_A, GUEST_IOVA + iova, new Uint8Array(64).fill(byte))).toBe(true);
      written.push([iova, byte]);
    };
    write(0, 0xa1);
    preserveAll(w, x);
    write(PAGE_SIZE, 0xa2);
    w.k1.kexecJump(w.next);
    write(2 * PAGE_SIZE, 0xa3); // no kernel runs
    const { k2, p2, dev2 } = bootNext(w);
    write(3 * PAGE_SIZE, 0xa4);
    const s = retrieveSession(p2, dev2, 'vm0');
    const ram = retrieveFd(p2, s, 1);
    retrieveFd(p2, s, 3);
    write(4 * PAGE_SIZE, 0xa5);
    expect(w.unit.faults).toEqual([]);
    const bytes = p2.pread(ram, 2 * MiB, 0);
    const expected = new Uint8Array(2 * MiB).fill(0x11);
    for (const [iova, byte] of written) expected.fill(byte, iova, iova + 64);
    expect(Buffer.compare(bytes, expected)).toBe(0);
    expect(k2.dmesg.grep('adopted root table')).toEqual(['DMAR: liveupdate: dmar@0xfed90000 adopted root table 0x' + w.unit.rootTableAddress.toString(16) + ' (1 preserved devices)']);
  });

  it('after the update: the cdev is retrievable, iommufd is not (EOPNOTSUPP), a fresh /dev/iommu bind is EPERM and FINISH fails', () => {
    const w = world({ iommu: { writes: ['1.0.0'] } });
    const x = passthrough(w);
    preserveAll(w, x);
    w.k1.kexecJump(w.next);
    const { p2, dev2 } = bootNext(w);
    const s = retrieveSession(p2, dev2, 'vm0');
    const cdev = retrieveFd(p2, s, 3);
    expect(errnoOf(() => retrieveFd(p2, s, 2))).toBe('EOPNOTSUPP');
    const fresh = p2.open('/dev/iommu');
    expect(errnoOf(() => bind(p2, cdev, fresh))).toBe('EPERM');
    retrieveFd(p2, s, 1);
    expect(errnoOf(() => finishSession(p2, s))).toBe('EBUSY');
  });

  it('the restored device keeps its preserved DID and its context entry, and the DID stays reserved', () => {
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

describe('the newer iommufd format (2.0.0) is negotiated and the session finishes', () => {
  it('RETRIEVE_FD of the iommufd rebuilds the HWPT on the restored domain, the retrieved cdev binds to it and FINISH succeeds', () => {
    const w = world();
    const x = passthrough(w);
    preserveAll(w, x);
    w.k1.kexecJump(w.next);
    const { p2, dev2 } = bootNext(w);
    const s = retrieveSession(p2, dev2, 'vm0');
    const ifd = retrieveFd(p2, s, 2);
    const cdev = retrieveFd(p2, s, 3);
    expect(bind(p2, cdev, ifd)).toBeGreaterThan(0);
    retrieveFd(p2, s, 1);
    finishSession(p2, s);
    expect(dma(w.machine, DEV_A, GUEST_IOVA, new Uint8Array([7]))).toBe(true);
    expect(w.unit.faults).toEqual([]);
  });
});

describe('a device that was not preserved', () => {
  it('has its context entry cleared at shutdown, and its DMA faults instead of writing', () => {
    const w = world({ iommu: { writes: ['1.0.0'] } });
    const x = passthrough(w);
    // A second device on the same IOAS domain, never preserved.
    const cdevB = openCdev(w.p, DEV_B);
    const devB = bind(w.p, cdevB, x.ifd);
    attach(w.p, cdevB, x.hwpt);
    expect(devB).toBeGreaterThan(0);
    expect(dma(w.machine, DEV_B, GUEST_IOVA, new Uint8Array([1]))).toBe(true);
    preserveAll(w, x);
    w.k1.kexecJump(w.next);
    expect(w.unit.contextDomainId(DEV_B.rid)).toBeNull();
    expect(dma(w.machine, DEV_B, GUEST_IOVA + 8, new Uint8Array([0xee]))).toBe(false);
    expect(w.unit.faults).toEqual([expect.objectContaining({ iova: GUEST_IOVA + 8, sourceId: DEV_B.rid, reason: 2 })]);
    expect(dma(w.machine, DEV_A, GUEST_IOVA + 8, new Uint8Array([0xaa]))).toBe(true);
  });
});

describe('the posted selftest\'s order checks', () => {
  it('cdev before iommufd fails (ENOENT), iommufd before memfd fails (ENOENT), memfd → iommufd → cdev succeeds', () => {
    const w = world({ iommu: { writes: ['1.0.0'] } });
    const x = passthrough(w);
    const s = createSession(w.p, w.dev, 'order');
    expect(errnoOf(() => preserveFd(w.p, s, x.cdev, 3))).toBe('ENOENT');
    expect(errnoOf(() => preserveFd(w.p, s, x.ifd, 2))).toBe('ENOENT');
    preserveFd(w.p, s, x.ram, 1);
    preserveFd(w.p, s, x.ifd, 2);
    preserveFd(w.p, s, x.cdev, 3);
  });

  it('succeeds again in a new session after closing the first', () => {
    const w = world({ iommu: { writes: ['1.0.0'] } });
    const x = passthrough(w);
    const s = preserveAll(w, x, 'first');
    w.p.close(s);
    preserveAll(w, x, 'second');
    w.k1.kexecJump(w.next);
    const { p2, dev2 } = bootNext(w);
    const s2 = retrieveSession(p2, dev2, 'second');
    expect(retrieveFd(p2, s2, 3)).toBeGreaterThanOrEqual(0);
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
