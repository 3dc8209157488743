import { describe, expect, it } from 'vitest';
import { DSA_OPCODE_SEQWRITE, PAGE_SIZE } from '@liveupdate/hw';
import { finishSession, Inode, KFile, openLiveupdate, preserveFd, retrieveFd, retrieveSession, type Kernel } from '@liveupdate/sdk';
import memfd from '@liveupdate/plugin-memfd';
import pci, { registerIommufdBinding, vfioBindDevice, vfioBindIommufd, vfioKeepRunning, vfioMmapPortal } from '../src/index.js';
import { CMDLINE, createSession, guestRam, memfdPfns, memfdPhys, openEngine, startRig } from './support.js';

const next = () => ({ cmdline: CMDLINE, plugins: [memfd(), pci()], release: '7.2.0' });

describe('continuous DMA through two live updates in a row', () => {
  it('a device retrieved in kernel B is preserved again and keeps its gap-free sequence into kernel C', () => {
    const { machine, host, k1, p, dev } = startRig();
    const ram = guestRam(p, 'guest-ram', 32);
    const s = createSession(p, dev, 'vm0');
    preserveFd(p, s, ram, 1);
    const fd = openEngine(k1, p, 'dsa0');
    vfioMmapPortal(p, fd, host.engine('dsa0')).submit({
      opcode: DSA_OPCODE_SEQWRITE, ring: Array.from({ length: 32 }, (_, i) => ({ iova: memfdPhys(p, ram, i * PAGE_SIZE), length: PAGE_SIZE })), startSeq: 0, count: Infinity,
    });
    vfioKeepRunning(p, fd);
    preserveFd(p, s, fd, 2);

    let k: Kernel = k1;
    let vmmRam = ram;
    let vmm = p;
    for (const hop of [1, 2]) {
      k = k.kexec(next());
      vmm = k.spawn('vmm');
      const ldev = openLiveupdate(vmm);
      vfioBindDevice(k, '0000:03:00.0');
      const si = retrieveSession(vmm, ldev, 'vm0');
      vmmRam = retrieveFd(vmm, si, 1);
      const dfd = retrieveFd(vmm, si, 2);
      vfioBindIommufd(vmm, dfd, -1);
      machine.clock.advance(200_000);
      finishSession(vmm, si);
      if (hop === 1) {
        // Kernel B preserves the same memfd and device again for the next update.
        const s2 = createSession(vmm, ldev, 'vm0');
        preserveFd(vmm, s2, vmmRam, 1);
        vfioKeepRunning(vmm, dfd);
        preserveFd(vmm, s2, dfd, 2);
      }
    }
    const { log } = host.engine('dsa0');
    const owned = new Set(memfdPfns(vmm, vmmRam, 32));
    let gaps = 0;
    let outside = 0;
    for (let i = 0; i < log.count; i++) {
      if (log.seq[i] !== i) gaps++;
      if (!owned.has(Math.floor((log.phys[i] as number) / PAGE_SIZE))) outside++;
    }
    expect({ writes: log.count > 10_000, gaps, outside, poison: machine.memory.poisonReads }).toEqual({ writes: true, gaps: 0, outside: 0, poison: 0 });
    expect(k.kexecCount).toBe(2);
  });
});

describe('VFIO_DEVICE_BIND_IOMMUFD through another plugin\'s iommufd', () => {
  it('an iommufd binding registered by the IOMMU side gets the device and returns out_devid', () => {
    const { k1, p } = startRig({}, undefined, 'kho=on liveupdate=on');
    const bound: Array<{ bdf: number; rid: number }> = [];
    const iommufdInode = new Inode('iommufd');
    const ops = { kind: 'anon_inode:[iommufd]' };
    k1.registerDevice('/dev/iommu', (_p, flags) => new KFile(ops, iommufdInode, 'iommufd', flags, k1.id));
    const unused = (): never => { throw new Error('not used by this test'); };
    registerIommufdBinding(k1, {
      isIommufd: (f) => f.ops === ops,
      bind: (_f, d) => { bound.push({ bdf: d.bdf, rid: d.requesterId }); return 7; },
      probe: () => undefined, attach: unused, detach: unused, unbind: () => undefined, preserve: unused, unpreserve: unused,
    });
    const fd = p.open(vfioBindDevice(k1, 'dsa2').cdevPath);
    const iommufd = p.open('/dev/iommu');
    expect(vfioBindIommufd(p, fd, iommufd)).toBe(7);
    expect(bound).toEqual([{ bdf: 0x0500, rid: 0x0500 }]);
  });
});
