export { PAGE_SHIFT, PAGE_SIZE, MAX_PHYS_BITS, parseSize, formatSize, SizeError, pfnToPhys, physToPfn, isPageAligned } from './units.js';
export { PfnRanges, unionRanges, subtractRanges } from './ranges.js';
export { PhysMemory, PhysAddrError, POISON_BYTE, type PageKind, type MemoryState } from './memory.js';
export { fillSyntheticPage } from './synthetic.js';
export {
  Machine, createMachine, attachMachine,
  type NumaNode, type BootParams, type Device, type MachineConfig, type MachineHandle, type KexecTransition,
} from './machine.js';
export { MachineClock, KEXEC_JUMP_NS, type Ticker } from './clock.js';
export {
  DmaRemapping, dmarOf, VtdIommu, VTD_MGAW, vtdLayout, type DmaFault, type DmarState, type TranslateResult, type VtdConfig,
} from './iommu/index.js';
