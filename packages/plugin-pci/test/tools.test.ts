/**
 * The plugin surface driven by hand, as the runner will: the 'pci' section builds the machine,
 * 'vfio-device' objects are created in kernel A and restored in kernel B inside liveUpdate(),
 * the section checks the DMA, and the decoders read the handover from bytes.
 */
import { describe, expect, it } from 'vitest';
import { createMachine, PAGE_SIZE, type Machine } from '@liveupdate/hw';
import {
  createSession, finishSession, openLiveupdate, preserveFd, retrieveFd, retrieveSession,
  type Kernel, type ObjectCheck, type Process, type SessionStepContext,
} from '@liveupdate/sdk';
import { liveUpdate } from '@liveupdate/sdk/testing';
import memfd, { memfdCreate } from '@liveupdate/plugin-memfd';
import pci from '../src/index.js';
import { pciSection, pciTools, vfioDevice, type PciSectionState, type VfioDeviceExpect, type VfioDeviceSpec } from '../src/tools.js';
import { fourEngines, openEngine } from './support.js';

const CMD = `kho=on liveupdate=on ${pciSection.cmdline?.({}) ?? ''}`;

function stepContext(kernel: Kernel, machine: Machine, vmm: Process, sessionFd: number, section: PciSectionState, peers: Map<number, unknown>): SessionStepContext {
  return {
    kernel, machine, session: 'vm0', vmm, sessionFd,
    preserve: (fd, token) => preserveFd(vmm, sessionFd, fd, token),
    retrieve: (token) => retrieveFd(vmm, sessionFd, token),
    peer: (token) => peers.get(token),
    section: (key) => (key === 'pci' ? section : undefined),
    tick: () => undefined,
    note: () => undefined,
  };
}

