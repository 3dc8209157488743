import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { ErrnoError, Kernel, KernelPanic, createSession, finishSession, openLiveupdate, preserveFd, retrieveFd, retrieveSession } from '@liveupdate/sdk';
import { DEV_A, GUEST_IOVA, MiB, bind, bootNext, dma, handedOverFiles, handedOverFlbs, passthrough, preserveAll, world } from './support.js';

describe('a second live update from the kernel that restored the device', () => {
  it('re-preserves the restored domain, root and context tables; DMA never faults across both jumps', () => {
    const w = world();
    const x = passthrough(w);
    preserveAll(w, x);
    w.k1.kexecJump(w.next);
    expect(dma(w.machine, DEV_A, GUEST_IOVA, new Uint8Array([1]))).toBe(true);
    const { k2, p2, dev2 } = bootNext(w);
    const s = retrieveSession(p2, dev2, 'vm0');
    const ram = retrieveFd(p2, s, 1);
    const ifd = retrieveFd(p2, s, 2);
    const cdev = retrieveFd(p2, s, 3);
    bind(p2, cdev, ifd);
    finishSession(p2, s);
    const s2 = createSession(p2, dev2, 'vm0-again');
    preserveFd(p2, s2, ram, 1);
    preserveFd(p2, s2, ifd, 2);
    preserveFd(p2, s2, cdev, 3);
    k2.kexecJump(w.next);
    expect(dma(w.machine, DEV_A, GUEST_IOVA + 1, new Uint8Array([2]))).toBe(true);
    const k3 = Kernel.boot(w.machine, w.next);
    const p3 = k3.spawn('vmm');
    const s3 = retrieveSession(p3, openLiveupdate(p3), 'vm0-again');
    const ram3 = retrieveFd(p3, s3, 1);
    expect(dma(w.machine, DEV_A, GUEST_IOVA + 2, new Uint8Array([3]))).toBe(true);
    expect(p3.pread(ram3, 4, 0)).toEqual(new Uint8Array([1, 2, 3, 0x11]));
    expect(w.unit.faults).toEqual([]);
    expect(p3.pread(ram3, 4 * MiB, 0).length).toBe(2 * MiB);
  });
});

describe('hostile handover bytes', () => {
  it('any corruption of the FLB header, arrays or records either boots or panics: never another exception', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 5 }), fc.integer({ min: 0, max: 4095 }), fc.integer({ min: 0, max: 255 }), (which, offset, byte) => {
      const w = world({ iommu: { writes: ['1.0.0'] } });
      preserveAll(w, passthrough(w));
      w.k1.kexecJump(w.next);
      const flb = Number(handedOverFlbs(w)[0]?.data ?? 0n);
      const m = w.machine.memory;
      const targets = [flb, m.readU64Number(flb + 8), m.readU64Number(flb + 16), m.readU64Number(flb + 24), Number(handedOverFiles(w).find((f) => f.token === 2n)?.data ?? 0n), flb];
      const page = targets[which] ?? flb;
      const at = which === 5 ? page + (offset % 32) : page + (offset % 128);
      m.write(at, new Uint8Array([byte]));
      try {
        bootNext(w);
      } catch (e) {
        expect(e).toBeInstanceOf(KernelPanic);
      }
    }), { numRuns: 60 });
  });

  it('a corrupted iommufd 2.x handover fails its RETRIEVE_FD with an errno, or retrieves; the boot is unaffected', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 127 }), fc.integer({ min: 0, max: 255 }), (offset, byte) => {
      const w = world();
      preserveAll(w, passthrough(w));
      w.k1.kexecJump(w.next);
      const data = Number(handedOverFiles(w).find((f) => f.token === 2n)?.data ?? 0n);
      w.machine.memory.write(data + offset, new Uint8Array([byte]));
      const { p2, dev2 } = bootNext(w);
      const s = retrieveSession(p2, dev2, 'vm0');
      try {
        retrieveFd(p2, s, 2);
      } catch (e) {
        expect(e).toBeInstanceOf(ErrnoError);
      }
    }), { numRuns: 60 });
  });
});
