/**
 * Test helpers for plugin-iommu: a machine with one VT-d unit, a minimal test-only VFIO cdev
 * (a fake device file with BIND/ATTACH ioctls and a LUO handler that calls the plugin's device
 * API the way the vfio-pci cdev handler does), a test-only DMA writer, and an iommufd set-up over
 * a sealed memfd. The real vfio-pci cdev lives in plugin-pci.
 */
import { PAGE_SIZE, createMachine, dmarOf, type Machine, type VtdIommu } from '@liveupdate/hw';
import {
  ErrnoError, Inode, KFile, Kernel, abi, boot, createSession, defineFileHandler, definePlugin, openLiveupdate, preserveFd,
  type FileOperations, type KexecConfig, type Plugin, type Process,
} from '@liveupdate/sdk';
import memfd, { F_ADD_SEALS, MFD_ALLOW_SEALING, memfdCreate } from '@liveupdate/plugin-memfd';
import iommu, {
  iommuDeviceOf, iommuPreserveDevice, iommuProbeDevice, iommuUnpreserveDevice, iommufdAttachDevice, iommufdBindDevice, iommuUapi,
  type IommuDevice, type IommuPluginOptions,
} from '../src/index.js';
import type { IommufdCtx } from '../src/iommufd/ctx.js';

export { errnoOf } from '@liveupdate/sdk/testing';
export const CMDLINE = 'kho=on liveupdate=on';
export const MiB = 2 ** 20;
export const REG_BASE = 0xfed9_0000;
export const F_SEAL_SEAL = 1;
export const F_SEAL_SHRINK = 2;
export const F_SEAL_GROW = 4;
const u = iommuUapi;

// ---- a test-only VFIO cdev ------------------------------------------------------------------

export interface FakePciDevice { readonly segment: number; readonly rid: number; readonly name: string; readonly isPci?: boolean }

/** The cdev's private data: the device and, once bound, its iommufd and devid. */
export class FakeCdev {
  iommufd: KFile | null = null;
  devid = 0;
  constructor(readonly dev: IommuDevice) {}
}

function cdevIoctl(file: KFile, cmd: number, arg: Uint8Array, proc: Process): number {
  const c = file.privateData as FakeCdev;
  if (cmd === u.VFIO_DEVICE_BIND_IOMMUFD) {
    const a = u.vfioDeviceBindIommufd.decode(arg);
    const ifile = proc.fget(a.iommufd, 'vfio_device_bind_iommufd');
    try {
      c.devid = iommufdBindDevice(proc.kernel, ifile, c.dev, c);
    } catch (e) {
      ifile.put();
      throw e;
    }
    c.iommufd = ifile;
    u.vfioDeviceBindIommufd.write(arg, 'out_devid', c.devid);
    return 0;
  }
  if (cmd === u.VFIO_DEVICE_ATTACH_IOMMUFD_PT) {
    if (!c.iommufd) throw new ErrnoError('EINVAL', 'vfio_device_attach_iommufd_pt', 'not bound');
    iommufdAttachDevice(proc.kernel, c.iommufd, c.devid, u.vfioDeviceAttachIommufdPt.decode(arg).pt_id);
    return 0;
  }
  throw new ErrnoError('ENOTTY', 'ioctl');
}

const cdevFops: FileOperations = { kind: 'vfio-cdev (test)', ioctl: cdevIoctl, release: (f) => (f.privateData as FakeCdev).iommufd?.put() };

const cdevFile = (kernel: Kernel, c: FakeCdev): KFile => new KFile(cdevFops, new Inode(c), c, 0o2, kernel.id);

/** Open the test cdev of `dev` in `proc`. */
export function openCdev(proc: Process, dev: FakePciDevice): number {
  const d = iommuDeviceOf(proc.kernel, dev.segment, dev.rid);
  if (!d) throw new ErrnoError('ENODEV', 'open');
  return proc.fdInstall(cdevFile(proc.kernel, new FakeCdev(d)), false);
}

