/**
 * /dev/kvm, VM files and vCPU files (virt/kvm/kvm_main.c, reduced): the ioctls take and
 * return the uAPI's bytes (./abi/kvm.ts), and the helpers below wrap them the way the KVM
 * selftests' library does. A vCPU is the model vCPU of @liveupdate/hw; its guest physical
 * memory is whatever the VM's guest_memfd-backed memslots map.
 */
import {
  PAGE_SIZE, TRANSLATE_FAULT, TRANSLATE_HWPOISON, TRANSLATE_MMIO, Vcpu, type Translate,
} from '@liveupdate/hw';
import { ErrnoError, Inode, KFile, type FileOperations, type Kernel, type Process } from '@liveupdate/sdk';
import {
  GUEST_MEMFD_FLAG_INIT_SHARED, GUEST_MEMFD_FLAG_MMAP, GUEST_MEMFD_FLAG_NO_DIRECT_MAP,
  KVM_API_VERSION, KVM_CAP_GUEST_MEMFD, KVM_CAP_MEMORY_FAULT_INFO, KVM_CAP_USER_MEMORY2, KVM_CAP_VM_TYPES,
  KVM_CHECK_EXTENSION, KVM_CREATE_GUEST_MEMFD, KVM_CREATE_VCPU, KVM_CREATE_VM, KVM_EXIT_HLT, KVM_EXIT_INTERNAL_ERROR,
  KVM_EXIT_INTR, KVM_EXIT_MEMORY_FAULT, KVM_EXIT_MMIO, KVM_GET_API_VERSION, KVM_GET_REGS, KVM_GET_VCPU_MMAP_SIZE,
  KVM_INTERNAL_ERROR_EMULATION, KVM_MEM_GUEST_MEMFD, KVM_RUN, KVM_RUN_EXIT_UNION, KVM_RUN_MMAP_SIZE,
  KVM_SET_REGS, KVM_SET_USER_MEMORY_REGION2, KVM_USER_MEM_SLOTS, KVM_VM_TYPES_MODELED, KVM_X86_DEFAULT_VM,
  hasPrivateMem, kvmCreateGuestMemfd, kvmRegs, kvmRunHead, kvmRunInternal, kvmRunMemoryFault, kvmRunMmio,
  kvmUserspaceMemoryRegion2,
} from './abi/kvm.js';
import { FAULT_HWPOISON, FAULT_NEEDS_ALLOC, GmemInode, gmemFile, gmemOf, isGuestMemfd } from './gmem.js';

/** Instructions one KVM_RUN may retire before it returns with KVM_EXIT_INTR (the VMM's timer signal). */
export const KVM_RUN_QUANTUM = 100_000;

interface Memslot {
  readonly slot: number;
  readonly gpa: number;
  readonly size: number;
  readonly gmem: GmemInode;
  readonly gmemOffset: number;
}

let nextVmId = 1;

/** struct kvm, reduced. */
export class KvmVm {
  readonly id = nextVmId++;
  readonly memslots = new Map<number, Memslot>();
  readonly vcpus = new Map<number, KvmVcpu>();
  /** kvm_vm_dead(): every ioctl is EIO from then on. */
  dead = false;
  /** KVM_BUG_ON() fired: the VM is dead and bugged. */
  bugged = false;
  /** users_count: the VM file and every guest_memfd file pin it. */
  private users = 0;
  /** The VM file was released (its last fd closed, or LUO let go of it). */
  fileReleased = false;
  /** vCPUs of this VM preserved with kvm_vcpu_luo_v1 (OrphanVM): the VM hands over its second-stage table. */
  preservedVcpus = 0;
  /** The VM's struct file (LUO resolves a guest_memfd's vm_token from it). */
  file: KFile | null = null;
  destroyed = false;
  readonly inode = new Inode(this);

  constructor(readonly kernel: Kernel, readonly type: number) {}

  get(): void { this.users++; }
  put(): void {
    if (--this.users === 0) this.destroy();
  }

  private destroy(): void {
    this.destroyed = true;
    this.memslots.clear();
    this.vcpus.clear();
  }

  /** gpa → host physical address through the memslots, for the vCPUs. */
  readonly translate: Translate = (gpa) => {
    for (const s of this.memslots.values()) {
      if (gpa < s.gpa || gpa >= s.gpa + s.size) continue;
      const off = s.gmemOffset + (gpa - s.gpa);
      const pfn = s.gmem.faultPage(Math.floor(off / PAGE_SIZE));
      if (pfn === FAULT_NEEDS_ALLOC) return TRANSLATE_FAULT;
      if (pfn === FAULT_HWPOISON) return TRANSLATE_HWPOISON;
      return pfn * PAGE_SIZE + (off % PAGE_SIZE);
    }
    return TRANSLATE_MMIO;
  };
}

