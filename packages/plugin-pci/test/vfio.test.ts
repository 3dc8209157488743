import { describe, expect, it } from 'vitest';
import { pciRegs as R } from '@liveupdate/hw';
import { finishSession, Kernel, openLiveupdate, preserveFd, retrieveFd, retrieveSession } from '@liveupdate/sdk';
import memfd from '@liveupdate/plugin-memfd';
import pci, {
  pciCoreOf, pciEnableSriov, vfioBindDevice, vfioBindIommufd, vfioConfigRead, vfioConfigWrite, vfioGroupGetDeviceFd, vfioMmapPortal,
  vfioKeepRunning, vfioReset, vfioSetIrqs, vfioAbi,
} from '../src/index.js';
import { CMDLINE, createSession, errnoOf, openEngine, startRig } from './support.js';

const next = () => ({ cmdline: CMDLINE, plugins: [memfd(), pci()], release: '7.2.0' });

describe('vfio-pci: can_preserve and preserve', () => {
  it('only a cdev-opened device fd can be preserved: group-obtained device fds, group fds and container fds are ENOENT', () => {
    const { k1, p, dev } = startRig();
    const vdev = vfioBindDevice(k1, 'dsa0');
    const s = createSession(p, dev, 'vm0');
    const group = p.open(vdev.groupPath);
    const viaGroup = vfioGroupGetDeviceFd(p, group, '0000:03:00.0');
    const container = p.open('/dev/vfio/vfio');
    expect([viaGroup, group, container].map((fd, i) => errnoOf(() => preserveFd(p, s, fd, 10 + i)))).toEqual(['ENOENT', 'ENOENT', 'ENOENT']);
    // An unbound cdev fd is not refused there.
    const cdev = p.open(vdev.cdevPath);
    preserveFd(p, s, cdev, 1);
    expect(pciCoreOf(k1).writer?.size).toBe(4);
  });

  it('a VF\'s cdev fd is ENOENT (can_preserve), before the PCI core would say EINVAL', () => {
    const { k1, p, dev } = startRig({}, { segments: [{ domain: 0, devices: [{ kind: 'root-port', name: 'rp0', slot: 1, children: [{ kind: 'endpoint', name: 'pf', slot: 0, sriov: { totalVfs: 2, vfDevice: 0x1234 } }] }] }] });
    const [vf] = pciEnableSriov(k1, 'pf', 1);
    const vdev = vfioBindDevice(k1, vf?.name ?? '');
    const fd = p.open(vdev.cdevPath);
    expect(errnoOf(() => preserveFd(p, createSession(p, dev, 'vm0'), fd, 1))).toBe('ENOENT');
  });

  it('refuses an Intel display device with EINVAL and leaves the PCI core untouched', () => {
    const { k1, p, dev } = startRig({}, { segments: [{ domain: 0, devices: [{ kind: 'endpoint', name: 'igpu', slot: 2, vendor: 0x8086, device: 0x46a6, classCode: 0x030000 }] }] });
    const fd = p.open(vfioBindDevice(k1, 'igpu').cdevPath);
    expect(errnoOf(() => preserveFd(p, createSession(p, dev, 'vm0'), fd, 1))).toBe('EINVAL');
    expect(pciCoreOf(k1).writer).toBeNull();
  });

  it('calls the PCI core first and returns its error: a second fd of a preserved device is EBUSY', () => {
    const { k1, p, dev } = startRig();
    const vdev = vfioBindDevice(k1, 'dsa2');
    const s = createSession(p, dev, 'vm0');
    preserveFd(p, s, p.open(vdev.cdevPath), 1);
    expect(errnoOf(() => preserveFd(p, s, p.open(vdev.cdevPath), 2))).toBe('EBUSY');
  });
});

