/**
 * Shared scaffolding for the LUO tests: boot a kernel with the testfile plugin, open
 * /dev/liveupdate, and decode the serialized LUO graph straight from physical memory (the
 * way the next kernel sees it) so tests can check and corrupt bytes.
 */
import { createMachine, PAGE_SIZE, type Machine, type PhysMemory } from '@liveupdate/hw';
import { abi, boot, type Kernel, type Process, type RuntimePlugin } from '@liveupdate/runtime';
import { openLuo } from './client.js';
import { testFilePlugin, type TestFileOptions, type TestFilePlugin } from './testfile.js';

export const CMDLINE = 'kho=on liveupdate=on';

export interface LuoWorld {
  readonly machine: Machine;
  readonly k: Kernel;
  readonly plugin: TestFilePlugin;
  readonly proc: Process;
  readonly dev: number;
}

export interface BootLuoOptions {
  readonly memory?: string;
  readonly cmdline?: string;
  readonly testfile?: TestFileOptions;
  readonly extraPlugins?: readonly RuntimePlugin[];
}

/** A cold-booted kernel with the testfile plugin, a process and /dev/liveupdate open. */
export function bootLuo(opts: BootLuoOptions = {}): LuoWorld {
  const machine = createMachine({ memory: opts.memory ?? '4GiB' });
  const plugin = testFilePlugin(opts.testfile ?? {});
  const k = boot(machine, { cmdline: opts.cmdline ?? CMDLINE, plugins: [plugin, ...(opts.extraPlugins ?? [])], release: '7.1.0' });
  const proc = k.spawn('vmm');
  const dev = openLuo(proc);
  return { machine, k, plugin, proc, dev };
}

/** kexec into the next kernel with the same test plugin; a 'vmm' process there holds /dev/liveupdate. */
export function nextKernel(k1: Kernel, plugin: TestFilePlugin): { k2: Kernel; p: Process; d: number } {
  const k2 = k1.kexec({ cmdline: CMDLINE, plugins: [plugin] });
  const p = k2.spawn('vmm');
  return { k2, p, d: openLuo(p) };
}

export const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
export const dec = (b: Uint8Array): string => new TextDecoder().decode(b);

/** Deterministic bytes for file i (so any mix-up between files shows). */
export function pattern(i: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = (i * 2654435761 + 12345) >>> 0;
  for (let j = 0; j < length; j++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    out[j] = x >>> 24;
  }
  return out;
}

// ---- the serialized graph, decoded from bytes -------------------------------------------

export interface BlockView {
  readonly phys: number;
  readonly next: bigint;
  readonly count: bigint;
}

export interface FileEntryView {
  /** Physical address of the 64-byte luo_file_ser. */
  readonly phys: number;
  readonly compatible: string;
  readonly data: bigint;
  readonly token: bigint;
}

export interface SessionEntryView {
  /** Physical address of the 80-byte luo_session_ser. */
  readonly phys: number;
  readonly name: string;
  readonly files: bigint;
  readonly count: bigint;
  readonly fileBlocks: BlockView[];
  readonly fileEntries: FileEntryView[];
}

export interface LuoGraph {
  readonly luoSerPhys: number;
  readonly ser: ReturnType<typeof abi.luo.luoSer.decode>;
  readonly compatibleBytes: Uint8Array;
  readonly sessionBlocks: BlockView[];
  readonly sessions: SessionEntryView[];
}

/** Walk a kho_block chain (bounded, so a corrupted chain cannot hang a test). */
export function walkBlocks(mem: PhysMemory, head: bigint, limit = 20000): BlockView[] {
  const out: BlockView[] = [];
  for (let p = head; p !== 0n && out.length < limit;) {
    const hdr = abi.block.khoBlockHeader.decode(mem.read(Number(p), abi.block.khoBlockHeader.size));
    out.push({ phys: Number(p), next: hdr.next, count: hdr.count });
    p = hdr.next;
  }
  return out;
}

function entries(blocks: BlockView[], size: number): number[] {
  const per = Math.floor((PAGE_SIZE - abi.block.khoBlockHeader.size) / size);
  const out: number[] = [];
  for (const b of blocks) {
    for (let i = 0; i < Math.min(Number(b.count), per); i++) out.push(b.phys + abi.block.khoBlockHeader.size + i * size);
  }
  return out;
}

/** Decode the whole LUO handover from memory, starting at struct luo_ser. */
export function readLuoGraph(mem: PhysMemory, luoSerPhys: number): LuoGraph {
  const { luoSer, luoSessionSer, luoFileSer } = abi.luo;
  const raw = mem.read(luoSerPhys, luoSer.size);
  const ser = luoSer.decode(raw);
  const sessionBlocks = walkBlocks(mem, ser.sessions_pa);
  const sessions = entries(sessionBlocks, luoSessionSer.size).map((phys): SessionEntryView => {
    const s = luoSessionSer.decode(mem.read(phys, luoSessionSer.size));
    const fileBlocks = walkBlocks(mem, s.files);
    const fileEntries = entries(fileBlocks, luoFileSer.size).map((fp) => ({ phys: fp, ...luoFileSer.decode(mem.read(fp, luoFileSer.size)) }));
    return { phys, name: s.name, files: s.files, count: s.count, fileBlocks, fileEntries };
  });
  return { luoSerPhys, ser, compatibleBytes: raw.slice(0, 8), sessionBlocks, sessions };
}

/** The outgoing "LUO" blob of a kernel (readable after kexecJump: bytes, not objects). */
export function outgoingLuoPhys(k: Kernel): number {
  const sub = k.khoOut?.subtreeList.find((s) => s.name === abi.luo.LUO_KHO_ENTRY_NAME);
  if (!sub) throw new Error('no LUO subtree');
  return sub.phys;
}

/** Pages the outgoing KHO would hand over, as comparable data. */
export function survivorSnapshot(k: Kernel): { blocks: number; nodes: number; runs: Array<[number, number]> } {
  const s = k.khoOut?.survivors();
  if (!s) throw new Error('KHO is off');
  return { blocks: s.blocks, nodes: s.nodes, runs: [...s.ranges.runs()].map(([a, b]) => [a, b] as [number, number]) };
}
