/**
 * A kernel instance on a machine. It boots from (machine, boot params) alone; kexec() runs
 * the reboot path and boots the next kernel, after which this one is dead and every call on
 * it throws. Nothing but emulated memory and the boot parameters crosses.
 */
import { PAGE_SIZE, PfnRanges, unionRanges, type Machine } from '@liveupdate/hw';
import { KHO_SCRATCH_SEGMENT_ALIGN, khoData } from '../abi/kho.js';
import { KernelDeadError } from '../errno.js';
import { fdtTotalSize } from '../lib/fdt.js';
import { Mm } from '../mm/mm.js';
import { KhoOut } from '../kho/kho.js';
import { KhoIn, khoPopulate } from '../kho/kho-in.js';
import { readIncomingMetadata, writeOutgoingMetadata, type KexecMetadata } from '../kho/metadata.js';
import { encodeScratchArray, reserveScratch, scratchRanges, type ScratchArea } from '../kho/scratch.js';
import { KernelPanic, Luo } from '../luo/luo.js';
import { ErrnoError } from '../errno.js';
import { parseBootOptions, type BootOptions } from './cmdline.js';
import { checkPluginSdk, coreFormats, FormatRegistry, type FormatSpec, type KernelManifest } from './formats.js';
import type { KFile } from './file.js';
import { Process, type ProcessHost } from './process.js';
import { Debugfs } from './debugfs.js';
import { Dmesg } from './dmesg.js';
import { createBootHooks, createShutdownHooks, type BootHooks, type BootPhase, type ShutdownHooks, type ShutdownPhase } from './boot-hooks.js';
import { BOOT_PHASE_NS, SHUTDOWN_PHASE_NS } from './costs.js';

/** The first MiB is firmware's (BIOS, real-mode trampolines): never handed to the allocator. */
const FIRMWARE_PAGES = (1 << 20) / PAGE_SIZE;
/** A cold-booted kernel image sits at 16 MiB; 32 MiB covers text, data and early allocations. */
const IMAGE_PFN = (16 << 20) / PAGE_SIZE;
const IMAGE_PAGES = (32 << 20) / PAGE_SIZE;
/** sizeof(struct page) = 64: the memmap costs 1/64 of each node. */
const MEMMAP_DIVISOR = PAGE_SIZE / 64;
const PAGEBLOCK_PAGES = 512;
/** Incoming blobs larger than this are not exposed under kho/in/sub_fdts. */
const DEBUGFS_BLOB_MAX = 64 << 20;

/**
 * A plugin as the runtime sees it: it runs once at boot (late_initcall) and registers its
 * handlers, FLBs and hooks on the kernel. The SDK builds these from plugin definitions.
 */
export interface RuntimePlugin {
  readonly name: string;
  readonly version: string;
  /** The SDK range the plugin was built against; checked at boot. */
  readonly sdk?: string;
  /** Formats the plugin writes and reads: static, so a kernel image's manifest is known before it boots. */
  readonly formats?: readonly FormatSpec[];
  /**
   * Link time: before this kernel boots, tap its boot and shutdown phases
   * (`kernel.bootHooks`, `kernel.shutdownHooks`). Nothing else of the kernel is up yet.
   */
  init?(kernel: Kernel): void;
  setup(kernel: Kernel): void;
}

/** Override the core ABI ranges a kernel reads (to model kernels of other ABI generations). */
export interface CoreAbiRanges {
  readonly kho?: string;
  readonly luo?: string;
}

/** The manifest of a kernel image that has not booted yet (what kexec_file_load could read from it). */
export function imageManifest(config: BootConfig): KernelManifest {
  const reg = new FormatRegistry(config.release ?? '7.1.0', coreFormats(config.abi));
  for (const p of config.plugins ?? []) for (const f of p.formats ?? []) reg.register(f);
  return reg.manifest();
}

export interface BootConfig {
  /** Subsystem plugins of this kernel build, set up in order at late_initcall. */
  readonly plugins?: readonly RuntimePlugin[];
  readonly abi?: CoreAbiRanges;
  /** Used on a cold boot; after a kexec the command line comes from the boot parameters. */
  readonly cmdline?: string;
  /** uname -r of this kernel. */
  readonly release?: string;
  /** KEXEC_HANDOVER_DEBUG: reject preservation of scratch memory with -EINVAL. Default true. */
  readonly khoDebug?: boolean;
}

