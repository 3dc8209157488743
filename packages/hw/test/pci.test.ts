import { describe, expect, it } from 'vitest';
import {
  attachPci, bareMetalRig, createMachine, DMA_FAULT_NOT_PRESENT, DSA_COMP_SUCCESS, DSA_OPCODE_MEMMOVE, DSA_OPCODE_SEQWRITE,
  formatBdf, KEXEC_JUMP_NS, parseBdf, PciBridge, PfnRanges, pciRegs as R, type PciTopologySpec,
} from '../src/index.js';

/** Two root ports; a switch with two downstream ports under the first; four DSA engines. */
const rig: PciTopologySpec = {
  segments: [{
    domain: 0,
    devices: [
      { kind: 'root-port', name: 'rp0', slot: 1, children: [
        { kind: 'switch', name: 'sw0', slot: 0, ports: [
          { slot: 0, name: 'sw0-dp0', children: [{ kind: 'endpoint', name: 'dsa0', slot: 0, model: 'dsa' }] },
          { slot: 1, name: 'sw0-dp1', children: [{ kind: 'endpoint', name: 'dsa1', slot: 0, model: 'dsa' }] },
        ] },
      ] },
      { kind: 'root-port', name: 'rp1', slot: 2, children: [
        { kind: 'endpoint', name: 'dsa2', slot: 0, model: 'dsa' },
        { kind: 'endpoint', name: 'dsa3', slot: 1, model: 'dsa' },
      ] },
    ],
  }],
};

function program(b: PciBridge, primary: number, secondary: number, subordinate: number): void {
  b.config.write(R.PCI_PRIMARY_BUS, 1, primary);
  b.config.write(R.PCI_SECONDARY_BUS, 1, secondary);
  b.config.write(R.PCI_SUBORDINATE_BUS, 1, subordinate);
  b.config.write(R.PCI_COMMAND, 2, R.PCI_COMMAND_MEMORY | R.PCI_COMMAND_MASTER);
}

function numbered() {
  const m = createMachine({ memory: '64MiB' });
  const host = attachPci(m, rig);
  const t = host.topology;
  const br = (n: string) => t.byName(n) as PciBridge;
  program(br('rp0'), 0, 1, 4);
  program(br('sw0'), 1, 2, 4);
  program(br('sw0-dp0'), 2, 3, 3);
  program(br('sw0-dp1'), 2, 4, 4);
  program(br('rp1'), 0, 5, 5);
  return { m, host, t, br };
}