export class KvmVcpu {
  readonly cpu: Vcpu;
  /** The mmap'ed struct kvm_run page. */
  readonly run = new Uint8Array(KVM_RUN_MMAP_SIZE);
  /** Instructions per KVM_RUN before the VMM's timer signal ends it. */
  quantum = KVM_RUN_QUANTUM;
  /** An exit that happened while no VMM could see it (a caretaker stopped on it): the next KVM_RUN reports it. */
  pendingExit: { readonly kind: 'hlt' } | { readonly kind: 'mmio'; readonly gpa: number; readonly data: bigint } | { readonly kind: 'fault'; readonly gpa: number } | null = null;
  constructor(readonly vm: KvmVm, readonly id: number) {
    this.cpu = new Vcpu(id, vm.kernel.machine.memory, vm.kernel.machine.clock);
  }
}

const argU64 = (arg: Uint8Array): number => (arg.length >= 8 ? Number(new DataView(arg.buffer, arg.byteOffset, 8).getBigUint64(0, true)) : 0);

function checkExtension(cap: number): number {
  if (cap === KVM_CAP_USER_MEMORY2 || cap === KVM_CAP_GUEST_MEMFD || cap === KVM_CAP_MEMORY_FAULT_INFO) return 1;
  if (cap === KVM_CAP_VM_TYPES) return KVM_VM_TYPES_MODELED.reduce((m: number, t: number) => m | (1 << t), 0);
  return 0;
}

const kvmDevFops: FileOperations = {
  kind: '/dev/kvm',
  ioctl(_file, cmd, arg, proc) {
    if (cmd === KVM_GET_API_VERSION) return KVM_API_VERSION;
    if (cmd === KVM_CHECK_EXTENSION) return checkExtension(argU64(arg));
    if (cmd === KVM_GET_VCPU_MMAP_SIZE) return KVM_RUN_MMAP_SIZE;
    if (cmd === KVM_CREATE_VM) {
      const type = argU64(arg);
      if (!(KVM_VM_TYPES_MODELED as readonly number[]).includes(type)) throw new ErrnoError('EINVAL', 'KVM_CREATE_VM', `VM type ${type}`);
      return proc.fdInstall(vmFile(proc.kernel, new KvmVm(proc.kernel, type)), true);
    }
    throw new ErrnoError('ENOTTY', 'ioctl');
  },
};

const vmFops: FileOperations = {
  kind: 'anon_inode:kvm-vm',
  ioctl(file, cmd, arg, proc) {
    const vm = vmOf(file);
    if (vm.dead) throw new ErrnoError('EIO', 'ioctl', 'VM is dead');
    if (cmd === KVM_CREATE_VCPU) return createVcpu(proc, vm, argU64(arg));
    if (cmd === KVM_SET_USER_MEMORY_REGION2) { setMemoryRegion(proc, vm, arg); return 0; }
    if (cmd === KVM_CREATE_GUEST_MEMFD) return createGuestMemfd(proc, vm, arg);
    if (cmd === KVM_CHECK_EXTENSION) return checkExtension(argU64(arg));
    throw new ErrnoError('ENOTTY', 'ioctl');
  },
  release(file) {
    const vm = vmOf(file);
    vm.fileReleased = true;
    vm.put();
  },
};

export function vmFile(kernel: Kernel, vm: KvmVm): KFile {
  vm.get();
  const file = new KFile(vmFops, vm.inode, vm, 0o2, kernel.id);
  vm.file = file;
  return file;
}

export function isKvmVm(file: KFile): boolean { return file.inode.owner instanceof KvmVm; }
export function vmOf(file: KFile): KvmVm {
  const vm = file.inode.owner;
  if (!(vm instanceof KvmVm)) throw new ErrnoError('EINVAL', 'kvm', 'not a KVM VM file');
  return vm;
}

function createVcpu(proc: Process, vm: KvmVm, id: number): number {
  return proc.fdInstall(vcpuFile(proc.kernel, vm, id), true);
}

