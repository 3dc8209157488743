/**
 * The KVM uAPI this plugin models (include/uapi/linux/kvm.h, x86): ioctl numbers and the
 * struct layouts they carry, byte for byte. _IO/_IOR/_IOW/_IOWR as in
 * include/uapi/asm-generic/ioctl.h (dir << 30 | size << 16 | type << 8 | nr).
 */
import { defineStruct, u8, u16, u32, u64, bytes } from '@liveupdate/sdk';

export const KVMIO = 0xae;
const IOC_WRITE = 1;
const IOC_READ = 2;
const ioc = (dir: number, nr: number, size: number): number => ((dir << 30) | (size << 16) | (KVMIO << 8) | nr) >>> 0;

/** KVM_GET_API_VERSION returns this. */
export const KVM_API_VERSION = 12;

/** struct kvm_userspace_memory_region2: 160 bytes. */
export const kvmUserspaceMemoryRegion2 = defineStruct('kvm_userspace_memory_region2', {
  slot: u32, flags: u32, guest_phys_addr: u64, memory_size: u64, userspace_addr: u64,
  guest_memfd_offset: u64, guest_memfd: u32, pad1: u32, pad2: bytes(14 * 8),
}, { size: 160 });

/** struct kvm_create_guest_memfd: 64 bytes. */
export const kvmCreateGuestMemfd = defineStruct('kvm_create_guest_memfd', {
  size: u64, flags: u64, reserved: bytes(6 * 8),
}, { size: 64 });

/** struct kvm_regs (x86): 18 u64, 144 bytes. The model vCPU's r0..r7 are rax..rbp, pc is rip. */
export const kvmRegs = defineStruct('kvm_regs', {
  rax: u64, rbx: u64, rcx: u64, rdx: u64, rsi: u64, rdi: u64, rsp: u64, rbp: u64,
  r8: u64, r9: u64, r10: u64, r11: u64, r12: u64, r13: u64, r14: u64, r15: u64, rip: u64, rflags: u64,
}, { size: 144 });

export const KVM_GET_API_VERSION = ioc(0, 0x00, 0);
export const KVM_CREATE_VM = ioc(0, 0x01, 0);
export const KVM_CHECK_EXTENSION = ioc(0, 0x03, 0);
export const KVM_GET_VCPU_MMAP_SIZE = ioc(0, 0x04, 0);
export const KVM_CREATE_VCPU = ioc(0, 0x41, 0);
export const KVM_SET_USER_MEMORY_REGION2 = ioc(IOC_WRITE, 0x49, kvmUserspaceMemoryRegion2.size);
export const KVM_RUN = ioc(0, 0x80, 0);
export const KVM_GET_REGS = ioc(IOC_READ, 0x81, kvmRegs.size);
export const KVM_SET_REGS = ioc(IOC_WRITE, 0x82, kvmRegs.size);
export const KVM_CREATE_GUEST_MEMFD = ioc(IOC_READ | IOC_WRITE, 0xd4, kvmCreateGuestMemfd.size);

/** Capabilities (KVM_CHECK_EXTENSION). */
export const KVM_CAP_USER_MEMORY2 = 231;
export const KVM_CAP_GUEST_MEMFD = 234;
export const KVM_CAP_VM_TYPES = 235;
export const KVM_CAP_MEMORY_FAULT_INFO = 232;

/** VM types (arch/x86/include/uapi/asm/kvm.h). */
export const KVM_X86_DEFAULT_VM = 0;
export const KVM_X86_SW_PROTECTED_VM = 1;
export const KVM_X86_SEV_VM = 2;
export const KVM_X86_SEV_ES_VM = 3;
export const KVM_X86_SNP_VM = 4;
export const KVM_X86_TDX_VM = 5;
/** Types this model creates: the default VM and the software-protected one (private memory). */
export const KVM_VM_TYPES_MODELED = [KVM_X86_DEFAULT_VM, KVM_X86_SW_PROTECTED_VM] as const;
/** kvm_arch_has_private_mem(): every type but the default has private memory. */
export const hasPrivateMem = (type: number): boolean => type !== KVM_X86_DEFAULT_VM;

/** Memslot flags. */
export const KVM_MEM_LOG_DIRTY_PAGES = 1 << 0;
export const KVM_MEM_READONLY = 1 << 1;
export const KVM_MEM_GUEST_MEMFD = 1 << 2;
export const KVM_USER_MEM_SLOTS = 32764;

/** guest_memfd flags (KVM_CREATE_GUEST_MEMFD). */
export const GUEST_MEMFD_FLAG_MMAP = 1 << 0;
export const GUEST_MEMFD_FLAG_INIT_SHARED = 1 << 1;
/** The direct-map removal series' flag: accepted at create, but no preservation format knows it. */
export const GUEST_MEMFD_FLAG_NO_DIRECT_MAP = 1 << 2;

/** Exit reasons (struct kvm_run.exit_reason). */
export const KVM_EXIT_UNKNOWN = 0;
export const KVM_EXIT_HLT = 5;
export const KVM_EXIT_MMIO = 6;
export const KVM_EXIT_SHUTDOWN = 8;
export const KVM_EXIT_INTR = 10;
export const KVM_EXIT_INTERNAL_ERROR = 17;
export const KVM_EXIT_MEMORY_FAULT = 39;
export const KVM_INTERNAL_ERROR_EMULATION = 1;
/** kvm_run.memory_fault.flags */
export const KVM_MEMORY_EXIT_FLAG_PRIVATE = 1 << 3;

/**
 * struct kvm_run, the fields that matter here. The exit union starts at byte 32:
 *   mmio         { u64 phys_addr; u8 data[8]; u32 len; u8 is_write; }
 *   memory_fault { u64 flags; u64 gpa; u64 size; }
 *   internal     { u32 suberror; u32 ndata; u64 data[16]; }
 */
export const kvmRunHead = defineStruct('kvm_run', {
  request_interrupt_window: u8, immediate_exit: u8, padding1: bytes(6),
  exit_reason: u32, ready_for_interrupt_injection: u8, if_flag: u8, flags: u16,
  cr8: u64, apic_base: u64,
}, { size: 32 });
export const KVM_RUN_EXIT_UNION = 32;
export const kvmRunMmio = defineStruct('kvm_run.mmio', { phys_addr: u64, data: bytes(8), len: u32, is_write: u8 }, { size: 21 });
export const kvmRunMemoryFault = defineStruct('kvm_run.memory_fault', { flags: u64, gpa: u64, size: u64 }, { size: 24 });
export const kvmRunInternal = defineStruct('kvm_run.internal', { suberror: u32, ndata: u32 }, { size: 8 });
/** KVM_GET_VCPU_MMAP_SIZE on this model: one page of struct kvm_run. */
export const KVM_RUN_MMAP_SIZE = 4096;
