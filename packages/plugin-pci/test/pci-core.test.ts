import { describe, expect, it } from 'vitest';
import { PAGE_SIZE, pciRegs as R, type PciBridge } from '@liveupdate/hw';
import { Kernel, KernelPanic, preserveFd, retrieveFd, retrieveSession, openLiveupdate, finishSession } from '@liveupdate/sdk';
import memfd from '@liveupdate/plugin-memfd';
import pci, { pciCoreOf, pciDevice, pciEnableSriov, pciRemove, pciBindDriver, vfioBindDevice, vfioKeepRunning, pciAbi, type PciAbi } from '../src/index.js';
import { CMDLINE, createSession, errnoOf, openEngine, startRig } from './support.js';

const next = (abi: PciAbi = 'v7') => ({ cmdline: CMDLINE, plugins: [memfd(), pci({ abi })], release: '7.2.0' });

/** Preserve the named engines through VFIO in one session 'vm0' (tokens 1, 2, ...). */
function preserveEngines(r: ReturnType<typeof startRig>, names: readonly string[]): number[] {
  const s = createSession(r.p, r.dev, 'vm0');
  return names.map((n, i) => {
    const fd = openEngine(r.k1, r.p, n);
    preserveFd(r.p, s, fd, i + 1);
    return fd;
  });
}

const refcounts = (k: Kernel, names: readonly string[], dir: 'outgoing' | 'incoming') => names.map((n) => pciDevice(k, n)[dir]);