/** kvm_vm_ioctl_create_vcpu: ids below KVM_MAX_VCPU_IDS (4096), unique per VM. */
export function vcpuFile(kernel: Kernel, vm: KvmVm, id: number): KFile {
  if (!Number.isInteger(id) || id < 0 || id >= 4096) throw new ErrnoError('EINVAL', 'KVM_CREATE_VCPU', `vcpu id ${id}`);
  if (vm.vcpus.has(id)) throw new ErrnoError('EEXIST', 'KVM_CREATE_VCPU', `vcpu ${id}`);
  const v = new KvmVcpu(vm, id);
  vm.vcpus.set(id, v);
  vm.get();
  return new KFile(vcpuFops, new Inode(v), v, 0o2, kernel.id);
}

/** kvm_gmem_create: size page aligned and non-zero; flags the VM supports (INIT_SHARED only without private memory). */
function createGuestMemfd(proc: Process, vm: KvmVm, arg: Uint8Array): number {
  if (arg.length < kvmCreateGuestMemfd.size) throw new ErrnoError('EFAULT', 'KVM_CREATE_GUEST_MEMFD');
  const a = kvmCreateGuestMemfd.decode(arg);
  if (a.reserved.some((b) => b !== 0)) throw new ErrnoError('EINVAL', 'KVM_CREATE_GUEST_MEMFD', 'reserved');
  const supported = BigInt(GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_NO_DIRECT_MAP | (hasPrivateMem(vm.type) ? 0 : GUEST_MEMFD_FLAG_INIT_SHARED));
  if (a.flags & ~supported) throw new ErrnoError('EINVAL', 'KVM_CREATE_GUEST_MEMFD', `flags 0x${a.flags.toString(16)}`);
  if (a.size === 0n || a.size % BigInt(PAGE_SIZE) !== 0n || a.size > BigInt(Number.MAX_SAFE_INTEGER)) throw new ErrnoError('EINVAL', 'KVM_CREATE_GUEST_MEMFD', `size ${a.size}`);
  const g = new GmemInode(proc.kernel, vm, Number(a.size), Number(a.flags));
  return proc.fdInstall(gmemFile(proc.kernel, g), true);
}

/** kvm_set_memory_region for guest_memfd-backed slots (host-VA slots are not modeled). */
function setMemoryRegion(proc: Process, vm: KvmVm, arg: Uint8Array): void {
  if (arg.length < kvmUserspaceMemoryRegion2.size) throw new ErrnoError('EFAULT', 'KVM_SET_USER_MEMORY_REGION2');
  const r = kvmUserspaceMemoryRegion2.decode(arg);
  const [gpa, size, off] = [Number(r.guest_phys_addr), Number(r.memory_size), Number(r.guest_memfd_offset)];
  if (r.slot >= KVM_USER_MEM_SLOTS) throw new ErrnoError('EINVAL', 'KVM_SET_USER_MEMORY_REGION2', `slot ${r.slot}`);
  if (gpa % PAGE_SIZE !== 0 || size % PAGE_SIZE !== 0 || off % PAGE_SIZE !== 0) throw new ErrnoError('EINVAL', 'KVM_SET_USER_MEMORY_REGION2', 'not page aligned');
  const old = vm.memslots.get(r.slot);
  if (size === 0) {
    if (old) { old.gmem.bindings--; vm.memslots.delete(r.slot); }
    return;
  }
  if (!(r.flags & KVM_MEM_GUEST_MEMFD)) throw new ErrnoError('EINVAL', 'KVM_SET_USER_MEMORY_REGION2', 'this model maps guest memory from guest_memfd only');
  if (old) throw new ErrnoError('EINVAL', 'KVM_SET_USER_MEMORY_REGION2', `slot ${r.slot} is in use`);
  for (const s of vm.memslots.values()) if (gpa < s.gpa + s.size && s.gpa < gpa + size) throw new ErrnoError('EEXIST', 'KVM_SET_USER_MEMORY_REGION2', 'overlaps another slot');
  const file = proc.file(r.guest_memfd, 'KVM_SET_USER_MEMORY_REGION2');
  // kvm_gmem_bind: a guest_memfd of this VM, and the range inside it.
  if (!isGuestMemfd(file)) throw new ErrnoError('EINVAL', 'KVM_SET_USER_MEMORY_REGION2', 'not a guest_memfd');
  const g = gmemOf(file);
  if (g.kvm !== vm) throw new ErrnoError('EINVAL', 'KVM_SET_USER_MEMORY_REGION2', 'guest_memfd belongs to another VM');
  if (off + size > g.size) throw new ErrnoError('EINVAL', 'KVM_SET_USER_MEMORY_REGION2', 'beyond the guest_memfd');
  g.bindings++;
  vm.memslots.set(r.slot, { slot: r.slot, gpa, size, gmem: g, gmemOffset: off });
}

