/**
 * Issue 14: a kernel access to a deposited page is a fault the hypervisor records and that
 * crashes the kernel that made it. The machine's guard throws DepositedPageFault; the running
 * kernel's fault trap turns it into an oops and a panic: the kernel is dead afterwards, its
 * dmesg names the access, and the caller sees the runtime's KernelPanic.
 */
import { describe, expect, it } from 'vitest';
import { DepositedPageFault, HV_PARTITION_ID_SELF, PAGE_SIZE } from '@liveupdate/hw';
import { Kernel, KernelDeadError, KernelPanic } from '@liveupdate/sdk';
import { mshvOpen } from '@liveupdate/plugin-mshv';
import { bootWith, CMDLINE, depositedRuns, hvMachine } from './support.js';

function withDeposit() {
  const { machine, hv } = hvMachine(false);
  const { k, root, p } = bootWith(machine);
  root.depositPages(HV_PARTITION_ID_SELF, 8);
  const [first] = depositedRuns(hv);
  if (!first) throw new Error('nothing deposited');
  return { machine, hv, k, p, phys: first[0] * PAGE_SIZE, pfn: first[0] };
}

function caught(fn: () => unknown): unknown {
  try { fn(); } catch (e) { return e; }
  throw new Error('did not throw');
}

describe('a kernel access to a deposited page (the GPF)', () => {
  it.each([
    ['read', false, (m: ReturnType<typeof withDeposit>) => m.machine.memory.readU64(m.phys + 8)],
    ['write', true, (m: ReturnType<typeof withDeposit>) => m.machine.memory.writeU32(m.phys + 16, 0xdead)],
  ])('a %s is recorded once and panics the kernel that made it', (what, write, access) => {
    const m = withDeposit();
    expect(m.hv.faultCount).toBe(0);
    const e = caught(() => access(m));
    expect(e).toBeInstanceOf(KernelPanic);
    expect((e as Error).cause).toBeInstanceOf(DepositedPageFault);
    expect(m.hv.faultCount).toBe(1);
    expect(m.hv.faults[0]).toEqual(expect.objectContaining({ pfn: m.pfn, write, boot: 1 }));
    expect(m.k.isDead).toBe(true);
    expect(m.k.panicked).toBe('Fatal exception');
    const addr = `0x${(m.phys + (write ? 16 : 8)).toString(16)}`;
    expect(m.k.dmesg.grep(/^Oops: /)).toEqual([expect.stringContaining(`Oops: ${what} of ${write ? 4 : 8} byte(s) at ${addr}: general protection fault`)]);
    expect(m.k.dmesg.lines()).toContain('Kernel panic - not syncing: Fatal exception');
    // Dead as after kexec: every later call on it throws, and touches no memory.
    expect(() => mshvOpen(m.p)).toThrow(KernelDeadError);
    expect(() => mshvOpen(m.p)).toThrow(/it panicked \(Fatal exception\)/);
    expect(() => m.k.spawn('again')).toThrow(KernelDeadError);
    expect(() => m.k.kexecJump(CMDLINE)).toThrow(KernelDeadError);
    expect(m.hv.faultCount).toBe(1);
  });

  it('an access that does not touch a deposited page leaves the kernel alive and records nothing', () => {
    const m = withDeposit();
    m.machine.memory.readU64(m.phys - 8);
    m.machine.memory.writeU32(m.phys - 4, 1);
    expect(m.hv.faultCount).toBe(0);
    expect(m.k.isDead).toBe(false);
    expect(m.k.dmesg.grep('Kernel panic')).toEqual([]);
  });

  it('the fault vector is the running kernel\'s: after a kexec a fault panics the new kernel, not the old one', () => {
    const { machine, hv } = hvMachine(true);
    const { k: k1, root } = bootWith(machine);
    root.depositPages(HV_PARTITION_ID_SELF, 8);
    const k2 = k1.kexec({ cmdline: CMDLINE, plugins: k1.plugins });
    expect(hv.faultCount).toBe(0);
    const [first] = depositedRuns(hv);
    if (!first) throw new Error('nothing deposited');
    expect(() => machine.memory.readU8(first[0] * PAGE_SIZE)).toThrow(KernelPanic);
    expect(hv.faults.map((f) => [f.boot, f.write])).toEqual([[2, false]]);
    expect(k2.isDead).toBe(true);
    expect(k2.panicked).toBe('Fatal exception');
    expect(k1.panicked).toBeNull();
    expect(k1.dmesg.grep('Kernel panic')).toEqual([]);
    expect(() => k1.spawn('x')).toThrow(/kexec'd into the next kernel/);
  });

  it('Kernel.panic is public: the kernel is dead after it, the panic is logged and returned', () => {
    const { machine } = hvMachine(false);
    const k = Kernel.boot(machine, { cmdline: CMDLINE, plugins: [] });
    const e = k.panic('test');
    expect(e).toBeInstanceOf(KernelPanic);
    expect(k.dmesg.lines()).toContain('Kernel panic - not syncing: test');
    expect(() => k.spawn('x')).toThrow(KernelDeadError);
  });
});
