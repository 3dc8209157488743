/**
 * plugin-pci's surface for the tools (run, inspect, report, fuzz, matrix): the 'vfio-device'
 * session object, the machine-level 'pci' section (topology, DMA engines, DMA checks after the
 * update), decoders for the PCI FLB ("pci-v3", "pci-v2") and vfio-pci records, and a built-in
 * scenario. Nothing here crosses the kexec: expectations are plain data.
 */
import {
  defineDecoder, defineObjectKind, defineSection, identityProblem, PAGE_SIZE,
  type Decoded, type DecodeContext, type JsonSchema, type ObjectCheck, type PluginTools, type Process, type SessionStepContext,
} from '@liveupdate/sdk';
import {
  attachPci, bareMetalRig, DSA_OPCODE_SEQWRITE, formatBdf, pciHostOf, pciRegs as R, type PciHost, type PciTopologySpec,
} from '@liveupdate/hw';
import type { PhysMemory } from '@liveupdate/hw';
import { memfdPagemap } from '@liveupdate/plugin-memfd';
import { PCI_V6_COMPATIBLE, PCI_V7_COMPATIBLE } from './abi/pci.js';
import { VFIO_FAMILY, VFIO_PCI_SER_DMA_RUNNING, VFIO_V2_1_ID_OFFSET, vfioPciCoreDeviceSer, vfioPciCoreDeviceSerV2 } from './abi/vfio.js';
import { hasVfioIdentity } from './vfio-handler.js';
import { readPciSerV6, readPciSerV7, type PciSerRead } from './pci-ser.js';
import { pciDevice, vfioBindDevice, vfioBindIommufd, vfioConfigRead, vfioConfigWrite, vfioKeepRunning } from './syscalls.js';
import { vfioMmapPortal } from './vfio.js';

// ---- the 'pci' section ---------------------------------------------------------------------

export interface PciSectionSpec {
  /** 'bare-metal': the series' rig (8 DSA engines, 1 NVMe, each behind a root port); or a topology. */
  readonly rig?: 'bare-metal';
  readonly topology?: PciTopologySpec;
  /** Machine time per DMA write (default 10 µs). */
  readonly nsPerWrite?: number;
}

/** What the test remembers about the devices (plain data and the machine's PCI host). */
export interface PciSectionState {
  readonly host: PciHost;
  /** Engines whose DMA must continue through the update, and those that must stop at device shutdown. */
  readonly continuous: Map<string, { startSeq: number; ramToken: number; session: string }>;
  readonly stopped: Set<string>;
  /** Machine time of kernel A's device_shutdown. */
  kexecAtNs: number;
  /** Machine time the VMs were paused: every session object preserved, right before the kexec. */
  pausedAtNs: number;
  /** Per session, machine time its last device was retrieved and bound in kernel B (the VM can resume). */
  readonly resumedAtNs: Map<string, number>;
}

/** Nanoseconds as the summary prints them. */
function formatNs(ns: number): string {
  if (ns >= 1e6) return `${(ns / 1e6).toFixed(3)} ms`;
  if (ns >= 1e3) return `${(ns / 1e3).toFixed(1)} us`;
  return `${ns} ns`;
}

/** Deepest PCI hierarchy a scenario may describe (root port, switches, endpoint). */
const MAX_TOPOLOGY_DEPTH = 8;

/**
 * One topology node, unrolled to `depth` levels: the section's schema is embedded inside the
 * composed scenario schema, where a `$ref` to the section's own `$defs` would not resolve.
 */
