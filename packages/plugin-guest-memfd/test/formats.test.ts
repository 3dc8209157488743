import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '@liveupdate/hw';
import { createSession, errnoOf, finishSession, preserveFd, retrieveFd, retrieveSession } from '@liveupdate/sdk';
import { FALLOC_FL_KEEP_SIZE, gmemStore, guestDigest, kvmAbi, kvmCreateGuestMemfdFd, kvmCreateVm } from '../src/index.js';
import { entryFlags, entryPfn, readRecordHi, readRecordIndex, readRecordLo, sparseEntry, sparseFlags, sparseOrder, writeRecord } from '../src/handlers/records.js';
import { jump, plugins, start } from './support.js';

const SHARED = kvmAbi.GUEST_MEMFD_FLAG_MMAP | kvmAbi.GUEST_MEMFD_FLAG_INIT_SHARED;

describe('record codecs (property)', () => {
  it('a guest_memfd_luo_folio_ser round-trips pfn:52, flags:12 and a 64-bit index below 2^53', () => {
    fc.assert(fc.property(
      fc.integer({ min: 0, max: 2 ** 52 - 1 }), fc.integer({ min: 0, max: 0xfff }), fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
      (pfn, flags, index) => {
        const b = new Uint8Array(16);
        const v = new DataView(b.buffer);
        writeRecord(v, 0, pfn, flags, index);
        expect(v.getBigUint64(0, true)).toBe(BigInt(pfn) | (BigInt(flags) << 52n));
        expect(v.getBigUint64(8, true)).toBe(BigInt(index));
        expect([entryPfn(readRecordLo(v, 0), readRecordHi(v, 0)), entryFlags(readRecordHi(v, 0)), readRecordIndex(v, 0)]).toEqual([pfn, flags, index]);
      },
    ));
  });

  it('a sparse entry carries the folio order in flags bits 1..5 and UPTODATE in bit 0', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 2 ** 52 - 1 }), fc.constantFrom(0, 9), fc.boolean(), (pfn, order, up) => {
      const e = BigInt(sparseEntry(pfn, sparseFlags(order, up)));
      const lo = Number(e & 0xffffffffn);
      const hi = Number(e >> 32n);
      expect([entryPfn(lo, hi), sparseOrder(entryFlags(hi)), entryFlags(hi) & 1]).toEqual([pfn, order, up ? 1 : 0]);
    }));
  });
});

describe('any guest_memfd content survives the update in either format (property)', () => {
  for (const writes of [['1.0.0'], ['1.0.0', '2.0.0']]) {
    it(`writes ${writes.join(',')}: random pages written and fallocated, every page identical after retrieve`, () => {
      fc.assert(fc.property(
        fc.uniqueArray(fc.integer({ min: 0, max: 255 }), { maxLength: 40 }), fc.uniqueArray(fc.integer({ min: 0, max: 255 }), { maxLength: 8 }), fc.integer(),
        (written, fallocated, seed) => {
          const o = start({ memory: '512MiB', plugins: plugins({ writes }), next: plugins({ writes }) });
          const vm = kvmCreateVm(o.p, o.kvm, 0);
          const gmem = kvmCreateGuestMemfdFd(o.p, vm, 256 * PAGE_SIZE, SHARED);
          for (const i of written) gmemStore(o.p, gmem, new Uint8Array([i, seed & 0xff, (seed >>> 8) & 0xff]), i * PAGE_SIZE + (i % 97));
          for (const i of fallocated) o.p.fallocate(gmem, FALLOC_FL_KEEP_SIZE, i * PAGE_SIZE, PAGE_SIZE);
          const before = guestDigest(o.p, gmem);
          const s = createSession(o.p, o.dev, 'vm0');
          preserveFd(o.p, s, gmem, 2);
          preserveFd(o.p, s, vm, 1);
          const i = jump(o);
          const s2 = retrieveSession(i.p2, i.dev2, 'vm0');
          const g2 = retrieveFd(i.p2, s2, 2);
          expect(guestDigest(i.p2, g2)).toEqual(before);
          finishSession(i.p2, s2);
          expect(i.k2.khoIn?.leaked().blocks).toBe(0);
        },
      ), { numRuns: 12 });
    });
  }
});

describe('negotiation', () => {
  it('a sparse preservation converted for a target that reads only guest_memfd_luo_v1 is rebuilt when the reboot fails, and updates later', () => {
    const o = start({ plugins: plugins(), next: plugins({ writes: ['1.0.0'], reads: '^1.0.0' }) });
    const vm = kvmCreateVm(o.p, o.kvm, 0);
    const gmem = kvmCreateGuestMemfdFd(o.p, vm, 64 * PAGE_SIZE, SHARED);
    gmemStore(o.p, gmem, new Uint8Array([1, 2, 3]), 5 * PAGE_SIZE);
    const s = createSession(o.p, o.dev, 'vm0');
    preserveFd(o.p, s, vm, 1);
    preserveFd(o.p, s, gmem, 2);
    // A second guest_memfd whose VM is not preserved fails the freeze after the first was converted.
    const orphan = createSession(o.p, o.dev, 'orphan');
    preserveFd(o.p, orphan, kvmCreateGuestMemfdFd(o.p, kvmCreateVm(o.p, o.kvm, 0), PAGE_SIZE, SHARED), 1);
    expect(errnoOf(() => o.k1.kexecJump(o.cfg))).toBe('ENOENT');
    // Rolled back to the sparse format: the guest may allocate again.
    gmemStore(o.p, gmem, new Uint8Array([4]), 9 * PAGE_SIZE);
    o.p.close(orphan);
    const before = guestDigest(o.p, gmem);
    const i = jump(o);
    const s2 = retrieveSession(i.p2, i.dev2, 'vm0');
    expect(guestDigest(i.p2, retrieveFd(i.p2, s2, 2))).toEqual(before);
    expect(i.k2.luo.sessions.incoming[0]?.fileSet.files.map((f) => f.compatible).sort()).toEqual(['guest_memfd_luo_v1', 'kvm_vm_luo_v1']);
    finishSession(i.p2, s2);
    expect(i.k2.khoIn?.leaked().blocks).toBe(0);
  });
});
