import { describe, expect, it } from 'vitest';
import { createMachine, KEXEC_JUMP_NS } from '@liveupdate/hw';
import { boot, BOOT_PHASE_NS, SHUTDOWN_PHASE_NS } from '../src/index.js';

const sum = (o: Readonly<Record<string, number>>): number => Object.values(o).reduce((a, b) => a + b, 0);

describe('machine time of boot and kexec', () => {
  it('a cold boot costs the sum of its boot phases', () => {
    const m = createMachine({ memory: '256MiB' });
    boot(m, { cmdline: 'kho=on liveupdate=on' });
    expect(m.clock.now).toBe(sum(BOOT_PHASE_NS));
  });

  it('a kexec costs its shutdown phases, the jump and the next boot, and each phase passes after its hooks ran', () => {
    const m = createMachine({ memory: '256MiB' });
    const k1 = boot(m, { cmdline: 'kho=on liveupdate=on' });
    const seen: Array<[string, number]> = [];
    k1.shutdownHooks.deviceShutdown.tap('t', () => seen.push(['deviceShutdown', m.clock.now]));
    const t0 = m.clock.now;
    k1.kexec({ cmdline: 'kho=on liveupdate=on' });
    expect(seen).toEqual([['deviceShutdown', t0 + SHUTDOWN_PHASE_NS.reboot]]);
    expect(m.clock.now - t0).toBe(sum(SHUTDOWN_PHASE_NS) + KEXEC_JUMP_NS + sum(BOOT_PHASE_NS));
  });
});