function nodeSchema(depth: number): JsonSchema {
  const below: JsonSchema = depth > 1 ? nodeSchema(depth - 1) : { not: {} };
  return {
    type: 'object', required: ['kind', 'name', 'slot'],
    properties: {
      kind: { type: 'string', enum: ['endpoint', 'root-port', 'switch'] },
      name: { type: 'string', minLength: 1 },
      slot: { type: 'integer', minimum: 0, maximum: 31 },
      fn: { type: 'integer', minimum: 0, maximum: 7 },
      model: { type: 'string', enum: ['dsa', 'nvme', 'generic'] },
      vendor: { type: 'integer' }, device: { type: 'integer' }, classCode: { type: 'integer' },
      msix: { type: 'boolean' }, flr: { type: 'boolean' }, ari: { type: 'boolean' }, acs: { type: 'integer' },
      sriov: { type: 'object', required: ['totalVfs', 'vfDevice'], properties: { totalVfs: { type: 'integer', minimum: 1 }, vfDevice: { type: 'integer' } } },
      children: { type: 'array', items: below },
      ports: { type: 'array', items: { type: 'object', required: ['slot', 'children'], properties: { slot: { type: 'integer', minimum: 0, maximum: 31 }, name: { type: 'string' }, children: { type: 'array', items: below } } } },
    },
  };
}

const pciSection = defineSection<PciSectionSpec, PciSectionState>({
  key: 'pci',
  description: 'PCI topology with DSA-like DMA engines (or the series\' bare-metal rig); checks DMA across the update',
  schema: {
    type: 'object', additionalProperties: false,
    properties: {
      rig: { type: 'string', enum: ['bare-metal'] },
      nsPerWrite: { type: 'integer', minimum: 1 },
      topology: {
        type: 'object', required: ['segments'],
        properties: { segments: { type: 'array', items: { type: 'object', required: ['domain', 'devices'], properties: { domain: { type: 'integer', minimum: 0, maximum: 65535 }, devices: { type: 'array', items: nodeSchema(MAX_TOPOLOGY_DEPTH) } } } } },
      },
    },
  },
  cmdline: () => 'vfio.enable_unsafe_noiommu_mode=1',
  machine(machine, spec) {
    const host = attachPci(machine, spec.topology ?? bareMetalRig(), spec.nsPerWrite ? { nsPerWrite: spec.nsPerWrite } : {});
    return { host, continuous: new Map(), stopped: new Set(), kexecAtNs: 0, pausedAtNs: 0, resumedAtNs: new Map() };
  },
  beforeKexec(ctx, _spec, state) {
    // Unpreserved devices stop at device_shutdown (after the freeze, which may take an FLR's 100 ms).
    state.kexecAtNs = ctx.machine.clock.now;
    state.pausedAtNs = ctx.machine.clock.now;
    ctx.kernel.shutdownHooks.deviceShutdown.tap('@liveupdate/plugin-pci tools', () => { state.kexecAtNs = ctx.machine.clock.now; });
  },
  after(ctx, _spec, state) {
    const checks: ObjectCheck[] = [];
    const mem = ctx.machine.memory;
    // Per physical slot, the values written at the latest time by any sequence writer (ties keep all).
    const lastWrites = new Map<number, { t: number; values: number[] }>();
    for (const e of [...state.continuous.keys(), ...state.stopped].map((n) => state.host.engine(n))) {
      for (let i = 0; i < e.log.count; i++) {
        const phys = e.log.phys[i] as number;
        const t = e.log.timeNs[i] as number;
        const have = lastWrites.get(phys);
        if (!have || t > have.t) lastWrites.set(phys, { t, values: [e.log.seq[i] as number] });
        else if (t === have.t) have.values.push(e.log.seq[i] as number);
      }
    }
    for (const [name, c] of state.continuous) {
      const { log } = state.host.engine(name);
      const problems: string[] = [];
      let gaps = 0;
      let poisoned = 0;
      // The DMA gap: the longest stretch of machine time without a write, and the one across device_shutdown.
      let maxGapNs = 0;
      let kexecGapNs = 0;
      for (let i = 0; i < log.count; i++) {
        if (log.seq[i] !== c.startSeq + i) gaps++;
        if (i > 0) {
          const gap = (log.timeNs[i] as number) - (log.timeNs[i - 1] as number);
          if (gap > maxGapNs) maxGapNs = gap;
          if ((log.timeNs[i - 1] as number) < state.kexecAtNs && (log.timeNs[i] as number) >= state.kexecAtNs) kexecGapNs = gap;
        }
        if (mem.pageKind(Math.floor((log.phys[i] as number) / PAGE_SIZE)) === 'poison') poisoned++;
      }
      const after = log.count - log.firstAtOrAfter(state.kexecAtNs);
      // The reference model: every slot holds the last value any engine wrote there.
      let wrong = 0;
      const slots = new Set<number>();
      for (let i = 0; i < log.count; i++) slots.add(log.phys[i] as number);
      for (const phys of slots) {
        const want = lastWrites.get(phys);
        if (want && mem.pageKind(Math.floor(phys / PAGE_SIZE)) !== 'poison' && !want.values.includes(mem.readU64Number(phys))) wrong++;
      }
      if (wrong) problems.push(`${name}: ${wrong} of ${slots.size} slots do not hold the last value written there`);
      if (gaps) problems.push(`${name}: ${gaps} writes out of sequence`);
      if (poisoned) problems.push(`${name}: ${poisoned} writes landed in scrubbed (poisoned) pages`);
      if (after === 0) problems.push(`${name}: no DMA after the kexec`);
      checks.push({
        ok: problems.length === 0,
        summary: `${name}: ${log.count} DMA writes, ${after} after the kexec, ${gaps ? `${gaps} out of sequence` : 'gap-free'}, ${poisoned ? `${poisoned} in scrubbed pages` : 'all in surviving guest RAM'}; longest DMA gap ${formatNs(maxGapNs)} (${formatNs(kexecGapNs)} across the kexec)`,
        problems,
        counts: { dmaWrites: log.count, dmaWritesAfterKexec: after, dmaMaxGapNs: maxGapNs, dmaGapAcrossKexecNs: kexecGapNs },
      });
    }
    // Blackout per VM, off the machine clock (charged by the runtime's cost table): from the pause
    // before the kexec until the VM's last device is retrieved and bound in the new kernel.
    for (const [session, at] of state.resumedAtNs) {
      const blackoutNs = at - state.pausedAtNs;
      checks.push({ ok: true, summary: `${session}: blackout ${formatNs(blackoutNs)} (machine clock, pause before the kexec to devices bound in the new kernel)`, problems: [], counts: { blackoutNs } });
    }
    for (const name of state.stopped) {
      const { log } = state.host.engine(name);
      const late = log.count - log.firstAtOrAfter(state.kexecAtNs);
      checks.push({ ok: late === 0, summary: `${name}: stopped at device shutdown`, problems: late ? [`${name}: ${late} DMA writes after device shutdown`] : [] });
    }
    return checks;
  },
});