export const isKvmVcpu = (file: KFile): boolean => file.inode.owner instanceof KvmVcpu;
export function vcpuOf(file: KFile): KvmVcpu {
  const v = file.inode.owner;
  if (!(v instanceof KvmVcpu)) throw new ErrnoError('EINVAL', 'kvm', 'not a vCPU file');
  return v;
}

const vcpuFops: FileOperations = {
  kind: 'anon_inode:kvm-vcpu',
  ioctl(file, cmd, arg) {
    const v = vcpuOf(file);
    if (v.vm.dead) throw new ErrnoError('EIO', 'ioctl', 'VM is dead');
    if (cmd === KVM_RUN) return kvmRun(v);
    if (cmd === KVM_GET_REGS || cmd === KVM_SET_REGS) {
      if (arg.length < kvmRegs.size) throw new ErrnoError('EFAULT', cmd === KVM_GET_REGS ? 'KVM_GET_REGS' : 'KVM_SET_REGS');
      if (cmd === KVM_GET_REGS) {
        const s = v.cpu.saveState();
        const r = (i: number): bigint => s.regs[i] as bigint;
        arg.fill(0, 0, kvmRegs.size);
        kvmRegs.encodeInto(arg, 0, { rax: r(0), rbx: r(1), rcx: r(2), rdx: r(3), rsi: r(4), rdi: r(5), rsp: r(6), rbp: r(7), rip: BigInt(s.pc), rflags: 2n });
        return 0;
      }
      const r = kvmRegs.decode(arg);
      if (r.rip > BigInt(Number.MAX_SAFE_INTEGER)) throw new ErrnoError('EINVAL', 'KVM_SET_REGS', 'rip');
      v.cpu.loadState({ regs: [r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rsp, r.rbp], pc: Number(r.rip) });
      return 0;
    }
    throw new ErrnoError('ENOTTY', 'ioctl');
  },
  release(file) { vcpuOf(file).vm.put(); },
};

/** KVM_RUN: enter the guest until an exit; kvm_run carries the exit the way userspace reads it. */
function kvmRun(v: KvmVcpu): number {
  const run = v.run;
  const head = kvmRunHead.decode(run);
  const setExit = (reason: number): void => { new DataView(run.buffer).setUint32(kvmRunHead.offsets.exit_reason, reason, true); };
  // kvm_arch_vcpu_ioctl_run: immediate_exit (or a pending signal) is -EINTR with KVM_EXIT_INTR.
  if (head.immediate_exit) { setExit(KVM_EXIT_INTR); throw new ErrnoError('EINTR', 'KVM_RUN', 'immediate_exit'); }
  // Complete an MMIO load with the data userspace left in kvm_run.mmio.
  if (v.cpu.mmioLoadPending) {
    const m = kvmRunMmio.decode(run, KVM_RUN_EXIT_UNION);
    v.cpu.completeMmioLoad(new DataView(m.data.buffer, m.data.byteOffset, 8).getBigUint64(0, true));
  }
  run.fill(0, KVM_RUN_EXIT_UNION);
  const pending = v.pendingExit;
  v.pendingExit = null;
  const exit = pending === null ? v.cpu.run(v.vm.translate, v.quantum)
    : pending.kind === 'hlt' ? { reason: 'hlt' as const }
      : pending.kind === 'mmio' ? { reason: 'mmio' as const, gpa: pending.gpa, isWrite: true, data: pending.data, len: 8 as const }
        : { reason: 'fault' as const, gpa: pending.gpa, isWrite: true, hwpoison: false };
  switch (exit.reason) {
    case 'hlt': setExit(KVM_EXIT_HLT); return 0;
    case 'mmio': {
      setExit(KVM_EXIT_MMIO);
      const data = new Uint8Array(8);
      new DataView(data.buffer).setBigUint64(0, exit.data, true);
      kvmRunMmio.encodeInto(run, KVM_RUN_EXIT_UNION, { phys_addr: BigInt(exit.gpa), data, len: exit.len, is_write: exit.isWrite ? 1 : 0 });
      return 0;
    }
    case 'fault':
      // kvm_prepare_memory_fault_exit: a shared access (flags 0) to the page; KVM_RUN fails.
      setExit(KVM_EXIT_MEMORY_FAULT);
      kvmRunMemoryFault.encodeInto(run, KVM_RUN_EXIT_UNION, { flags: 0n, gpa: BigInt(exit.gpa - (exit.gpa % PAGE_SIZE)), size: BigInt(PAGE_SIZE) });
      throw new ErrnoError(exit.hwpoison ? 'EHWPOISON' : 'EFAULT', 'KVM_RUN', `memory fault at gpa 0x${exit.gpa.toString(16)}`);
    // The VMM's timer signal ended the run: -EINTR with KVM_EXIT_INTR, as for any pending signal.
    case 'budget': setExit(KVM_EXIT_INTR); throw new ErrnoError('EINTR', 'KVM_RUN', 'signal pending');
    case 'internal':
      setExit(KVM_EXIT_INTERNAL_ERROR);
      kvmRunInternal.encodeInto(run, KVM_RUN_EXIT_UNION, { suberror: KVM_INTERNAL_ERROR_EMULATION, ndata: 0 });
      return 0;
  }
}

