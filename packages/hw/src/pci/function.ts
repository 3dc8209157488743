/**
 * A PCI function as hardware: its configuration space and where it sits. Its bus number is not
 * its own: it is whatever secondary bus number the kernel programmed into the bridge above it,
 * so a Requester ID changes when a kernel renumbers buses.
 */
import { saveArray, type Restore } from '../state.js';
import { PciConfig } from './config.js';
import * as R from './regs.js';

/** What a function does besides config space (a DMA engine, an NVMe controller). */
export interface PciDeviceModel {
  /** FLR (or any reset): drop in-flight work, registers back to power-on. */
  reset(): void;
}

export interface PciSegmentRef {
  readonly domain: number;
}

export type PciPortType = 'root-port' | 'upstream' | 'downstream' | 'endpoint';

export interface FunctionOptions {
  readonly name: string;
  readonly vendor: number;
  readonly device: number;
  /** Class code (24 bits: base, sub, prog-if). */
  readonly classCode?: number;
  readonly multifunction?: boolean;
  /** BAR sizes in bytes (0 = unimplemented); each a 64-bit memory BAR taking two slots. */
  readonly bars?: readonly number[];
  readonly msix?: boolean;
  readonly flr?: boolean;
  /** ACS capability bits (PCI_ACS_*) on ports and multifunction endpoints. */
  readonly acs?: number;
  /** ARI Capable (endpoint) / ARI Forwarding Supported (downstream ports). */
  readonly ari?: boolean;
  readonly sriov?: { readonly totalVfs: number; readonly vfDevice: number; readonly offset?: number; readonly stride?: number };
}

export class PciFunction {
  readonly config = new PciConfig();
  model: PciDeviceModel | null = null;
  /** SR-IOV: the PF of a VF, and a PF's enabled VFs. */
  physfn: PciFunction | null = null;
  readonly vfs: PciFunction[] = [];
  /** Bumped at every FLR, for tests and the engine. */
  flrCount = 0;

