/**
 * Hostile incoming bytes (kernel/liveupdate/kexec_handover.c, kho_populate and
 * kho_mem_deserialize): every bad
 * handover makes the new kernel log "disabling KHO revival" and boot as a normal, non-KHO
 * kernel with nothing of the preserved memory reserved, without throwing. The bytes are
 * corrupted in emulated memory (or in the boot parameters) just before or just after the jump.
 */
import { describe, expect, it } from 'vitest';
import { PAGE_SIZE, createMachine, type Machine } from '@liveupdate/hw';
import { Kernel, abi, propString, propU64LE, type Folio, type KhoOut } from '@liveupdate/runtime';
import {
  coldBoot, khoDataOf, khoRootProps, prng, rootFdt, subtreeNode, trackerNodeOnPath, withKhoData, writeFdtPage, type KhoData,
} from './fixtures/kho-helpers.js';

const CMDLINE = 'kho=on liveupdate=on';

interface Handover {
  readonly machine: Machine;
  readonly out: KhoOut;
  readonly folios: readonly Folio[];
  readonly scratch: ReadonlyArray<{ addr: number; size: number }>;
}

/** k1 with a few preserved folios of several orders, in two different tracker leaves. */
function prepare(config: { khoDebug?: boolean } = {}): { h: Handover; k1: Kernel } {
  const machine = createMachine({ memory: '4GiB' });
  const k1 = coldBoot(machine, CMDLINE, config);
  const out = k1.khoOut as KhoOut;
  const folios: Folio[] = [];
  for (const order of [0, 0, 3, 9, 10]) {
    const pfn = k1.mm.allocPages(order);
    if (pfn === null) throw new Error('test setup: out of memory');
    machine.memory.fill(pfn * PAGE_SIZE, 2 ** order * PAGE_SIZE, 0x33);
    out.preserveFolio(pfn, order);
    folios.push({ pfn, order });
  }
  return { h: { machine, out, folios, scratch: k1.scratch }, k1 };
}

interface Case {
  readonly name: string;
  /** Corrupt before the jump (the live FDT page is the handover). */
  readonly before?: (h: Handover) => void;
  /** Corrupt after the jump, before the boot; may return a machine with other boot params. */
  readonly after?: (h: Handover, d: KhoData) => Machine | void;
  /** What the dmesg line must say about why. */
  readonly why: RegExp;
  readonly config?: { khoDebug?: boolean };
}

const u64 = (v: number | bigint): Uint8Array => propU64LE(BigInt(v));
const encodeKhoData = (d: KhoData): Uint8Array => abi.kho.khoData.encode(d);
const rootSlot = (h: Handover, slot: number, value: number): void => h.machine.memory.writeU64(h.out.trackerRootPhys + 8 * slot, value);
/** The last table level above the leaf of folio 0 (its entries point at leaves). */
const level1Of = (h: Handover): number => {
  const f = h.folios[0] as Folio;
  return trackerNodeOnPath(h.machine, h.out.trackerRootPhys, f.pfn, f.order, 1);
};
const leafSlotOf = (h: Handover): number => {
  const f = h.folios[0] as Folio;
  return Math.floor(((2 ** 52 + f.pfn) / 2 ** 15) % 512); // table_index(key, 1) for an order-0 key
};

