import { describe, it, expect } from 'vitest';
import { createSession, preserveFd } from '@liveupdate/sdk';
import { iommuPreserveDevice, iommuProbeDevice } from '../src/index.js';
import { coreOf } from '../src/state.js';
import {
  DEV_B, F_SEAL_GROW, F_SEAL_SEAL, GUEST_IOVA, MiB, attach, bind, errnoOf, guestRam, hwptAlloc, ictxOf, mapAnon, mapFile,
  markPreserve, openCdev, passthrough, preserveAll, world,
} from './support.js';

describe('IOMMU_HWPT_LU_MARK_PRESERVE', () => {
  it('an unknown HWPT is ENOENT', () => {
    const w = world();
    const x = passthrough(w, { mark: false });
    expect(errnoOf(() => markPreserve(w.p, x.ifd, 99, 1n))).toBe('ENOENT');
    expect(errnoOf(() => markPreserve(w.p, x.ifd, x.ioas, 1n))).toBe('ENOENT');
  });

  it('a token another marked HWPT of the same iommufd uses is EADDRINUSE; another iommufd may reuse it', () => {
    const w = world();
    const x = passthrough(w, { token: 7n });
    const h2 = hwptAlloc(w.p, x.ifd, x.devid, x.ioas);
    expect(errnoOf(() => markPreserve(w.p, x.ifd, h2, 7n))).toBe('EADDRINUSE');
    markPreserve(w.p, x.ifd, h2, 8n);
    const y = passthrough(w, { token: 7n, dev: DEV_B });
    expect(ictxOf(w.p, y.ifd).markedHwpts().map((h) => h.luToken)).toEqual([7n]);
  });

  it('there is no unmark: a marked HWPT cannot be destroyed (EBUSY)', () => {
    const w = world();
    const x = passthrough(w);
    const h2 = hwptAlloc(w.p, x.ifd, x.devid, x.ioas);
    markPreserve(w.p, x.ifd, h2, 9n);
    expect(errnoOf(() => w.p.ioctl(x.ifd, 0x3b80, new Uint8Array([8, 0, 0, 0, h2, 0, 0, 0])))).toBe('EBUSY');
  });
});

describe('preserving iommufd checks every IOVA area of a marked HWPT', () => {
  it('an area that is not file-backed is EINVAL', () => {
    const w = world();
    const x = passthrough(w);
    mapAnon(w.p, x.ifd, x.ioas, 64 * 1024, 0x4000_0000);
    const s = createSession(w.p, w.dev, 's');
    preserveFd(w.p, s, x.ram, 1);
    expect(errnoOf(() => preserveFd(w.p, s, x.ifd, 2))).toBe('EINVAL');
  });

  it('a file without F_SEAL_SEAL|F_SEAL_GROW|F_SEAL_SHRINK is EINVAL', () => {
    const w = world();
    const x = passthrough(w);
    const loose = guestRam(w.p, MiB, 0, F_SEAL_SEAL | F_SEAL_GROW);
    mapFile(w.p, x.ifd, x.ioas, loose, 0, MiB, 0x4000_0000);
    const s = createSession(w.p, w.dev, 's');
    preserveFd(w.p, s, x.ram, 1);
    preserveFd(w.p, s, loose, 4);
    expect(errnoOf(() => preserveFd(w.p, s, x.ifd, 2))).toBe('EINVAL');
  });

  it('a file not preserved in the same session is ENOENT', () => {
    const w = world();
    const x = passthrough(w);
    const other = createSession(w.p, w.dev, 'other');
    preserveFd(w.p, other, x.ram, 1);
    const s = createSession(w.p, w.dev, 's');
    expect(errnoOf(() => preserveFd(w.p, s, x.ifd, 2))).toBe('ENOENT');
  });

  it('a marked HWPT without a domain is EINVAL', () => {
    const w = world();
    const x = passthrough(w);
    const h = ictxOf(w.p, x.ifd).get(x.hwpt, 'hwpt', 'test');
    const domain = h.domain;
    h.domain = null;
    const s = createSession(w.p, w.dev, 's');
    preserveFd(w.p, s, x.ram, 1);
    expect(errnoOf(() => preserveFd(w.p, s, x.ifd, 2))).toBe('EINVAL');
    h.domain = domain;
    preserveFd(w.p, s, x.ifd, 2);
  });

  it('a failed preserve leaves the IOAS mutable and no domain preserved', () => {
    const w = world();
    const x = passthrough(w);
    const s = createSession(w.p, w.dev, 's');
    expect(errnoOf(() => preserveFd(w.p, s, x.ifd, 2))).toBe('ENOENT');
    const ioas = ictxOf(w.p, x.ifd).get(x.ioas, 'ioas', 'test');
    expect(ioas.immutable).toBe(false);
    expect(ictxOf(w.p, x.ifd).get(x.hwpt, 'hwpt', 'test').domain?.preservedRecord).toBe(0);
    mapFile(w.p, x.ifd, x.ioas, guestRam(w.p, MiB), 0, MiB, 0x8000_0000);
  });
});