/** Register /dev/kvm in a kernel (the kvm module's misc device). */
export function registerKvmDevice(kernel: Kernel): void {
  kernel.registerDevice('/dev/kvm', () => new KFile(kvmDevFops, new Inode(), null, 0o2, kernel.id));
}

// ---- the selftests' library, over the raw ioctls ---------------------------------------

const u64Arg = (n: number): Uint8Array => { const b = new Uint8Array(8); new DataView(b.buffer).setBigUint64(0, BigInt(n), true); return b; };

export function kvmCreateVm(proc: Process, kvmFd: number, type = KVM_X86_DEFAULT_VM): number {
  return proc.ioctl(kvmFd, KVM_CREATE_VM, u64Arg(type));
}

export function kvmCreateGuestMemfdFd(proc: Process, vmFd: number, size: number, flags: number): number {
  return proc.ioctl(vmFd, KVM_CREATE_GUEST_MEMFD, kvmCreateGuestMemfd.encode({ size: BigInt(size), flags: BigInt(flags), reserved: new Uint8Array(48) }));
}

export function kvmSetMemoryRegion2(proc: Process, vmFd: number, r: { slot: number; gpa: number; size: number; guestMemfd: number; guestMemfdOffset: number; flags?: number }): void {
  proc.ioctl(vmFd, KVM_SET_USER_MEMORY_REGION2, kvmUserspaceMemoryRegion2.encode({
    slot: r.slot, flags: r.flags ?? KVM_MEM_GUEST_MEMFD, guest_phys_addr: BigInt(r.gpa), memory_size: BigInt(r.size),
    userspace_addr: 0n, guest_memfd_offset: BigInt(r.guestMemfdOffset), guest_memfd: r.guestMemfd, pad1: 0, pad2: new Uint8Array(112),
  }));
}

export function kvmCreateVcpu(proc: Process, vmFd: number, id: number): number {
  return proc.ioctl(vmFd, KVM_CREATE_VCPU, u64Arg(id));
}

/** The vCPU's mmap'ed struct kvm_run (shared with the kernel, as mmap(vcpu_fd) gives). */
export function kvmRunPage(proc: Process, vcpuFd: number): Uint8Array {
  return vcpuOf(proc.file(vcpuFd, 'mmap')).run;
}

export function kvmGetRegs(proc: Process, vcpuFd: number): Uint8Array {
  const b = new Uint8Array(kvmRegs.size);
  proc.ioctl(vcpuFd, KVM_GET_REGS, b);
  return b;
}

export function kvmSetRegs(proc: Process, vcpuFd: number, regs: Uint8Array): void {
  proc.ioctl(vcpuFd, KVM_SET_REGS, regs);
}

/** Mark the VM dead, as kvm_vm_dead() or KVM_BUG_ON() does (a test hook for the EINVAL preserve rule). */
export function kvmVmKill(proc: Process, vmFd: number, bugged = false): void {
  const vm = vmOf(proc.file(vmFd, 'kvm_vm_dead'));
  vm.dead = true;
  vm.bugged = bugged;
}

/** The interval of the VMM's timer signal that ends a KVM_RUN with KVM_EXIT_INTR, in guest instructions. */
export function kvmVcpuSetQuantum(proc: Process, vcpuFd: number, insns: number): void {
  if (!Number.isSafeInteger(insns) || insns < 1) throw new ErrnoError('EINVAL', 'kvm_vcpu_quantum');
  vcpuOf(proc.file(vcpuFd, 'kvm_vcpu_quantum')).quantum = insns;
}