describe('PCI core: outgoing rules', () => {
  it('refuses a VF with EINVAL before anything else, even after the shutdown freeze', () => {
    const r = startRig({}, { segments: [{ domain: 0, devices: [{ kind: 'root-port', name: 'rp0', slot: 1, children: [{ kind: 'endpoint', name: 'pf', slot: 0, sriov: { totalVfs: 2, vfDevice: 0x1234 } }] }] }] });
    const [vf] = pciEnableSriov(r.k1, 'pf', 2);
    const core = pciCoreOf(r.k1);
    expect(errnoOf(() => core.preserve(vf as NonNullable<typeof vf>))).toBe('EINVAL');
    core.frozen = true;
    expect(errnoOf(() => core.preserve(vf as NonNullable<typeof vf>))).toBe('EINVAL');
    expect(core.writer).toBeNull();
  });

  it('preserves every bridge up to the root; a bridge already preserved gets refcount + 1', () => {
    const r = startRig();
    preserveEngines(r, ['dsa0', 'dsa1', 'dsa2']);
    expect(refcounts(r.k1, ['dsa0', 'sw0-dp0', 'sw0', 'rp0', 'dsa1', 'sw0-dp1', 'rp1', 'dsa2', 'dsa3'], 'outgoing')).toEqual([1, 1, 2, 2, 1, 1, 1, 1, 0]);
    expect(pciCoreOf(r.k1).writer?.size).toBe(8);
  });

  it('answers EBUSY for an endpoint that is already preserved', () => {
    const r = startRig();
    preserveEngines(r, ['dsa0']);
    expect(errnoOf(() => pciCoreOf(r.k1).preserve(pciDevice(r.k1, 'dsa0')))).toBe('EBUSY');
  });

  it('unpreserve decrements to the root and zeroes a slot that reaches 0 (v6 bytes)', () => {
    const r = startRig({ abi: 'v6' });
    preserveEngines(r, ['dsa2', 'dsa3']);
    const core = pciCoreOf(r.k1);
    const phys = core.writer?.phys ?? 0;
    core.unpreserve(pciDevice(r.k1, 'dsa2'));
    expect(refcounts(r.k1, ['dsa2', 'rp1', 'dsa3'], 'outgoing')).toEqual([0, 1, 1]);
    // Slot 0 held dsa2 (05:00.0): zeroed; rp1 (00:02.0, bdf 0x0010) went from 2 to 1; dsa3 (05:01.0, bdf 0x0508) untouched.
    expect([...r.machine.memory.read(phys, 8 + 3 * 8)]).toEqual([
      9, 0, 0, 0, 2, 0, 0, 0,
      0, 0, 0, 0, 0, 0, 0, 0,
      0, 0, 0, 0, 0x10, 0x00, 1, 0,
      0, 0, 0, 0, 0x08, 0x05, 1, 0,
    ]);
  });

  it('v6: ENOSPC once nr_devices reaches max_nr_devices (the functions present at the first preserve), undoing the walked part', () => {
    const r = startRig({ abi: 'v6' });
    const core = pciCoreOf(r.k1);
    preserveEngines(r, ['dsa3', 'dsa2', 'dsa0']);
    expect(core.writer?.size).toBe(7);
    const seg = r.host.topology.segment(0);
    r.host.topology.add(seg, r.host.fn('sw0-dp1') as PciBridge, { kind: 'endpoint', name: 'x', slot: 1 });
    r.host.topology.add(seg, r.host.fn('rp1') as PciBridge, { kind: 'endpoint', name: 'z', slot: 2 });
    expect(core.rescan().map((d) => d.name)).toEqual(['0000:04:01.0', '0000:05:02.0']);
    core.preserve(pciDevice(r.k1, 'z'));
    expect(core.writer?.size).toBe(8);
    // x fits in the 9th slot, its bridge sw0-dp1 does not: x is taken back out.
    expect(errnoOf(() => core.preserve(pciDevice(r.k1, 'x')))).toBe('ENOSPC');
    expect(core.writer?.size).toBe(8);
    expect(refcounts(r.k1, ['x', 'sw0-dp1', 'sw0', 'rp0'], 'outgoing')).toEqual([0, 0, 1, 1]);
  });

  it('preserve and unpreserve are EINVAL once kexec shutdown froze preservation', () => {
    const r = startRig();
    preserveEngines(r, ['dsa0']);
    const seen: string[] = [];
    r.k1.shutdownHooks.deviceShutdown.tap('test', (k) => {
      const core = pciCoreOf(k);
      seen.push(String(errnoOf(() => core.preserve(pciDevice(k, 'dsa2')))), String(errnoOf(() => core.unpreserve(pciDevice(k, 'dsa0')))));
    });
    r.k1.kexec(next());
    expect(seen).toEqual(['EINVAL', 'EINVAL']);
  });

  it('clears Bus Master Enable at shutdown on everything but the preserved devices and the bridges above them', () => {
    const r = startRig();
    preserveEngines(r, ['dsa0']);
    for (const n of ['dsa1', 'dsa2']) openEngine(r.k1, r.p, n);
    r.k1.kexecJump(next());
    const bme = ['rp0', 'sw0', 'sw0-dp0', 'dsa0', 'sw0-dp1', 'dsa1', 'rp1', 'dsa2'].map((n) => r.host.fn(n).busMaster);
    // dsa0 was reset at freeze (phase 1 by default): its own BME is off; its bridges keep theirs.
    expect(bme).toEqual([true, true, true, false, false, false, false, false]);
  });

  it('warns when a preserved device is destroyed', () => {
    const r = startRig();
    preserveEngines(r, ['dsa0']);
    pciRemove(r.k1, 'dsa0');
    expect(r.k1.dmesg.entries.some((l) => l.level === 'warn' && /destroying a device that is still preserved/.test(l.text))).toBe(true);
  });
});