/** The test VFIO plugin: probes its devices at the probe phase; its handler preserves the cdev's IOMMU state. */
export function fakeVfio(devices: readonly FakePciDevice[]): Plugin {
  return definePlugin({
    name: 'test-vfio', version: '1.0.0', sdk: '^0.1.0',
    handlers: [defineFileHandler<{ record: number; phys: number }>({
      format: { family: 'test-vfio', writes: ['1.0.0'], reads: '^1.0.0' },
      canPreserve: (file) => file.privateData instanceof FakeCdev,
      preserve(ctx) {
        const c = ctx.file?.privateData as FakeCdev;
        if (!c.iommufd) throw new ErrnoError('EINVAL', 'test_vfio_preserve', 'not bound');
        const t = iommuPreserveDevice(ctx.kernel, ctx.session, c.iommufd, c.devid);
        const out = ctx.kernel.khoOut;
        if (!out) throw new ErrnoError('EOPNOTSUPP', 'test_vfio_preserve');
        const phys = out.allocPreserve(16);
        const b = new Uint8Array(16);
        const v = new DataView(b.buffer);
        v.setUint32(0, c.dev.info.segment, true);
        v.setUint32(4, c.dev.info.rid, true);
        v.setBigUint64(8, t.iommufdToken, true);
        ctx.kernel.machine.memory.write(phys, b);
        ctx.data = BigInt(phys);
        ctx.state = { record: t.record, phys };
      },
      unpreserve(ctx) {
        const c = ctx.file?.privateData as FakeCdev;
        if (c.iommufd) iommuUnpreserveDevice(ctx.kernel, c.iommufd, c.devid);
        ctx.kernel.khoOut?.unpreserveFree(Number(ctx.data));
      },
      retrieve(ctx) {
        const phys = Number(ctx.data);
        const seg = ctx.kernel.machine.memory.readU32(phys);
        const rid = ctx.kernel.machine.memory.readU32(phys + 4);
        const d = iommuDeviceOf(ctx.kernel, seg, rid);
        if (!d) throw new ErrnoError('ENODEV', 'test_vfio_retrieve');
        ctx.kernel.khoIn?.restoreFree(phys);
        ctx.file = cdevFile(ctx.kernel, new FakeCdev(d));
      },
      // FINISH waits for the retrieved device to be bound to an iommufd.
      canFinish: (ctx) => ctx.retrieveStatus !== 1 || (ctx.file?.privateData as FakeCdev | undefined)?.iommufd != null,
      finish() { /* nothing left */ },
    })],
    init(_k, hooks) {
      hooks.boot.probe.tap((k) => { for (const d of devices) iommuProbeDevice(k, { segment: d.segment, rid: d.rid, isPci: d.isPci ?? true, name: d.name }); });
    },
  });
}

// ---- machine and kernels --------------------------------------------------------------------

export const DEV_A: FakePciDevice = { segment: 0, rid: 0x0300, name: '0000:03:00.0' };
export const DEV_B: FakePciDevice = { segment: 0, rid: 0x0400, name: '0000:04:00.0' };

export interface World {
  readonly machine: Machine;
  readonly unit: VtdIommu;
  readonly plugins: readonly Plugin[];
  readonly k1: Kernel;
  readonly p: Process;
  readonly dev: number;
  readonly next: KexecConfig;
}

export function world(opts: { iommu?: IommuPluginOptions; nextIommu?: IommuPluginOptions; devices?: readonly FakePciDevice[]; memory?: string; cmdline?: string } = {}): World {
  const machine = createMachine({ memory: opts.memory ?? '4GiB' });
  const unit = dmarOf(machine).addUnit({ segment: 0, regBase: REG_BASE });
  const devices = opts.devices ?? [DEV_A, DEV_B];
  const plugins = [memfd(), iommu(opts.iommu), fakeVfio(devices)];
  const cmdline = opts.cmdline ?? CMDLINE;
  const k1 = boot(machine, { cmdline, plugins, release: '7.1.0' });
  const p = k1.spawn('vmm');
  const nextPlugins = opts.nextIommu ? [memfd(), iommu(opts.nextIommu), fakeVfio(devices)] : plugins;
  return { machine, unit, plugins, k1, p, dev: openLiveupdate(p), next: { cmdline, plugins: nextPlugins, release: '7.2.0' } };
}

export function bootNext(w: World): { k2: Kernel; p2: Process; dev2: number } {
  const k2 = Kernel.boot(w.machine, w.next);
  const p2 = k2.spawn('vmm');
  return { k2, p2, dev2: openLiveupdate(p2) };
}

