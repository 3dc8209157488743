/**
 * Test helpers: a machine with one kernel and a VMM process holding /dev/liveupdate, the jump
 * and the boot of the next kernel as separate steps (so a test can read or corrupt the
 * handover bytes in between), and decoders that find a preserved file's luo_file_ser and
 * memfd header by walking the bytes from the KHO root FDT, as the next kernel would.
 */
import { PAGE_SIZE, createMachine, type Machine } from '@liveupdate/hw';
import {
  Kernel, abi, boot, createSession, openLiveupdate, preserveFd, retrieveFd, retrieveSession, xarrayAbi,
  type KexecConfig, type Plugin, type Process,
} from '@liveupdate/sdk';
import { F_ADD_SEALS, MFD_ALLOW_SEALING, memfdAbi, memfdCreate } from '@liveupdate/plugin-memfd';
import { pattern } from '@liveupdate/sdk/testing';

export { errnoOf, pattern } from '@liveupdate/sdk/testing';

export const CMDLINE = 'kho=on liveupdate=on';
export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;
export const TiB = 1024 * GiB;
export const SEEK_SET = 0;
export const SEEK_CUR = 1;
export const SEEK_END = 2;

export interface Outgoing {
  readonly machine: Machine;
  readonly cfg: KexecConfig;
  readonly k1: Kernel;
  /** The VMM: holds /dev/liveupdate and the sessions. */
  readonly p: Process;
  readonly dev: number;
}

export interface StartOptions {
  readonly memory?: string;
  readonly cmdline?: string;
  /** Plugins of the next kernel (default: the same build). */
  readonly next?: readonly Plugin[];
}

/** Cold-boot a machine with `plugins` and open /dev/liveupdate in a VMM process. */
export function start(plugins: readonly Plugin[], opts: StartOptions = {}): Outgoing {
  const machine = createMachine({ memory: opts.memory ?? '8GiB' });
  const cmdline = opts.cmdline ?? CMDLINE;
  const k1 = boot(machine, { cmdline, plugins, release: '7.1.0' });
  const p = k1.spawn('vmm');
  return { machine, cfg: { cmdline, plugins: opts.next ?? plugins, release: '7.2.0' }, k1, p, dev: openLiveupdate(p) };
}

export interface Incoming {
  readonly k2: Kernel;
  readonly p2: Process;
  readonly dev2: number;
}

/** Boot the next kernel from the bytes the jump left behind, and open /dev/liveupdate in it. */
export function bootNext(o: Outgoing): Incoming {
  const k2 = Kernel.boot(o.machine, o.cfg);
  const p2 = k2.spawn('vmm');
  return { k2, p2, dev2: openLiveupdate(p2) };
}

/** The whole live update: jump, then boot. */
export function liveUpdate(o: Outgoing): Incoming {
  o.k1.kexecJump(o.cfg);
  return bootNext(o);
}

/** One session holding one memfd under `token`: returns the session fd. */
export function sessionWith(o: Outgoing, name: string, fds: ReadonlyArray<readonly [fd: number, token: number]>, preserve: (p: Process, s: number, fd: number, token: number) => void): number {
  const s = createSession(o.p, o.dev, name);
  for (const [fd, token] of fds) preserve(o.p, s, fd, token);
  return s;
}

/** RETRIEVE_SESSION then RETRIEVE_FD. */
export function retrieveOne(i: Incoming, session: string, token: number): { sfd: number; fd: number } {
  const sfd = retrieveSession(i.p2, i.dev2, session);
  return { sfd, fd: retrieveFd(i.p2, sfd, token) };
}

export interface HandedOverFile {
  readonly session: string;
  readonly compatible: string;
  readonly data: bigint;
  readonly token: bigint;
  /** Physical address of this luo_file_ser entry. */
  readonly entryPhys: number;
}

const u64At = (m: Machine, phys: number): number => m.memory.readU64Number(phys);

/** Entries of a kho_block chain: [phys of each entry], respecting each block's count. */
function blockEntries(m: Machine, head: number, entrySize: number): number[] {
  const out: number[] = [];
  const hdr = abi.block.khoBlockHeader.size;
  for (let b = head; b !== 0; b = u64At(m, b)) {
    const count = u64At(m, b + 8);
    for (let i = 0; i < count; i++) out.push(b + hdr + i * entrySize);
  }
  return out;
}

/**
 * Every preserved file of the handover, read from bytes only: KHO root FDT → 'LUO' subtree →
 * luo_ser.sessions_pa → luo_session_ser chain → luo_file_ser chains. Call it after the jump.
 */
export function handedOverFiles(o: Outgoing): HandedOverFile[] {
  const kho = o.k1.khoOut;
  const luo = kho?.subtreeList.find((s) => s.name === 'LUO');
  if (!luo) throw new Error('no LUO subtree in the handover');
  const { luoSer, luoSessionSer, luoFileSer } = abi.luo;
  const ser = luoSer.decode(o.machine.memory.read(luo.phys, luoSer.size));
  const files: HandedOverFile[] = [];
  for (const sp of blockEntries(o.machine, Number(ser.sessions_pa), luoSessionSer.size)) {
    const s = luoSessionSer.decode(o.machine.memory.read(sp, luoSessionSer.size));
    for (const fp of blockEntries(o.machine, Number(s.files), luoFileSer.size)) {
      const f = luoFileSer.decode(o.machine.memory.read(fp, luoFileSer.size));
      files.push({ session: s.name, compatible: f.compatible, data: f.data, token: f.token, entryPhys: fp });
    }
  }
  return files;
}