describe('PCI topology', () => {
  it('routes configuration requests by the bus numbers programmed into bridges', () => {
    const { t } = numbered();
    expect(t.resolve(0, 3, 0)?.name).toBe('dsa0');
    expect(t.resolve(0, 4, 0)?.name).toBe('dsa1');
    expect(t.resolve(0, 5, R.devfn(0, 0))?.name).toBe('dsa2');
    expect(t.resolve(0, 5, R.devfn(1, 0))?.name).toBe('dsa3');
    expect(t.configRead(0, 3, 0, R.PCI_VENDOR_ID, 2)).toBe(0x8086);
    expect(t.configRead(0, 3, 0, R.PCI_DEVICE_ID, 2)).toBe(0x0b25);
    expect(t.configRead(0, 9, 0, R.PCI_VENDOR_ID, 2)).toBe(0xffff);
    expect(formatBdf(0, t.byName('dsa1')?.requesterId ?? -1)).toBe('0000:04:00.0');
  });

  it('hides everything below a bridge whose bus numbers are cleared', () => {
    const { t, br } = numbered();
    program(br('sw0'), 0, 0, 0);
    expect(t.resolve(0, 3, 0)).toBeNull();
    expect(t.byName('dsa0')?.reachable).toBe(false);
    expect(t.byName('dsa2')?.reachable).toBe(true);
  });

  it('keeps read-only registers read-only and reports BAR sizes through the write mask', () => {
    const { t } = numbered();
    const f = t.byName('dsa0');
    f?.config.write(R.PCI_VENDOR_ID, 2, 0x1234);
    expect(f?.config.read16(R.PCI_VENDOR_ID)).toBe(0x8086);
    f?.config.write(R.PCI_BASE_ADDRESS_0, 4, 0xffffffff);
    expect(f?.config.read32(R.PCI_BASE_ADDRESS_0)).toBe(0xffff0004);
  });

  it('has the capabilities live update inherits: ACS and ARI Forwarding on ports, MSI-X, PM and FLR on endpoints', () => {
    const { t } = numbered();
    const rp = t.byName('rp0');
    expect(rp?.config.findExtCap(R.PCI_EXT_CAP_ID_ACS)).toBe(R.EXT_ACS_AT);
    rp?.config.write((rp.config.capExp) + R.PCI_EXP_DEVCTL2, 2, R.PCI_EXP_DEVCTL2_ARI);
    expect(rp?.ariForwarding).toBe(true);
    rp?.config.write(R.EXT_ACS_AT + R.PCI_ACS_CTRL, 2, R.PCI_ACS_SV | R.PCI_ACS_RR);
    expect(rp?.acsCtrl).toBe(R.PCI_ACS_SV | R.PCI_ACS_RR);
    const ep = t.byName('dsa0');
    expect(ep?.config.findCap(R.PCI_CAP_ID_MSIX)).toBe(R.CAP_MSIX_AT);
    expect(ep?.config.findCap(R.PCI_CAP_ID_PM)).toBe(R.CAP_PM_AT);
    ep?.config.write(R.CAP_MSIX_AT + R.PCI_MSIX_FLAGS, 2, R.PCI_MSIX_FLAGS_ENABLE);
    expect(ep?.msixEnabled).toBe(true);
  });

  it('FLR returns config space to power-on and drops the engine\'s queued work', () => {
    const { host, t } = numbered();
    const f = t.byName('dsa0');
    f?.config.write(R.PCI_COMMAND, 2, R.PCI_COMMAND_MEMORY | R.PCI_COMMAND_MASTER);
    host.engine('dsa0').submit({ opcode: DSA_OPCODE_MEMMOVE, src: 0x100000, dst: 0x200000, size: 4096 });
    f?.config.write((f.config.capExp) + R.PCI_EXP_DEVCTL, 2, R.PCI_EXP_DEVCTL_BCR_FLR);
    expect(f?.command).toBe(0);
    expect(f?.flrCount).toBe(1);
    expect(host.engine('dsa0').pending).toBe(0);
    expect(host.engine('dsa0').dropped).toBe(1);
  });

  it('enables SR-IOV VFs at PF RID + offset + i * stride, answering config with Vendor ID 0xffff', () => {
    const m = createMachine({ memory: '16MiB' });
    const host = attachPci(m, { segments: [{ domain: 1, devices: [{ kind: 'endpoint', name: 'pf', slot: 3, sriov: { totalVfs: 4, vfDevice: 0x1889 } }] }] });
    const pf = host.fn('pf');
    pf.config.write(R.EXT_SRIOV_AT + R.PCI_SRIOV_NUM_VF, 2, 2);
    pf.config.write(R.EXT_SRIOV_AT + R.PCI_SRIOV_CTRL, 2, R.PCI_SRIOV_CTRL_VFE);
    expect(pf.vfs.map((v) => formatBdf(v.domain, v.requesterId))).toEqual(['0001:00:03.1', '0001:00:03.2']);
    expect(host.topology.configRead(1, 0, R.devfn(3, 1), R.PCI_VENDOR_ID, 2)).toBe(0xffff);
    expect(pf.vfs[0]?.isVirtfn).toBe(true);
  });

  it('parses and formats BDFs', () => {
    expect(parseBdf('0000:02:1f.7')).toEqual({ domain: 0, bdf: 0x02ff });
    expect(parseBdf('02:00.0')).toEqual({ domain: 0, bdf: 0x0200 });
    expect(parseBdf('0000:02:20.0')).toBeNull();
  });

  it('describes the series\' bare-metal rig: 8 DSA engines and one NVMe, each behind a root port', () => {
    const m = createMachine({ memory: '16MiB' });
    const host = attachPci(m, bareMetalRig());
    expect(host.engines.size).toBe(8);
    expect([...host.topology.functions()].filter((f) => f.portType === 'root-port')).toHaveLength(9);
    expect(host.fn('nvme0').config.read32(R.PCI_CLASS_REVISION) >>> 8).toBe(0x010802);
  });
});