export interface KexecConfig extends BootConfig {
  readonly cmdline: string;
}

export class BootError extends Error {
  override readonly name = 'BootError';
}

let nextKernelId = 1;

export class Kernel implements ProcessHost {
  readonly id = nextKernelId++;
  readonly machine: Machine;
  readonly mm: Mm;
  readonly dmesg = new Dmesg();
  readonly debugfs = new Debugfs(() => this.assertAlive());
  readonly release: string;
  readonly cmdline: string;
  readonly options: BootOptions;
  /** kho_is_enabled() */
  khoEnabled: boolean;
  /** The outgoing handover; null when KHO is disabled. */
  khoOut: KhoOut | null = null;
  /** The incoming handover; null unless is_kho_boot(). */
  khoIn: KhoIn | null = null;
  scratch: readonly ScratchArea[] = [];
  /** From the incoming kexec-metadata, or null on a cold boot. */
  incomingMetadata: KexecMetadata | null = null;
  /** Kexec boots since the cold boot (0 on a cold boot). */
  readonly kexecCount: number;
  readonly luo: Luo<Kernel>;
  readonly plugins: readonly RuntimePlugin[];
  /** Formats this kernel reads and writes; its manifest is what a previous kernel negotiates against. */
  readonly formats: FormatRegistry;
  /** Boot phases in the kernel's order; plugins tap them from `init`. */
  readonly bootHooks: BootHooks<Kernel> = createBootHooks<Kernel>();
  /** The kexec shutdown path after a successful freeze. */
  readonly shutdownHooks: ShutdownHooks<Kernel> = createShutdownHooks<Kernel>();
  private readonly processes = new Map<number, Process>();
  private readonly devices = new Map<string, (proc: Process, flags: number) => KFile>();
  private nextPid = 1;
  private dead = false;
  /** Why the kernel panicked; null unless it did. */
  private panicReason: string | null = null;

