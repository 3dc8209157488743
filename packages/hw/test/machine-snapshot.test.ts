import { describe, expect, it } from 'vitest';
import {
  attachHypervisor, attachPci, createMachine, dmarOf, DSA_OPCODE_SEQWRITE, hvStatus, HV_PARTITION_ID_SELF, PciBridge, pciHostOf, PfnRanges,
  pciRegs as R, type Machine, type PciHost, type PciTopologySpec,
} from '../src/index.js';

const rig: PciTopologySpec = {
  segments: [{ domain: 0, devices: [{ kind: 'root-port', name: 'rp0', slot: 1, children: [{ kind: 'endpoint', name: 'dsa0', slot: 0, model: 'dsa' }] }] }],
};

/** A machine with a numbered bridge and a DSA engine writing sequence numbers into a ring. */
function running(): { m: Machine } {
  const m = createMachine({ memory: '64MiB' });
  const host = attachPci(m, rig);
  const bridge = host.fn('rp0') as PciBridge;
  bridge.config.write(R.PCI_SECONDARY_BUS, 1, 1);
  bridge.config.write(R.PCI_SUBORDINATE_BUS, 1, 1);
  bridge.config.write(R.PCI_COMMAND, 2, R.PCI_COMMAND_MEMORY | R.PCI_COMMAND_MASTER);
  host.fn('dsa0').config.write(R.PCI_COMMAND, 2, R.PCI_COMMAND_MEMORY | R.PCI_COMMAND_MASTER);
  host.engine('dsa0').submit({ opcode: DSA_OPCODE_SEQWRITE, ring: [{ iova: 0x300000, length: 64 }], startSeq: 0, count: 50 });
  m.clock.advance(100_000);
  return { m };
}

/** What a kernel could change: clock, bus numbers, the engine's progress and log, the ring's bytes. */
function observe(m: Machine): string {
  const host = attachPciOf(m);
  const e = host.engine('dsa0');
  return JSON.stringify({
    now: m.clock.now, tickers: m.clock.attached.length, boots: m.bootCount, cmdline: m.bootParams.cmdline,
    secondary: (host.fn('rp0') as PciBridge).secondary, command: host.fn('dsa0').command, flrs: host.fn('dsa0').flrCount,
    pending: e.pending, completed: e.completed, log: [...e.log.seq.subarray(0, e.log.count)], ring: [...m.memory.read(0x300000, 64)],
  });
}
const attachPciOf = (m: Machine): PciHost => pciHostOf(m) as PciHost;

describe('Machine.snapshot / restore', () => {
  it('puts back the clock, bus numbers, command bits, a DMA engine\'s queue and log, and the memory it wrote', () => {
    const { m } = running();
    const before = observe(m);
    expect(JSON.parse(before)).toMatchObject({ now: 100_000, secondary: 1, pending: 1, completed: 0, log: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] });
    const snap = m.snapshot();
    // What a kernel B does: renumbers the bus, lets time pass (the engine finishes), resets the device.
    m.clock.advance(1_000_000);
    (attachPciOf(m).fn('rp0') as PciBridge).config.write(R.PCI_SECONDARY_BUS, 1, 7);
    attachPciOf(m).fn('dsa0').flr();
    expect(JSON.parse(observe(m))).toMatchObject({ now: 1_100_000, secondary: 7, pending: 0, completed: 1, flrs: 1, command: 0 });
    m.restore(snap);
    expect(observe(m)).toBe(before);
  });

  it('gives the same result when the same work runs again from a restored machine (twice)', () => {
    const { m } = running();
    const snap = m.snapshot();
    const work = (): string => { m.clock.advance(250_000); return observe(m); };
    const first = work();
    expect(JSON.parse(first)).toMatchObject({ now: 350_000, completed: 0, pending: 1 });
    expect(JSON.parse(first).log).toHaveLength(35);
    m.restore(snap);
    expect(work()).toBe(first);
    m.restore(snap);
    expect(work()).toBe(first);
  });

  it('puts back the boot parameters and boot count a kexec changed', () => {
    const m = createMachine({ memory: '64MiB' });
    m.powerOn('kho=on');
    const snap = m.snapshot();
    m.kexec({ survivors: new PfnRanges(), params: { cmdline: 'second' } });
    expect([m.bootCount, m.bootParams.cmdline]).toEqual([2, 'second']);
    m.restore(snap);
    expect([m.bootCount, m.bootParams.cmdline, m.clock.now]).toEqual([1, 'kho=on', 0]);
  });

  it('puts back VT-d registers and the units present', () => {
    const m = createMachine({ memory: '64MiB' });
    const u = dmarOf(m).addUnit({ segment: 0, regBase: 0xfed90000 });
    u.setRootTablePointer(0x10000);
    u.setTranslationEnabled(true);
    const snap = m.snapshot();
    u.setRootTablePointer(0x20000);
    u.setTranslationEnabled(false);
    dmarOf(m).addUnit({ segment: 1, regBase: 0xfed91000 });
    m.restore(snap);
    expect([u.rootTableAddress, u.translationEnabled, dmarOf(m).units.length, m.attachedDevices.length]).toEqual([0x10000, true, 1, 1]);
  });

  it('puts back the hypervisor\'s deposits and partitions', () => {
    const m = createMachine({ memory: '64MiB' });
    const hv = attachHypervisor(m, { l1vh: true });
    const pfns = Array.from({ length: 64 }, (_, i) => 0x1000 + i);
    expect(hv.depositMemory(HV_PARTITION_ID_SELF, pfns)).toBe(hvStatus.HV_STATUS_SUCCESS);
    const snap = m.snapshot();
    const { status, partitionId } = hv.createPartition();
    expect(status).toBe(hvStatus.HV_STATUS_SUCCESS);
    expect(hv.withdrawMemory(HV_PARTITION_ID_SELF, 100).pfns.length).toBe(62);
    expect([hv.depositedPages, hv.partitionIds]).toEqual([2, [partitionId]]);
    m.restore(snap);
    expect([hv.depositedPages, hv.partitionIds, hv.isDeposited(0x1000), hv.isDeposited(0x103f)]).toEqual([64, [], true, true]);
    // The same work again from the restored machine: the same partition id and pages.
    expect(hv.createPartition()).toEqual({ status: hvStatus.HV_STATUS_SUCCESS, partitionId });
  });
});