describe('the IOAS is immutable while preserved', () => {
  it('MAP_FILE and UNMAP are EBUSY; closing the session makes it mutable again', () => {
    const w = world();
    const x = passthrough(w);
    const s = createSession(w.p, w.dev, 's');
    preserveFd(w.p, s, x.ram, 1);
    preserveFd(w.p, s, x.ifd, 2);
    const more = guestRam(w.p, MiB);
    expect(errnoOf(() => mapFile(w.p, x.ifd, x.ioas, more, 0, MiB, 0x8000_0000))).toBe('EBUSY');
    const unmap = new Uint8Array(24);
    const v = new DataView(unmap.buffer);
    v.setUint32(0, 24, true); v.setUint32(4, x.ioas, true); v.setBigUint64(8, BigInt(GUEST_IOVA), true); v.setBigUint64(16, BigInt(2 * MiB), true);
    expect(errnoOf(() => w.p.ioctl(x.ifd, 0x3b86, unmap))).toBe('EBUSY');
    w.p.close(s);
    expect(mapFile(w.p, x.ifd, x.ioas, more, 0, MiB, 0x8000_0000)).toBe(0x8000_0000);
  });
});

describe('the VFIO cdev preserve (iommufd_device_preserve and iommu_preserve_device)', () => {
  it('a device not attached is ENOENT', () => {
    const w = world();
    const x = passthrough(w);
    const cdevB = openCdev(w.p, DEV_B);
    bind(w.p, cdevB, x.ifd);
    const s = preserveAll(w, x);
    expect(errnoOf(() => preserveFd(w.p, s, cdevB, 4))).toBe('ENOENT');
  });

  it('a device attached to an unmarked HWPT is EINVAL', () => {
    const w = world();
    const x = passthrough(w);
    const cdevB = openCdev(w.p, DEV_B);
    const devB = bind(w.p, cdevB, x.ifd);
    attach(w.p, cdevB, hwptAlloc(w.p, x.ifd, devB, x.ioas));
    const s = preserveAll(w, x);
    expect(errnoOf(() => preserveFd(w.p, s, cdevB, 4))).toBe('EINVAL');
  });

  it('a device already preserved is EBUSY, and a preserved device cannot re-attach (EBUSY)', () => {
    const w = world();
    const x = passthrough(w);
    const s = preserveAll(w, x);
    const session = w.k1.luo.sessions.outgoing.find((q) => q.name === 'vm0');
    if (!session) throw new Error('no session');
    expect(errnoOf(() => iommuPreserveDevice(w.k1, session, w.p.file(x.ifd, 't'), x.devid))).toBe('EBUSY');
    expect(errnoOf(() => attach(w.p, x.cdev, x.hwpt))).toBe('EBUSY');
    void s;
  });

  it('a device that is not PCI is EOPNOTSUPP; one whose DMA ownership is not claimed is EINVAL', () => {
    const w = world();
    const x = passthrough(w);
    preserveAll(w, x);
    const core = coreOf(w.k1);
    const domain = ictxOf(w.p, x.ifd).get(x.hwpt, 'hwpt', 't').domain;
    if (!domain) throw new Error('no domain');
    const platform = iommuProbeDevice(w.k1, { segment: 0, rid: 0x0500, isPci: false, name: 'platform' });
    platform.owner = 'someone';
    expect(errnoOf(() => core.preserveDevice(domain, platform))).toBe('EOPNOTSUPP');
    const unowned = iommuProbeDevice(w.k1, { segment: 0, rid: 0x0600, isPci: true, name: '0000:06:00.0' });
    expect(errnoOf(() => core.preserveDevice(domain, unowned))).toBe('EINVAL');
  });

  it('the hardware record is refcounted per device: two devices → 2, unpreserving one → 1, both → deleted', () => {
    const w = world();
    const x = passthrough(w);
    const cdevB = openCdev(w.p, DEV_B);
    const devB = bind(w.p, cdevB, x.ifd);
    attach(w.p, cdevB, x.hwpt);
    const s = preserveAll(w, x);
    preserveFd(w.p, s, cdevB, 4);
    const unit = coreOf(w.k1).units[0];
    if (!unit) throw new Error('no unit');
    const rec = unit.outgoingRecord;
    expect(w.machine.memory.readU32(rec)).toBe(2);
    const b = ictxOf(w.p, x.ifd).get(devB, 'device', 't').dev;
    coreOf(w.k1).unpreserveDevice(b);
    expect([w.machine.memory.readU32(rec), w.machine.memory.readU32(rec + 4)]).toEqual([1, 0]);
    expect(b.preservedRecord).toBe(0);
    const a = ictxOf(w.p, x.ifd).get(x.devid, 'device', 't').dev;
    coreOf(w.k1).unpreserveDevice(a);
    expect([w.machine.memory.readU32(rec), w.machine.memory.readU32(rec + 4)]).toEqual([0, 1]);
    expect(unit.outgoingRecord).toBe(0);
    w.p.close(s);
  });
});