describe('vfio-pci: freeze', () => {
  it('a frozen device answers EIO to ioctl, read, write and mmap; with no unfreeze a failed kexec leaves it so', () => {
    const { k1, p, dev, host } = startRig();
    const s = createSession(p, dev, 'vm0');
    const a = openEngine(k1, p, 'dsa0');
    const b = openEngine(k1, p, 'dsa2');
    preserveFd(p, s, a, 1);
    vfioSetIrqs(p, b, vfioAbi.VFIO_PCI_MSIX_IRQ_INDEX, 2);
    preserveFd(p, s, b, 2);
    expect(errnoOf(() => k1.kexec(next()))).toBe('EINVAL');
    expect(k1.isDead).toBe(false);
    expect([
      errnoOf(() => vfioReset(p, a)),
      errnoOf(() => vfioConfigRead(p, a, R.PCI_COMMAND, 2)),
      errnoOf(() => vfioConfigWrite(p, a, R.PCI_COMMAND, 2, 0)),
      errnoOf(() => vfioMmapPortal(p, a, host.engine('dsa0'))),
    ]).toEqual(['EIO', 'EIO', 'EIO', 'EIO']);
    // The device that failed the freeze was not touched.
    expect(vfioConfigRead(p, b, R.PCI_COMMAND, 2)).toBe(R.PCI_COMMAND_MEMORY | R.PCI_COMMAND_MASTER);
  });

  it('a device not in D0 fails the freeze with EINVAL', () => {
    const { k1, p, dev, host } = startRig();
    const fd = openEngine(k1, p, 'dsa0');
    vfioConfigWrite(p, fd, R.CAP_PM_AT + R.PCI_PM_CTRL, 2, 3);
    expect(host.fn('dsa0').powerState).toBe(3);
    preserveFd(p, createSession(p, dev, 'vm0'), fd, 1);
    expect(errnoOf(() => k1.kexec(next()))).toBe('EINVAL');
  });

  it('phase 1 zaps the BAR mapping, resets the function and leaves Command = INTx Disable only', () => {
    const { k1, p, dev, host } = startRig({ vfioWrites: ['1.0.0'] });
    const fd = openEngine(k1, p, 'dsa3');
    const portal = vfioMmapPortal(p, fd, host.engine('dsa3'));
    preserveFd(p, createSession(p, dev, 'vm0'), fd, 1);
    k1.kexecJump(next());
    expect(host.fn('dsa3').command).toBe(R.PCI_COMMAND_INTX_DISABLE);
    expect(host.fn('dsa3').flrCount).toBe(1);
    expect(errnoOf(() => portal.submit({ opcode: 0x80, ring: [{ iova: 0x1000, length: 8 }], startSeq: 0, count: 1 }))).toBe('EFAULT');
  });
});

describe('vfio-pci: after the kexec', () => {
  function updated() {
    const r = startRig();
    const s = createSession(r.p, r.dev, 'vm0');
    preserveFd(r.p, s, openEngine(r.k1, r.p, 'dsa2'), 1);
    const k2 = r.k1.kexec(next());
    const p2 = k2.spawn('vmm');
    return { ...r, k2, p2, dev2: openLiveupdate(p2) };
  }

  it('opening the cdev path or VFIO_GROUP_GET_DEVICE_FD is EBUSY while the device is preserved', () => {
    const { k2, p2 } = updated();
    const vdev = vfioBindDevice(k2, '0000:05:00.0');
    expect(errnoOf(() => p2.open(vdev.cdevPath))).toBe('EBUSY');
    const group = p2.open(vdev.groupPath);
    expect(errnoOf(() => vfioGroupGetDeviceFd(p2, group, '0000:05:00.0'))).toBe('EBUSY');
  });

  it('RETRIEVE_FD without a vfio-bound device is ENODEV and stays ENODEV', () => {
    const { k2, p2, dev2 } = updated();
    const s2 = retrieveSession(p2, dev2, 'vm0');
    expect(errnoOf(() => retrieveFd(p2, s2, 1))).toBe('ENODEV');
    vfioBindDevice(k2, '0000:05:00.0');
    expect(errnoOf(() => retrieveFd(p2, s2, 1))).toBe('ENODEV');
  });

  it('the retrieved fd is an anonymous-inode file, EINVAL until bound; FINISH is EBUSY until then, and after it the cdev opens again', () => {
    const { k2, p2, dev2 } = updated();
    const vdev = vfioBindDevice(k2, '0000:05:00.0');
    const s2 = retrieveSession(p2, dev2, 'vm0');
    expect(errnoOf(() => finishSession(p2, s2))).toBe('EBUSY');
    const fd = retrieveFd(p2, s2, 1);
    expect(p2.file(fd, 'test').ops.kind).toBe('anon_inode:[vfio-device]');
    expect(errnoOf(() => vfioReset(p2, fd))).toBe('EINVAL');
    expect(errnoOf(() => finishSession(p2, s2))).toBe('EBUSY');
    vfioBindIommufd(p2, fd, -1);
    finishSession(p2, s2);
    expect(pciCoreOf(k2).outstandingIncoming).toBe(0);
    p2.close(fd);
    const again = p2.open(vdev.cdevPath);
    expect(again).toBeGreaterThan(0);
  });

  it('binding without an iommufd needs vfio.enable_unsafe_noiommu_mode', () => {
    const r = startRig({}, undefined, 'kho=on liveupdate=on');
    const fd = r.p.open(vfioBindDevice(r.k1, 'dsa0').cdevPath);
    expect(errnoOf(() => vfioBindIommufd(r.p, fd, -1))).toBe('EINVAL');
    // Any other fd is not an iommufd while no IOMMU plugin provides the binding.
    expect(errnoOf(() => vfioBindIommufd(r.p, fd, r.dev))).toBe('EBADF');
  });
});