// ---- the 'vfio-device' object -------------------------------------------------------------

export interface VfioDeviceSpec {
  readonly type: string;
  readonly token: number;
  /** BDF ("0000:03:00.0") or the function's name in the topology ("dsa0"). */
  readonly device: string;
  /** 'reset': the posted phase 1; 'continuous': DMA keeps running (vfio-pci 2.x). */
  readonly mode?: 'reset' | 'continuous';
  /**
   * Token of an 'iommufd' object (plugin-iommu) earlier in this session that bound and attached
   * this device's cdev: the device is then preserved after it and DMA goes through the IOMMU.
   * Without it the cdev is bound noiommu.
   */
  readonly iommufd?: number;
  /**
   * A sequence-writing DMA into the memfd of this session with token `ram`. With `iova` (an
   * iommufd device) the ring is at iova + page × 4 KiB, else at the memfd pages' physical addresses.
   */
  readonly dma?: { readonly ram: number; readonly pages: number; readonly offsetPages?: number; readonly startSeq?: number; readonly iova?: number };
  readonly [field: string]: unknown;
}

export interface VfioDeviceExpect {
  readonly bdf: string;
  readonly engine: string;
  readonly mode: 'reset' | 'continuous';
}

/** The physical address behind a memfd offset, as a noiommu VMM reads it from /proc/self/pagemap. */
function pagemap(p: Process, fd: number, offset: number): number {
  const pfn = memfdPagemap(p.file(fd, 'pagemap'), offset);
  if (pfn < 0) throw new Error(`pagemap: fd ${fd} offset ${offset} has no resident page`);
  return pfn * PAGE_SIZE + (offset % PAGE_SIZE);
}