// ---- uAPI wrappers, as a VMM calls them --------------------------------------------------------

export function ioasAlloc(p: Process, ifd: number): number {
  const a = u.iommuIoasAlloc.encode({ size: u.iommuIoasAlloc.size });
  p.ioctl(ifd, u.IOMMU_IOAS_ALLOC, a);
  return u.iommuIoasAlloc.read(a, 'out_ioas_id');
}

export function mapFile(p: Process, ifd: number, ioas: number, fd: number, start: number, length: number, iova: number, writeable = true): number {
  const flags = u.IOMMU_IOAS_MAP_FIXED_IOVA | u.IOMMU_IOAS_MAP_READABLE | (writeable ? u.IOMMU_IOAS_MAP_WRITEABLE : 0);
  const a = u.iommuIoasMapFile.encode({ size: u.iommuIoasMapFile.size, flags, ioas_id: ioas, fd, start: BigInt(start), length: BigInt(length), iova: BigInt(iova) });
  p.ioctl(ifd, u.IOMMU_IOAS_MAP_FILE, a);
  return Number(u.iommuIoasMapFile.read(a, 'iova'));
}

export function mapAnon(p: Process, ifd: number, ioas: number, length: number, iova: number): void {
  const flags = u.IOMMU_IOAS_MAP_FIXED_IOVA | u.IOMMU_IOAS_MAP_READABLE | u.IOMMU_IOAS_MAP_WRITEABLE;
  p.ioctl(ifd, u.IOMMU_IOAS_MAP, u.iommuIoasMap.encode({ size: u.iommuIoasMap.size, flags, ioas_id: ioas, length: BigInt(length), iova: BigInt(iova) }));
}

export function hwptAlloc(p: Process, ifd: number, devid: number, ioas: number): number {
  const a = u.iommuHwptAlloc.encode({ size: u.iommuHwptAlloc.size, dev_id: devid, pt_id: ioas });
  p.ioctl(ifd, u.IOMMU_HWPT_ALLOC, a);
  return u.iommuHwptAlloc.read(a, 'out_hwpt_id');
}

export function markPreserve(p: Process, ifd: number, hwpt: number, token: bigint): void {
  p.ioctl(ifd, u.IOMMU_HWPT_LU_MARK_PRESERVE, u.iommuHwptLuMarkPreserve.encode({ size: u.iommuHwptLuMarkPreserve.size, hwpt_id: hwpt, hwpt_token: token }));
}

export function bind(p: Process, cdev: number, ifd: number): number {
  const a = u.vfioDeviceBindIommufd.encode({ argsz: u.vfioDeviceBindIommufd.size, iommufd: ifd });
  p.ioctl(cdev, u.VFIO_DEVICE_BIND_IOMMUFD, a);
  return u.vfioDeviceBindIommufd.read(a, 'out_devid');
}

export function attach(p: Process, cdev: number, pt: number): void {
  p.ioctl(cdev, u.VFIO_DEVICE_ATTACH_IOMMUFD_PT, u.vfioDeviceAttachIommufdPt.encode({ argsz: u.vfioDeviceAttachIommufdPt.size, pt_id: pt }));
}

/** A memfd of `size` bytes filled with `fill`, sealed F_SEAL_SEAL|GROW|SHRINK unless `seals` says otherwise. */
export function guestRam(p: Process, size: number, fill = 0, seals = F_SEAL_SEAL | F_SEAL_GROW | F_SEAL_SHRINK): number {
  const fd = memfdCreate(p, 'guest-ram', MFD_ALLOW_SEALING);
  p.ftruncate(fd, size);
  if (fill) p.pwrite(fd, new Uint8Array(size).fill(fill), 0);
  if (seals) p.fcntl(fd, F_ADD_SEALS, seals);
  return fd;
}

export const GUEST_IOVA = 0x10_0000;

export interface Passthrough {
  readonly ram: number;
  readonly ifd: number;
  readonly ioas: number;
  readonly cdev: number;
  readonly devid: number;
  readonly hwpt: number;
}