/** Every session of the handover, read from bytes: its name, its luo_session_ser entry and its file set pointer. */
export function handedOverSessions(o: Outgoing): Array<{ name: string; entryPhys: number; files: bigint }> {
  const luo = o.k1.khoOut?.subtreeList.find((s) => s.name === 'LUO');
  if (!luo) throw new Error('no LUO subtree in the handover');
  const { luoSer, luoSessionSer } = abi.luo;
  const ser = luoSer.decode(o.machine.memory.read(luo.phys, luoSer.size));
  return blockEntries(o.machine, Number(ser.sessions_pa), luoSessionSer.size).map((sp) => {
    const s = luoSessionSer.decode(o.machine.memory.read(sp, luoSessionSer.size));
    return { name: s.name, entryPhys: sp, files: s.files };
  });
}

/** The FLB entries of the handover (luo_ser.flbs_pa → luo_flb_header_ser + luo_flb_ser[count]), from bytes. */
export function handedOverFlbs(o: Outgoing): Array<{ name: string; data: bigint; count: bigint }> {
  const luo = o.k1.khoOut?.subtreeList.find((s) => s.name === 'LUO');
  if (!luo) throw new Error('no LUO subtree in the handover');
  const { luoSer, luoFlbHeaderSer, luoFlbSer } = abi.luo;
  const flbs = Number(luoSer.decode(o.machine.memory.read(luo.phys, luoSer.size)).flbs_pa);
  const hdr = luoFlbHeaderSer.decode(o.machine.memory.read(flbs, luoFlbHeaderSer.size));
  const out: Array<{ name: string; data: bigint; count: bigint }> = [];
  for (let i = 0; i < Number(hdr.count); i++) {
    out.push(luoFlbSer.decode(o.machine.memory.read(flbs + luoFlbHeaderSer.size + i * luoFlbSer.size, luoFlbSer.size)));
  }
  return out;
}

/** The handed-over file with `token` in `session`. */
export function handedOver(o: Outgoing, session: string, token: number): HandedOverFile {
  const f = handedOverFiles(o).find((x) => x.session === session && x.token === BigInt(token));
  if (!f) throw new Error(`no handed-over file ${session}/${token}`);
  return f;
}

export const readV1 = (m: Machine, phys: number) => memfdAbi.memfdLuoSerV1.decode(m.memory.read(phys, memfdAbi.memfdLuoSerV1.size));
export const readV2 = (m: Machine, phys: number) => memfdAbi.memfdLuoSerV2.decode(m.memory.read(phys, memfdAbi.memfdLuoSerV2.size));
export const readV3 = (m: Machine, phys: number) => memfdAbi.memfdLuoSerV3.decode(m.memory.read(phys, memfdAbi.memfdLuoSerV3.size));

/** The physical address of folio record i of an upstream (v1/v2) folio array, found through its kho_vmalloc chunks. */
export function folioRecordPhys(m: Machine, foliosFirst: bigint, i: number): number {
  const { KHO_VMALLOC_SIZE, KHO_VMALLOC_CHUNK_NEXT_OFFSET, KHO_VMALLOC_CHUNK_PHYS_OFFSET } = abi.kho;
  const recordsPerPage = PAGE_SIZE / memfdAbi.memfdLuoFolioSer.size;
  const run = Math.floor(i / recordsPerPage);
  let chunk = Number(foliosFirst);
  for (let k = 0; k < Math.floor(run / KHO_VMALLOC_SIZE); k++) chunk = u64At(m, chunk + KHO_VMALLOC_CHUNK_NEXT_OFFSET);
  const page = u64At(m, chunk + KHO_VMALLOC_CHUNK_PHYS_OFFSET + 8 * (run % KHO_VMALLOC_SIZE));
  return page + (i % recordsPerPage) * memfdAbi.memfdLuoFolioSer.size;
}

/** The physical address of the KHO xarray slot holding `index`, walked from the root. */
export function xarraySlotPhys(m: Machine, root: bigint, index: number): number {
  const { KHO_XA_DEPTH, KHO_XA_LEVEL_BITS, KHO_XA_SLOTS } = xarrayAbi;
  let node = Number(root);
  for (let level = KHO_XA_DEPTH - 1; level >= 1; level--) {
    node = u64At(m, node + 8 * (Math.floor(index / 2 ** (KHO_XA_LEVEL_BITS * level)) % KHO_XA_SLOTS));
    if (node === 0) throw new Error(`no xarray node for index ${index} at level ${level}`);
  }
  return node + 8 * (index % KHO_XA_SLOTS);
}

/** Three pages with only pages 0 and 2 written (patterns 1 and 3), pos 777, seals SHRINK | GROW. */
export function sealedSparseMemfd(p: Process, name: string): number {
  const fd = memfdCreate(p, name, MFD_ALLOW_SEALING);
  p.ftruncate(fd, 3 * PAGE_SIZE);
  p.pwrite(fd, pattern(PAGE_SIZE, 1), 0);
  p.pwrite(fd, pattern(PAGE_SIZE, 3), 2 * PAGE_SIZE);
  p.lseek(fd, 777, SEEK_SET);
  p.fcntl(fd, F_ADD_SEALS, memfdAbi.F_SEAL_SHRINK | memfdAbi.F_SEAL_GROW);
  return fd;
}

/** A memfd of `pages` pages holding pattern(pages pages, seed). */
export function patternMemfd(p: Process, name: string, pages: number, seed: number): number {
  const fd = memfdCreate(p, name, 0);
  p.pwrite(fd, pattern(pages * PAGE_SIZE, seed), 0);
  return fd;
}

/** Session 'vm' with `fds` preserved as tokens 1, 2, …, then the jump. */
export function handOverAs(o: Outgoing, fds: readonly number[]): void {
  const s = createSession(o.p, o.dev, 'vm');
  fds.forEach((fd, i) => preserveFd(o.p, s, fd, i + 1));
  o.k1.kexecJump(o.cfg);
}
