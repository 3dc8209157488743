/**
 * Demo: a VMM's memfd-backed guest RAM through a live update from a kernel built with
 * plugin-memfd 2.0.0 (the released tarball) to one built with 3.1.0, and back.
 *
 *   npm start -w @liveupdate/example-mixed-versions
 */
import { upgradeAndRollback } from './index.js';

const report = upgradeAndRollback();
const ok = report.hops.every((h) => h.contentIntact && h.leakedBlocks === 0 && h.found === h.chosenCompatible);
console.log(ok ? 'guest RAM intact through the upgrade and the rollback' : 'guest RAM NOT intact');
process.exitCode = ok ? 0 : 1;
