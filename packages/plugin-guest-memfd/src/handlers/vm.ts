/**
 * The KVM VM file handler, "kvm_vm_luo_v1" (guest_memfd preservation series v3, virt/kvm/
 * kvm_luo.c; include/linux/kho/abi/kvm.h). v3 posted struct kvm_luo_ser { u64 type }; the
 * OrphanVM follow-up extends it under the same string with a KHOSER pointer kho_folios to
 * struct kvm_kho_folios_ser { u64 nr_folios; u64 folios_pa[] }, its secondary page tables. This
 * handler writes the extended layout; kho_folios is 0 (NULL) when there is nothing to hand
 * over, so a reader of the 8-byte v3 layout loses nothing. Retrieve creates a new VM of that
 * type, which guest_memfds in the same session find by token.
 */
import { PAGE_SIZE, TABLE_HOLE, TABLE_PRESENT } from '@liveupdate/hw';
import { ErrnoError, type HandlerContext, type Kernel, type KFile } from '@liveupdate/sdk';
import { KVM_VM_TYPES_MODELED } from '../abi/kvm.js';
import { KVM_KHO_FOLIO_PA_BYTES, kvmKhoFoliosSer, kvmLuoSer } from '../abi/luo.js';
import { FOLIO_HWPOISON, FOLIO_UPTODATE } from '../folios.js';
import { KvmVm, isKvmVm, vmFile, vmOf } from '../kvm.js';

export interface VmPreservation {
  readonly vm: KvmVm;
  readonly serPhys: number;
  /** The folio list the handover points at (0: none). */
  foliosPhys: number;
  /** OrphanVM: the second-stage table written at freeze (its list and pages), or null. */
  table: { readonly listPhys: number; readonly pages: readonly number[] } | null;
}

/** Outgoing VM preservations by VM (the vCPU handler points its caretakers at the VM's table). */
export const vmPreservations = new WeakMap<KvmVm, VmPreservation>();

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
  ctx.kernel.machine.memory.write(serPhys, kvmLuoSer.encode({ type: BigInt(vm.type), kho_folios: 0n }));
  const st: VmPreservation = { vm, serPhys, foliosPhys: 0, table: null };
  vmPreservations.set(vm, st);
  ctx.state = st;
  ctx.data = BigInt(serPhys);
}

/**
 * freeze (OrphanVM, when vCPUs of this VM are preserved): the second-stage table the caretakers
 * translate through, as pages listed in kvm_kho_folios_ser: one u64 per guest page, host
 * physical address | TABLE_PRESENT, TABLE_HOLE for guest RAM with no folio yet, 0 for no RAM.
 */
export function freezeVm(ctx: HandlerContext<VmPreservation>): void {
  const st = ctx.state;
  if (!st || st.vm.preservedVcpus === 0) return;
  const out = khoOut(ctx.kernel);
  const mem = ctx.kernel.machine.memory;
  let gfns = 0;
  for (const s of st.vm.memslots.values()) gfns = Math.max(gfns, (s.gpa + s.size) / PAGE_SIZE);
  const perPage = PAGE_SIZE / 8;
  const nPages = Math.ceil(gfns / perPage);
  const pages: number[] = [];
  let listPhys = 0;
  try {
    listPhys = out.allocPreserve(kvmKhoFoliosSer.size + KVM_KHO_FOLIO_PA_BYTES * Math.max(1, nPages));
    const list = new Uint8Array(kvmKhoFoliosSer.size + KVM_KHO_FOLIO_PA_BYTES * nPages);
    const lv = new DataView(list.buffer);
    lv.setBigUint64(0, BigInt(nPages), true);
    const page = new Uint8Array(PAGE_SIZE);
    const pv = new DataView(page.buffer);
    for (let p = 0; p < nPages; p++) {
      page.fill(0);
      for (const s of st.vm.memslots.values()) {
        const first = Math.max(p * perPage, s.gpa / PAGE_SIZE);
        const end = Math.min((p + 1) * perPage, (s.gpa + s.size) / PAGE_SIZE);
        for (let gfn = first; gfn < end; gfn++) {
          // Only prepared (up-to-date) folios are mapped, as KVM maps them; the rest fault.
          const index = (s.gmemOffset / PAGE_SIZE) + gfn - s.gpa / PAGE_SIZE;
          const head = s.gmem.folios.headOf(index);
          const meta = head >= 0 ? s.gmem.folios.metaAt(head) : 0;
          const mapped = (meta & FOLIO_UPTODATE) !== 0 && (meta & FOLIO_HWPOISON) === 0;
          const pfn = mapped ? s.gmem.folios.pfnAt(head) + (index - head) : -1;
          pv.setBigUint64(8 * (gfn - p * perPage), pfn >= 0 ? BigInt(pfn * PAGE_SIZE + TABLE_PRESENT) : BigInt(TABLE_HOLE), true);
        }
      }
      const pa = out.allocPreserve(PAGE_SIZE);
      pages.push(pa);
      mem.write(pa, page);
      lv.setBigUint64(kvmKhoFoliosSer.size + KVM_KHO_FOLIO_PA_BYTES * p, BigInt(pa), true);
    }
    mem.write(listPhys, list);
  } catch (e) {
    for (const pa of pages) out.unpreserveFree(pa);
    out.unpreserveFree(listPhys);
    throw e;
  }
  st.table = { listPhys, pages };
  st.foliosPhys = listPhys;
  mem.write(st.serPhys, kvmLuoSer.encode({ type: BigInt(st.vm.type), kho_folios: BigInt(listPhys) }));
}

/** unfreeze: the table is dropped; kho_folios is NULL again. */
export function unfreezeVm(ctx: HandlerContext<VmPreservation>): void {
  const st = ctx.state;
  if (!st?.table) return;
  const out = khoOut(ctx.kernel);
  for (const pa of st.table.pages) out.unpreserveFree(pa);
  out.unpreserveFree(st.table.listPhys);
  st.table = null;
  st.foliosPhys = 0;
  ctx.kernel.machine.memory.write(st.serPhys, kvmLuoSer.encode({ type: BigInt(st.vm.type), kho_folios: 0n }));
}

export function unpreserveVm(ctx: HandlerContext<VmPreservation>): void {
  const st = ctx.state;
  if (!st) return;
  unfreezeVm(ctx);
  khoOut(ctx.kernel).unpreserveFree(st.serPhys);
  vmPreservations.delete(st.vm);
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
