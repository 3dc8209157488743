import { describe, expect, it } from 'vitest';
import { DSA_COMP_SUCCESS, DSA_OPCODE_MEMMOVE, DSA_OPCODE_SEQWRITE, PAGE_SIZE, formatBdf, pciRegs as R, type PciBridge } from '@liveupdate/hw';
import { finishSession, openLiveupdate, preserveFd, retrieveFd, retrieveSession } from '@liveupdate/sdk';
import memfd from '@liveupdate/plugin-memfd';
import pci, {
  pciDevices, vfioBindDevice, vfioBindIommufd, vfioConfigRead, vfioConfigWrite, vfioKeepRunning, vfioMmapPortal, vfioSetIrqs, vfioAbi,
} from '../src/index.js';
import { CMDLINE, createSession, errnoOf, guestRam, memfdPfns, memfdPhys, openEngine, startRig } from './support.js';

const RING_PAGES = 64;

describe('four DSA engines behind two root ports and a switch, two preserved with continuous DMA', () => {
  it('the preserved engines write a gap-free sequence into surviving guest RAM across the update; the others stop at shutdown', () => {
    const { machine, host, k1, p, dev } = startRig();
    const busesBefore = ['rp0', 'sw0', 'sw0-dp0', 'sw0-dp1', 'rp1'].map((n) => {
      const b = host.fn(n) as PciBridge;
      return [n, b.primary, b.secondary, b.subordinate];
    });
    expect(busesBefore).toEqual([['rp0', 0, 1, 4], ['sw0', 1, 2, 4], ['sw0-dp0', 2, 3, 3], ['sw0-dp1', 2, 4, 4], ['rp1', 0, 5, 5]]);

    const ram = guestRam(p, 'guest-ram', 2 * RING_PAGES);
    const scratch = guestRam(p, 'scratch', 2 * RING_PAGES);
    const s = createSession(p, dev, 'vm0');
    preserveFd(p, s, ram, 1);

    const fds = new Map<string, number>();
    const ring = (fd: number, first: number) => Array.from({ length: RING_PAGES }, (_, i) => ({ iova: memfdPhys(p, fd, (first + i) * PAGE_SIZE), length: PAGE_SIZE }));
    const rings = { dsa0: ring(ram, 0), dsa2: ring(ram, RING_PAGES), dsa1: ring(scratch, 0), dsa3: ring(scratch, RING_PAGES) };
    for (const [name, r] of Object.entries(rings)) {
      const fd = openEngine(k1, p, name);
      fds.set(name, fd);
      const portal = vfioMmapPortal(p, fd, host.engine(name));
      expect(portal.submit({ opcode: DSA_OPCODE_SEQWRITE, ring: r, startSeq: 1_000_000, count: Infinity })).toBe(true);
    }
    for (const [name, token] of [['dsa0', 10], ['dsa2', 11]] as const) {
      vfioKeepRunning(p, fds.get(name) as number, true);
      preserveFd(p, s, fds.get(name) as number, token);
    }
    machine.clock.advance(1_000_000);
    expect(host.engine('dsa0').log.count).toBeGreaterThanOrEqual(100);

    let shutdownAt = -1;
    k1.shutdownHooks.deviceShutdown.tap('test', () => { shutdownAt = machine.clock.now; });
    const k2 = k1.kexec({ cmdline: CMDLINE, plugins: [memfd(), pci()], release: '7.2.0' });

    // The path to the preserved engines kept its bus numbers (inherited, not re-assigned).
    const busesAfter = busesBefore.map(([n]) => {
      const b = host.fn(n as string) as PciBridge;
      return [n, b.primary, b.secondary, b.subordinate];
    });
    expect(busesAfter).toEqual(busesBefore);
    expect(pciDevices(k2).map((d) => `${d.name} ${d.hw.name}`)).toContain('0000:03:00.0 dsa0');

    // The unpreserved engines lost bus mastering at device shutdown and wrote nothing after it.
    for (const name of ['dsa1', 'dsa3']) {
      const e = host.engine(name);
      expect(host.fn(name).busMaster).toBe(false);
      expect(e.log.firstAtOrAfter(shutdownAt)).toBe(e.log.count);
    }

    // The VMM in the new kernel: bind vfio-pci, retrieve, bind noiommu, finish.
    const p2 = k2.spawn('vmm');
    const dev2 = openLiveupdate(p2);
    vfioBindDevice(k2, '0000:03:00.0');
    vfioBindDevice(k2, '0000:05:00.0');
    const s2 = retrieveSession(p2, dev2, 'vm0');
    const ram2 = retrieveFd(p2, s2, 1);
    for (const token of [10, 11]) vfioBindIommufd(p2, retrieveFd(p2, s2, token), -1);
    machine.clock.advance(1_000_000);
    finishSession(p2, s2);

    // Gap-free, across the update, into pages of the retrieved memfd only, never poison.
    const owned = new Set(memfdPfns(p2, ram2, 2 * RING_PAGES));
    const kexecAt = shutdownAt;
    for (const name of ['dsa0', 'dsa2']) {
      const { log } = host.engine(name);
      expect(log.count).toBeGreaterThan(3000);
      expect(log.timeNs[log.count - 1]).toBeGreaterThan(kexecAt + 20_000_000);
      let gaps = 0;
      let outside = 0;
      for (let i = 0; i < log.count; i++) {
        if (log.seq[i] !== 1_000_000 + i) gaps++;
        const pfn = Math.floor((log.phys[i] as number) / PAGE_SIZE);
        if (!owned.has(pfn) || machine.memory.pageKind(pfn) === 'poison') outside++;
      }
      expect({ name, gaps, outside }).toEqual({ name, gaps: 0, outside: 0 });
      // The last write to each slot is what guest RAM holds now.
      const last = log.count - 1;
      expect(machine.memory.readU64Number(log.phys[last] as number)).toBe(log.seq[last]);
    }
    // Every slot of both rings holds the last sequence number the log says was written there:
    // nothing else (no new-kernel allocation, no scrub) touched guest RAM under the DMA.
    for (const name of ['dsa0', 'dsa2']) {
      const { log } = host.engine(name);
      const last = new Map<number, number>();
      for (let i = 0; i < log.count; i++) last.set(log.phys[i] as number, log.seq[i] as number);
      let wrong = 0;
      for (const [phys, seq] of last) if (machine.memory.readU64Number(phys) !== seq) wrong++;
      expect({ name, slots: last.size, wrong }).toEqual({ name, slots: RING_PAGES * 512, wrong: 0 });
    }
    expect(machine.memory.poisonReads).toBe(0);
  });
});