  constructor(
    readonly segment: PciSegmentRef,
    readonly parent: PciBridge | null,
    readonly slot: number,
    readonly fn: number,
    readonly portType: PciPortType,
    readonly opts: FunctionOptions,
  ) {
    const c = this.config;
    c.init16(R.PCI_VENDOR_ID, opts.vendor);
    c.init16(R.PCI_DEVICE_ID, opts.device);
    c.init32(R.PCI_CLASS_REVISION, ((opts.classCode ?? 0) << 8) >>> 0);
    c.init16(R.PCI_COMMAND, 0, R.PCI_COMMAND_IO | R.PCI_COMMAND_MEMORY | R.PCI_COMMAND_MASTER | R.PCI_COMMAND_INTX_DISABLE);
    const bridge = portType !== 'endpoint';
    c.init8(R.PCI_HEADER_TYPE, (bridge ? R.PCI_HEADER_TYPE_BRIDGE : R.PCI_HEADER_TYPE_NORMAL) | (opts.multifunction ? R.PCI_HEADER_TYPE_MFD : 0));
    if (bridge) {
      c.init8(R.PCI_PRIMARY_BUS, 0, 0xff);
      c.init8(R.PCI_SECONDARY_BUS, 0, 0xff);
      c.init8(R.PCI_SUBORDINATE_BUS, 0, 0xff);
    } else {
      (opts.bars ?? []).slice(0, 3).forEach((size, i) => {
        if (size <= 0) return;
        // Size probing: the low log2(size) bits read 0 after writing all-ones.
        const mask = size >= 2 ** 32 ? 0 : (~(size - 1) >>> 0) & ~0xf;
        c.init32(R.PCI_BASE_ADDRESS_0 + 8 * i, R.PCI_BASE_ADDRESS_MEM_TYPE_64, mask);
        c.init32(R.PCI_BASE_ADDRESS_0 + 8 * i + 4, 0, 0xffffffff);
      });
    }
    c.capPm = c.addCap(R.CAP_PM_AT, R.PCI_CAP_ID_PM, 8);
    c.init16(c.capPm + R.PCI_PM_CTRL, 0, R.PCI_PM_CTRL_STATE_MASK);
    const typeBits = { 'root-port': R.PCI_EXP_TYPE_ROOT_PORT, upstream: R.PCI_EXP_TYPE_UPSTREAM, downstream: R.PCI_EXP_TYPE_DOWNSTREAM, endpoint: R.PCI_EXP_TYPE_ENDPOINT }[portType];
    c.capExp = c.addCap(R.CAP_EXP_AT, R.PCI_CAP_ID_EXP, 0x3c);
    c.init16(c.capExp + R.PCI_EXP_FLAGS, 2 | (typeBits << 4));
    c.init32(c.capExp + R.PCI_EXP_DEVCAP, opts.flr ? R.PCI_EXP_DEVCAP_FLR : 0);
    c.init16(c.capExp + R.PCI_EXP_DEVCTL, 0, opts.flr ? R.PCI_EXP_DEVCTL_BCR_FLR : 0);
    const ariFwd = opts.ari === true && (portType === 'root-port' || portType === 'downstream');
    c.init32(c.capExp + R.PCI_EXP_DEVCAP2, ariFwd ? R.PCI_EXP_DEVCAP2_ARI : 0);
    c.init16(c.capExp + R.PCI_EXP_DEVCTL2, 0, ariFwd ? R.PCI_EXP_DEVCTL2_ARI : 0);
    if (opts.msix) {
      c.capMsix = c.addCap(R.CAP_MSIX_AT, R.PCI_CAP_ID_MSIX, 12);
      c.init16(c.capMsix + R.PCI_MSIX_FLAGS, 7, R.PCI_MSIX_FLAGS_ENABLE | R.PCI_MSIX_FLAGS_MASKALL);
    }
    if (opts.acs !== undefined) {
      c.extAcs = c.addExtCap(R.EXT_ACS_AT, R.PCI_EXT_CAP_ID_ACS);
      c.init16(c.extAcs + R.PCI_ACS_CAP, opts.acs);
      c.init16(c.extAcs + R.PCI_ACS_CTRL, 0, opts.acs);
    }
    if (opts.ari && portType === 'endpoint') c.extAri = c.addExtCap(R.EXT_ARI_AT, R.PCI_EXT_CAP_ID_ARI);
    if (opts.sriov) {
      const s = opts.sriov;
      c.extSriov = c.addExtCap(R.EXT_SRIOV_AT, R.PCI_EXT_CAP_ID_SRIOV);
      c.init16(c.extSriov + R.PCI_SRIOV_CTRL, 0, R.PCI_SRIOV_CTRL_VFE | R.PCI_SRIOV_CTRL_MSE);
      c.init16(c.extSriov + R.PCI_SRIOV_TOTAL_VF, s.totalVfs);
      c.init16(c.extSriov + R.PCI_SRIOV_NUM_VF, 0, 0xffff);
      c.init16(c.extSriov + R.PCI_SRIOV_VF_OFFSET, s.offset ?? 1);
      c.init16(c.extSriov + R.PCI_SRIOV_VF_STRIDE, s.stride ?? 1);
      c.init16(c.extSriov + R.PCI_SRIOV_VF_DID, s.vfDevice);
    }
    c.sealPowerOn();
    c.effects = {
      flr: () => this.flr(),
      written: (off, size) => this.configWritten(off, size),
    };
  }

  get name(): string { return this.opts.name; }
  get domain(): number { return this.segment.domain; }
  get isBridge(): boolean { return this.portType !== 'endpoint'; }
  get isVirtfn(): boolean { return this.physfn !== null; }

  /** The bus this function answers on: its parent bridge's secondary bus (the root bus is 0). */
  get bus(): number {
    if (this.physfn) return this.physfn.bus + ((this.physfn.devfn + this.vfRouting) >> 8);
    return this.parent ? this.parent.secondary : 0;
  }
  /** VF: offset + index * stride from the PF's Routing ID. */
  vfRouting = 0;
  get devfn(): number {
    if (this.physfn) return (this.physfn.devfn + this.vfRouting) & 0xff;
    return R.devfn(this.slot, this.fn);
  }
  /** The Requester ID its DMA carries. */
  get requesterId(): number { return R.bdfOf(this.bus, this.devfn); }
  /** Config requests reach it: every bridge above has a secondary bus programmed. */
  get reachable(): boolean {
    for (let b = this.physfn ? this.physfn.parent : this.parent; b; b = b.parent) if (b.secondary === 0) return false;
    return true;
  }

