/**
 * plugin-pci's vfio-pci cdev wired to this plugin: the real VFIO_DEVICE_BIND_IOMMUFD,
 * VFIO_DEVICE_ATTACH_IOMMUFD_PT and DETACH ioctls, close → unbind, the cdev preserve's IOMMU
 * checks in the series' order, probe at PCI enumeration, and the VT-d remapper in front of DMA.
 */
import { describe, it, expect } from 'vitest';
import { PAGE_SIZE, attachMachine, dmarOf } from '@liveupdate/hw';
import { ErrnoError, createSession, preserveFd } from '@liveupdate/sdk';
import { pciCoreOf, pciDevice, vfioAttachIommufdPt, vfioBindDevice, vfioBindIommufd, vfioDetachIommufdPt } from '@liveupdate/plugin-pci';
import { iommuDeviceOf } from '../src/index.js';
import { coreOf } from '../src/state.js';
import { GUEST_IOVA, errnoOf, guestRam, hwptAlloc, ictxOf, ioasAlloc, mapFile } from './support.js';
import { DSA0, DSA1, bootNext, passthrough, rig, startSeqWrite } from './vfio-support.js';

describe('VFIO cdev ioctls go to iommufd', () => {
  it('PCI enumeration probes every function with the IOMMU before any driver binds', () => {
    const r = rig();
    const core = coreOf(r.k1);
    expect([...core.devices.keys()].sort()).toEqual(['0:16', '0:256', '0:512', '0:8'].sort());
    expect(iommuDeviceOf(r.k1, 0, DSA0.rid)?.info).toEqual({ segment: 0, rid: DSA0.rid, isPci: true, name: DSA0.bdf });
    expect(pciDevice(r.k1, DSA0.bdf).driver).toBeNull();
  });

  it('BIND returns the iommufd devid, ATTACH points the context entry at the HWPT domain, DETACH clears it', () => {
    const r = rig();
    const p = r.p;
    const ram = guestRam(p, 4 * PAGE_SIZE, 0x11);
    const ifd = p.open('/dev/iommu');
    const ioas = ioasAlloc(p, ifd);
    mapFile(p, ifd, ioas, ram, 0, 4 * PAGE_SIZE, GUEST_IOVA);
    const cdev = p.open(vfioBindDevice(r.k1, 'dsa0').cdevPath);
    const devid = vfioBindIommufd(p, cdev, ifd);
    expect(ictxOf(p, ifd).get(devid, 'device', 't').dev.info.name).toBe(DSA0.bdf);
    expect(errnoOf(() => vfioBindIommufd(p, cdev, ifd))).toBe('EINVAL');
    const hwpt = hwptAlloc(p, ifd, devid, ioas);
    vfioAttachIommufdPt(p, cdev, hwpt);
    expect(r.unit.contextDomainId(DSA0.rid)).toBe(1);
    vfioDetachIommufdPt(p, cdev);
    expect(r.unit.contextDomainId(DSA0.rid)).toBeNull();
    expect(errnoOf(() => vfioAttachIommufdPt(p, cdev, 999))).toBe('ENOENT');
  });

  it('a noiommu-bound cdev has nothing to attach (EINVAL); a non-iommufd fd is EBADF', () => {
    const r = rig();
    const cdev = r.p.open(vfioBindDevice(r.k1, 'dsa0').cdevPath);
    const memfd = guestRam(r.p, PAGE_SIZE);
    expect(errnoOf(() => vfioBindIommufd(r.p, cdev, memfd))).toBe('EBADF');
    expect(errnoOf(() => vfioAttachIommufdPt(r.p, cdev, 1))).toBe('EINVAL');
  });

  it('closing the cdev unbinds the device from the iommufd and releases DMA ownership', () => {
    const r = rig();
    const x = passthrough(r, 'dsa0', { mark: false });
    expect(ictxOf(r.p, x.ifd).objects.has(x.devid)).toBe(true);
    r.p.close(x.cdev);
    expect(ictxOf(r.p, x.ifd).objects.has(x.devid)).toBe(false);
    expect(iommuDeviceOf(r.k1, 0, DSA0.rid)?.owner).toBeNull();
    expect(r.unit.contextDomainId(DSA0.rid)).toBeNull();
  });
});