describe('vfio-pci: continuous DMA is negotiated', () => {
  it('a next kernel that reads only vfio-pci 1.x gets the posted phase 1: the device is reset even though the VMM asked to keep it running', () => {
    const r = startRig();
    const fd = openEngine(r.k1, r.p, 'dsa2');
    vfioKeepRunning(r.p, fd);
    preserveFd(r.p, createSession(r.p, r.dev, 'vm0'), fd, 1);
    r.k1.kexecJump({ cmdline: CMDLINE, plugins: [memfd(), pci({ vfioReads: '^1.0.0' })] });
    expect(r.k1.luo.sessions.outgoing[0]?.fileSet.files[0]?.compatible).toBe('vfio-pci-v1');
    expect(r.host.fn('dsa2').command).toBe(R.PCI_COMMAND_INTX_DISABLE);
  });

  it('the same pair with a 2.x reader keeps bus mastering on and records DMA_RUNNING', () => {
    const r = startRig();
    const fd = openEngine(r.k1, r.p, 'dsa2');
    vfioKeepRunning(r.p, fd);
    preserveFd(r.p, createSession(r.p, r.dev, 'vm0'), fd, 1);
    r.k1.kexecJump(next());
    expect(r.k1.luo.sessions.outgoing[0]?.fileSet.files[0]?.compatible).toBe('vfio-pci@2.1.0');
    expect(r.host.fn('dsa2').command).toBe(R.PCI_COMMAND_MEMORY | R.PCI_COMMAND_MASTER);
  });

  it('a record with unknown flags is refused at retrieve with EINVAL (sticky)', () => {
    const r = startRig();
    const fd = openEngine(r.k1, r.p, 'dsa2');
    preserveFd(r.p, createSession(r.p, r.dev, 'vm0'), fd, 1);
    r.k1.kexecJump(next());
    const data = Number(r.k1.luo.sessions.outgoing[0]?.fileSet.files[0]?.serializedData ?? 0);
    r.machine.memory.writeU32(data + 4, (r.machine.memory.readU32(data + 4) & 0xffff) | (0x8000 << 16));
    const k2 = Kernel.boot(r.machine, next());
    const p2 = k2.spawn('vmm');
    vfioBindDevice(k2, '0000:05:00.0');
    const s2 = retrieveSession(p2, openLiveupdate(p2), 'vm0');
    expect(errnoOf(() => retrieveFd(p2, s2, 1))).toBe('EINVAL');
    expect(errnoOf(() => retrieveFd(p2, s2, 1))).toBe('EINVAL');
  });
});
