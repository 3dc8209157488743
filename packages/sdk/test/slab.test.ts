/**
 * KhoSlab: small fixed-size records packed into preserved slab pages, checked against a model
 * through a real kexec, and against hostile descriptors and pages.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { createMachine, type Machine } from '@liveupdate/hw';
import { boot, ErrnoError, Kernel, KhoSlab, PAGE_SIZE } from '@liveupdate/sdk';

const CMDLINE = 'kho=on';
const SUBTREE = 'slab-test';

function coldBoot(): { m: Machine; k1: Kernel } {
  const m = createMachine({ memory: '1GiB' });
  return { m, k1: boot(m, { cmdline: CMDLINE }) };
}

/** Publish the descriptor address under a subtree, jump, and return the next kernel and that address. */
function handOver(m: Machine, k1: Kernel, slab: KhoSlab, corrupt?: (m: Machine) => void): { k2: Kernel; desc: number } {
  const out = k1.khoOut as NonNullable<Kernel['khoOut']>;
  const blob = out.allocPreserve(8);
  m.memory.writeU64(blob, slab.descPhys);
  out.addSubtree(SUBTREE, blob, 8);
  k1.kexecJump(CMDLINE);
  corrupt?.(m);
  const k2 = Kernel.boot(m, { cmdline: CMDLINE });
  const kin = k2.khoIn as NonNullable<Kernel['khoIn']>;
  const { phys } = kin.retrieveSubtree(SUBTREE);
  const desc = m.memory.readU64Number(phys);
  kin.restoreFree(phys);
  return { k2, desc };
}

/** 'CODE detail' of the ErrnoError `f` throws (the message is "syscall: CODE (detail)"). */
const codeOf = (f: () => unknown): string => {
  try { f(); return 'ok'; } catch (e) {
    if (!(e instanceof ErrnoError)) return String(e);
    const m = /\((.*)\)$/s.exec(e.message);
    return `${e.code} ${m ? m[1] : ''}`;
  }
};

describe('KhoSlab', () => {
  it('packs 8-byte records 502 to a page: 1000 records cost 2 slab pages and a descriptor page', () => {
    const { k1 } = coldBoot();
    const s = KhoSlab.create(k1, 'pci_dev_ser', 8);
    expect(s.objsPerSlab).toBe(502);
    for (let i = 0; i < 1000; i++) s.alloc();
    expect([s.nrObjects, s.nrSlabs, s.metadataBytes]).toEqual([1000, 2, 3 * PAGE_SIZE]);
  });

  it('keeps every object\'s bytes and address across the kexec (model check)', () => {
    fc.assert(fc.property(fc.array(fc.oneof(fc.constant(-1), fc.nat(1 << 30)), { minLength: 1, maxLength: 1500 }), fc.integer({ min: 1, max: 64 }), (ops, size) => {
      const { m, k1 } = coldBoot();
      const s = KhoSlab.create(k1, 'model', size);
      const model = new Map<number, number>();
      for (const op of ops) {
        if (op === -1 && model.size > 0) {
          const [victim] = model.keys();
          s.free(victim as number);
          model.delete(victim as number);
        } else {
          const at = s.alloc();
          m.memory.writeU8(at, op & 0xff);
          model.set(at, op & 0xff);
        }
      }
      const { k2, desc } = handOver(m, k1, s);
      const r = KhoSlab.restore(k2, desc, size);
      const got = new Map<number, number>();
      for (const at of r.objectsPhys()) got.set(at, m.memory.readU8(at));
      expect(got).toEqual(model);
      expect(r.nrObjects).toBe(model.size);
      r.destroy();
      expect(k2.khoIn?.leaked().pages).toBe(0);
    }), { numRuns: 25 });
  });

  it('gives an emptied slab page back to KHO and the allocator', () => {
    const { k1 } = coldBoot();
    const s = KhoSlab.create(k1, 'churn', 16);
    const a = Array.from({ length: s.objsPerSlab + 1 }, () => s.alloc());
    expect(s.nrSlabs).toBe(2);
    s.free(a[a.length - 1] as number);
    expect(s.nrSlabs).toBe(1);
    expect(codeOf(() => s.free(12345))).toBe('EINVAL 0x3039 is not an object of churn');
  });

  it('refuses bad geometry and names up front', () => {
    const { k1 } = coldBoot();
    expect(codeOf(() => KhoSlab.create(k1, 'x', 0))).toBe('EINVAL object size 0');
    expect(codeOf(() => KhoSlab.create(k1, 'x', 4096))).toBe('EINVAL object size 4096');
    expect(codeOf(() => KhoSlab.create(k1, 'a'.repeat(32), 8))).toMatch(/^EINVAL name/);
  });

  describe('hostile restores are EINVAL, keep nothing restored, and say why', () => {
    const cases: Array<[string, (m: Machine, desc: number, slab0: number) => void, string | RegExp]> = [
      ['a wrong magic', (m, d) => m.memory.writeU32(d, 0), 'magic 0x0'],
      ['another object size', (m, d) => m.memory.writeU32(d + 4, 16), 'geometry 16x502, expected 8x502'],
      ['more objects than the slabs can hold', (m, d) => m.memory.writeU64(d + 24, 10_000), '10000 objects in 2 slabs'],
      ['nr_objects disagreeing with the pages', (m, d) => m.memory.writeU64(d + 24, 600), 'nr_objects 600, slabs hold 700'],
      ['a cycle', (m, _d, s0) => m.memory.writeU64(s0, s0), /cycle in the slab chain|more slab pages/],
      ['a chain longer than nr_slabs', (m, d) => m.memory.writeU64(m.memory.readU64Number(m.memory.readU64Number(d + 32)), 0x300000), 'more slab pages than nr_slabs 2'],
      ['a slab outside RAM', (m, d) => m.memory.writeU64(d + 32, 2 ** 40), 'slab 0x10000000000 is not a page of RAM'],
      ['inuse disagreeing with the bitmap', (m, _d, s0) => m.memory.writeU32(s0 + 8, 7), /inuse 7, bitmap 502/],
      ['bitmap bits past objs_per_slab', (m, _d, s0) => m.memory.writeU32(s0 + 16 + 60, 0xffffffff), /bitmap marks slots past 502/],
      ['a slab page that was not preserved', (m, d, s0) => { m.memory.write(0x10000000, m.memory.read(s0, PAGE_SIZE)); m.memory.writeU64(d + 32, 0x10000000); }, 'page 0x10000000 was not preserved as one page'],
    ];
    for (const [what, corrupt, why] of cases) {
      it(what, () => {
        const { m, k1 } = coldBoot();
        const s = KhoSlab.create(k1, 'hostile', 8);
        for (let i = 0; i < 700; i++) s.alloc();
        const slab0 = m.memory.readU64Number(s.descPhys + 32);
        const { k2, desc } = handOver(m, k1, s, (mm) => corrupt(mm, s.descPhys, slab0));
        const before = k2.khoIn?.leaked().pages;
        const res = codeOf(() => KhoSlab.restore(k2, desc, 8));
        expect(res.startsWith('EINVAL ')).toBe(true);
        expect(res.slice(7)).toMatch(why);
        // Checks come before any restore; only a page that turns out not to be preserved comes after
        // the descriptor was restored, and the descriptor is then given back to the allocator.
        expect(k2.khoIn?.leaked().pages).toBe((before ?? 0) - (what === 'a slab page that was not preserved' ? 1 : 0));
      });
    }
  });
});