function fdOfPeer(ctx: SessionStepContext, token: number): number {
  const peer = ctx.peer(token) as { fd?: unknown } | undefined;
  if (typeof peer?.fd !== 'number') throw new Error(`vfio-device: session ${ctx.session} has no object with token ${token}`);
  return peer.fd;
}

const vfioDevice = defineObjectKind<VfioDeviceSpec, VfioDeviceExpect>({
  type: 'vfio-device',
  description: 'A PCI function bound to vfio-pci, opened through its cdev, preserved with the vfio-pci handler (phase 1 reset, or continuous DMA)',
  properties: {
    device: { type: 'string', minLength: 1 },
    mode: { type: 'string', enum: ['reset', 'continuous'] },
    iommufd: { type: 'integer', minimum: 0 },
    dma: { type: 'object', required: ['ram', 'pages'], properties: { ram: { type: 'integer', minimum: 0 }, pages: { type: 'integer', minimum: 1 }, offsetPages: { type: 'integer', minimum: 0 }, startSeq: { type: 'integer', minimum: 0 }, iova: { type: 'integer', minimum: 0, multipleOf: 4096 } } },
  },
  required: ['device'],
  cmdline: () => 'vfio.enable_unsafe_noiommu_mode=1',
  create(ctx, spec) {
    const mode = spec.mode ?? 'reset';
    const vdev = vfioBindDevice(ctx.kernel, spec.device);
    let fd: number;
    if (spec.iommufd !== undefined) {
      // The iommufd object opened, bound and attached this cdev before preserving the iommufd.
      const cdev = (ctx.peer(spec.iommufd) as { readonly cdev?: { readonly device: string; readonly fd: number } } | undefined)?.cdev;
      if (!cdev || cdev.device !== vdev.pdev.name) throw new Error(`vfio-device: iommufd object ${spec.iommufd} did not attach ${vdev.pdev.name}`);
      fd = cdev.fd;
    } else {
      fd = ctx.vmm.open(vdev.cdevPath);
      vfioBindIommufd(ctx.vmm, fd, -1);
    }
    vfioConfigWrite(ctx.vmm, fd, R.PCI_COMMAND, 2, R.PCI_COMMAND_MEMORY | R.PCI_COMMAND_MASTER);
    const state = ctx.section('pci') as PciSectionState | undefined;
    const engineName = vdev.pdev.hw.name;
    if (spec.dma) {
      const host = pciHostOf(ctx.machine);
      if (!host) throw new Error('vfio-device: the scenario has no pci section');
      const ramFd = fdOfPeer(ctx, spec.dma.ram);
      const first = spec.dma.offsetPages ?? 0;
      const base = spec.dma.iova;
      const ring = Array.from({ length: spec.dma.pages }, (_, i) => ({
        iova: base !== undefined ? base + (first + i) * PAGE_SIZE : pagemap(ctx.vmm, ramFd, (first + i) * PAGE_SIZE), length: PAGE_SIZE,
      }));
      const startSeq = spec.dma.startSeq ?? 1;
      vfioMmapPortal(ctx.vmm, fd, host.engine(engineName)).submit({ opcode: DSA_OPCODE_SEQWRITE, ring, startSeq, count: Infinity });
      if (mode === 'continuous') state?.continuous.set(engineName, { startSeq, ramToken: spec.dma.ram, session: ctx.session });
      else state?.stopped.add(engineName);
    }
    if (mode === 'continuous') vfioKeepRunning(ctx.vmm, fd);
    ctx.preserve(fd, spec.token);
    ctx.note(`${vdev.pdev.name} (${engineName}) preserved, ${mode}`);
    return { fd, expect: { bdf: vdev.pdev.name, engine: engineName, mode } };
  },
  restore(ctx, spec, expect) {
    vfioBindDevice(ctx.kernel, expect.bdf);
    const fd = ctx.retrieve(spec.token);
    const problems: string[] = [];
    if (spec.iommufd !== undefined) {
      // As posted (iommufd-v1) the iommufd is not retrievable (fd -1): the cdev stays unbound.
      const ifd = (ctx.peer(spec.iommufd) as { readonly fd?: number } | undefined)?.fd ?? -1;
      if (ifd >= 0) vfioBindIommufd(ctx.vmm, fd, ifd);
      else ctx.note(`${expect.bdf}: its iommufd was not retrieved; the cdev stays unbound`);
    } else {
      vfioBindIommufd(ctx.vmm, fd, -1);
    }
    const dev = pciDevice(ctx.kernel, expect.bdf);
    if (dev.hw.name !== expect.engine) problems.push(`${expect.bdf} is ${dev.hw.name} in the new kernel, was ${expect.engine}`);
    const cmd = vfioConfigRead(ctx.vmm, fd, R.PCI_COMMAND, 2);
    const section = ctx.section('pci') as PciSectionState | undefined;
    section?.resumedAtNs.set(ctx.session, ctx.machine.clock.now);
    if (expect.mode === 'continuous' && !(cmd & R.PCI_COMMAND_MASTER)) problems.push(`${expect.bdf}: bus mastering is off after a continuous update`);
    if (expect.mode === 'reset' && cmd !== R.PCI_COMMAND_INTX_DISABLE) problems.push(`${expect.bdf}: Command 0x${cmd.toString(16)} after a phase-1 freeze, expected INTx Disable only`);
    return { fd, check: { ok: problems.length === 0, summary: `${expect.bdf} retrieved and bound (${expect.mode})`, problems } };
  },
});

