import { createMachine } from '@liveupdate/hw';
import { describe, expect, it } from 'vitest';
import { boot, definePlugin, SDK_VERSION } from '../src/index.js';

const phases = (log: string[]) => definePlugin({
  name: '@test/phases', version: '1.0.0', sdk: `^${SDK_VERSION}`,
  init(_kernel, hooks) {
    for (const p of ['memblock', 'luoEarly', 'iommuInit', 'pciEnumerate', 'probe', 'late'] as const) hooks.boot[p].tap(() => log.push(p));
    for (const p of ['reboot', 'deviceShutdown', 'syscoreShutdown', 'beforeJump'] as const) hooks.shutdown[p].tap(() => log.push(p));
  },
  setup() { log.push('setup'); },
});

describe('boot and shutdown phases', () => {
  it('run in the kernel order: memblock, LUO early, IOMMU, PCI, probe, handler registration, late', () => {
    const log: string[] = [];
    boot(createMachine({ memory: '1GiB' }), { cmdline: 'kho=on liveupdate=on', plugins: [phases(log)] });
    expect(log).toEqual(['memblock', 'luoEarly', 'iommuInit', 'pciEnumerate', 'probe', 'setup', 'late']);
  });

  it('the kexec shutdown path runs reboot, device shutdown, syscore shutdown, then the jump', () => {
    const log: string[] = [];
    const k = boot(createMachine({ memory: '1GiB' }), { cmdline: 'kho=on liveupdate=on', plugins: [phases(log)] });
    log.length = 0;
    k.kexecJump({ cmdline: 'kho=on liveupdate=on', plugins: [] });
    expect(log).toEqual(['reboot', 'deviceShutdown', 'syscoreShutdown', 'beforeJump']);
    expect(k.isDead).toBe(true);
  });

  it('a failed freeze runs no shutdown phase', () => {
    const log: string[] = [];
    const k = boot(createMachine({ memory: '1GiB' }), { cmdline: 'kho=on liveupdate=on', plugins: [phases(log)] });
    log.length = 0;
    k.luo.hooks.reboot.tap('test', (ev) => { if (ev.phase === 'freeze') throw new Error('no'); });
    expect(() => k.kexecJump({ cmdline: 'kho=on liveupdate=on', plugins: [] })).toThrow();
    expect(log).toEqual([]);
  });
});