const CASES: readonly Case[] = [
  {
    name: 'bad FDT magic',
    after: (h, d) => { h.machine.memory.writeU32(Number(d.fdt_addr), 0); },
    why: /handover FDT at 0x[0-9a-f]+ is invalid: FDT_ERR_BADMAGIC/,
  },
  {
    name: "wrong root compatible 'kho-v3'",
    before: (h) => writeFdtPage(h.machine, h.out.fdtPhys, rootFdt(khoRootProps(h.out.trackerRootPhys, 'kho-v3'))),
    why: /incompatible: 'kho-v3' \(expected 'kho-v4'\)/,
  },
  {
    name: 'no preserved-memory-map',
    before: (h) => writeFdtPage(h.machine, h.out.fdtPhys, rootFdt({ compatible: propString('kho-v4') })),
    why: /no valid preserved-memory-map/,
  },
  {
    name: 'preserved-memory-map of 4 bytes',
    before: (h) => writeFdtPage(h.machine, h.out.fdtPhys, rootFdt({ compatible: propString('kho-v4'), 'preserved-memory-map': new Uint8Array(4) })),
    why: /no valid preserved-memory-map/,
  },
  {
    name: 'preserved-memory-map 0',
    before: (h) => writeFdtPage(h.machine, h.out.fdtPhys, rootFdt(khoRootProps(0))),
    why: /preserved-memory-map is 0/,
  },
  {
    name: 'preserved-memory-map outside RAM',
    before: (h) => writeFdtPage(h.machine, h.out.fdtPhys, rootFdt(khoRootProps(h.machine.memory.size))),
    why: /preserved-memory-map 0x100000000 is not a page of RAM/,
  },
  {
    name: 'FDT totalsize larger than the fdt_size handed over',
    after: (h, d) => { h.machine.memory.write(Number(d.fdt_addr) + 4, Uint8Array.of(0, 0, 0x20, 0)); },
    why: /FDT_ERR_TRUNCATED/,
  },
  {
    name: 'tracker root entry outside RAM',
    after: (h) => rootSlot(h, 3, h.machine.memory.size),
    why: /node 0x100000000 at level 4 is outside RAM/,
  },
  {
    name: 'tracker leaf pointer outside RAM',
    after: (h) => h.machine.memory.writeU64(level1Of(h) + 8 * 511, h.machine.memory.size + 0x10000),
    why: /at level 0 is outside RAM/,
  },
  {
    name: 'a leaf bit for a block outside RAM',
    after: (h) => {
      // Folio 1 (order 0, preserved, so it survives) becomes a leaf linked at level-1 slot 40:
      // order-0 keys of pfns 40 * 32768 = 0x140000 and up, past the end of this 4 GiB RAM.
      const fake = (h.folios[1] as Folio).pfn * PAGE_SIZE;
      h.machine.memory.fill(fake, PAGE_SIZE, 0);
      h.machine.memory.writeU32(fake, 1);
      h.machine.memory.writeU64(level1Of(h) + 8 * 40, fake);
    },
    why: /preserved block pfn 0x140000 order 0 is outside RAM/,
  },
  {
    name: 'tracker node pointer not page aligned',
    after: (h) => rootSlot(h, 3, 0x200008),
    why: /node 0x200008 at level 4 is not page aligned/,
  },
  {
    name: 'tracker node pointer inside a scratch area',
    after: (h) => rootSlot(h, 3, (h.scratch[0] as { addr: number }).addr + PAGE_SIZE),
    why: /at level 4 is inside a scratch area/,
  },
  {
    name: 'tracker node pointer at a scrubbed (poison) page',
    after: (h) => rootSlot(h, 3, 0x40000000), // 1 GiB: never written, not a survivor, reads 0xaa
    // The poison entry 0xaaaaaaaaaaaaaaaa, read as a number, is neither aligned nor inside RAM.
    why: /node 0xaaaaaaaaaaaa[0-9a-f]+ at level 3 is (not page aligned|outside RAM)/,
  },
  {
    name: 'the root table pointing at itself',
    after: (h) => rootSlot(h, 3, h.out.trackerRootPhys),
    why: /is reached twice/,
  },
  {
    name: 'a level-1 table entry pointing back at the root (a cycle)',
    after: (h) => h.machine.memory.writeU64(level1Of(h) + 8 * 511, h.out.trackerRootPhys),
    why: /is reached twice/,
  },
  {
    name: 'a leaf shared by two table entries',
    after: (h) => {
      const l1 = level1Of(h);
      const leaf = h.machine.memory.readU64Number(l1 + 8 * leafSlotOf(h));
      h.machine.memory.writeU64(l1 + 8 * (leafSlotOf(h) + 1), leaf);
    },
    why: /is reached twice/,
  },
  {
    name: 'a preserved block inside a scratch area (preserved without KEXEC_HANDOVER_DEBUG)',
    config: { khoDebug: false },
    before: (h) => h.out.preserveFolio((h.scratch[0] as { addr: number }).addr / PAGE_SIZE, 0),
    why: /preserved block 0x[0-9a-f]+ order 0 is inside a scratch area/,
  },
  {
    name: 'khoData fdt_addr outside RAM',
    after: (h, d) => withKhoData(h.machine, encodeKhoData({ ...d, fdt_addr: BigInt(h.machine.memory.size) })),
    why: /FDT 0x100000000\+0x1000 is outside RAM/,
  },
  {
    name: 'khoData FDT straddling the end of RAM',
    after: (h, d) => withKhoData(h.machine, encodeKhoData({ ...d, fdt_addr: BigInt(h.machine.memory.size - 0x800) })),
    why: /is outside RAM/,
  },
  {
    name: 'khoData fdt_size 0',
    after: (h, d) => withKhoData(h.machine, encodeKhoData({ ...d, fdt_size: 0n })),
    why: /is outside RAM/,
  },
  {
    name: 'khoData fdt_size of 3 GiB (inside RAM, but more than early_memremap maps)',
    after: (h, d) => withKhoData(h.machine, encodeKhoData({ ...d, fdt_addr: 0n, fdt_size: 3n << 30n })),
    why: /failed to memremap FDT 0x0\+0xc0000000/,
  },
  {
    name: 'khoData scratch_size of 1 MiB (inside RAM, but more than early_memremap maps)',
    after: (h, d) => withKhoData(h.machine, encodeKhoData({ ...d, scratch_addr: 0n, scratch_size: 1n << 20n })),
    why: /failed to memremap scratch array 0x0\+0x100000/,
  },
  {
    name: 'khoData with a u64 address that overflows',
    after: (h, d) => withKhoData(h.machine, encodeKhoData({ ...d, fdt_addr: 0xffff_ffff_ffff_f000n })),
    why: /is outside RAM/,
  },
  {
    name: 'khoData scratch array outside RAM',
    after: (h, d) => withKhoData(h.machine, encodeKhoData({ ...d, scratch_addr: BigInt(h.machine.memory.size) })),
    why: /scratch array 0x100000000\+0x[0-9a-f]+ is outside RAM/,
  },
  {
    name: 'khoData shorter than struct kho_data',
    after: (h) => withKhoData(h.machine, (h.machine.bootParams.khoData as Uint8Array).subarray(0, 16)),
    why: /setup_data too short \(16 bytes\)/,
  },
  {
    name: 'scratch array of random bytes',
    after: (h, d) => {
      const rand = prng(0x5c7a);
      const junk = Uint8Array.from({ length: Number(d.scratch_size) }, () => Math.floor(rand() * 256));
      h.machine.memory.write(Number(d.scratch_addr), junk);
    },
    why: /scratch area 0 .*(not page aligned|outside RAM)/,
  },
  {
    name: 'scratch array length not a multiple of 16',
    after: (h, d) => withKhoData(h.machine, encodeKhoData({ ...d, scratch_size: d.scratch_size - 1n })),
    why: /scratch array length 47 is not a multiple of 16/,
  },
  {
    name: 'scratch array with an empty area',
    after: (h, d) => h.machine.memory.writeU64(Number(d.scratch_addr) + 16 + 8, 0),
    why: /scratch area 1 is empty/,
  },
  {
    name: 'scratch array with overlapping areas',
    after: (h, d) => {
      const a0 = h.machine.memory.read(Number(d.scratch_addr), 16);
      h.machine.memory.write(Number(d.scratch_addr) + 16, a0);
    },
    why: /scratch areas overlap/,
  },
  {
    name: 'scratch array with an area past the end of RAM',
    after: (h, d) => h.machine.memory.writeU64(Number(d.scratch_addr) + 8, h.machine.memory.size),
    why: /scratch area 0 .* is outside RAM/,
  },
];