// ---- decoders -----------------------------------------------------------------------------

function pciDecoded(r: PciSerRead, layout: string): Decoded {
  const fields: Record<string, number | string> = { layout, ...r.fields, devices: r.devices.length };
  r.devices.slice(0, 64).forEach((d, i) => { fields[`device[${i}]`] = `${formatBdf(d.domain, d.bdf)} refcount ${d.refcount}`; });
  const first = r.pages[0];
  return {
    fields, problems: r.problems,
    pages: r.pages.map((p, i) => ({
      pfn: p.pfn, count: p.count, structure: 'pci_ser', role: p.role, upstream: true,
      ...(i === 0 && first ? { words: layout === 'v6' ? [{ offset: 0, size: 4 as const, kind: 'count' as const }, { offset: 4, size: 4 as const, kind: 'count' as const }] : [{ offset: 0, size: 4 as const, kind: 'count' as const }] } : {}),
      ...(i > 0 ? { words: [{ offset: 0, size: 8 as const, kind: 'pointer' as const }, { offset: 8, size: 8 as const, kind: 'count' as const }] } : {}),
    })),
  };
}

const safeNumber = (data: bigint): number => (data > BigInt(Number.MAX_SAFE_INTEGER) ? -1 : Number(data));

const pciV6Decoder = defineDecoder({
  target: { kind: 'flb', compatible: PCI_V6_COMPATIBLE },
  decode: (memory: PhysMemory, data: bigint) => pciDecoded(readPciSerV6(memory, safeNumber(data)), 'v6'),
});

/** "pci-v2" is v7's kho_block layout here; v6 patch 02 used the same string for the flat array. */
const pciV7Decoder = defineDecoder({
  target: { kind: 'flb', compatible: PCI_V7_COMPATIBLE },
  decode: (memory: PhysMemory, data: bigint) => pciDecoded(readPciSerV7(memory, safeNumber(data)), 'v7'),
});

