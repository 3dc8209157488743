/**
 * The PCI hierarchy of a machine: segments (domains), each with a root bus 0 holding root
 * ports and integrated endpoints; bridges (root ports, switch ports) with the secondary and
 * subordinate bus numbers a kernel programs; endpoints and SR-IOV VFs. Config requests are
 * routed by those bus numbers, exactly as hardware routes Type 1 requests, so a bridge whose
 * bus numbers were cleared hides everything below it.
 */
import { saveArray, type Restore } from '../state.js';
import { PciBridge, PciFunction, type FunctionOptions, type PciPortType } from './function.js';
import * as R from './regs.js';

export interface PciEndpointSpec {
  readonly kind: 'endpoint';
  readonly name: string;
  readonly slot: number;
  readonly fn?: number;
  readonly vendor?: number;
  readonly device?: number;
  readonly classCode?: number;
  /** What the function is: a DSA-like DMA engine, an NVMe controller, or config space only. */
  readonly model?: 'dsa' | 'nvme' | 'generic';
  readonly msix?: boolean;
  readonly flr?: boolean;
  readonly ari?: boolean;
  readonly acs?: number;
  readonly sriov?: { readonly totalVfs: number; readonly vfDevice: number };
}

export interface PciRootPortSpec {
  readonly kind: 'root-port';
  readonly name: string;
  readonly slot: number;
  readonly fn?: number;
  readonly acs?: number;
  readonly ari?: boolean;
  readonly children: readonly PciNodeSpec[];
}

export interface PciSwitchSpec {
  readonly kind: 'switch';
  readonly name: string;
  /** Slot of the upstream port on the parent bus. */
  readonly slot: number;
  readonly acs?: number;
  readonly ari?: boolean;
  readonly ports: ReadonlyArray<{ readonly slot: number; readonly name?: string; readonly children: readonly PciNodeSpec[] }>;
}

export type PciNodeSpec = PciEndpointSpec | PciRootPortSpec | PciSwitchSpec;

export interface PciTopologySpec {
  readonly segments: ReadonlyArray<{ readonly domain: number; readonly devices: readonly PciNodeSpec[] }>;
}

/** Makes the device model of an endpoint (the machine wires DMA engines to its clock and DMA port). */
export type ModelFactory = (fn: PciFunction, spec: PciEndpointSpec) => void;

export class PciSegment {
  /** Functions on the root bus (bus 0). */
  readonly root: PciFunction[] = [];
  constructor(readonly domain: number) {}
}

const VENDOR_INTEL = 0x8086;
/** Default IDs per model: Intel DSA (0b25, class 0x088000), an NVMe controller (class 0x010802). */
const MODEL_IDS: Record<string, { vendor: number; device: number; classCode: number }> = {
  dsa: { vendor: VENDOR_INTEL, device: 0x0b25, classCode: 0x088000 },
  nvme: { vendor: 0x144d, device: 0xa80a, classCode: 0x010802 },
  generic: { vendor: 0x1b36, device: 0x0005, classCode: 0xff0000 },
};

export class PciTopology {
  readonly segments: PciSegment[] = [];
  private readonly named = new Map<string, PciFunction>();

  constructor(private readonly factory: ModelFactory = () => undefined) {}

  static build(spec: PciTopologySpec, factory?: ModelFactory): PciTopology {
    const t = new PciTopology(factory);
    for (const s of spec.segments) {
      const seg = t.segment(s.domain);
      for (const d of s.devices) t.add(seg, null, d);
    }
    return t;
  }

  segment(domain: number): PciSegment {
    let s = this.segments.find((x) => x.domain === domain);
    if (!s) {
      if (!Number.isInteger(domain) || domain < 0 || domain > 0xffff) throw new RangeError(`PCI domain ${domain} outside 0..0xffff`);
      s = new PciSegment(domain);
      this.segments.push(s);
    }
    return s;
  }

