/**
 * Kernel A booted with one plugin-memfd release, kernel B with another, one machine between
 * them. Only the handover bytes cross: A's VMM uses A's release syscalls, B's VMM B's.
 */
import { createMachine, type Machine } from '@liveupdate/hw';
import {
  Kernel, abi, boot, openLiveupdate, retrieveFd, retrieveSession,
  type KexecConfig, type Process,
} from '@liveupdate/sdk';
import { memfdReleases, memfdSyscalls, type MemfdPluginOptions, type MemfdRelease, type MemfdSyscalls } from '@liveupdate/compat';

export { errnoOf, pattern } from '@liveupdate/sdk/testing';

export const CMDLINE = 'kho=on liveupdate=on';
export const MiB = 2 ** 20;

export interface Build {
  readonly release: MemfdRelease;
  readonly options?: MemfdPluginOptions;
}

export interface KernelA {
  readonly machine: Machine;
  readonly k: Kernel;
  readonly p: Process;
  readonly dev: number;
  readonly sys: MemfdSyscalls;
}

export interface KernelB {
  readonly k: Kernel;
  readonly p: Process;
  readonly dev: number;
  readonly sys: MemfdSyscalls;
}

export const kexecConfig = (b: Build, cmdline = CMDLINE): KexecConfig => ({
  cmdline, plugins: [memfdReleases[b.release](b.options)], release: `plugin-memfd ${b.release}`,
});

/** Cold-boot kernel A with build `a`. */
export function bootA(a: Build, memory = '8GiB', cmdline = CMDLINE): KernelA {
  const machine = createMachine({ memory });
  const k = boot(machine, kexecConfig(a, cmdline));
  const p = k.spawn('vmm');
  return { machine, k, p, dev: openLiveupdate(p), sys: memfdSyscalls[a.release] };
}

/** Kernel B after A's jump: booted from the machine's bytes and boot parameters. */
export function bootB(machine: Machine, b: Build, cmdline = CMDLINE): KernelB {
  const k = Kernel.boot(machine, kexecConfig(b, cmdline));
  const p = k.spawn('vmm');
  return { k, p, dev: openLiveupdate(p), sys: memfdSyscalls[b.release] };
}

export function retrieveOne(b: KernelB, session: string, token: number): { sfd: number; fd: number } {
  const sfd = retrieveSession(b.p, b.dev, session);
  return { sfd, fd: retrieveFd(b.p, sfd, token) };
}

/** The compatible string of the first preserved file, read from A's handover bytes after the jump. */
export function handedOverCompatible(a: KernelA): string {
  return handedOverFile(a).compatible;
}

/** The first preserved file's luo_file_ser (compatible string, data = its header address), from A's handover bytes. */
export function handedOverFile(a: KernelA): { compatible: string; data: bigint } {
  const luo = a.k.khoOut?.subtreeList.find((s) => s.name === 'LUO');
  if (!luo) throw new Error('no LUO subtree');
  const mem = a.machine.memory;
  const { luoSer, luoSessionSer, luoFileSer } = abi.luo;
  const hdr = abi.block.khoBlockHeader.size;
  const sessions = Number(luoSer.decode(mem.read(luo.phys, luoSer.size)).sessions_pa);
  const files = Number(luoSessionSer.decode(mem.read(sessions + hdr, luoSessionSer.size)).files);
  const f = luoFileSer.decode(mem.read(files + hdr, luoFileSer.size));
  return { compatible: f.compatible, data: f.data };
}