const vfioDecoder = defineDecoder({
  target: { kind: 'file', family: VFIO_FAMILY },
  decode(memory: PhysMemory, data: bigint, version: string | null, context: DecodeContext): Decoded {
    const v2 = version !== null && Number(version.split('.')[0]) >= 2;
    const codec = v2 ? vfioPciCoreDeviceSerV2 : vfioPciCoreDeviceSer;
    const at = safeNumber(data);
    if (at <= 0 || at + codec.size > memory.size) return { fields: {}, problems: [`record at 0x${data.toString(16)} is outside RAM`], pages: [] };
    const raw = memory.read(at, codec.size);
    const domain = vfioPciCoreDeviceSer.read(raw, 'domain');
    const bdf = vfioPciCoreDeviceSer.read(raw, 'bdf');
    const fields: Record<string, string | number | boolean> = { device: formatBdf(domain, bdf), domain, bdf };
    const problems: string[] = [];
    if (v2) {
      const flags = vfioPciCoreDeviceSerV2.read(raw, 'flags');
      fields.flags = flags;
      fields.dmaRunning = (flags & VFIO_PCI_SER_DMA_RUNNING) !== 0;
      if (flags & ~VFIO_PCI_SER_DMA_RUNNING) problems.push(`unknown flags 0x${(flags & ~VFIO_PCI_SER_DMA_RUNNING).toString(16)}`);
    }
    if (version !== null && hasVfioIdentity(version)) {
      // 2.1: the record names the (session, token) it was written for.
      fields.id_crc32 = memory.readU32(at + VFIO_V2_1_ID_OFFSET);
      const problem = context.file ? identityProblem(memory, at, VFIO_V2_1_ID_OFFSET, context.file.session, context.file.token) : null;
      if (problem !== null) problems.push(`the record ${problem}`);
    }
    return { fields, problems, pages: [{ pfn: Math.floor(at / PAGE_SIZE), structure: 'vfio_pci_core_device_ser', role: `vfio-pci ${fields.device}`, upstream: !v2, words: v2 ? [{ offset: (at % PAGE_SIZE) + 4, size: 4, kind: 'flags' }] : [] }] };
  },
});

// ---- the built-in scenario ----------------------------------------------------------------

const continuousDma = {
  name: 'pci-continuous-dma',
  description: 'Four DSA engines behind two root ports and a switch: two preserved through vfio-pci with continuous DMA into preserved guest RAM, one phase-1, one left alone',
  scenario: {
    name: 'pci-continuous-dma',
    machine: { memory: '1GiB' },
    from: { release: '7.1.0', plugins: { '@liveupdate/plugin-memfd': '4.0.0', '@liveupdate/plugin-pci': '0.1.0' } },
    to: { release: '7.2.0', plugins: { '@liveupdate/plugin-memfd': '4.0.0', '@liveupdate/plugin-pci': '0.1.0' } },
    pci: {
      topology: {
        segments: [{
          domain: 0,
          devices: [
            { kind: 'root-port', name: 'rp0', slot: 1, children: [{ kind: 'switch', name: 'sw0', slot: 0, ports: [
              { slot: 0, name: 'sw0-dp0', children: [{ kind: 'endpoint', name: 'dsa0', slot: 0, model: 'dsa' }] },
              { slot: 1, name: 'sw0-dp1', children: [{ kind: 'endpoint', name: 'dsa1', slot: 0, model: 'dsa' }] },
            ] }] },
            { kind: 'root-port', name: 'rp1', slot: 2, children: [
              { kind: 'endpoint', name: 'dsa2', slot: 0, model: 'dsa' },
              { kind: 'endpoint', name: 'dsa3', slot: 1, model: 'dsa' },
            ] },
          ],
        }],
      },
    },
    sessions: [{
      name: 'vm0',
      files: [
        { token: 1, type: 'memfd', size: '1MiB', fill: 'zero', contents: 'device-written' },
        { token: 10, type: 'vfio-device', device: 'dsa0', mode: 'continuous', dma: { ram: 1, pages: 64 } },
        { token: 11, type: 'vfio-device', device: 'dsa2', mode: 'continuous', dma: { ram: 1, pages: 64, offsetPages: 64, startSeq: 1000000 } },
        { token: 12, type: 'vfio-device', device: 'dsa3', mode: 'reset' },
      ],
    }],
  },
};

export const pciTools: PluginTools = {
  objects: [vfioDevice as never],
  sections: [pciSection as never],
  decoders: [pciV6Decoder, pciV7Decoder, vfioDecoder],
  scenarios: [continuousDma],
};

export { pciSection, vfioDevice };
