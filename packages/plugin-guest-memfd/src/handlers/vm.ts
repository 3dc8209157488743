/**
 * The KVM VM file handler, "kvm_vm_luo_v1" (guest_memfd preservation series v3, KVM
 * liveupdate code; include/linux/kho/abi/kvm.h). The VM's type and a list of preserved
 * folios (none without the OrphanVM follow-up, which hands over secondary page tables there)
 * cross the kexec; retrieve creates a new VM of that type, which guest_memfds in the same
 * session find by token.
 */
import { PAGE_SIZE } from '@liveupdate/hw';
import { ErrnoError, type HandlerContext, type Kernel, type KFile } from '@liveupdate/sdk';
import { KVM_VM_TYPES_MODELED } from '../abi/kvm.js';
import { KVM_KHO_FOLIO_PA_BYTES, kvmKhoFoliosSer, kvmLuoSer } from '../abi/luo.js';
import { KvmVm, isKvmVm, vmFile, vmOf } from '../kvm.js';

export interface VmPreservation {
  readonly vm: KvmVm;
  readonly serPhys: number;
  readonly foliosPhys: number;
}

export const canPreserveVm = (file: KFile): boolean => isKvmVm(file);

function khoOut(kernel: Kernel) {
  const out = kernel.khoOut;
  if (!out) throw new ErrnoError('EOPNOTSUPP', 'preserve', 'KHO disabled');
  return out;
}

export function preserveVm(ctx: HandlerContext<VmPreservation>): void {
  const file = ctx.file;
  if (!file) throw new ErrnoError('EINVAL', 'preserve');
  const vm = vmOf(file);
  // A dead or bugged VM cannot be handed over.
  if (vm.dead || vm.bugged) throw new ErrnoError('EINVAL', 'preserve', 'VM is dead');
  const out = khoOut(ctx.kernel);
  const serPhys = out.allocPreserve(kvmLuoSer.size);
  let foliosPhys = 0;
  try {
    foliosPhys = out.allocPreserve(kvmKhoFoliosSer.size);
  } catch (e) {
    out.unpreserveFree(serPhys);
    throw e;
  }
  const mem = ctx.kernel.machine.memory;
  mem.write(serPhys, kvmLuoSer.encode({ type: BigInt(vm.type), kho_folios: BigInt(foliosPhys) }));
  mem.write(foliosPhys, kvmKhoFoliosSer.encode({ nr_folios: 0n }));
  ctx.state = { vm, serPhys, foliosPhys };
  ctx.data = BigInt(serPhys);
}

export function unpreserveVm(ctx: HandlerContext<VmPreservation>): void {
  const st = ctx.state;
  if (!st) return;
  const out = khoOut(ctx.kernel);
  out.unpreserveFree(st.foliosPhys);
  out.unpreserveFree(st.serPhys);
  ctx.state = undefined;
}

/**
 * Claim the incoming kvm_luo_ser and its folio list, then release every page of it; returns
 * the VM type. Every folio named in the list is restored and freed (nothing here adopts page
 * tables). A bad pointer or count is EINVAL; what was claimed is freed either way.
 */
function consumeHandover(kernel: Kernel, phys: number): number {
  const kin = kernel.khoIn;
  if (!kin) throw new ErrnoError('EINVAL', 'retrieve', 'not a KHO boot');
  const mem = kernel.machine.memory;
  const ser = kin.restoreFolio(phys);
  if (!ser) throw new ErrnoError('EINVAL', 'retrieve', `kvm_luo_ser at 0x${phys.toString(16)} is not preserved`);
  try {
    const h = kvmLuoSer.decode(mem.read(phys, kvmLuoSer.size));
    if (h.kho_folios === 0n) return Number(h.type);
    const list = kin.restoreFolio(Number(h.kho_folios));
    if (!list) throw new ErrnoError('EINVAL', 'retrieve', `kho_folios 0x${h.kho_folios.toString(16)} is not preserved`);
    try {
      const listPhys = list.pfn * PAGE_SIZE;
      const n = mem.readU64(listPhys);
      const capacity = (2 ** list.order * PAGE_SIZE - kvmKhoFoliosSer.size) / KVM_KHO_FOLIO_PA_BYTES;
      if (n > BigInt(capacity)) throw new ErrnoError('EINVAL', 'retrieve', `nr_folios ${n} beyond its ${capacity}-entry list`);
      for (let i = 0; i < Number(n); i++) {
        const pa = mem.readU64Number(listPhys + kvmKhoFoliosSer.size + i * KVM_KHO_FOLIO_PA_BYTES);
        const f = kin.restoreFolio(pa);
        if (!f) throw new ErrnoError('EINVAL', 'retrieve', `folio 0x${pa.toString(16)} is not preserved`);
        kernel.mm.freePages(f.pfn, f.order);
      }
    } finally {
      kernel.mm.freePages(list.pfn, list.order);
    }
    return Number(h.type);
  } finally {
    kernel.mm.freePages(ser.pfn, ser.order);
  }
}

export function retrieveVm(ctx: HandlerContext<VmPreservation>): void {
  const type = consumeHandover(ctx.kernel, Number(ctx.data));
  if (!(KVM_VM_TYPES_MODELED as readonly number[]).includes(type)) throw new ErrnoError('EINVAL', 'retrieve', `VM type ${type}`);
  ctx.file = vmFile(ctx.kernel, new KvmVm(ctx.kernel, type));
}

/** finish of a VM never retrieved: its handover is released. A retrieved one has nothing left. */
export function finishVm(ctx: HandlerContext<VmPreservation>): void {
  if (ctx.retrieveStatus !== 0) return;
  try {
    consumeHandover(ctx.kernel, Number(ctx.data));
  } catch (e) {
    ctx.kernel.dmesg.log('warn', 'kvm', `finish of an unretrieved VM: ${e instanceof Error ? e.message : String(e)}`);
  }
}
