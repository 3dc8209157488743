/**
 * Scratch areas and the KHO command line (kernel/liveupdate/kexec_handover.c:
 * kho_reserve_scratch, kho_parse_scratch_size): kho_scratch= parsing, the
 * default sizing (nodes + 2 areas, 2 MiB aligned, lowmem below 4 GiB, per-node areas inside
 * their node), reuse of the very same areas after a KHO kexec, and kho=off.
 */
import { describe, expect, it } from 'vitest';
import { createMachine } from '@liveupdate/hw';
import { Kernel, parseBootOptions, parseKhoScratch, type ScratchSizing } from '@liveupdate/runtime';
import { GiB, MiB, coldBoot, errnoOf } from './fixtures/kho-helpers.js';

describe('parseKhoScratch (kho_scratch=)', () => {
  const cases: ReadonlyArray<readonly [string, ScratchSizing | string]> = [
    ['200%', { kind: 'scale', percent: 200 }],
    ['50%', { kind: 'scale', percent: 50 }],
    ['16M,512M,256M', { kind: 'explicit', lowmem: 16 * MiB, global: 512 * MiB, pernode: 256 * MiB }],
    ['0x10M,1G,4096', { kind: 'explicit', lowmem: 16 * MiB, global: GiB, pernode: 4096 }],
    ['0,0,1K', { kind: 'explicit', lowmem: 0, global: 0, pernode: 1024 }],
    ['', 'EINVAL'],
    ['%', 'EINVAL'],
    ['1,2', 'EINVAL'],
    ['0,0,0', 'EINVAL'],
    ['1,2,3x', 'EINVAL'],
    ['1,,3', 'EINVAL'],
    ['M,1,1', 'EINVAL'],
    ['12345678901%', 'EINVAL'], // 11 digits: longer than the 10 kstrtouint gets
    ['4294967296%', 'ERANGE'], // 10 digits, but above UINT_MAX
    ['12x%', 'EINVAL'],
  ];

  it.each(cases)('%j → %j', (input, expected) => {
    expect(parseKhoScratch(input)).toEqual(expected);
  });

  it('a bare kho_scratch (no value) is EINVAL', () => {
    expect(parseKhoScratch(undefined)).toBe('EINVAL');
  });

  it('a malformed kho_scratch= is reported as a malformed early option and the default stays', () => {
    expect(parseBootOptions('kho=on kho_scratch=1,2')).toEqual({
      kho: true, liveupdate: false, scratch: { kind: 'scale', percent: 200 }, errors: ["Malformed early option 'kho_scratch'"],
    });
  });

  it('kho= and liveupdate= take kstrtobool values; both are off by default', () => {
    expect(parseBootOptions('')).toMatchObject({ kho: false, liveupdate: false });
    expect(parseBootOptions('kho=1 liveupdate=y')).toMatchObject({ kho: true, liveupdate: true });
    expect(parseBootOptions('kho=on kho=off')).toMatchObject({ kho: false });
    expect(parseBootOptions('kho=maybe').errors).toEqual(["Malformed early option 'kho'"]);
  });
});

describe('default scratch sizing on a 16 GiB machine with 2 NUMA nodes', () => {
  const machine = createMachine({ memory: '16GiB', numaNodes: 2 });
  const k = coldBoot(machine, 'kho=on');
  const node = (i: number): { start: number; end: number } => {
    const n = machine.numaNodes[i];
    if (!n) throw new Error(`no node ${i}`);
    return { start: n.startPfn * 4096, end: n.endPfn * 4096 };
  };

  it('reserves nodes + 2 = 4 areas: lowmem, global, node 0, node 1', () => {
    expect(k.scratch).toHaveLength(4);
  });

  it('sizes them at 200% of the kernel memory they cover', () => {
    // Kernel memory: the 32 MiB image (below 4 GiB, node 0) and each node's 128 MiB memmap
    // (1/64 of 8 GiB, at the top of the node, above 4 GiB). lowmem = 2 * 32; global =
    // 2 * (32 + 256) - 64; node 0 = 2 * (32 + 128); node 1 = 2 * 128.
    expect(k.scratch.map((a) => a.size / MiB)).toEqual([64, 512, 320, 256]);
  });

  it('aligns every area, address and size, to 2 MiB (CMA_MIN_ALIGNMENT_BYTES)', () => {
    expect(k.scratch.filter((a) => a.addr % (2 * MiB) !== 0 || a.size % (2 * MiB) !== 0)).toEqual([]);
  });

  it('puts the lowmem area below 4 GiB', () => {
    const low = k.scratch[0];
    expect((low?.addr ?? Infinity) + (low?.size ?? 0)).toBeLessThanOrEqual(4 * GiB);
  });

  it('puts each per-node area inside its node', () => {
    for (const i of [0, 1]) {
      const a = k.scratch[2 + i];
      expect(a && a.addr >= node(i).start && a.addr + a.size <= node(i).end).toBe(true);
    }
  });

  it('lists the areas in debugfs kho/out/scratch_phys and scratch_len, one 0x%llx line each', () => {
    expect(k.debugfs.readText('kho/out/scratch_phys')).toBe(k.scratch.map((a) => `0x${a.addr.toString(16)}\n`).join(''));
    expect(k.debugfs.readText('kho/out/scratch_len')).toBe('0x4000000\n0x20000000\n0x14000000\n0x10000000\n');
  });
});

