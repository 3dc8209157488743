/**
 * The vCPU file handler of the OrphanVM / Caretaker follow-up, "kvm_vcpu_luo_v1" (RFC v1, Pasha
 * Tatashin, 2026-09-20): the vCPU's registers and a caretaker control block cross the kexec;
 * right before the jump each preserved vCPU is handed to a caretaker CPU (@liveupdate/hw) that
 * keeps running the guest through the VM's second-stage table while no kernel runs, and hands
 * it back at the next kernel's entry. Retrieve recreates the vCPU on the VM (retrieved on demand
 * by token) with the registers the caretaker left; an exit it stopped on that needs the VMM
 * (an MMIO store, HLT) is the first thing KVM_RUN reports.
 *
 * Model limits: the caretaker runs only while the jump's time passes; device interrupts and the
 * spurious interrupt injected after resume are not modeled.
 */
import {
  CARETAKER_ARMED, CARETAKER_HANDED_BACK, CARETAKER_MAGIC, Caretaker, PAGE_SIZE, STOP_HLT, STOP_MMIO, VCPU_STATE_BYTES,
  decodeVcpuState, encodeVcpuState,
} from '@liveupdate/hw';
import { ErrnoError, type HandlerContext, type Kernel, type KFile } from '@liveupdate/sdk';
import { CARETAKER_CB_BYTES, kvmVcpuSer } from '../abi/luo.js';
import { KvmVcpu, isKvmVcpu, isKvmVm, vcpuFile, vcpuOf, vmOf } from '../kvm.js';
import { vmPreservations } from './vm.js';

export interface VcpuPreservation {
  readonly vcpu: KvmVcpu;
  readonly serPhys: number;
  readonly statePhys: number;
  readonly cbPhys: number;
}

/** vCPUs frozen for the coming jump, per kernel: armed at beforeJump. */
const frozen = new WeakMap<Kernel, Set<VcpuPreservation>>();

export const canPreserveVcpu = (file: KFile): boolean => isKvmVcpu(file);

function khoOut(kernel: Kernel) {
  const out = kernel.khoOut;
  if (!out) throw new ErrnoError('EOPNOTSUPP', 'preserve', 'KHO disabled');
  return out;
}

export function preserveVcpu(ctx: HandlerContext<VcpuPreservation>): void {
  if (!ctx.file) throw new ErrnoError('EINVAL', 'preserve');
  const vcpu = vcpuOf(ctx.file);
  // A dead VM's vCPUs cannot be handed over either.
  if (vcpu.vm.dead || vcpu.vm.bugged) throw new ErrnoError('EINVAL', 'preserve', 'VM is dead');
  const out = khoOut(ctx.kernel);
  const done: number[] = [];
  try {
    for (const size of [kvmVcpuSer.size, VCPU_STATE_BYTES, CARETAKER_CB_BYTES]) done.push(out.allocPreserve(size));
  } catch (e) {
    for (const pa of done) out.unpreserveFree(pa);
    throw e;
  }
  const [serPhys, statePhys, cbPhys] = done as [number, number, number];
  vcpu.vm.preservedVcpus++;
  ctx.state = { vcpu, serPhys, statePhys, cbPhys };
  ctx.data = BigInt(serPhys);
}

/** freeze: vm_token from this session (ENOENT without the VM), the registers, an unarmed control block. */
export function freezeVcpu(ctx: HandlerContext<VcpuPreservation>): void {
  const st = ctx.state;
  if (!st) throw new ErrnoError('EINVAL', 'freeze', 'no preserved state');
  const vmFileOut = st.vcpu.vm.file;
  const token = vmFileOut ? ctx.session.tokenOf(vmFileOut) : undefined;
  if (token === undefined) throw new ErrnoError('ENOENT', 'freeze', `the VM of vCPU ${st.vcpu.id} is not preserved in session ${ctx.session.name}`);
  const mem = ctx.kernel.machine.memory;
  mem.write(st.serPhys, kvmVcpuSer.encode({ vcpu_id: st.vcpu.id, flags: 0, vm_token: token, arch_state: BigInt(st.statePhys), cb: BigInt(st.cbPhys) }));
  // A pending MMIO load is not retired: it runs again after the update.
  mem.write(st.statePhys, encodeVcpuState(st.vcpu.cpu.saveStateUnchecked()));
  const cb = new Uint8Array(CARETAKER_CB_BYTES);
  const v = new DataView(cb.buffer);
  v.setUint32(0, CARETAKER_MAGIC, true);
  v.setBigUint64(24, BigInt(st.statePhys), true);
  mem.write(st.cbPhys, cb);
  const set = frozen.get(ctx.kernel) ?? new Set<VcpuPreservation>();
  frozen.set(ctx.kernel, set);
  set.add(st);
}

