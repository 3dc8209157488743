/**
 * A VMM's guest RAM (a sealed memfd) through an upgrade from a kernel built with
 * plugin-memfd 2.0.0 to one built with 3.1.0, and a rollback to 2.0.0: the released tarballs
 * (through @liveupdate/compat) in the old kernel, the workspace build in the new one. Before
 * each kexec the SDK's preflight says which format will travel; after it, the new kernel says
 * which one it found; the guest's RAM is checked page for page each time.
 */
import { PAGE_SIZE, createMachine, type Machine } from '@liveupdate/hw';
import {
  Kernel, boot, compatibleFor, createSession, finishSession, openLiveupdate, preflight, preserveFd, retrieveFd,
  retrieveSession, type KexecConfig, type Process,
} from '@liveupdate/sdk';
import { F_ADD_SEALS, F_GET_SEALS, MFD_ALLOW_SEALING, memfdAbi } from '@liveupdate/plugin-memfd';
import { memfdReleases, memfdSyscallsOf, type MemfdRelease } from '@liveupdate/compat';

const CMDLINE = 'kho=on liveupdate=on';
const MiB = 2 ** 20;
const SEALS = memfdAbi.F_SEAL_SHRINK | memfdAbi.F_SEAL_GROW;
const GUEST_SEED = 0x9e57;
const SEEK_SET = 0;
const SEEK_CUR = 1;
const SEEK_END = 2;

/** A kernel image: a release string and the plugin-memfd release it was built with. */
export interface KernelImage {
  readonly release: string;
  readonly memfd: MemfdRelease;
}

export interface HopReport {
  readonly from: KernelImage;
  readonly to: KernelImage;
  /** The memfd format version the outgoing kernel's preflight picked, and its compatible string. */
  readonly chosen: string;
  readonly chosenCompatible: string;
  /** The compatible string the incoming kernel found in the handover. */
  readonly found: string;
  /** Guest RAM as the incoming kernel's VMM sees it. */
  readonly size: number;
  readonly pos: number;
  readonly seals: number;
  readonly contentIntact: boolean;
  /** Preserved blocks neither restored nor released after FINISH. */
  readonly leakedBlocks: number;
}

export interface MixedVersionsReport {
  readonly ramBytes: number;
  readonly hops: readonly HopReport[];
}

export interface MixedVersionsOptions {
  /** Guest RAM size (default 256 MiB); the guest touches the first half. */
  readonly ramBytes?: number;
  readonly log?: (line: string) => void;
}

