export * as pciRegs from './regs.js';
export { formatBdf, parseBdf, bdfOf, devfn } from './regs.js';
export { PciConfig, type ConfigEffects } from './config.js';
export { PciFunction, PciBridge, type PciDeviceModel, type PciPortType, type FunctionOptions } from './function.js';
export {
  PciTopology, PciSegment,
  type PciTopologySpec, type PciNodeSpec, type PciEndpointSpec, type PciRootPortSpec, type PciSwitchSpec, type ModelFactory,
} from './topology.js';
export {
  DmaPort, identityRemapper, DMA_FAULT_NOT_PRESENT, DMA_FAULT_PERMISSION, DMA_FAULT_NO_CONTEXT, DMA_FAULT_OUTSIDE_RAM,
  type DmaRemapper, type DmaFaultRecord,
} from './dma.js';
export {
  DsaEngine, DmaWriteLog, DSA_OPCODE_MEMMOVE, DSA_OPCODE_SEQWRITE, DSA_COMP_SUCCESS, DSA_MEMMOVE_CHUNK,
  type DsaDescriptor, type DsaMemmove, type DsaSeqWrite, type DsaOptions,
} from './dsa.js';
export { PciHost, attachPci, pciHostOf, bareMetalRig } from './host.js';