export function unfreezeVcpu(ctx: HandlerContext<VcpuPreservation>): void {
  if (ctx.state) frozen.get(ctx.kernel)?.delete(ctx.state);
}

export function unpreserveVcpu(ctx: HandlerContext<VcpuPreservation>): void {
  const st = ctx.state;
  if (!st) return;
  frozen.get(ctx.kernel)?.delete(st);
  const out = khoOut(ctx.kernel);
  for (const pa of [st.serPhys, st.statePhys, st.cbPhys]) out.unpreserveFree(pa);
  st.vcpu.vm.preservedVcpus--;
  ctx.state = undefined;
}

/** beforeJump: every frozen vCPU whose VM handed over its table goes to a caretaker CPU. */
export function armCaretakers(kernel: Kernel): void {
  const mem = kernel.machine.memory;
  for (const st of frozen.get(kernel) ?? []) {
    const table = vmPreservations.get(st.vcpu.vm)?.table;
    if (!table) continue;
    mem.writeU64(st.cbPhys + 16, BigInt(table.listPhys));
    mem.writeU32(st.cbPhys + 4, CARETAKER_ARMED);
    new Caretaker(mem, kernel.machine.clock, st.cbPhys);
  }
  frozen.delete(kernel);
}

/** Claim the three pages; returns them for freeing. Null entries could not be restored. */
function claim(kernel: Kernel, phys: number[]): Array<{ pfn: number; order: number } | null> {
  return phys.map((p) => kernel.khoIn?.restoreFolio(p) ?? null);
}

function release(kernel: Kernel, folios: Array<{ pfn: number; order: number } | null>): void {
  for (const f of folios) if (f) kernel.mm.freePages(f.pfn, f.order);
}

export function retrieveVcpu(ctx: HandlerContext<VcpuPreservation>): void {
  const { kernel } = ctx;
  const mem = kernel.machine.memory;
  const phys = Number(ctx.data);
  const [ser] = claim(kernel, [phys]);
  if (!ser) throw new ErrnoError('EINVAL', 'retrieve', `kvm_vcpu_ser at 0x${phys.toString(16)} is not preserved`);
  let pages: Array<{ pfn: number; order: number } | null> = [];
  try {
    const h = kvmVcpuSer.decode(mem.read(phys, kvmVcpuSer.size));
    if (h.flags !== 0) throw new ErrnoError('EOPNOTSUPP', 'retrieve', `vCPU flags 0x${h.flags.toString(16)}`);
    pages = claim(kernel, [Number(h.arch_state), Number(h.cb)]);
    if (pages.some((p) => p === null)) throw new ErrnoError('EINVAL', 'retrieve', 'arch_state or cb is not preserved');
    const vmFileIn = ctx.session.fileByToken(h.vm_token);
    if (!isKvmVm(vmFileIn)) throw new ErrnoError('EINVAL', 'retrieve', `token ${h.vm_token} is not a KVM VM`);
    let state;
    try {
      state = decodeVcpuState(mem.read(Number(h.arch_state), VCPU_STATE_BYTES));
    } catch (e) {
      throw new ErrnoError('EINVAL', 'retrieve', e instanceof Error ? e.message : String(e));
    }
    const cb = Number(h.cb);
    const file = vcpuFile(kernel, vmOf(vmFileIn), h.vcpu_id);
    const vcpu = vcpuOf(file);
    vcpu.cpu.loadState(state);
    if (mem.readU32(cb) === CARETAKER_MAGIC && mem.readU32(cb + 4) === CARETAKER_HANDED_BACK) {
      const reason = mem.readU32(cb + 8);
      vcpu.cpu.retired = mem.readU64Number(cb + 32);
      if (reason === STOP_HLT) vcpu.pendingExit = { kind: 'hlt' };
      if (reason === STOP_MMIO) vcpu.pendingExit = { kind: 'mmio', gpa: mem.readU64Number(cb + 40), data: mem.readU64(cb + 48) };
      // A fault is not reported: the access runs again under the new kernel's KVM, which may allocate.
    }
    ctx.file = file;
  } finally {
    release(kernel, [ser, ...pages]);
  }
}

export function finishVcpu(ctx: HandlerContext<VcpuPreservation>): void {
  if (ctx.retrieveStatus !== 0) return;
  const { kernel } = ctx;
  const phys = Number(ctx.data);
  const [ser] = claim(kernel, [phys]);
  if (!ser) return;
  const h = kvmVcpuSer.decode(kernel.machine.memory.read(phys, kvmVcpuSer.size));
  const pages = [h.arch_state, h.cb].every((p) => p % BigInt(PAGE_SIZE) === 0n) ? claim(kernel, [Number(h.arch_state), Number(h.cb)]) : [];
  release(kernel, [ser, ...pages]);
}
