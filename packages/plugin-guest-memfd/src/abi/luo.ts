/**
 * The preservation ABI of the KVM VM file and guest_memfd.
 *
 * 1.x of each family is upstream's, byte for byte, as posted in the guest_memfd preservation
 * series (Tarun Sahu, v3 2026-06-22; include/linux/kho/abi/kvm.h): "kvm_vm_luo_v1" and
 * "guest_memfd_luo_v1". guest_memfd 2.x is this project's sparse format on the KHO xarray.
 * Any layout change needs a new version: a new major when an old reader cannot skip it.
 */
import { defineStruct, u16, u32, u64 } from '@liveupdate/sdk';

export const KVM_VM_FAMILY = 'kvm_vm';
export const KVM_VM_ALIASES = { 1: 'kvm_vm_luo_v1' } as const;
export const GUEST_MEMFD_FAMILY = 'guest_memfd';
export const GUEST_MEMFD_ALIASES = { 1: 'guest_memfd_luo_v1' } as const;

/** struct kvm_luo_ser: the VM type and a KHOSER pointer (a physical address) to the folio list. */
export const kvmLuoSer = defineStruct('kvm_luo_ser', { type: u64, kho_folios: u64 }, { size: 16 });
/** struct kvm_kho_folios_ser header: u64 nr_folios, then u64 folios_pa[nr_folios]. */
export const kvmKhoFoliosSer = defineStruct('kvm_kho_folios_ser', { nr_folios: u64 }, { size: 8 });
export const KVM_KHO_FOLIO_PA_BYTES = 8;

/**
 * struct guest_memfd_luo_ser: 48 bytes. vm_token is the LUO token of the VM file in the same
 * session, resolved at freeze; folios is a struct kho_vmalloc (KHOSER u64 first, u32
 * total_pages, u16 flags, u16 order) describing the vmalloc'd array of folio records.
 */
export const guestMemfdLuoSer = defineStruct('guest_memfd_luo_ser', {
  size: u64, flags: u64, nr_folios: u64, vm_token: u64,
  folios_first: u64, folios_total_pages: u32, folios_flags: u16, folios_order: u16,
}, { size: 48 });

/** struct guest_memfd_luo_folio_ser: u64 { pfn:52, flags:12 }, u64 index; 16 bytes, one per present folio, in index order. */
export const guestMemfdLuoFolioSer = defineStruct('guest_memfd_luo_folio_ser', { pfn_flags: u64, index: u64 }, { size: 16 });
export const GMEM_FOLIO_PFN_BITS = 52;
export const GUEST_MEMFD_LUO_FOLIO_UPTODATE = 1 << 0;

/**
 * guest_memfd 2.0 (this project): folios in a KHO xarray keyed by page index of the folio head;
 * an entry is pfn:52 | flags:12 with flags bit 0 UPTODATE and bits 1..5 the folio order
 * (0 or 9). entries_sum is the sum mod 2^32 of the CRC-32 of each (index u64, entry u64)
 * pair (order-independent: kept current while folios come and go, so freeze does no per-folio
 * work); header_crc32 covers the 44 bytes before it. Corruption of any metadata is detected
 * (the node pages carry KHO's magic and are checked by the xarray restore).
 */
export const guestMemfdLuoSerV2 = defineStruct('guest_memfd_luo_ser(v2)', {
  size: u64, flags: u64, nr_folios: u64, vm_token: u64, folios_xa: u64,
  entries_sum: u32, header_crc32: u32,
}, { size: 48 });
export const GMEM_V2_HEADER_CRC_BYTES = 44;

/**
 * guest_memfd 2.1 appends 8 bytes to the 2.0 header (56 bytes; a 2.0 reader reads the first 48):
 *   48 u32 id_crc32      52 u32 id_pad (0)
 * id_crc32 = CRC-32 of header bytes 0..47, then the file's token as a u64 and its session name
 * as the 64 NUL-padded bytes of luo_session_ser (SDK crc32Identity). LUO's blocks carry no
 * check, so without it a rewired session or file block serves another VM's intact guest_memfd.
 */
export const guestMemfdLuoSerV2_1 = defineStruct('guest_memfd_luo_ser(v2.1)', {
  size: u64, flags: u64, nr_folios: u64, vm_token: u64, folios_xa: u64,
  entries_sum: u32, header_crc32: u32, id_crc32: u32, id_pad: u32,
}, { size: 56 });
export const GMEM_V2_1_ID_OFFSET = 48;
export const GMEM_V2_ORDER_SHIFT = 1;
export const GMEM_V2_ORDER_MASK = 0x1f;

/**
 * The OrphanVM / Caretaker follow-up (RFC v1, Pasha Tatashin, 2026-09-20): a vCPU file handler
 * "kvm_vcpu_luo_v1", struct kvm_vcpu_ser { u32 vcpu_id; u32 flags; u64 vm_token; KHOSER ptr
 * arch_state; KHOSER ptr cb }. Here arch_state is the model vCPU's VcpuState (r0..r7, pc) and
 * cb the caretaker control block of @liveupdate/hw; the VM's kho_folios list the pages of its
 * flat second-stage table.
 */
export const KVM_VCPU_FAMILY = 'kvm_vcpu';
export const KVM_VCPU_ALIASES = { 1: 'kvm_vcpu_luo_v1' } as const;
export const kvmVcpuSer = defineStruct('kvm_vcpu_ser', { vcpu_id: u32, flags: u32, vm_token: u64, arch_state: u64, cb: u64 }, { size: 32 });
/** The caretaker control block: 56 bytes (see @liveupdate/hw's Caretaker). */
export const CARETAKER_CB_BYTES = 56;
