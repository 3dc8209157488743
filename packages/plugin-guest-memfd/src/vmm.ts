/**
 * A small VMM over the raw KVM ioctls, shared by the scenario steps, the tests and the bench:
 * a guest program that counts and writes into its own RAM, VM setup with guest_memfd-backed
 * RAM, one KVM_RUN with its exit decoded, and pausing/resuming vCPUs through KVM_GET_REGS /
 * KVM_SET_REGS bytes (what a VMM keeps in memory that survives the update).
 */
import { createHash } from 'node:crypto';
import { OP, PAGE_SIZE, assemble } from '@liveupdate/hw';
import { ErrnoError, type Process } from '@liveupdate/sdk';
import {
  GUEST_MEMFD_FLAG_INIT_SHARED, GUEST_MEMFD_FLAG_MMAP, KVM_EXIT_MEMORY_FAULT, KVM_EXIT_MMIO, KVM_RUN,
  KVM_RUN_EXIT_UNION, KVM_X86_DEFAULT_VM, kvmRegs, kvmRunHead, kvmRunMemoryFault, kvmRunMmio,
} from './abi/kvm.js';
import { gmemOf, gmemStore } from './gmem.js';
import { kvmCreateGuestMemfdFd, kvmCreateVcpu, kvmCreateVm, kvmGetRegs, kvmRunPage, kvmSetMemoryRegion2, kvmSetRegs } from './kvm.js';

/** Where the guest's vCPU i keeps its counter (page 0, after the program). */
export const counterGpa = (i: number): number => 0x800 + 8 * i;
/** The MMIO doorbell each vCPU writes its final count to (no memslot maps it). */
export const DOORBELL_GPA = 0xf000_0000;
/** The marker vCPU i writes beside each count. */
export const vcpuTag = (i: number): bigint => 0xa0n + BigInt(i);

/**
 * The guest: vCPU i (r0 = its tag, r1 = its region, r7 = its counter) repeats `pages` times:
 * counter += 1; store the counter and the tag at the start of the next page of its region.
 * Then it rings the doorbell with the count and halts.
 */
export function counterProgram(pages: number): Uint8Array {
  return assemble([
    { op: OP.LI, rd: 3, imm: pages },
    { op: OP.LI, rd: 4, imm: PAGE_SIZE },
    { op: OP.LI, rd: 5, imm: DOORBELL_GPA },
    { op: OP.LD, rd: 2, rs: 7, imm: 0 }, // 0x18
    { op: OP.ADDI, rd: 2, rs: 2, imm: 1 },
    { op: OP.ST, rd: 2, rs: 7, imm: 0 },
    { op: OP.ST, rd: 2, rs: 1, imm: 0 },
    { op: OP.ST, rd: 0, rs: 1, imm: 8 },
    { op: OP.ADD, rd: 1, rs: 1, rt: 4 },
    { op: OP.BLT, rs: 2, rt: 3, imm: 0x18 },
    { op: OP.ST, rd: 2, rs: 5, imm: 0 },
    { op: OP.HLT },
  ]);
}

export interface GuestSpec {
  readonly vcpus: number;
  /** Pages each vCPU writes. */
  readonly pagesPerVcpu: number;
  readonly vmType?: number;
  readonly gmemFlags?: number;
  /** guest_memfd bytes beyond guest RAM, never mapped into the guest (the VMM's own save area). */
  readonly extraBytes?: number;
}

export interface Guest {
  readonly vmFd: number;
  readonly gmemFd: number;
  readonly vcpuFds: number[];
  readonly ramBytes: number;
}

/** Region of vCPU i: pages [1 + i * pages, 1 + (i + 1) * pages). */
export const regionGpa = (i: number, pagesPerVcpu: number): number => (1 + i * pagesPerVcpu) * PAGE_SIZE;
export const guestRamBytes = (spec: GuestSpec): number => (1 + spec.vcpus * spec.pagesPerVcpu) * PAGE_SIZE;

/** The memslot that maps guest RAM: slot 0, gpa 0, offset 0 of the guest_memfd. */
export function bindRam(proc: Process, vmFd: number, gmemFd: number, ramBytes: number): void {
  kvmSetMemoryRegion2(proc, vmFd, { slot: 0, gpa: 0, size: ramBytes, guestMemfd: gmemFd, guestMemfdOffset: 0 });
}

/** Create the VM, its guest_memfd RAM with the program loaded, and the vCPUs at their first instruction. */
export function createGuest(proc: Process, kvmFd: number, spec: GuestSpec): Guest {
  const ramBytes = guestRamBytes(spec);
  const vmFd = kvmCreateVm(proc, kvmFd, spec.vmType ?? KVM_X86_DEFAULT_VM);
  const gmemFd = kvmCreateGuestMemfdFd(proc, vmFd, ramBytes + (spec.extraBytes ?? 0), spec.gmemFlags ?? (GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED));
  bindRam(proc, vmFd, gmemFd, ramBytes);
  gmemStore(proc, gmemFd, counterProgram(spec.pagesPerVcpu), 0);
  const vcpuFds: number[] = [];
  for (let i = 0; i < spec.vcpus; i++) {
    const fd = kvmCreateVcpu(proc, vmFd, i);
    kvmSetRegs(proc, fd, kvmRegs.encode({ rax: vcpuTag(i), rbx: BigInt(regionGpa(i, spec.pagesPerVcpu)), rbp: BigInt(counterGpa(i)), rip: 0n, rflags: 2n }));
    vcpuFds.push(fd);
  }
  return { vmFd, gmemFd, vcpuFds, ramBytes };
}

