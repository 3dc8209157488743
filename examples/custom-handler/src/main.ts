/**
 * Demo: a ring buffer survives a live update.
 *
 *   npm start -w @liveupdate/example-custom-handler
 *
 * Boots kernel 7.1.0 with the ringbuf plugin, fills a ring, preserves it in a LUO session,
 * is refused a kexec into a kernel whose ringbuf build cannot read any format it writes
 * (nothing is frozen, the old kernel keeps running), then kexecs into 7.2.0 — whose build
 * only reads 1.x — in the negotiated format 1.1.0, and gets the ring back from bytes alone.
 */
import { createMachine } from '@liveupdate/hw';
import {
  boot, createSession, finishSession, FormatNegotiationError, openLiveupdate, preflight, preserveFd, retrieveFd, retrieveSession,
  type Kernel,
} from '@liveupdate/sdk';
import { ringbuf, type RingbufTraceEvent } from './plugin.js';
import { ringbufCreate, ringbufPeek, ringbufRead, ringbufStat, ringbufWrite } from './ringbuf.js';

const CMDLINE = 'kho=on liveupdate=on';
const text = (s: string): Uint8Array => new TextEncoder().encode(s);
const show = (b: Uint8Array): string => JSON.stringify(new TextDecoder().decode(b));
const log = (s = ''): void => console.log(s);
const trace = (e: RingbufTraceEvent): void =>
  log(`    [kernel ${e.kernel}] ringbuf ${e.op} token ${e.token} in format ${e.version}${e.layout ? ` (read as layout ${e.layout})` : ''}`);

const machine = createMachine({ memory: '4GiB' });
const k1 = boot(machine, { cmdline: CMDLINE, plugins: [ringbuf({ trace })], release: '7.1.0' });
log(`kernel ${k1.release} booted; ringbuf writes ${k1.formats.get('ringbuf')?.writes.join(', ')}, reads '${k1.formats.get('ringbuf')?.reads}'`);

// A producer fills a 4 KiB ring with 5,000 bytes (the oldest 904 are overwritten), a consumer reads 10.
const vmm = k1.spawn('vmm');
const ring = ringbufCreate(vmm, 4096);
for (let i = 0; i < 500; i++) ringbufWrite(vmm, ring, text(`event ${String(i).padStart(3, '0')}\n`));
const consumed = ringbufRead(vmm, ring, 10);
const before = ringbufStat(vmm, ring);
const unread = ringbufPeek(vmm, ring);
log(`ring: ${JSON.stringify(before)}; consumed ${show(consumed)}; next unread ${show(unread.subarray(0, 10))}`);

// luod keeps the session; the ring goes into it under token 1.
const dev = openLiveupdate(vmm);
const session = createSession(vmm, dev, 'telemetry');
preserveFd(vmm, session, ring, 1);
log(`preserved fd ${ring} in session 'telemetry' as token 1`);

// A target kernel whose ringbuf build reads only 3.x: refused before anything is frozen.
let freezes = 0;
k1.luo.hooks.fileOp.tap('demo', (ev) => { if (ev.op === 'freeze') freezes++; });
const futureCfg = { cmdline: CMDLINE, plugins: [ringbuf({ writes: ['2.0.0'], reads: '^3.0.0' })], release: '9.0.0' };
const report = preflight(k1.formats.manifest(), futureCfg);
for (const e of report.entries) log(`  preflight ${report.from} -> ${report.to}: ${e.family} (${e.owner}) offers ${e.offered.join(', ')}, target reads '${e.accepted}' -> ${e.chosen ?? 'REFUSED'}`);
try {
  k1.kexec(futureCfg);
} catch (e) {
  if (!(e instanceof FormatNegotiationError)) throw e;
  log(`kexec to ${futureCfg.release} refused: ${e.message}`);
  log(`  freeze calls: ${freezes}; kernel ${k1.release} alive: ${!k1.isDead}; ring still has ${ringbufStat(vmm, ring).used} unread bytes`);
}

// The real update: 7.2.0 ships a ringbuf build of the 1.x era.
log(`kexec ${k1.release} -> 7.2.0 (ringbuf build reads '^1.0.0'):`);
const k2: Kernel = k1.kexec({
  cmdline: CMDLINE,
  plugins: [ringbuf({ version: '0.9.0', writes: ['1.0.0', '1.1.0'], reads: '^1.0.0', layouts: ['1.0.0', '1.1.0'], trace })],
  release: '7.2.0',
});
log(`kernel ${k2.release} booted from bytes; ${k1.release} is dead: ${k1.isDead}`);
for (const l of k2.dmesg.lines().filter((l) => /KHO|liveupdate/.test(l))) log(`  dmesg: ${l}`);

const luod = k2.spawn('luod');
const dev2 = openLiveupdate(luod);
const s2 = retrieveSession(luod, dev2, 'telemetry');
const ring2 = retrieveFd(luod, s2, 1);
const after = ringbufStat(luod, ring2);
const unread2 = ringbufPeek(luod, ring2);
log(`retrieved token 1 as fd ${ring2}: ${JSON.stringify(after)}`);
log(`  unread bytes identical: ${Buffer.from(unread2).equals(Buffer.from(unread))}; next unread ${show(unread2.subarray(0, 10))}`);
finishSession(luod, s2);
luod.exit();
const leaked = k2.khoIn?.leaked();
log(`session finished; preserved blocks left unclaimed: ${leaked?.blocks ?? 0}`);