  private constructor(machine: Machine, cmdline: string, config: BootConfig) {
    this.machine = machine;
    // The fault vector is this kernel's from its first instruction: a guard fault on any access
    // made while it runs (the hypervisor's GPF on a deposited page) is an oops it dies of.
    machine.memory.setGuardFaultTrap((fault, phys, length, write) => this.oops(fault, phys, length, write));
    this.mm = new Mm(machine);
    this.release = config.release ?? '7.1.0';
    this.cmdline = cmdline;
    this.options = parseBootOptions(cmdline);
    for (const e of this.options.errors) this.dmesg.log('warn', '', e);
    this.khoEnabled = this.options.kho;
    this.plugins = config.plugins ?? [];
    this.formats = new FormatRegistry(this.release, coreFormats(config.abi));
    for (const p of this.plugins) {
      checkPluginSdk(p.name, p.sdk);
      for (const f of p.formats ?? []) this.formats.register(f);
    }
    for (const p of this.plugins) p.init?.(this);

    const memblock = this.mm.memblock;
    memblock.reserve(0, FIRMWARE_PAGES);

    // Arch setup: kho_populate before any memblock allocation.
    const khoDataBytes = machine.bootParams.khoData;
    let populated = null;
    if (khoDataBytes) {
      const p = khoPopulate(machine.memory, khoDataBytes);
      if (typeof p === 'string') {
        this.dmesg.log('warn', 'KHO', `${p}: disabling KHO revival`);
      } else {
        populated = p;
        const sPfn = Math.floor(p.scratchArrayPhys / PAGE_SIZE);
        memblock.reserve(sPfn, Math.ceil((p.scratchArrayPhys + p.scratchArraySize) / PAGE_SIZE));
        memblock.setScratchOnly(scratchRanges(p.scratch));
      }
    }

    // The kernel image: at its link address on a cold boot, inside scratch after a KHO kexec.
    if (populated) {
      if (memblock.alloc(IMAGE_PAGES, PAGEBLOCK_PAGES) === null) throw new BootError('no room for the kernel image in the scratch areas');
    } else {
      memblock.reserve(IMAGE_PFN, IMAGE_PFN + IMAGE_PAGES, true);
    }
    for (const node of machine.numaNodes) {
      const pages = Math.ceil((node.endPfn - node.startPfn) / MEMMAP_DIVISOR);
      if (memblock.alloc(pages, 1, { nid: node.id }) === null) {
        throw new BootError(`cannot allocate the memmap of node ${node.id}${populated ? ' inside scratch' : ''}`);
      }
    }

    // kho_memory_init: reserve preserved memory (KHO boot) or reserve fresh scratch (cold boot).
    let kexecCount = 0;
    if (populated) {
      const kin = new KhoIn(this.mm, this.dmesg, populated);
      const bad = kin.reservePreserved();
      if (bad) {
        this.dmesg.log('warn', 'KHO', `failed to walk the preserved memory map: ${bad}; disabling KHO revival`);
      } else {
        this.khoIn = kin;
        this.dmesg.log('info', 'KHO', `reserved ${kin.reservedBlocks} preserved blocks (${kin.reservedPages} pages)`);
      }
      // After a KHO kexec the same scratch areas are reused, whatever kho_scratch= says.
      this.scratch = populated.scratch;
      memblock.clearScratchOnly();
    } else if (this.khoEnabled) {
      const areas = reserveScratch(memblock, this.options.scratch, machine.numaNodes.length);
      if (!areas) {
        this.dmesg.log('err', 'KHO', 'Failed to reserve scratch area, disabling kexec handover');
        this.khoEnabled = false;
      } else {
        this.scratch = areas;
      }
    }

    this.bootPhase('memblock');

    // Scratch is CMA from here on: movable allocations only, so never a preserved page.
    this.mm.startPageAllocator(scratchRanges(this.scratch));

    if (this.khoIn) {
      this.incomingMetadata = readIncomingMetadata(this.khoIn, this.mm, this.dmesg);
      // The kernel counts in a u32: 0xffffffff kexecs later it wraps to 0.
      kexecCount = ((this.incomingMetadata?.kexecCount ?? 0) + 1) >>> 0;
    }
    this.kexecCount = kexecCount;

    // kho_init (fs_initcall).
    if (this.khoEnabled) this.khoInit(config.khoDebug ?? true);
    this.registerKhoDebugfs();

    // LUO: early_initcall reads the incoming state (a bad one panics), late_initcall the outgoing.
    this.luo = new Luo<Kernel>({
      kernel: this, kernelId: this.id, mm: this.mm, dmesg: this.dmesg, khoOut: this.khoOut, khoIn: this.khoIn,
      khoEnabled: this.khoEnabled, liveupdate: this.options.liveupdate,
    });
    this.luo.earlyStartup();
    this.bootPhase('luoEarly');
    this.bootPhase('iommuInit');
    this.bootPhase('pciEnumerate');
    this.bootPhase('probe');
    this.luo.lateStartup();
    for (const p of this.plugins) p.setup(this);
    if (this.luo.enabled) {
      this.devices.set('/dev/liveupdate', () => this.luo.openDevice(this.id));
    }
    this.bootPhase('late');
  }

  /** Run a boot phase's hooks, then let its cost pass on the machine clock (devices tick through it). */
  private bootPhase(p: BootPhase): void {
    this.bootHooks[p].call(this);
    this.machine.clock.advance(BOOT_PHASE_NS[p]);
  }

  private shutdownPhase(p: ShutdownPhase): void {
    this.shutdownHooks[p].call(this);
    this.machine.clock.advance(SHUTDOWN_PHASE_NS[p]);
  }

  // ---- processes and the VFS ------------------------------------------------------------

  /** A userspace process with its own fd table. */
  spawn(name: string): Process {
    this.assertAlive();
    const p = new Process(this, this.nextPid++, name);
    this.processes.set(p.pid, p);
    return p;
  }

  /** misc_register: a character device path and its open. */
  registerDevice(path: string, open: (proc: Process, flags: number) => KFile): void {
    this.devices.set(path, open);
  }