describe('explicit and scaled scratch sizes on a cold boot', () => {
  it('kho_scratch=16M,512M,256M gives 16 MiB lowmem, 512 MiB global and 256 MiB per node', () => {
    const k = coldBoot(createMachine({ memory: '16GiB', numaNodes: 2 }), 'kho=on kho_scratch=16M,512M,256M');
    expect(k.scratch.map((a) => a.size / MiB)).toEqual([16, 512, 256, 256]);
  });

  it('kho_scratch=50% scales every area to half the kernel memory (rounded up to 2 MiB)', () => {
    const k = coldBoot(createMachine({ memory: '16GiB', numaNodes: 2 }), 'kho=on kho_scratch=50%');
    expect(k.scratch.map((a) => a.size / MiB)).toEqual([16, 128, 80, 64]);
  });

  it('scratch that cannot be reserved disables kexec handover', () => {
    const k = coldBoot(createMachine({ memory: '4GiB' }), 'kho=on kho_scratch=16M,8G,1M');
    expect(k.khoEnabled).toBe(false);
    expect(k.khoOut).toBeNull();
    expect(k.dmesg.grep('Failed to reserve scratch area, disabling kexec handover')).toHaveLength(1);
  });
});

describe('after a KHO kexec the very same scratch areas are reused', () => {
  const machine = createMachine({ memory: '16GiB', numaNodes: 2 });
  const k1 = coldBoot(machine, 'kho=on');
  const phys = k1.debugfs.read('kho/out/scratch_phys');
  const len = k1.debugfs.read('kho/out/scratch_len');
  const k2 = k1.kexec({ cmdline: 'kho=on kho_scratch=16M,512M,256M' });
  const k2Scratch = [k2.debugfs.read('kho/out/scratch_phys'), k2.debugfs.read('kho/out/scratch_len')];
  const k3 = k2.kexec({ cmdline: 'kho=on kho_scratch=10%' });

  it('the second kernel reports identical scratch_phys and scratch_len, ignoring its kho_scratch=', () => {
    expect(k2Scratch).toEqual([phys, len]);
  });

  it('so does the third kernel of the chain', () => {
    expect([k3.debugfs.read('kho/out/scratch_phys'), k3.debugfs.read('kho/out/scratch_len')]).toEqual([phys, len]);
  });

  it('both are KHO boots that log no complaint', () => {
    expect([k2.isKhoBoot, k3.isKhoBoot]).toEqual([true, true]);
    expect(k3.dmesg.grep('disabling')).toEqual([]);
  });
});

describe('kho=off', () => {
  const machine = createMachine({ memory: '4GiB' });
  const k = coldBoot(machine, 'kho=off liveupdate=on');

  it('has no kho/ directory in debugfs', () => {
    expect(k.debugfs.list().filter((p) => p.startsWith('kho/'))).toEqual([]);
    expect(errnoOf(() => k.debugfs.read('kho/out/fdt'))).toBe('ENOENT');
  });

  it('has no /dev/liveupdate, and LUO says why', () => {
    expect(errnoOf(() => k.spawn('vmm').open('/dev/liveupdate'))).toBe('ENOENT');
    expect(k.dmesg.grep('liveupdate: Disabling liveupdate because KHO is disabled')).toHaveLength(1);
  });

  it('reserves no scratch and hands nothing over: the next kernel is a cold-style boot', () => {
    expect(k.scratch).toEqual([]);
    const next = k.kexec({ cmdline: 'kho=on' });
    expect(machine.bootParams.khoData).toBeUndefined();
    expect(next.isKhoBoot).toBe(false);
    expect(next.dmesg.grep('disabling KHO revival')).toEqual([]);
  });

  it('the default command line (no kho=) is kho=off', () => {
    const k0 = coldBoot(createMachine({ memory: '4GiB' }), '');
    expect([k0.khoEnabled, k0.khoOut]).toEqual([false, null]);
  });

  it('a KHO boot is still a KHO boot with kho=off: preserved memory is reserved, nothing is handed on', () => {
    const m = createMachine({ memory: '4GiB' });
    const a = coldBoot(m, 'kho=on');
    const pfn = a.mm.allocPages(0) as number;
    a.khoOut?.preserveFolio(pfn, 0);
    const b = a.kexec({ cmdline: 'kho=off' });
    expect([b.isKhoBoot, b.khoEnabled, b.khoOut]).toEqual([true, false, null]);
    expect(b.khoIn?.restoreFolio(pfn * 4096)).toEqual({ pfn, order: 0 });
  });
});

describe('Kernel.boot reads the command line from the boot parameters after a kexec', () => {
  it('ignores BootConfig.cmdline for the second kernel', () => {
    const m = createMachine({ memory: '4GiB' });
    const k1 = coldBoot(m, 'kho=on');
    k1.kexecJump('kho=on liveupdate=on');
    const k2 = Kernel.boot(m, { cmdline: 'kho=off' });
    expect([k2.cmdline, k2.khoEnabled]).toEqual(['kho=on liveupdate=on', true]);
  });
});