describe('DSA-like DMA engine', () => {
  it('writes one sequence number per tick while Bus Master Enable is set, and logs each write', () => {
    const { m, host, t } = numbered();
    const f = t.byName('dsa2');
    f?.config.write(R.PCI_COMMAND, 2, R.PCI_COMMAND_MEMORY | R.PCI_COMMAND_MASTER);
    const e = host.engine('dsa2');
    expect(e.submit({ opcode: DSA_OPCODE_SEQWRITE, ring: [{ iova: 0x300000, length: 64 }], startSeq: 100, count: Infinity })).toBe(true);
    m.clock.advance(100_000);
    expect(e.log.count).toBe(10);
    expect([...e.log.seq.subarray(0, 10)]).toEqual([100, 101, 102, 103, 104, 105, 106, 107, 108, 109]);
    expect(e.log.phys[9]).toBe(0x300000 + 8 * (9 % 8));
    expect(m.memory.readU64Number(0x300008)).toBe(109);
  });

  it('stalls while Bus Master Enable is clear and refuses portal writes while Memory Space is off', () => {
    const { m, host, t } = numbered();
    const f = t.byName('dsa3');
    const e = host.engine('dsa3');
    expect(e.submit({ opcode: DSA_OPCODE_SEQWRITE, ring: [{ iova: 0x300000, length: 8 }], startSeq: 0, count: 5 })).toBe(false);
    f?.config.write(R.PCI_COMMAND, 2, R.PCI_COMMAND_MEMORY);
    e.submit({ opcode: DSA_OPCODE_SEQWRITE, ring: [{ iova: 0x300000, length: 8 }], startSeq: 0, count: 5 });
    m.clock.advance(100_000);
    expect(e.log.count).toBe(0);
    expect(e.stalledSlots).toBe(10);
  });

  it('stalls while a bridge above it has Bus Master Enable clear: the bridge forwards no upstream requests', () => {
    const { m, host, t, br } = numbered();
    t.byName('dsa0')?.config.write(R.PCI_COMMAND, 2, R.PCI_COMMAND_MEMORY | R.PCI_COMMAND_MASTER);
    br('sw0').config.write(R.PCI_COMMAND, 2, R.PCI_COMMAND_MEMORY);
    const e = host.engine('dsa0');
    e.submit({ opcode: DSA_OPCODE_SEQWRITE, ring: [{ iova: 0x300000, length: 8 }], startSeq: 0, count: 5 });
    m.clock.advance(30_000);
    expect(e.log.count).toBe(0);
    br('sw0').config.write(R.PCI_COMMAND, 2, R.PCI_COMMAND_MEMORY | R.PCI_COMMAND_MASTER);
    m.clock.advance(30_000);
    expect(e.log.count).toBe(3);
  });

  it('copies a memmove 64 bytes per tick and writes a success completion record at the end', () => {
    const { m, host, t } = numbered();
    t.byName('dsa0')?.config.write(R.PCI_COMMAND, 2, R.PCI_COMMAND_MEMORY | R.PCI_COMMAND_MASTER);
    const src = new Uint8Array(4096).map((_, i) => (i * 7) & 0xff);
    m.memory.write(0x100000, src);
    host.engine('dsa0').submit({ opcode: DSA_OPCODE_MEMMOVE, src: 0x100000, dst: 0x200000, size: 4096, completion: 0x280000 });
    m.clock.advance(63 * 10_000);
    expect(m.memory.readU8(0x280000)).toBe(0);
    m.clock.advance(10_000);
    expect(m.memory.read(0x200000, 4096)).toEqual(src);
    expect(m.memory.readU8(0x280000)).toBe(DSA_COMP_SUCCESS);
  });

  it('keeps writing through the kexec jump, after the scrub', () => {
    const { m, host, t } = numbered();
    t.byName('dsa1')?.config.write(R.PCI_COMMAND, 2, R.PCI_COMMAND_MEMORY | R.PCI_COMMAND_MASTER);
    const e = host.engine('dsa1');
    e.submit({ opcode: DSA_OPCODE_SEQWRITE, ring: [{ iova: 0x300000, length: 4096 }], startSeq: 0, count: Infinity });
    m.clock.advance(50_000);
    m.kexec({ survivors: PfnRanges.of([0x300, 0x301]), params: { cmdline: '' } });
    expect(e.log.count).toBe(5 + KEXEC_JUMP_NS / 10_000);
    expect(m.memory.pageKind(0x300)).toBe('data');
  });

  it('sends every access through the machine\'s remapper: a fault drops the write and is recorded', () => {
    const { m, host, t } = numbered();
    const f = t.byName('dsa2');
    f?.config.write(R.PCI_COMMAND, 2, R.PCI_COMMAND_MEMORY | R.PCI_COMMAND_MASTER);
    const seen: Array<[number, number]> = [];
    host.dma.remapper = {
      name: 'test',
      translate: (_s, rid, iova) => { seen.push([rid, iova]); return iova < 0x1000000 ? iova + 0x1000000 : DMA_FAULT_NOT_PRESENT; },
    };
    host.engine('dsa2').submit({ opcode: DSA_OPCODE_SEQWRITE, ring: [{ iova: 0x8, length: 8 }, { iova: 0x2000000, length: 8 }], startSeq: 1, count: 2 });
    m.clock.advance(20_000);
    expect(seen).toEqual([[0x0500, 0x8], [0x0500, 0x2000000]]);
    expect(m.memory.readU64Number(0x1000008)).toBe(1);
    expect(host.engine('dsa2').log.count).toBe(1);
    expect(host.dma.faults).toEqual([{ segment: 0, requesterId: 0x0500, iova: 0x2000000, write: true, code: DMA_FAULT_NOT_PRESENT }]);
  });
});
