import { describe, it, expect } from 'vitest';
import { createSession, preserveFd, retrieveFd, retrieveSession } from '@liveupdate/sdk';
import { dmarOf } from '@liveupdate/hw';
import { F_ADD_SEALS, MFD_ALLOW_SEALING, MFD_HUGETLB, MFD_HUGE_2MB, memfdCreate, memfdStore } from '@liveupdate/plugin-memfd';
import {
  CMDLINE, DEV_A, F_SEAL_GROW, F_SEAL_SEAL, F_SEAL_SHRINK, MiB, attach, bind, bootNext, dma, hwptAlloc, ictxOf, ioasAlloc, mapFile, markPreserve,
  openCdev, world,
} from './support.js';

describe('guest RAM in a 2 MiB hugeTLB memfd', () => {
  it('is mapped with 2 MiB leaves (no level-1 tables) and DMA keeps flowing through the update', () => {
    const w = world({ cmdline: `${CMDLINE} hugepagesz=2M hugepages=8` });
    const { p } = w;
    const ram = memfdCreate(p, 'huge-ram', MFD_HUGETLB | MFD_HUGE_2MB | MFD_ALLOW_SEALING);
    p.ftruncate(ram, 4 * MiB);
    memfdStore(p, ram, new Uint8Array(4 * MiB).fill(0x33), 0);
    p.fcntl(ram, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_GROW | F_SEAL_SHRINK);
    const ifd = p.open('/dev/iommu');
    const ioas = ioasAlloc(p, ifd);
    const cdev = openCdev(p, DEV_A);
    const devid = bind(p, cdev, ifd);
    mapFile(p, ifd, ioas, ram, 0, 4 * MiB, 0x4000_0000);
    const hwpt = hwptAlloc(p, ifd, devid, ioas);
    attach(p, cdev, hwpt);
    markPreserve(p, ifd, hwpt, 1n);
    expect(ictxOf(p, ifd).get(hwpt, 'hwpt', 't').domain?.table.tablePageCount).toBe(3);
    const t = dmarOf(w.machine).translate(0, DEV_A.rid, 0x4000_0000 + 0x1234, true);
    expect(t.ok && t.bytes).toBe(2 * MiB - 0x1234);
    const s = createSession(p, w.dev, 'huge');
    preserveFd(p, s, ram, 1);
    preserveFd(p, s, ifd, 2);
    preserveFd(p, s, cdev, 3);
    w.k1.kexecJump(w.next);
    expect(dma(w.machine, DEV_A, 0x4000_0000 + 3 * MiB, new Uint8Array([0xab, 0xcd]))).toBe(true);
    const { p2, dev2 } = bootNext(w);
    const s2 = retrieveSession(p2, dev2, 'huge');
    const ram2 = retrieveFd(p2, s2, 1);
    expect(dma(w.machine, DEV_A, 0x4000_0000 + 3 * MiB + 2, new Uint8Array([0xef]))).toBe(true);
    expect(p2.pread(ram2, 4, 3 * MiB)).toEqual(new Uint8Array([0xab, 0xcd, 0xef, 0x33]));
    expect(w.unit.faults).toEqual([]);
  });
});