  openPath(path: string, flags: number, proc: Process): KFile {
    const open = this.devices.get(path);
    if (!open) throw new ErrnoError('ENOENT', 'open', path);
    return open(proc, flags);
  }

  onExit(proc: Process): void { this.processes.delete(proc.pid); }

  /** Boot a kernel on `machine`: a cold boot, or the next kernel after a kexec. */
  static boot(machine: Machine, config: BootConfig = {}): Kernel {
    const cmdline = machine.bootCount === 0 ? machine.powerOn(config.cmdline ?? '').cmdline : machine.bootParams.cmdline;
    return new Kernel(machine, cmdline, config);
  }

  get isDead(): boolean { return this.dead; }
  /** The panic message if this kernel panicked (null if it is alive or kexec'd away). */
  get panicked(): string | null { return this.panicReason; }
  /** is_kho_boot() */
  get isKhoBoot(): boolean { return this.khoIn !== null; }

  /** Throws once the kernel has kexec'd away. */
  assertAlive(): void {
    if (!this.dead) return;
    if (this.panicReason !== null) throw new KernelDeadError(`kernel ${this.release} is dead: it panicked (${this.panicReason})`);
    throw new KernelDeadError(`kernel ${this.release} is dead: it kexec'd into the next kernel`);
  }

  /**
   * panic(): log it, and the kernel is dead (every later call throws KernelDeadError). Returns
   * the KernelPanic for the caller to throw to whoever made the call.
   */
  panic(reason: string, cause?: unknown): KernelPanic {
    this.dmesg.log('err', '', `Kernel panic - not syncing: ${reason}`);
    if (this.panicReason === null) this.panicReason = reason;
    this.dead = true;
    return new KernelPanic(`kernel ${this.release}: Kernel panic - not syncing: ${reason}`, cause === undefined ? undefined : { cause });
  }

  /** A fatal fault on a memory access made while this kernel runs: the oops, then the panic. */
  private oops(fault: unknown, phys: number, length: number, write: boolean): KernelPanic {
    const what = fault instanceof Error ? fault.message : String(fault);
    this.dmesg.log('err', '', `Oops: ${write ? 'write' : 'read'} of ${length} byte(s) at 0x${phys.toString(16)}: ${what}`);
    return this.panic('Fatal exception', fault);
  }

  private khoInit(debugChecks: boolean): void {
    const out = KhoOut.create(this.mm, this.scratch, debugChecks);
    if (!out) {
      this.dmesg.log('err', 'KHO', 'failed to initialize KHO, disabling kexec handover');
      this.khoEnabled = false;
      return;
    }
    this.khoOut = out;
    writeOutgoingMetadata(out, this.mm, this.release, this.kexecCount);
  }

  private registerKhoDebugfs(): void {
    const mem = this.machine.memory;
    const text = (lines: string[]): Uint8Array => new TextEncoder().encode(lines.map((l) => `${l}\n`).join(''));
    const out = this.khoOut;
    if (out) {
      this.debugfs.register('kho/out', {
        list: () => ['fdt', 'scratch_phys', 'scratch_len', ...out.subtreeList.map((s) => `sub_fdts/${s.name}`)],
        read: (name) => {
          if (name === 'fdt') return mem.read(out.fdtPhys, fdtTotalSize(mem.read(out.fdtPhys, PAGE_SIZE)));
          if (name === 'scratch_phys') return text(this.scratch.map((a) => `0x${a.addr.toString(16)}`));
          if (name === 'scratch_len') return text(this.scratch.map((a) => `0x${a.size.toString(16)}`));
          const sub = out.subtreeList.find((s) => `sub_fdts/${s.name}` === name);
          return sub ? mem.read(sub.phys, sub.size) : undefined;
        },
      });
    }
    const kin = this.khoIn;
    if (kin) {
      const valid = (): Array<{ name: string; phys: number; size: number }> => {
        const subs: Array<{ name: string; phys: number; size: number }> = [];
        for (const c of kin.root.children) {
          try {
            const blob = kin.retrieveSubtree(c.name);
            // A hostile blob-size must not make a debugfs read allocate gigabytes.
            if (blob.size <= DEBUGFS_BLOB_MAX) subs.push({ name: c.name, ...blob });
          } catch { /* skipped with a warning upstream */ }
        }
        return subs;
      };
      this.debugfs.register('kho/in', {
        list: () => ['fdt', ...valid().map((s) => `sub_fdts/${s.name}`)],
        read: (name) => {
          // Like out/fdt, the blob is fdt_totalsize() bytes, not the fdt_size of the boot parameters.
          if (name === 'fdt') return mem.read(kin.fdtPhys, fdtTotalSize(mem.read(kin.fdtPhys, kin.populated.fdtSize)));
          const sub = valid().find((s) => `sub_fdts/${s.name}` === name);
          return sub ? mem.read(sub.phys, sub.size) : undefined;
        },
      });
    }
  }