describe('plugin-pci tools', () => {
  it('runs vfio-device objects and the pci section through a live update: continuous DMA checked gap-free, phase 1 and unpreserved engines stopped', () => {
    const machine = createMachine({ memory: '1GiB' });
    const section = pciSection.machine?.(machine, { topology: fourEngines }) as PciSectionState;
    const specs: VfioDeviceSpec[] = [
      { type: 'vfio-device', token: 10, device: 'dsa0', mode: 'continuous', dma: { ram: 1, pages: 32 } },
      { type: 'vfio-device', token: 11, device: 'dsa2', mode: 'continuous', dma: { ram: 1, pages: 32, startSeq: 500 } },
      { type: 'vfio-device', token: 12, device: 'dsa3', mode: 'reset', dma: { ram: 2, pages: 4 } },
    ];
    const side = { plugins: [memfd(), pci()], release: '7.1.0', cmdline: CMD };
    let checks: ObjectCheck[] = [];
    let decoded: Array<{ fields: Record<string, unknown>; problems: readonly string[] }> = [];
    const r = liveUpdate({ from: side, to: { ...side, release: '7.2.0' } }, {
      machine,
      before(k, t) {
        const vmm = t.spawn(k, 'vmm');
        const s = createSession(vmm, openLiveupdate(vmm), 'vm0');
        const peers = new Map<number, unknown>();
        for (const [token, name] of [[1, 'ram-a'], [2, 'ram-b']] as const) {
          const fd = memfdCreate(vmm, name, 0);
          vmm.ftruncate(fd, 64 * PAGE_SIZE);
          vmm.pwrite(fd, new Uint8Array(64 * PAGE_SIZE), 0);
          preserveFd(vmm, s, fd, token);
          peers.set(token, { fd });
        }
        const ctx = stepContext(k, machine, vmm, s, section, peers);
        const expects = specs.map((spec) => vfioDevice.create(ctx, spec).expect);
        // dsa1: bound and running, never preserved.
        openEngine(k, vmm, 'dsa1');
        section.host.engine('dsa1').submit({ opcode: 0x80, ring: [{ iova: 0x2000000, length: PAGE_SIZE }], startSeq: 0, count: Infinity });
        section.stopped.add('dsa1');
        machine.clock.advance(500_000);
        pciSection.beforeKexec?.({ kernel: k, machine, spawn: (n) => t.spawn(k, n), note: () => undefined }, { topology: fourEngines }, section);
        return { expects };
      },
      after(k, st, t) {
        const vmm = t.spawn(k, 'vmm');
        const s = retrieveSession(vmm, openLiveupdate(vmm), 'vm0');
        const peers = new Map<number, unknown>([[1, { fd: retrieveFd(vmm, s, 1) }], [2, { fd: retrieveFd(vmm, s, 2) }]]);
        const ctx = stepContext(k, machine, vmm, s, section, peers);
        const restored = specs.map((spec, i) => vfioDevice.restore(ctx, spec, st.expects[i] as VfioDeviceExpect).check);
        // Decode the PCI FLB from bytes before FINISH gives its pages back.
        decoded = k.luo.flbs.incomingList.map((f) => {
          const d = pciTools.decoders?.find((x) => x.target.kind === 'flb' && x.target.compatible === f.name);
          return d ? d.decode(machine.memory, f.data, null, { label: f.name }) : { fields: {}, problems: ['no decoder'] };
        });
        machine.clock.advance(500_000);
        finishSession(vmm, s);
        checks = [...restored, ...(pciSection.after?.({ kernel: k, machine, spawn: (n) => t.spawn(k, n), note: () => undefined }, { topology: fourEngines }, section) ?? [])];
      },
    });
    expect(r.outcome.kind).toBe('updated');
    expect(r.violations).toEqual([]);
    expect(checks.map((c) => [c.ok, c.problems])).toEqual(new Array(checks.length).fill([true, []]));
    expect(checks.map((c) => (/^(dsa|vm)\d/.test(c.summary) ? c.summary.split(':')[0] : c.summary))).toEqual([
      '0000:03:00.0 retrieved and bound (continuous)', '0000:05:00.0 retrieved and bound (continuous)', '0000:05:01.0 retrieved and bound (reset)',
      'dsa0', 'dsa2', 'vm0', 'dsa3', 'dsa1',
    ]);
    // The DMA never paused: the longest gap is one write interval (nsPerWrite 10 us), also across the kexec.
    expect(checks.filter((c) => c.summary.startsWith('dsa0')).map((c) => [c.counts?.dmaMaxGapNs, c.counts?.dmaGapAcrossKexecNs])).toEqual([[10_000, 10_000]]);
    const blackout = checks.find((c) => c.summary.startsWith('vm0'));
    expect(blackout?.summary).toMatch(/^vm0: blackout [0-9.]+ (ms|us) \(machine clock/);
    expect(blackout?.counts?.blackoutNs).toBeGreaterThan(500_000);
    expect(decoded).toHaveLength(1);
    expect(decoded[0]?.problems).toEqual([]);
    expect(decoded[0]?.fields).toMatchObject({ layout: 'v7', nr_devices: 7, devices: 7, 'device[0]': '0000:03:00.0 refcount 1', 'device[3]': '0000:00:01.0 refcount 1', 'device[5]': '0000:00:02.0 refcount 2' });
  });

  it('decodes a vfio-pci record of each version and flags unknown bits', () => {
    const machine = createMachine({ memory: '64MiB' });
    const dec = pciTools.decoders?.find((d) => d.target.kind === 'file');
    machine.memory.write(0x10000, new Uint8Array([1, 0, 0, 0, 0x08, 0x05, 0x03, 0x00]));
    expect(dec?.decode(machine.memory, 0x10000n, '1.0.0', { label: 't' }).fields).toEqual({ device: '0001:05:01.0', domain: 1, bdf: 0x0508 });
    const v2 = dec?.decode(machine.memory, 0x10000n, '2.0.0', { label: 't' });
    expect(v2?.fields).toMatchObject({ flags: 3, dmaRunning: true });
    expect(v2?.problems).toEqual(['unknown flags 0x2']);
    expect(dec?.decode(machine.memory, 2n ** 60n, '1.0.0', { label: 't' }).problems).toEqual(['record at 0x1000000000000000 is outside RAM']);
  });

  it('ships a built-in scenario whose pci section builds and whose vfio devices are functions of that topology', () => {
    const sc = pciTools.scenarios?.[0];
    expect(sc?.name).toBe('pci-continuous-dma');
    const doc = sc?.scenario as { pci: { topology: typeof fourEngines }; sessions: Array<{ files: Array<{ type: string; device?: string }> }> };
    const state = pciSection.machine?.(createMachine({ memory: '64MiB' }), doc.pci) as PciSectionState;
    const devices = doc.sessions.flatMap((s) => s.files).filter((f) => f.type === 'vfio-device').map((f) => f.device ?? '');
    expect(devices).toEqual(['dsa0', 'dsa2', 'dsa3']);
    expect(devices.map((d) => state.host.fn(d).portType)).toEqual(['endpoint', 'endpoint', 'endpoint']);
    expect(Object.keys(vfioDevice.properties)).toEqual(['device', 'mode', 'iommufd', 'dma']);
  });
});
