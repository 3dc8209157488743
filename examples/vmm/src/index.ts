/** @liveupdate/example-vmm: a VMM-style live update with a luod-style broker. See README.md. */
export { Luod, sendFd } from './broker.js';
export { Vmm, digest, DEFAULT_RAM, CPR_STATE_TOKEN, type RamBlock, type RamBlockSpec } from './vmm.js';
export { liveUpdateVm, CMDLINE, type VmmLiveUpdateOptions, type VmmLiveUpdateReport, type BlockReport } from './live-update.js';
