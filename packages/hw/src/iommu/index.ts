export { DmaRemapping, dmarOf, type DmarState } from './dmar.js';
export { VtdIommu, VTD_MGAW, type DmaFault, type TranslateResult, type VtdConfig } from './vtd.js';
export * as vtdLayout from './vtd-layout.js';
export { dmarRemapper } from './remap.js';