describe('phase 1 as posted: freeze resets the device', () => {
  it('a long memcpy started before the kexec is dropped at freeze without corrupting anything; a fresh one after retrieve and rebind succeeds', () => {
    const { machine, host, k1, p, dev } = startRig({ vfioWrites: ['1.0.0'] });
    const pages = 64;
    const ram = guestRam(p, 'guest-ram', 3 * pages, 0);
    const src = new Uint8Array(pages * PAGE_SIZE).map((_, i) => (i * 13 + 7) & 0xff);
    p.pwrite(ram, src, 0);
    const s = createSession(p, dev, 'vm0');
    preserveFd(p, s, ram, 1);
    const fd = openEngine(k1, p, 'dsa2');
    const portal = vfioMmapPortal(p, fd, host.engine('dsa2'));
    // The memfd's pages are not contiguous: copy page by page, one descriptor each.
    for (let i = 0; i < pages; i++) {
      portal.submit({ opcode: DSA_OPCODE_MEMMOVE, src: memfdPhys(p, ram, i * PAGE_SIZE), dst: memfdPhys(p, ram, (pages + i) * PAGE_SIZE), size: PAGE_SIZE });
    }
    preserveFd(p, s, fd, 7);
    machine.clock.advance(2_000_000);
    const e = host.engine('dsa2');
    const before = e.log.count;
    expect(before).toBe(200);

    const k2 = k1.kexec({ cmdline: CMDLINE, plugins: [memfd(), pci({ vfioWrites: ['1.0.0'] })], release: '7.2.0' });
    expect(host.fn('dsa2').command).toBe(R.PCI_COMMAND_INTX_DISABLE);
    expect(host.fn('dsa2').flrCount).toBe(1);
    expect(e.pending).toBe(0);
    expect(e.dropped).toBe(61);
    const freezeWrites = e.log.count;

    const p2 = k2.spawn('vmm');
    const dev2 = openLiveupdate(p2);
    vfioBindDevice(k2, 'dsa2');
    const s2 = retrieveSession(p2, dev2, 'vm0');
    const ram2 = retrieveFd(p2, s2, 1);
    const fd2 = retrieveFd(p2, s2, 7);
    machine.clock.advance(5_000_000);
    expect(e.log.count).toBe(freezeWrites);

    // Nothing corrupted: the source is intact, each copied chunk equals its source, the rest of dst is still zero.
    expect(Buffer.compare(p2.pread(ram2, src.length, 0), src)).toBe(0);
    const dst = p2.pread(ram2, pages * PAGE_SIZE, pages * PAGE_SIZE);
    const copied = freezeWrites * 64;
    expect(Buffer.compare(dst.subarray(0, copied), src.subarray(0, copied))).toBe(0);
    expect(dst.subarray(copied).every((b) => b === 0)).toBe(true);

    // Rebind and copy again.
    expect(errnoOf(() => vfioConfigRead(p2, fd2, R.PCI_COMMAND, 2))).toBe('EINVAL');
    vfioBindIommufd(p2, fd2, -1);
    expect(vfioConfigRead(p2, fd2, R.PCI_COMMAND, 2)).toBe(R.PCI_COMMAND_INTX_DISABLE);
    vfioConfigWrite(p2, fd2, R.PCI_COMMAND, 2, R.PCI_COMMAND_MEMORY | R.PCI_COMMAND_MASTER);
    const portal2 = vfioMmapPortal(p2, fd2, e);
    const comp = memfdPhys(p2, ram2, 3 * pages * PAGE_SIZE - 64);
    for (let i = 0; i < pages; i++) {
      portal2.submit({ opcode: DSA_OPCODE_MEMMOVE, src: memfdPhys(p2, ram2, i * PAGE_SIZE), dst: memfdPhys(p2, ram2, (pages + i) * PAGE_SIZE), size: PAGE_SIZE, ...(i === pages - 1 ? { completion: comp } : {}) });
    }
    machine.clock.advance(pages * 64 * 10_000);
    expect(machine.memory.readU8(comp)).toBe(DSA_COMP_SUCCESS);
    expect(Buffer.compare(p2.pread(ram2, pages * PAGE_SIZE, pages * PAGE_SIZE), src)).toBe(0);
    finishSession(p2, s2);
  });

  it('freeze with MSI-X enabled fails the kexec with EINVAL and the old kernel keeps running', () => {
    const { k1, p, dev } = startRig();
    const fd = openEngine(k1, p, 'dsa0');
    vfioSetIrqs(p, fd, vfioAbi.VFIO_PCI_MSIX_IRQ_INDEX, 1);
    const s = createSession(p, dev, 'vm0');
    preserveFd(p, s, fd, 1);
    expect(errnoOf(() => k1.kexec({ cmdline: CMDLINE, plugins: [memfd(), pci()], release: '7.2.0' }))).toBe('EINVAL');
    expect(k1.isDead).toBe(false);
  });

  it('the unpreserved path is renumbered by a kernel with nothing incoming, which is why inheritance matters', () => {
    const { host, k1 } = startRig();
    // A root port hot-added at slot 0 after kernel A enumerated: ahead of everything in a depth-first walk.
    const rp1 = host.fn('rp1') as PciBridge;
    expect(formatBdf(0, host.fn('dsa2').requesterId)).toBe('0000:05:00.0');
    host.topology.add(host.topology.segment(0), null, { kind: 'root-port', name: 'rp-hot', slot: 0, children: [{ kind: 'endpoint', name: 'nvme-hot', slot: 0, model: 'nvme' }] });
    k1.kexec({ cmdline: CMDLINE, plugins: [memfd(), pci()], release: '7.2.0' });
    // Nothing was preserved: the new kernel assigns bus numbers depth-first, and dsa2 moves.
    expect(rp1.secondary).toBe(6);
    expect(formatBdf(0, host.fn('dsa2').requesterId)).toBe('0000:06:00.0');
  });
});
