/**
 * One host live update as a VMM sees it:
 *
 *   kernel A   luod opens /dev/liveupdate, creates session "<vm>" and passes it to QEMU;
 *              QEMU backs guest RAM with memfds, pauses the guest, preserves RAM + CPR state
 *              into the session, lets go of its copy; luod keeps the session fd open.
 *   kexec      freeze, serialize, jump: only memory and the boot parameters cross.
 *   kernel B   a new luod retrieves the session by name and passes it to a new QEMU, which
 *              retrieves the CPR state (token 1), then every RAM block, checks each digest,
 *              and finishes the session. Nothing may be left preserved and unclaimed.
 */
import { createMachine } from '@liveupdate/hw';
import memfd from '@liveupdate/plugin-memfd';
import { boot, finishSession, type Kernel } from '@liveupdate/sdk';
import { Luod } from './broker.js';
import { DEFAULT_RAM, Vmm, type RamBlockSpec } from './vmm.js';

export interface VmmLiveUpdateOptions {
  readonly vm?: string;
  readonly ram?: readonly RamBlockSpec[];
  readonly memory?: string;
  readonly from?: string;
  readonly to?: string;
  /** Narration of each step (the demo prints it). */
  readonly log?: (line: string) => void;
}

export interface BlockReport {
  readonly name: string;
  readonly token: number;
  readonly size: number;
  readonly residentBefore: number;
  readonly residentAfter: number;
  readonly sha256Before: string;
  readonly sha256After: string;
  readonly ok: boolean;
}

export interface VmmLiveUpdateReport {
  readonly from: string;
  readonly to: string;
  readonly session: string;
  readonly blocks: readonly BlockReport[];
  readonly oldKernelDead: boolean;
  readonly liveupdateNum: readonly [number, number];
  readonly leaked: { readonly blocks: number; readonly pages: number };
  readonly poisonReads: number;
  readonly dmesg: readonly string[];
}

export const CMDLINE = 'kho=on liveupdate=on';

export function liveUpdateVm(opts: VmmLiveUpdateOptions = {}): VmmLiveUpdateReport {
  const log = opts.log ?? (() => undefined);
  const vm = opts.vm ?? 'vm0';
  const from = opts.from ?? '7.1.0';
  const to = opts.to ?? '7.2.0';
  const machine = createMachine({ memory: opts.memory ?? '16GiB', numaNodes: 2 });

  // ---- kernel A ----
  const k1 = boot(machine, { cmdline: CMDLINE, plugins: [memfd()], release: from });
  log(`kernel ${k1.release} booted (${CMDLINE}), liveupdate_num ${k1.luo.liveupdateNum}`);
  const luod = new Luod(k1);
  const qemu = k1.spawn('qemu');
  const vmm = Vmm.launch(qemu, vm, opts.ram ?? DEFAULT_RAM);
  for (const b of vmm.ram) log(`  qemu: RAM block ${b.name} in memfd fd ${b.fd}, ${b.size >> 20} MiB, ${vmm.residentPages(b)} pages touched by the guest`);
  const sessionFd = luod.createSessionFor(qemu, vm);
  log(`  luod: created session "${vm}" and passed it to qemu as fd ${sessionFd}`);
  const residentBefore = new Map(vmm.ram.map((b) => [b.name, vmm.residentPages(b)]));
  const state = vmm.preserve(sessionFd);
  for (const b of state.blocks) log(`  qemu: preserved ${b.name} as token ${b.token} (sha256 ${b.sha256.slice(0, 16)}...)`);
  log(`  qemu: preserved the CPR state memfd as token 1; closes its session fd, luod keeps "${vm}" open`);
  qemu.close(sessionFd);
  const numBefore = k1.luo.liveupdateNum;

  // ---- the kexec: only bytes cross ----
  const k2: Kernel = k1.kexec({ cmdline: CMDLINE, plugins: [memfd()], release: to });
  let oldKernelDead = false;
  try { k1.spawn('anyone'); } catch { oldKernelDead = true; }
  log(`kexec ${from} -> ${to}: kernel ${k2.release} booted from memory + boot params; kernel ${from} is dead: ${oldKernelDead}`);

  // ---- kernel B ----
  machine.memory.resetPoisonReads();
  const luod2 = new Luod(k2);
  const qemu2 = k2.spawn('qemu');
  const sessionFd2 = luod2.retrieveSessionFor(qemu2, vm);
  const resumed = Vmm.resume(qemu2, sessionFd2);
  log(`  luod: retrieved session "${resumed.session}" and passed it to the new qemu`);
  const blocks: BlockReport[] = resumed.checks.map((c) => {
    const before = state.blocks.find((b) => b.name === c.name);
    const block = resumed.vmm.ram.find((b) => b.name === c.name);
    const report = {
      name: c.name, token: block?.token ?? -1, size: block?.size ?? 0,
      residentBefore: residentBefore.get(c.name) ?? 0, residentAfter: block ? resumed.vmm.residentPages(block) : 0,
      sha256Before: before?.sha256 ?? '', sha256After: c.sha256, ok: c.ok,
    };
    log(`  qemu: ${c.name} token ${report.token}: ${report.residentAfter} pages back, sha256 ${c.ok ? 'matches' : 'DIFFERS'}`);
    return report;
  });
  finishSession(qemu2, sessionFd2);
  qemu2.close(sessionFd2);
  const leaked = k2.khoIn?.leaked() ?? { blocks: 0, pages: 0 };
  log(`  qemu: session finished; guest resumed. Preserved blocks left unclaimed: ${leaked.blocks}`);
  return {
    from, to, session: resumed.session, blocks, oldKernelDead, liveupdateNum: [numBefore, k2.luo.liveupdateNum], leaked,
    poisonReads: machine.memory.poisonReads,
    dmesg: k2.dmesg.lines().filter((l) => /KHO|liveupdate/.test(l)),
  };
}