  /** Hot-add (or build) a node under `parent` (null: the segment's root bus). */
  add(seg: PciSegment, parent: PciBridge | null, spec: PciNodeSpec): PciFunction {
    const siblings = parent ? parent.children : seg.root;
    const fn = spec.kind === 'switch' ? 0 : spec.fn ?? 0;
    if (!Number.isInteger(spec.slot) || spec.slot < 0 || spec.slot > 31 || fn < 0 || fn > 7) throw new RangeError(`${spec.name}: slot ${spec.slot} function ${fn} outside 0..31/0..7`);
    if (siblings.some((f) => f.slot === spec.slot && f.fn === fn)) throw new RangeError(`${spec.name}: slot ${spec.slot}.${fn} is taken`);
    if (this.named.has(spec.name)) throw new RangeError(`PCI function name '${spec.name}' is used twice`);
    let node: PciFunction;
    if (spec.kind === 'endpoint') {
      const ids = MODEL_IDS[spec.model ?? 'generic'] as { vendor: number; device: number; classCode: number };
      const opts: FunctionOptions = {
        name: spec.name, vendor: spec.vendor ?? ids.vendor, device: spec.device ?? ids.device, classCode: spec.classCode ?? ids.classCode,
        bars: [spec.model === 'dsa' ? 0x10000 : 0x4000, 0, spec.model === 'dsa' ? 0x20000 : 0],
        msix: spec.msix ?? true, flr: spec.flr ?? true, ari: spec.ari ?? false,
        ...(spec.acs !== undefined ? { acs: spec.acs } : {}), ...(spec.sriov ? { sriov: spec.sriov } : {}),
      };
      node = new PciFunction(seg, parent, spec.slot, fn, 'endpoint', opts);
      siblings.push(node);
      this.named.set(spec.name, node);
      this.factory(node, spec);
      return node;
    }
    const bridgeOpts = (name: string, type: PciPortType): FunctionOptions => ({
      name, vendor: VENDOR_INTEL, device: type === 'root-port' ? 0x352a : 0x4fa0, classCode: 0x060400,
      acs: spec.acs ?? (R.PCI_ACS_SV | R.PCI_ACS_RR | R.PCI_ACS_CR | R.PCI_ACS_UF), ari: spec.ari ?? true,
    });
    if (spec.kind === 'root-port') {
      const b = new PciBridge(seg, parent, spec.slot, fn, 'root-port', bridgeOpts(spec.name, 'root-port'));
      siblings.push(b);
      this.named.set(spec.name, b);
      for (const c of spec.children) this.add(seg, b, c);
      return b;
    }
    const up = new PciBridge(seg, parent, spec.slot, 0, 'upstream', bridgeOpts(spec.name, 'upstream'));
    siblings.push(up);
    this.named.set(spec.name, up);
    spec.ports.forEach((p, i) => {
      const dn = new PciBridge(seg, up, p.slot, 0, 'downstream', bridgeOpts(p.name ?? `${spec.name}-dp${i}`, 'downstream'));
      if (up.children.some((f) => f.slot === p.slot)) throw new RangeError(`${spec.name}: downstream slot ${p.slot} is taken`);
      if (this.named.has(dn.name)) throw new RangeError(`PCI function name '${dn.name}' is used twice`);
      up.children.push(dn);
      this.named.set(dn.name, dn);
      for (const c of p.children) this.add(seg, dn, c);
    });
    return up;
  }

  /** The hierarchy (hot-added nodes leave again) and every function's state. */
  save(): Restore {
    const fns: Restore[] = [saveArray(this.segments)];
    const named = [...this.named];
    const walk = (list: PciFunction[]): void => {
      fns.push(saveArray(list));
      for (const f of list) {
        fns.push(f.save());
        if (f instanceof PciBridge) walk(f.children);
      }
    };
    for (const seg of this.segments) walk(seg.root);
    return () => {
      for (const f of fns) f();
      this.named.clear();
      for (const [k, v] of named) this.named.set(k, v);
    };
  }

  byName(name: string): PciFunction | undefined { return this.named.get(name); }

  /** Every function (bridges before their children, VFs after their PF), in hardware order. */
  *functions(): IterableIterator<PciFunction> {
    const walk = function* (list: readonly PciFunction[]): IterableIterator<PciFunction> {
      for (const f of list) {
        yield f;
        yield* f.vfs;
        if (f instanceof PciBridge) yield* walk(f.children);
      }
    };
    for (const s of this.segments) yield* walk(s.root);
  }

  /** Route a configuration request: the function answering (domain, bus, devfn), or null (master abort). */
  resolve(domain: number, bus: number, df: number): PciFunction | null {
    const seg = this.segments.find((s) => s.domain === domain);
    if (!seg) return null;
    let list: readonly PciFunction[] = seg.root;
    let here = 0;
    for (let hops = 0; hops < 256; hops++) {
      if (bus === here) {
        for (const f of list) {
          if (f.devfn === df) return f;
          for (const vf of f.vfs) if (vf.bus === bus && vf.devfn === df) return vf;
        }
        return null;
      }
      const next = list.find((f): f is PciBridge => f instanceof PciBridge && f.secondary !== 0 && f.secondary > here && bus >= f.secondary && bus <= f.subordinate);
      if (!next) return null;
      list = next.children;
      here = next.secondary;
    }
    return null;
  }

  configRead(domain: number, bus: number, df: number, off: number, size: 1 | 2 | 4): number {
    const f = this.resolve(domain, bus, df);
    if (!f) return size === 4 ? 0xffffffff : (1 << (8 * size)) - 1;
    // A VF's Vendor and Device ID read all-ones; software takes them from the PF (SR-IOV 1.1 §3.4.1.1).
    return size === 1 ? f.config.read8(off) : size === 2 ? f.config.read16(off) : f.config.read32(off);
  }

  configWrite(domain: number, bus: number, df: number, off: number, size: 1 | 2 | 4, value: number): boolean {
    const f = this.resolve(domain, bus, df);
    if (!f) return false;
    f.config.write(off, size, value);
    return true;
  }
}