describe('PCI core: incoming rules', () => {
  it('a device with refcount > 0 is incoming and holds a reference until pci_liveupdate_finish, which walks to the root', () => {
    const r = startRig({ vfioWrites: ['1.0.0', '2.0.0'] });
    preserveEngines(r, ['dsa0', 'dsa1']);
    const k2 = r.k1.kexec(next());
    expect(refcounts(k2, ['dsa0', 'dsa1', 'sw0-dp0', 'sw0-dp1', 'sw0', 'rp0', 'rp1', 'dsa2'], 'incoming')).toEqual([1, 1, 1, 1, 2, 2, 0, 0]);
    const core = pciCoreOf(k2);
    expect(core.outstandingIncoming).toBe(6);
    core.finish(pciDevice(k2, 'dsa0'));
    expect(refcounts(k2, ['dsa0', 'sw0-dp0', 'sw0', 'rp0'], 'incoming')).toEqual([0, 0, 1, 1]);
    expect(core.incomingReleased).toBe(false);
    core.finish(pciDevice(k2, 'dsa1'));
    expect(core.outstandingIncoming).toBe(0);
    expect(core.incomingReleased).toBe(true);
  });

  it('a device re-enumerated after finish reads refcount 0 and is not incoming', () => {
    const r = startRig();
    preserveEngines(r, ['dsa2']);
    const k2 = r.k1.kexec(next());
    const core = pciCoreOf(k2);
    core.finish(pciDevice(k2, 'dsa2'));
    pciRemove(k2, 'dsa2');
    const [again] = core.rescan();
    expect(again?.name).toBe('0000:05:00.0');
    expect(again?.incoming).toBe(0);
  });

  it('without a PCI FLB, or with one of another ABI, says so once and nothing is incoming', () => {
    const r = startRig();
    const k2 = r.k1.kexec(next());
    expect(k2.dmesg.entries.filter((l) => /PCI FLB/.test(l.text)).map((l) => l.text)).toEqual(['no incoming PCI FLB: no devices incoming']);
    const r6 = startRig({ abi: 'v6' });
    preserveEngines(r6, ['dsa0']);
    // A v6 patch-02 build that matches compatible strings only (as upstream does) claims every "pci-*" it can name.
    const k6 = r6.k1.kexec({ cmdline: CMDLINE, plugins: [memfd(), pci({ abi: 'v6-patch02', pciReads: '>=2.0.0 <5.0.0' })], release: '7.2.0' });
    expect(k6.dmesg.entries.filter((l) => /PCI FLB/.test(l.text)).map((l) => l.text)).toEqual(["PCI FLB 'pci-v3' is not an ABI this kernel reads: no devices incoming"]);
    expect(pciDevice(k6, 'dsa0').incoming).toBe(0);
  });

  it('v6: a duplicate entry fails the FLB retrieve with one warning and nothing incoming', () => {
    const r = startRig({ abi: 'v6' });
    preserveEngines(r, ['dsa2']);
    const phys = pciCoreOf(r.k1).writer?.phys ?? 0;
    r.k1.kexecJump(next('v6'));
    // Slot 2 becomes a second copy of slot 0 (05:00.0), nr_devices 3.
    r.machine.memory.write(phys + 8 + 2 * 8, r.machine.memory.read(phys + 8, 8));
    r.machine.memory.writeU32(phys + 4, 3);
    const k2 = Kernel.boot(r.machine, next('v6'));
    expect(k2.dmesg.entries.filter((l) => l.level === 'warn' && /PCI FLB/.test(l.text)).map((l) => l.text)).toEqual(['failed to retrieve the incoming PCI FLB: duplicate device 0000:05:00.0; no devices incoming']);
    expect(pciDevice(k2, 'dsa2').incoming).toBe(0);
  });

  it('v7: a retrieve failure panics, since preserved devices may still be doing DMA', () => {
    const r = startRig();
    preserveEngines(r, ['dsa2']);
    const phys = pciCoreOf(r.k1).writer?.phys ?? 0;
    r.k1.kexecJump(next());
    r.machine.memory.writeU32(phys, 7);
    expect(() => Kernel.boot(r.machine, next())).toThrow(KernelPanic);
  });

  it('inherits bus numbers when any device is incoming and clears a misconfigured bridge, enumerating nothing below it', () => {
    const r = startRig();
    preserveEngines(r, ['dsa0']);
    r.k1.kexecJump(next());
    const rp1 = r.host.fn('rp1') as PciBridge;
    rp1.config.write(R.PCI_SECONDARY_BUS, 1, 0x30);
    rp1.config.write(R.PCI_SUBORDINATE_BUS, 1, 0x20);
    const k2 = Kernel.boot(r.machine, next());
    expect([rp1.secondary, rp1.subordinate]).toEqual([0, 0]);
    expect(errnoOf(() => pciDevice(k2, 'dsa2'))).toBe('ENODEV');
    expect((r.host.fn('sw0-dp0') as PciBridge).secondary).toBe(3);
    expect(k2.dmesg.entries.some((l) => /0000:00:02.0: bridge bus numbers \[48-32\] are misconfigured/.test(l.text))).toBe(true);
  });

  it('inherits ARI Forwarding Enable and ACS when devices are incoming; a kernel with nothing incoming reprograms them', () => {
    const setOdd = () => {
      const rp0 = r.host.fn('rp0');
      rp0.config.write(R.EXT_ACS_AT + R.PCI_ACS_CTRL, 2, R.PCI_ACS_SV);
      rp0.config.write(rp0.config.capExp + R.PCI_EXP_DEVCTL2, 2, 0);
      return rp0;
    };
    const r = startRig();
    preserveEngines(r, ['dsa0']);
    const rp0 = setOdd();
    r.k1.kexec(next());
    expect([rp0.acsCtrl, rp0.ariForwarding]).toEqual([R.PCI_ACS_SV, false]);
    const r2 = startRig();
    const rp0b = r2.host.fn('rp0');
    rp0b.config.write(R.EXT_ACS_AT + R.PCI_ACS_CTRL, 2, R.PCI_ACS_SV);
    r2.k1.kexec(next());
    expect([rp0b.acsCtrl, rp0b.ariForwarding]).toEqual([R.PCI_ACS_SV | R.PCI_ACS_RR | R.PCI_ACS_CR | R.PCI_ACS_UF, true]);
  });

  it('another driver may bind a preserved device: it resets it, DMA stops, and RETRIEVE_FD finds no vfio device (ENODEV, sticky)', () => {
    const r = startRig();
    const s = createSession(r.p, r.dev, 'vm0');
    const fd = openEngine(r.k1, r.p, 'dsa2');
    const ring = [{ iova: 0x800000, length: PAGE_SIZE }];
    r.host.engine('dsa2').submit({ opcode: 0x80, ring, startSeq: 0, count: Infinity });
    // DMA keeps running through the update, so the cost of the foreign bind is visible.
    vfioKeepRunning(r.p, fd);
    preserveFd(r.p, s, fd, 1);
    const k2 = r.k1.kexec(next());
    const e = r.host.engine('dsa2');
    const running = e.log.count;
    r.machine.clock.advance(100_000);
    expect(e.log.count).toBe(running + 10);
    pciBindDriver(k2, '0000:05:00.0', 'idxd');
    expect(r.host.fn('dsa2').flrCount).toBe(1);
    expect(e.dropped).toBe(1);
    const stopped = e.log.count;
    r.machine.clock.advance(100_000);
    expect(e.log.count).toBe(stopped);
    expect(k2.dmesg.entries.some((l) => /idxd bound a device preserved by a live update/.test(l.text))).toBe(true);
    const p2 = k2.spawn('vmm');
    const s2 = retrieveSession(p2, openLiveupdate(p2), 'vm0');
    expect(errnoOf(() => retrieveFd(p2, s2, 1))).toBe('ENODEV');
    expect(errnoOf(() => vfioBindDevice(k2, '0000:05:00.0'))).toBe('EBUSY');
    expect(errnoOf(() => retrieveFd(p2, s2, 1))).toBe('ENODEV');
    expect(errnoOf(() => finishSession(p2, s2))).toBe('EBUSY');
  });
});

describe('PCI format family', () => {
  it('declares pci 4.0.0 under the v7 string "pci-v2", 3.0.0 under "pci-v3" and the v6 patch-02 2.0.0 under "pci-v2" too', () => {
    expect(pci().formats?.find((f) => f.family === 'pci')).toMatchObject({ writes: ['4.0.0'], reads: '>=3.0.0 <5.0.0', aliases: { 3: 'pci-v3', 4: 'pci-v2' } });
    expect(pci({ abi: 'v6' }).formats?.find((f) => f.family === 'pci')).toMatchObject({ writes: ['3.0.0'], aliases: { 3: 'pci-v3' } });
    expect(pci({ abi: 'v6-patch02' }).formats?.find((f) => f.family === 'pci')).toMatchObject({ writes: ['2.0.0'], aliases: { 2: 'pci-v2' } });
    expect(pciAbi.PCI_V7_COMPATIBLE).toBe(pciAbi.PCI_V6_PATCH02_COMPATIBLE);
  });
});