describe.each(CASES)('hostile handover: $name', ({ before, after, why, config }) => {
  function run(): { k2: Kernel; h: Handover } {
    const { h, k1 } = prepare(config);
    before?.(h);
    k1.kexecJump(CMDLINE);
    const next = after?.(h, khoDataOf(h.machine)) ?? h.machine;
    return { k2: Kernel.boot(next), h };
  }

  it('boots without an exception and logs "disabling KHO revival" with the reason', () => {
    const { k2 } = run();
    const lines = k2.dmesg.grep('disabling KHO revival');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(why);
  });

  it('is not a KHO boot and reserves none of the preserved memory', () => {
    const { k2, h } = run();
    expect([k2.isKhoBoot, k2.khoIn, k2.incomingMetadata]).toEqual([false, null, null]);
    expect(h.folios.filter((f) => k2.mm.memblock.reserved.overlaps(f.pfn, f.pfn + 2 ** f.order))).toEqual([]);
    expect(k2.dmesg.grep('preserved blocks')).toEqual([]);
  });

  it('otherwise boots normally: KHO outgoing, LUO and /dev/liveupdate are up', () => {
    const { k2 } = run();
    expect(k2.khoOut).not.toBeNull();
    expect(k2.luo.enabled).toBe(true);
    expect(k2.luo.liveupdateNum).toBe(1);
    expect(k2.spawn('init').open('/dev/liveupdate')).toBeGreaterThanOrEqual(0);
  });
});

describe('a walk over a hostile tracker terminates', () => {
  it('a level-1 table whose 512 entries all point at the root is rejected at the first revisit', () => {
    const { h, k1 } = prepare();
    k1.kexecJump(CMDLINE);
    const l1 = level1Of(h);
    for (let slot = 0; slot < 512; slot++) h.machine.memory.writeU64(l1 + 8 * slot, h.out.trackerRootPhys);
    const k2 = Kernel.boot(h.machine);
    expect(k2.isKhoBoot).toBe(false);
    expect(k2.dmesg.grep(/failed to walk the preserved memory map: node 0x[0-9a-f]+ is reached twice/)).toHaveLength(1);
  });
});

describe('control: the same handover left alone', () => {
  it('is a KHO boot that reserves every preserved folio', () => {
    const { h, k1 } = prepare();
    k1.kexecJump(CMDLINE);
    const k2 = Kernel.boot(h.machine);
    expect(k2.isKhoBoot).toBe(true);
    expect(k2.dmesg.grep('disabling KHO revival')).toEqual([]);
    expect(h.folios.every((f) => k2.mm.memblock.reserved.covers(f.pfn, f.pfn + 2 ** f.order))).toBe(true);
  });

  it('keeps subtree children irrelevant to populate: an extra junk child does not disable revival', () => {
    const { h, k1 } = prepare();
    writeFdtPage(h.machine, h.out.fdtPhys, rootFdt(khoRootProps(h.out.trackerRootPhys), [subtreeNode('junk', { 'preserved-data': u64(1) })]));
    k1.kexecJump(CMDLINE);
    const k2 = Kernel.boot(h.machine);
    expect(k2.isKhoBoot).toBe(true);
  });
});