export type RunResult =
  | { readonly exit: number; readonly errno: 0 | 'EINTR' | 'EFAULT' | 'EHWPOISON' }
  & { readonly mmio?: { readonly gpa: number; readonly data: bigint; readonly isWrite: boolean }; readonly fault?: { readonly gpa: number; readonly size: number } };

/** One KVM_RUN, its exit read back from the mmap'ed kvm_run. */
export function runOnce(proc: Process, vcpuFd: number): RunResult {
  let errno: RunResult['errno'] = 0;
  try {
    proc.ioctl(vcpuFd, KVM_RUN, new Uint8Array(0));
  } catch (e) {
    if (!(e instanceof ErrnoError) || (e.code !== 'EINTR' && e.code !== 'EFAULT' && e.code !== 'EHWPOISON')) throw e;
    errno = e.code;
  }
  const run = kvmRunPage(proc, vcpuFd);
  const exit = kvmRunHead.decode(run).exit_reason;
  if (exit === KVM_EXIT_MMIO) {
    const m = kvmRunMmio.decode(run, KVM_RUN_EXIT_UNION);
    return { exit, errno, mmio: { gpa: Number(m.phys_addr), data: new DataView(m.data.buffer, m.data.byteOffset, 8).getBigUint64(0, true), isWrite: m.is_write === 1 } };
  }
  if (exit === KVM_EXIT_MEMORY_FAULT) {
    const f = kvmRunMemoryFault.decode(run, KVM_RUN_EXIT_UNION);
    return { exit, errno, fault: { gpa: Number(f.gpa), size: Number(f.size) } };
  }
  return { exit, errno };
}

/** Pause: the vCPUs are out of KVM_RUN; their registers as concatenated struct kvm_regs. */
export function saveVcpus(proc: Process, vcpuFds: readonly number[]): Uint8Array {
  const out = new Uint8Array(vcpuFds.length * kvmRegs.size);
  vcpuFds.forEach((fd, i) => out.set(kvmGetRegs(proc, fd), i * kvmRegs.size));
  return out;
}

/** Recreate the vCPUs of a VM from saved struct kvm_regs. */
export function restoreVcpus(proc: Process, vmFd: number, saved: Uint8Array): number[] {
  const n = Math.floor(saved.length / kvmRegs.size);
  const fds: number[] = [];
  for (let i = 0; i < n; i++) {
    const fd = kvmCreateVcpu(proc, vmFd, i);
    kvmSetRegs(proc, fd, saved.subarray(i * kvmRegs.size, (i + 1) * kvmRegs.size));
    fds.push(fd);
  }
  return fds;
}

/** Hashes (page index, page bytes) pairs in index order. */
class PageDigest {
  private readonly h = createHash('sha256');
  private readonly idx = new Uint8Array(8);
  pages = 0;
  add(index: number, bytes: Uint8Array): void {
    new DataView(this.idx.buffer).setBigUint64(0, BigInt(index), true);
    this.h.update(this.idx);
    this.h.update(bytes);
    this.pages++;
  }
  done(): { readonly pages: number; readonly digest: string } { return { pages: this.pages, digest: this.h.digest('hex') }; }
}

/**
 * SHA-256 over (index, bytes) of every present page below `limitPages` (default: all), without
 * faulting holes in: "every guest page identical".
 */
export function guestDigest(proc: Process, gmemFd: number, limitPages = Infinity): { readonly pages: number; readonly digest: string } {
  const g = gmemOf(proc.file(gmemFd, 'digest'));
  const mem = g.kernel.machine.memory;
  const d = new PageDigest();
  g.folios.forEach((head, pfn, order) => {
    for (let k = 0; k < 2 ** order && head + k < limitPages; k++) d.add(head + k, mem.read((pfn + k) * PAGE_SIZE, PAGE_SIZE));
    return head >= limitPages;
  });
  return d.done();
}

/** The digest of guest RAM once every vCPU of the counter program halted, computed from the program alone. */
export function expectedFinalDigest(spec: GuestSpec): { readonly pages: number; readonly digest: string } {
  const d = new PageDigest();
  const page0 = new Uint8Array(PAGE_SIZE);
  page0.set(counterProgram(spec.pagesPerVcpu));
  const v0 = new DataView(page0.buffer);
  for (let i = 0; i < spec.vcpus; i++) v0.setBigUint64(counterGpa(i), BigInt(spec.pagesPerVcpu), true);
  d.add(0, page0);
  const page = new Uint8Array(PAGE_SIZE);
  const pv = new DataView(page.buffer);
  for (let i = 0; i < spec.vcpus; i++) {
    for (let k = 0; k < spec.pagesPerVcpu; k++) {
      pv.setBigUint64(0, BigInt(k + 1), true);
      pv.setBigUint64(8, vcpuTag(i), true);
      d.add(regionGpa(i, spec.pagesPerVcpu) / PAGE_SIZE + k, page);
    }
  }
  return d.done();
}
