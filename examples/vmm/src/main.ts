/**
 * Demo: a VM's RAM survives a host kernel live update.
 *
 *   npm start -w @liveupdate/example-vmm
 */
import { liveUpdateVm } from './live-update.js';

const report = liveUpdateVm({ log: (line) => console.log(line) });
for (const line of report.dmesg) console.log(`  dmesg: ${line}`);
const ok = report.blocks.every((b) => b.ok) && report.leaked.blocks === 0 && report.poisonReads === 0;
console.log(`liveupdate_num ${report.liveupdateNum[0]} -> ${report.liveupdateNum[1]}; guest memory ${ok ? 'intact' : 'DAMAGED'}`);
process.exitCode = ok ? 0 : 1;