describe('the vfio-pci cdev preserve: the IOMMU part first, in the series order', () => {
  it('iommufd not preserved in the session → ENOENT; nothing is preserved by the PCI core', () => {
    const r = rig();
    const x = passthrough(r, 'dsa0');
    const s = createSession(r.p, r.dev, 'vm0');
    preserveFd(r.p, s, x.ram, 1);
    expect(errnoOf(() => preserveFd(r.p, s, x.cdev, 3))).toBe('ENOENT');
    expect(pciDevice(r.k1, DSA0.bdf).outgoing).toBe(0);
    expect(iommuDeviceOf(r.k1, 0, DSA0.rid)?.preservedRecord).toBe(0);
  });

  it('a device bound but not attached → ENOENT', () => {
    const r = rig();
    const x = passthrough(r, 'dsa0');
    const cdev1 = r.p.open(vfioBindDevice(r.k1, 'dsa1').cdevPath);
    vfioBindIommufd(r.p, cdev1, x.ifd);
    const s = createSession(r.p, r.dev, 'vm0');
    preserveFd(r.p, s, x.ram, 1);
    preserveFd(r.p, s, x.ifd, 2);
    expect(errnoOf(() => preserveFd(r.p, s, cdev1, 4))).toBe('ENOENT');
    expect(pciDevice(r.k1, DSA1.bdf).outgoing).toBe(0);
  });

  it('a device attached to a HWPT that is not marked → EINVAL', () => {
    const r = rig();
    const x = passthrough(r, 'dsa0');
    const cdev1 = r.p.open(vfioBindDevice(r.k1, 'dsa1').cdevPath);
    const devid1 = vfioBindIommufd(r.p, cdev1, x.ifd);
    vfioAttachIommufdPt(r.p, cdev1, hwptAlloc(r.p, x.ifd, devid1, x.ioas));
    const s = createSession(r.p, r.dev, 'vm0');
    preserveFd(r.p, s, x.ram, 1);
    preserveFd(r.p, s, x.ifd, 2);
    expect(errnoOf(() => preserveFd(r.p, s, cdev1, 4))).toBe('EINVAL');
    expect(pciDevice(r.k1, DSA1.bdf).outgoing).toBe(0);
    expect(iommuDeviceOf(r.k1, 0, DSA1.rid)?.preservedRecord).toBe(0);
  });

  it('a PCI core refusal after the IOMMU part (ENOSPC) fails the preserve and undoes the IOMMU device record', () => {
    const r = rig();
    const x = passthrough(r, 'dsa0');
    const s = createSession(r.p, r.dev, 'vm0');
    preserveFd(r.p, s, x.ram, 1);
    preserveFd(r.p, s, x.ifd, 2);
    // Fault injection: the PCI core has no slot left (v6's nr_devices == max_nr_devices).
    const core = pciCoreOf(r.k1);
    const seen: number[] = [];
    core.preserve = () => {
      seen.push(iommuDeviceOf(r.k1, 0, DSA0.rid)?.preservedRecord ?? -1);
      throw new ErrnoError('ENOSPC', 'pci_liveupdate_preserve', 'no slot left');
    };
    expect(errnoOf(() => preserveFd(r.p, s, x.cdev, 3))).toBe('ENOSPC');
    expect(seen).toHaveLength(1);
    expect(seen[0]).toBeGreaterThan(0); // the IOMMU part ran first
    expect(iommuDeviceOf(r.k1, 0, DSA0.rid)?.preservedRecord).toBe(0);
    expect(pciDevice(r.k1, DSA0.bdf).outgoing).toBe(0);
  });

  it('a preserved device: iommu and PCI records both taken; closing the session gives both back', () => {
    const r = rig();
    const x = passthrough(r, 'dsa0');
    const s = createSession(r.p, r.dev, 'vm0');
    preserveFd(r.p, s, x.ram, 1);
    preserveFd(r.p, s, x.ifd, 2);
    preserveFd(r.p, s, x.cdev, 3);
    expect(iommuDeviceOf(r.k1, 0, DSA0.rid)?.preservedRecord).toBeGreaterThan(0);
    expect(pciDevice(r.k1, DSA0.bdf).outgoing).toBe(1);
    // A preserved device cannot be detached.
    expect(errnoOf(() => vfioDetachIommufdPt(r.p, x.cdev))).toBe('EBUSY');
    r.p.close(s);
    expect(iommuDeviceOf(r.k1, 0, DSA0.rid)?.preservedRecord).toBe(0);
    expect(pciDevice(r.k1, DSA0.bdf).outgoing).toBe(0);
  });

  it('in the next kernel the preserved function is re-attached at enumeration with its preserved DID, before vfio-pci binds it', () => {
    const r = rig();
    const x = passthrough(r, 'dsa0');
    const s = createSession(r.p, r.dev, 'vm0');
    preserveFd(r.p, s, x.ram, 1);
    preserveFd(r.p, s, x.ifd, 2);
    preserveFd(r.p, s, x.cdev, 3);
    const did = r.unit.contextDomainId(DSA0.rid);
    r.k1.kexecJump(r.next);
    const { k2 } = bootNext(r);
    expect(pciDevice(k2, DSA0.bdf).driver).toBeNull();
    expect(iommuDeviceOf(k2, 0, DSA0.rid)?.restored?.did).toBe(did);
    expect(r.unit.contextDomainId(DSA0.rid)).toBe(did);
    expect(iommuDeviceOf(k2, 0, DSA1.rid)?.restored).toBeNull();
  });
});

describe('VT-d in front of the DSA engine', () => {
  it('an IOVA outside the IOAS faults: nothing written, the fault is in the unit log with the IOVA and source', () => {
    const r = rig();
    const x = passthrough(r, 'dsa0', { pages: 1, mark: false });
    // Ring: one good page, then one IOVA the IOAS does not map.
    startSeqWrite(r, 'dsa0', x, 2, 1, false);
    const resident = r.machine.memory.residentBytes;
    r.machine.clock.advance(10_240_000); // 1024 writes
    const log = r.host.engine('dsa0').log;
    expect(log.count).toBe(512);
    expect(r.unit.faults[0]).toEqual(expect.objectContaining({ iova: GUEST_IOVA + PAGE_SIZE, sourceId: DSA0.rid, write: true }));
    expect(r.host.dma.faults[0]).toEqual(expect.objectContaining({ iova: GUEST_IOVA + PAGE_SIZE, requesterId: DSA0.rid, write: true }));
    expect(r.machine.memory.residentBytes).toBe(resident);
  });

  it('the machine handle carries the VT-d units: a copy in another mapping translates the same way', () => {
    const r = rig();
    passthrough(r, 'dsa0', { pages: 1 });
    const handle = structuredClone(r.machine.share());
    expect(handle.dmar).toEqual([{ segment: 0, regBase: 0xfed9_0000, buses: [0, 255], rootTable: r.unit.rootTableAddress, enabled: true }]);
    const copy = attachMachine(handle);
    const phys = r.unit.translate(DSA0.rid, GUEST_IOVA, true);
    expect(dmarOf(copy).translate(0, DSA0.rid, GUEST_IOVA, true)).toEqual(phys);
  });
});