  get command(): number { return this.config.read16(R.PCI_COMMAND); }
  get busMaster(): boolean { return (this.command & R.PCI_COMMAND_MASTER) !== 0; }
  /**
   * Upstream memory requests reach the root complex: this function and every bridge above it
   * have Bus Master Enable set (a bridge with it clear does not forward requests from below).
   */
  get dmaPathOpen(): boolean {
    if (!this.busMaster) return false;
    for (let b = this.physfn ? this.physfn.parent : this.parent; b; b = b.parent) if (!b.busMaster) return false;
    return true;
  }
  get memoryEnabled(): boolean { return (this.command & R.PCI_COMMAND_MEMORY) !== 0; }
  get msixEnabled(): boolean { return this.config.capMsix > 0 && (this.config.read16(this.config.capMsix + R.PCI_MSIX_FLAGS) & R.PCI_MSIX_FLAGS_ENABLE) !== 0; }
  /** D0..D3hot as 0..3. */
  get powerState(): number { return this.config.read16(this.config.capPm + R.PCI_PM_CTRL) & R.PCI_PM_CTRL_STATE_MASK; }
  get ariForwarding(): boolean { return this.config.capExp > 0 && (this.config.read16(this.config.capExp + R.PCI_EXP_DEVCTL2) & R.PCI_EXP_DEVCTL2_ARI) !== 0; }
  get acsCtrl(): number { return this.config.extAcs ? this.config.read16(this.config.extAcs + R.PCI_ACS_CTRL) : 0; }
  get hasFlr(): boolean { return this.opts.flr === true; }

  /** Config space, FLR count and the enabled VFs (each VF's own state with it); the device model saves its own. */
  save(): Restore {
    const config = this.config.save();
    const flrs = this.flrCount;
    const vfs = saveArray(this.vfs);
    const vfStates = this.vfs.map((vf) => vf.save());
    return () => { config(); this.flrCount = flrs; vfs(); for (const f of vfStates) f(); };
  }

  /** Function Level Reset: config back to power-on, the device model drops its work. */
  flr(): void {
    this.flrCount++;
    this.config.resetToPowerOn();
    for (const vf of this.vfs.splice(0)) vf.model?.reset();
    this.model?.reset();
  }

  private configWritten(off: number, size: number): void {
    const s = this.config.extSriov;
    if (s && off <= s + R.PCI_SRIOV_CTRL && off + size > s + R.PCI_SRIOV_CTRL) this.sriovControl();
  }

  /** VF Enable with NumVFs: the VFs appear at PF RID + offset + i * stride. */
  private sriovControl(): void {
    const c = this.config;
    const s = c.extSriov;
    const enable = (c.read16(s + R.PCI_SRIOV_CTRL) & R.PCI_SRIOV_CTRL_VFE) !== 0;
    const want = enable ? Math.min(c.read16(s + R.PCI_SRIOV_NUM_VF), c.read16(s + R.PCI_SRIOV_TOTAL_VF)) : 0;
    if (want === this.vfs.length) return;
    this.vfs.splice(0);
    const offset = c.read16(s + R.PCI_SRIOV_VF_OFFSET);
    const stride = c.read16(s + R.PCI_SRIOV_VF_STRIDE);
    for (let i = 0; i < want; i++) {
      const vf = new PciFunction(this.segment, this.parent, 0, 0, 'endpoint', {
        name: `${this.name}-vf${i}`, vendor: 0xffff, device: c.read16(s + R.PCI_SRIOV_VF_DID), flr: true,
      });
      vf.physfn = this;
      vf.vfRouting = offset + i * stride;
      this.vfs.push(vf);
    }
  }
}

export class PciBridge extends PciFunction {
  readonly children: PciFunction[] = [];

  get secondary(): number { return this.config.read8(R.PCI_SECONDARY_BUS); }
  get subordinate(): number { return this.config.read8(R.PCI_SUBORDINATE_BUS); }
  get primary(): number { return this.config.read8(R.PCI_PRIMARY_BUS); }
}
