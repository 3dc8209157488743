/**
 * iommufd 2.1.0's whole-handover CRC-32: retrieve refuses any corrupted metadata byte with EINVAL
 * before it restores a domain or pins a file; the decoder reports it; a clean handover retrieves.
 */
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { retrieveFd, retrieveSession } from '@liveupdate/sdk';
import iommu from '../src/index.js';
import { bootNext, errnoOf, handedOverFiles, passthrough, preserveAll, world, type World } from './support.js';

/** The 2.1.0 handover of the passthrough set-up, after the jump: 1 HWPT and 1 area, 96 bytes. */
const SIZE = 96;

function jumped(): { w: World; at: number; compatible: string } {
  const w = world();
  preserveAll(w, passthrough(w));
  w.k1.kexecJump(w.next);
  const file = handedOverFiles(w).find((f) => f.token === 2n);
  return { w, at: Number(file?.data ?? 0n), compatible: file?.compatible ?? '' };
}

function flip(w: World, phys: number, mask: number): void {
  const b = w.machine.memory.read(phys, 1);
  w.machine.memory.write(phys, new Uint8Array([(b[0] as number) ^ mask]));
}

/** Boot the next kernel and retrieve the memfd, then the iommufd: the errno, or 'ok'. */
function retrieveIommufd(w: World): string {
  const { p2, dev2 } = bootNext(w);
  const s = retrieveSession(p2, dev2, 'vm0');
  retrieveFd(p2, s, 1);
  return errnoOf(() => retrieveFd(p2, s, 2)) || 'ok';
}

const decodeIommufd = (w: World, at: number): readonly string[] => {
  const d = iommu().tools?.decoders?.find((x) => x.target.kind === 'file' && x.target.family === 'iommufd');
  return d?.decode(w.machine.memory, BigInt(at), '2.1.0', { label: 'iommufd' }).problems ?? ['no decoder'];
};

describe('iommufd 2.1.0: integrity', () => {
  it('an intact handover retrieves, and the decoder finds no problem', () => {
    const { w, at, compatible } = jumped();
    expect(compatible).toBe('iommufd@2.1.0');
    expect(decodeIommufd(w, at)).toEqual([]);
    expect(retrieveIommufd(w)).toBe('ok');
  });

  it('a changed HWPT token is refused with EINVAL, and the decoder reports the CRC mismatch', () => {
    const { w, at } = jumped();
    flip(w, at + 8 + 8, 0x01); // hwpt[0].token 0x5eed → 0x5eec
    expect(decodeIommufd(w, at)).toEqual([expect.stringMatching(/^handover CRC-32 0x[0-9a-f]+ does not match its bytes \(0x[0-9a-f]+\)$/)]);
    expect(retrieveIommufd(w)).toBe('EINVAL');
  });

  it('a non-zero pad after the CRC is refused with EINVAL and reported', () => {
    const { w, at } = jumped();
    flip(w, at + 92, 0x80);
    expect(decodeIommufd(w, at)).toEqual(['iommufd_crc_ser pad is 128, not 0']);
    expect(retrieveIommufd(w)).toBe('EINVAL');
  });

  it('property: any single corrupted byte of the 2.1.0 metadata is refused with EINVAL and reported by the decoder', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: SIZE - 1 }), fc.integer({ min: 1, max: 255 }), (offset, mask) => {
      const { w, at } = jumped();
      flip(w, at + offset, mask);
      expect(decodeIommufd(w, at).length).toBeGreaterThan(0);
      expect(retrieveIommufd(w)).toBe('EINVAL');
    }), { numRuns: 96, seed: 0x10face });
  });
});