/** A VMM's set-up: guest RAM in a sealed memfd mapped at GUEST_IOVA, a device bound and attached to a marked HWPT. */
export function passthrough(w: World, opts: { size?: number; token?: bigint; mark?: boolean; dev?: FakePciDevice } = {}): Passthrough {
  const { p } = w;
  const size = opts.size ?? 2 * MiB;
  const ram = guestRam(p, size, 0x11);
  const ifd = p.open('/dev/iommu');
  const ioas = ioasAlloc(p, ifd);
  const cdev = openCdev(p, opts.dev ?? DEV_A);
  const devid = bind(p, cdev, ifd);
  mapFile(p, ifd, ioas, ram, 0, size, GUEST_IOVA);
  const hwpt = hwptAlloc(p, ifd, devid, ioas);
  attach(p, cdev, hwpt);
  if (opts.mark ?? true) markPreserve(p, ifd, hwpt, opts.token ?? 0x5eedn);
  return { ram, ifd, ioas, cdev, devid, hwpt };
}

/** memfd → iommufd → cdev in one session. */
export function preserveAll(w: World, x: Passthrough, name = 'vm0'): number {
  const s = createSession(w.p, w.dev, name);
  preserveFd(w.p, s, x.ram, 1);
  preserveFd(w.p, s, x.ifd, 2);
  preserveFd(w.p, s, x.cdev, 3);
  return s;
}

/** Test-only DMA writer: what the engine issues, through the remapping hardware. */
export function dma(machine: Machine, dev: FakePciDevice, iova: number, bytes: Uint8Array): boolean {
  return dmarOf(machine).dmaWrite(dev.segment, dev.rid, iova, bytes);
}

export { PAGE_SIZE };

// ---- reading the handover from bytes ----------------------------------------------------------

const u64At = (m: Machine, phys: number): number => m.memory.readU64Number(phys);

function blockEntries(m: Machine, head: number, entrySize: number): number[] {
  const out: number[] = [];
  const hdr = abi.block.khoBlockHeader.size;
  for (let b = head; b !== 0; b = u64At(m, b)) {
    const count = u64At(m, b + 8);
    for (let i = 0; i < count; i++) out.push(b + hdr + i * entrySize);
  }
  return out;
}

function luoSer(w: Pick<World, 'machine' | 'k1'>): ReturnType<typeof abi.luo.luoSer.decode> {
  const luo = w.k1.khoOut?.subtreeList.find((s) => s.name === 'LUO');
  if (!luo) throw new Error('no LUO subtree in the handover');
  return abi.luo.luoSer.decode(w.machine.memory.read(luo.phys, abi.luo.luoSer.size));
}

/** The FLBs of the handover (name, data, count), from bytes. Call after the jump. */
export function handedOverFlbs(w: World): Array<{ name: string; data: bigint; count: bigint }> {
  const { luoFlbHeaderSer, luoFlbSer } = abi.luo;
  const flbs = Number(luoSer(w).flbs_pa);
  const hdr = luoFlbHeaderSer.decode(w.machine.memory.read(flbs, luoFlbHeaderSer.size));
  const out: Array<{ name: string; data: bigint; count: bigint }> = [];
  for (let i = 0; i < Number(hdr.count); i++) out.push(luoFlbSer.decode(w.machine.memory.read(flbs + luoFlbHeaderSer.size + i * luoFlbSer.size, luoFlbSer.size)));
  return out;
}

/** The preserved files of the handover (compatible, data, token), from bytes. */
export function handedOverFiles(w: Pick<World, 'machine' | 'k1'>): Array<{ compatible: string; data: bigint; token: bigint }> {
  const { luoSessionSer, luoFileSer } = abi.luo;
  const files: Array<{ compatible: string; data: bigint; token: bigint }> = [];
  for (const sp of blockEntries(w.machine, Number(luoSer(w).sessions_pa), luoSessionSer.size)) {
    const s = luoSessionSer.decode(w.machine.memory.read(sp, luoSessionSer.size));
    for (const fp of blockEntries(w.machine, Number(s.files), luoFileSer.size)) {
      const f = luoFileSer.decode(w.machine.memory.read(fp, luoFileSer.size));
      files.push({ compatible: f.compatible, data: f.data, token: f.token });
    }
  }
  return files;
}

/** The iommufd context behind an fd (tests reach the model's objects through it). */
export function ictxOf(p: Process, fd: number): IommufdCtx {
  return p.file(fd, 'test').privateData as IommufdCtx;
}