const image = (k: KernelImage): KexecConfig => ({ cmdline: CMDLINE, plugins: [memfdReleases[k.memfd]()], release: k.release });
const describe = (k: KernelImage): string => `${k.release} (plugin-memfd ${k.memfd})`;
const fmt = (bytes: number): string => `${bytes / MiB} MiB`;
const bootBlock = (seed: number): Uint8Array => {
  const b = new Uint8Array(PAGE_SIZE);
  for (let i = 0; i < b.length; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
};
const equal = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && a.every((x, i) => x === b[i]);

/** What the guest has written so far: checked after every hop. */
interface GuestImage {
  readonly ramBytes: number;
  /** Boot blocks (a page of bootBlock(seed)) written in the untouched upper half. */
  readonly blocks: Array<[offset: number, seed: number]>;
}

/** The lower half still holds the guest's synthetic pages, every boot block is there, the last page reads zero. */
function guestIntact(k: Kernel, vmm: Process, fd: number, g: GuestImage): boolean {
  return memfdSyscallsOf(k).memfdCheckSynthetic(vmm, fd, 0, g.ramBytes / 2, GUEST_SEED)
    && g.blocks.every(([off, seed]) => equal(vmm.pread(fd, PAGE_SIZE, off), bootBlock(seed)))
    && equal(vmm.pread(fd, PAGE_SIZE, g.ramBytes - PAGE_SIZE), new Uint8Array(PAGE_SIZE));
}

/** A VMM on one kernel: its process, its /dev/liveupdate fd and the guest RAM memfd. */
interface Vmm {
  readonly k: Kernel;
  readonly image: KernelImage;
  readonly p: Process;
  readonly dev: number;
  readonly ram: number;
}

/** Preserve guest RAM in session 'vm', kexec to `to`, retrieve it there and check it. */
function hop(machine: Machine, vmm: Vmm, to: KernelImage, g: GuestImage, log: (l: string) => void): { next: Vmm; report: HopReport } {
  const target = image(to);
  const plan = preflight(vmm.k.formats.manifest(), target).entries.find((e) => e.family === 'memfd');
  const chosen = plan?.chosen ?? 'none';
  const chosenCompatible = plan?.chosen ? compatibleFor({ family: 'memfd', aliases: memfdAbi.MEMFD_ALIASES }, plan.chosen) : 'none';
  log(`  preflight: memfd offers ${plan?.offered.join(', ')}; ${to.release} reads '${plan?.accepted}' -> ${chosen} ('${chosenCompatible}')`);

  preserveFd(vmm.p, createSession(vmm.p, vmm.dev, 'vm'), vmm.ram, 1);
  vmm.k.kexecJump(target);
  const next = Kernel.boot(machine, target);

  const qemu = next.spawn('qemu');
  const dev = openLiveupdate(qemu);
  const session = retrieveSession(qemu, dev, 'vm');
  const found = next.luo.sessions.incoming.find((s) => s.name === 'vm')?.fileSet.files[0]?.compatible ?? 'none';
  const ram = retrieveFd(qemu, session, 1);
  const report = {
    from: vmm.image, to, chosen, chosenCompatible, found,
    pos: qemu.lseek(ram, 0, SEEK_CUR), seals: qemu.fcntl(ram, F_GET_SEALS), size: qemu.lseek(ram, 0, SEEK_END),
    contentIntact: guestIntact(next, qemu, ram, g),
  };
  qemu.lseek(ram, report.pos, SEEK_SET);
  finishSession(qemu, session);
  const leakedBlocks = next.khoIn?.leaked().blocks ?? 0;
  log(`  ${to.release} found '${found}' in the handover: ${fmt(report.size)}, pos ${report.pos}, seals 0x${report.seals.toString(16)}, `
    + `content ${report.contentIntact ? 'identical' : 'DIFFERENT'}; ${leakedBlocks} preserved blocks left after FINISH`);
  return { next: { k: next, image: to, p: qemu, dev, ram }, report: { ...report, leakedBlocks } };
}

/** Upgrade 2.0.0 → 3.1.0, run the guest a little, roll back 3.1.0 → 2.0.0. */
export function upgradeAndRollback(options: MixedVersionsOptions = {}): MixedVersionsReport {
  const log = options.log ?? ((l: string) => console.log(l));
  const ramBytes = options.ramBytes ?? 256 * MiB;
  const old: KernelImage = { release: '7.0.0', memfd: '2.0.0' };
  const neu: KernelImage = { release: '7.1.0', memfd: '3.1.0' };

  const machine = createMachine({ memory: '8GiB' });
  const k1 = boot(machine, image(old));
  const vmm = k1.spawn('qemu');
  const sys = memfdSyscallsOf(k1);
  const ram = sys.memfdCreate(vmm, 'guest-ram', MFD_ALLOW_SEALING);
  vmm.ftruncate(ram, ramBytes);
  vmm.fcntl(ram, F_ADD_SEALS, SEALS);
  // The guest has touched the first half of its RAM, and written a boot block past it.
  sys.memfdFillSynthetic(vmm, ram, 0, ramBytes / 2, GUEST_SEED);
  const g: GuestImage = { ramBytes, blocks: [[ramBytes / 2, 1]] };
  vmm.pwrite(ram, bootBlock(1), ramBytes / 2);
  vmm.lseek(ram, 4096, SEEK_SET);
  log(`kernel ${describe(old)}: guest RAM is a ${fmt(ramBytes)} memfd, ${fmt(ramBytes / 2)} touched, sealed SHRINK|GROW`);

  log(`upgrade ${describe(old)} -> ${describe(neu)}`);
  const up = hop(machine, { k: k1, image: old, p: vmm, dev: openLiveupdate(vmm), ram }, neu, g, log);

  // The guest runs on the new kernel: another boot block, near the end of its RAM.
  up.next.p.pwrite(up.next.ram, bootBlock(2), ramBytes - 2 * PAGE_SIZE);
  g.blocks.push([ramBytes - 2 * PAGE_SIZE, 2]);

  log(`rollback ${describe(neu)} -> ${describe(old)}`);
  const down = hop(machine, up.next, old, g, log);
  return { ramBytes, hops: [up.report, down.report] };
}
