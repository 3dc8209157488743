export { PAGE_SHIFT, PAGE_SIZE, MAX_PHYS_BITS, parseSize, formatSize, SizeError, pfnToPhys, physToPfn, isPageAligned } from './units.js';
export { PfnRanges, unionRanges, subtractRanges } from './ranges.js';
export { PhysMemory, PhysAddrError, POISON_BYTE, type PageKind, type MemoryState, type MemorySnapshot } from './memory.js';
export { fillSyntheticPage } from './synthetic.js';
export {
  Machine, createMachine, attachMachine,
  type NumaNode, type BootParams, type Device, type MachineSnapshot, type MachineConfig, type MachineHandle, type KexecTransition,
} from './machine.js';
export { type Restore, type SavesState } from './state.js';
export { MachineClock, KEXEC_JUMP_NS, type Ticker } from './clock.js';
export { type AccessGuard, type GuardFaultTrap } from './memory.js';
export {
  Hypervisor, attachHypervisor, hypervisorOf, DepositedPageFault,
  HV_PARTITION_ROOT_PAGES, HV_INIT_PARTITION_PAGES, HV_VP_PAGES, HV_VP_ROOT_PAGES, HV_ROOT_PARTITION_ID,
  type HypervisorConfig, type PartitionInfo, type PartitionState, type VpInfo, type HvFault,
} from './hv/hypervisor.js';
export * as hvStatus from './hv/status.js';
export { hvStatusName, HV_PARTITION_ID_SELF, type HvStatus } from './hv/status.js';
export * from './pci/index.js';
export {
  DmaRemapping, dmarOf, dmarRemapper, VtdIommu, VTD_MGAW, vtdLayout, type DmaFault, type DmarState, type TranslateResult, type VtdConfig,
} from './iommu/index.js';
// vCPUs: the model vCPU, its instruction set, and the caretaker CPU of OrphanVM.
export {
  Vcpu, TRANSLATE_MMIO, TRANSLATE_FAULT, TRANSLATE_HWPOISON, VCPU_STATE_BYTES, encodeVcpuState, decodeVcpuState,
  type Translate, type VcpuExit, type VcpuState,
} from './vcpu/vcpu.js';
export { OP, INSN_BYTES, NR_REGS, INSN_NS, MEM_ACCESS_NS, EXIT_NS, assemble, type Insn, type Opcode } from './vcpu/isa.js';
export {
  Caretaker, CARETAKER_MAGIC, CARETAKER_ARMED, CARETAKER_HANDED_BACK, STOP_HANDBACK, STOP_HLT, STOP_MMIO, STOP_FAULT, STOP_INTERNAL,
  TABLE_PRESENT, TABLE_HOLE,
} from './vcpu/caretaker.js';