  /**
   * The machine half of kernel_kexec(): place the scratch array in scratch, compute what must
   * survive, mark this kernel dead and cross the boundary. The next kernel is booted by the
   * caller (here: kexec(); a test: a worker thread).
   */
  kexecJump(next: KexecConfig | string): void {
    this.assertAlive();
    const target = typeof next === 'string' ? { cmdline: next } : next;
    const cmdline = target.cmdline;
    // An image whose plugins this runtime's SDK cannot load would never come up: refuse now.
    for (const p of target.plugins ?? this.plugins) checkPluginSdk(p.name, p.sdk);
    // Before any freeze: every format in use must be readable by the target, or nothing happens.
    if (this.khoOut) {
      const inUse = new Set<string>();
      for (const s of this.luo.sessions.outgoing) for (const f of s.fileSet.files) if (f.handler.format) inUse.add(f.handler.format);
      this.formats.negotiate(imageManifest({ ...target, plugins: target.plugins ?? this.plugins }), inUse);
    }
    // kernel_kexec → liveupdate_reboot: a freeze failure is rolled back and returned; we keep running.
    try {
      this.luo.reboot();
    } catch (e) {
      this.formats.reset();
      throw e;
    }
    // kernel_restart_prepare → device_shutdown → syscore_shutdown: no way back from here.
    this.shutdownPhase('reboot');
    this.shutdownPhase('deviceShutdown');
    this.shutdownPhase('syscoreShutdown');
    let survivors = new PfnRanges();
    let khoDataBytes: Uint8Array | undefined;
    const out = this.khoOut;
    if (out) {
      const array = encodeScratchArray(this.scratch);
      const place = this.placeSegment(array.length);
      this.machine.memory.write(place, array);
      const kept = out.survivors();
      const segPages = PfnRanges.of([place / PAGE_SIZE, Math.ceil((place + array.length) / PAGE_SIZE)]);
      survivors = unionRanges(kept.ranges, segPages);
      khoDataBytes = khoData.encode({
        fdt_addr: BigInt(out.fdtPhys), fdt_size: BigInt(PAGE_SIZE),
        scratch_addr: BigInt(place), scratch_size: BigInt(array.length),
      });
      this.dmesg.log('info', 'KHO', `handing over ${kept.blocks} preserved blocks, ${kept.nodes} tracker pages`);
    }
    this.shutdownPhase('beforeJump');
    this.dead = true;
    this.machine.kexec({ survivors, params: khoDataBytes ? { cmdline, khoData: khoDataBytes } : { cmdline } });
  }

  /** kexec -s: the reboot path, then the next kernel boots from bytes. */
  kexec(next: KexecConfig): Kernel {
    this.kexecJump(next);
    return Kernel.boot(this.machine, next);
  }

  /** kho_locate_mem_hole: kexec segments go top-down into a scratch area, 64 KiB aligned. */
  private placeSegment(size: number): number {
    const sorted = [...this.scratch].sort((a, b) => b.addr - a.addr);
    for (const a of sorted) {
      const at = Math.floor((a.addr + a.size - size) / KHO_SCRATCH_SEGMENT_ALIGN) * KHO_SCRATCH_SEGMENT_ALIGN;
      if (at >= a.addr) return at;
    }
    throw new BootError('no scratch area can hold the scratch array (EADDRNOTAVAIL)');
  }
}

export const boot = (machine: Machine, config: BootConfig = {}): Kernel => Kernel.boot(machine, config);
