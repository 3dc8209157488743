/**
 * @liveupdate/plugin-guest-memfd: KVM VM files, vCPUs and guest_memfd, preserved across a
 * live update. The default export is the plugin factory: `boot(machine, { plugins: [guestMemfd()] })`.
 */
export { default, DEFAULT_GMEM_WRITES, DEFAULT_GMEM_READS, type GuestMemfdPluginOptions } from './plugin.js';
export {
  kvmCreateVm, kvmCreateGuestMemfdFd, kvmSetMemoryRegion2, kvmCreateVcpu, kvmRunPage, kvmGetRegs, kvmSetRegs,
  kvmVcpuSetQuantum, kvmVmKill, isKvmVm, KVM_RUN_QUANTUM,
} from './kvm.js';
export {
  gmemStore, gmemLoad, gmemFillSynthetic, gmemCheckSynthetic, gmemMemoryFailure, gmemCollapse, gmemResident, isGuestMemfd,
  SigbusError, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE,
} from './gmem.js';
export * as kvmAbi from './abi/kvm.js';
export * as gmemLuoAbi from './abi/luo.js';
export { PLUGIN_VERSION } from './version.js';
export {
  counterProgram, counterGpa, regionGpa, vcpuTag, DOORBELL_GPA, guestRamBytes, createGuest, bindRam, runOnce, saveVcpus, restoreVcpus, guestDigest, expectedFinalDigest,
  type GuestSpec, type Guest, type RunResult,
} from './vmm.js';
