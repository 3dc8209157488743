import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { PAGE_SIZE, pciRegs } from '@liveupdate/hw';
import { crc32 } from 'node:zlib';
import type { Machine } from '@liveupdate/hw';
import {
  Kernel, abi, errnoOf, openLiveupdate, preflight, assertPreflight, preserveFd, retrieveFd, retrieveSession, FormatNegotiationError, type Plugin,
} from '@liveupdate/sdk';
import memfd from '@liveupdate/plugin-memfd';
import pci, { BlockPciSer, FlatPciSer, pciCoreOf, readPciSerV6, readPciSerV7, vfioConfigRead, vfioKeepRunning, type PciPluginOptions } from '../src/index.js';
import { CMDLINE, createSession, openEngine, startRig } from './support.js';

const le32 = (n: number) => [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff];
const le64 = (n: number) => [...le32(n % 2 ** 32), ...le32(Math.floor(n / 2 ** 32))];
/** pci_dev_ser { u32 domain; u16 bdf; u16 refcount }. */
const dev = (domain: number, bdf: number, refcount: number) => [...le32(domain), bdf & 0xff, bdf >> 8, refcount & 0xff, refcount >> 8];

/** token -> address of its luo_file_ser.data, walked from kernel A's LUO subtree (luo-v5 kho_block chains). */
function fileEntries(machine: Machine, k1: Kernel): Map<bigint, number> {
  const m = machine.memory;
  const luo = k1.khoOut?.subtreeList.find((t) => t.name === 'LUO');
  if (!luo) throw new Error('no LUO subtree');
  const { luoSer, luoSessionSer, luoFileSer } = abi.luo;
  const hdr = abi.block.khoBlockHeader.size;
  const out = new Map<bigint, number>();
  for (let b = m.readU64Number(luo.phys + luoSer.offsets.sessions_pa); b !== 0; b = m.readU64Number(b)) {
    for (let i = 0; i < m.readU64Number(b + 8); i++) {
      const sp = b + hdr + i * luoSessionSer.size;
      for (let fb = m.readU64Number(sp + luoSessionSer.offsets.files); fb !== 0; fb = m.readU64Number(fb)) {
        for (let k = 0; k < m.readU64Number(fb + 8); k++) {
          const fp = fb + hdr + k * luoFileSer.size;
          out.set(m.readU64(fp + luoFileSer.offsets.token), fp + luoFileSer.offsets.data);
        }
      }
    }
  }
  return out;
}

/** dsa0 at 0000:03:00.0 under sw0-dp0 (02:00.0), sw0 (01:00.0), rp0 (00:01.0 = bdf 0x0008), in walk order. */
const DSA0_PATH = [...dev(0, 0x0300, 1), ...dev(0, 0x0200, 1), ...dev(0, 0x0100, 1), ...dev(0, 0x0008, 1)];

function preserved(opts: PciPluginOptions, engines: readonly string[]) {
  const r = startRig(opts);
  const s = createSession(r.p, r.dev, 'vm0');
  engines.forEach((n, i) => preserveFd(r.p, s, openEngine(r.k1, r.p, n), i + 1));
  return { ...r, s, phys: pciCoreOf(r.k1).writer?.phys ?? 0 };
}

describe('struct pci_ser bytes', () => {
  it('v6 "pci-v3": { u32 max_nr_devices; u32 nr_devices; pci_dev_ser devices[max] } for the nine functions present', () => {
    const { machine, phys } = preserved({ abi: 'v6' }, ['dsa0']);
    expect([...machine.memory.read(phys, 8 + 9 * 8)]).toEqual([...le32(9), ...le32(4), ...DSA0_PATH, ...new Array(5 * 8).fill(0)]);
  });

  it('v6: a second engine under the same switch bumps the shared bridges in place', () => {
    const { machine, phys } = preserved({ abi: 'v6' }, ['dsa0', 'dsa1']);
    expect([...machine.memory.read(phys, 8 + 6 * 8)]).toEqual([
      ...le32(9), ...le32(6),
      ...dev(0, 0x0300, 1), ...dev(0, 0x0200, 1), ...dev(0, 0x0100, 2), ...dev(0, 0x0008, 2),
      ...dev(0, 0x0400, 1), ...dev(0, 0x0208, 1),
    ]);
  });

  it('v7 "pci-v2": { u32 nr_devices; u64 devices } __packed pointing at a kho_block of pci_dev_ser', () => {
    const { machine, phys } = preserved({ abi: 'v7' }, ['dsa0']);
    const head = machine.memory.readU64Number(phys + 4);
    expect(head % PAGE_SIZE).toBe(0);
    expect([...machine.memory.read(phys, 12)]).toEqual([...le32(4), ...le64(head)]);
    // struct kho_block_header_ser { u64 next; u64 count } then the entries.
    expect([...machine.memory.read(head, 16 + 5 * 8)]).toEqual([...le64(0), ...le64(4), ...DSA0_PATH, ...new Array(8).fill(0)]);
  });
});

describe('struct vfio_pci_core_device_ser bytes', () => {
  it('1.x "vfio-pci-v1" is { u32 domain; u16 bdf } __packed; 2.x appends u16 flags, DMA_RUNNING when kept running', () => {
    for (const [writes, keep, bytes, compatible] of [
      [['1.0.0'], false, [0, 0, 0, 0, 0x00, 0x05, 0, 0], 'vfio-pci-v1'],
      [['1.0.0', '2.0.0'], false, [0, 0, 0, 0, 0x00, 0x05, 0, 0], 'vfio-pci@2.0.0'],
      [['1.0.0', '2.0.0'], true, [0, 0, 0, 0, 0x00, 0x05, 1, 0], 'vfio-pci@2.0.0'],
    ] as const) {
      const r = startRig({ vfioWrites: writes });
      const fd = openEngine(r.k1, r.p, 'dsa2');
      if (keep) vfioKeepRunning(r.p, fd);
      preserveFd(r.p, createSession(r.p, r.dev, 'vm0'), fd, 1);
      r.k1.kexecJump({ cmdline: CMDLINE, plugins: [memfd(), pci({ vfioWrites: writes })] });
      const f = r.k1.luo.sessions.outgoing[0]?.fileSet.files[0];
      expect(f?.compatible).toBe(compatible);
      expect([...r.machine.memory.read(Number(f?.serializedData ?? 0), 8)]).toEqual(bytes);
    }
  });

  it('2.1 appends u32 id_crc32 = CRC-32 of bytes 0..7, token 1 (u64) and "vm0" NUL-padded to 64 bytes, then u32 id_pad 0', () => {
    const r = startRig();
    const fd = openEngine(r.k1, r.p, 'dsa2');
    vfioKeepRunning(r.p, fd);
    preserveFd(r.p, createSession(r.p, r.dev, 'vm0'), fd, 1);
    r.k1.kexecJump({ cmdline: CMDLINE, plugins: [memfd(), pci()] });
    const f = r.k1.luo.sessions.outgoing[0]?.fileSet.files[0];
    expect(f?.compatible).toBe('vfio-pci@2.1.0');
    const rec = r.machine.memory.read(Number(f?.serializedData ?? 0), 16);
    expect([...rec.subarray(0, 8)]).toEqual([0, 0, 0, 0, 0x00, 0x05, 1, 0]);
    const covered = new Uint8Array(8 + 8 + 64);
    covered.set(rec.subarray(0, 8));
    covered[8] = 1;
    covered.set(new TextEncoder().encode('vm0'), 16);
    const dv = new DataView(rec.buffer, rec.byteOffset);
    expect([dv.getUint32(8, true), dv.getUint32(12, true)]).toEqual([crc32(covered), 0]);
  });

  it('2.1: two device files whose entries were swapped in the luo-v5 file block are both EINVAL, not each other\'s device', () => {
    const r = startRig();
    const s = createSession(r.p, r.dev, 'vm0');
    for (const [name, token] of [['dsa0', 1], ['dsa2', 2]] as const) preserveFd(r.p, s, openEngine(r.k1, r.p, name), token);
    r.k1.kexecJump({ cmdline: CMDLINE, plugins: [memfd(), pci()] });
    const [a, b] = r.k1.luo.sessions.outgoing[0]?.fileSet.files.map((x) => Number(x.serializedData)) ?? [];
    // Swap the two records' addresses where kernel B reads them: luo_file_ser.data of tokens 1 and 2.
    const entries = fileEntries(r.machine, r.k1);
    r.machine.memory.writeU64(entries.get(1n) as number, BigInt(b as number));
    r.machine.memory.writeU64(entries.get(2n) as number, BigInt(a as number));
    const k2 = Kernel.boot(r.machine, { cmdline: CMDLINE, plugins: [memfd(), pci()], release: '7.2.0' });
    const p2 = k2.spawn('vmm');
    const s2 = retrieveSession(p2, openLiveupdate(p2), 'vm0');
    expect([errnoOf(() => retrieveFd(p2, s2, 1)), errnoOf(() => retrieveFd(p2, s2, 2))]).toEqual(['EINVAL', 'EINVAL']);
  });
});

describe('pci_ser codecs', () => {
  const records = fc.uniqueArray(fc.record({ domain: fc.integer({ min: 0, max: 0xffff }), bdf: fc.integer({ min: 0, max: 0xffff }), refcount: fc.integer({ min: 1, max: 0xffff }) }), {
    selector: (r) => r.domain * 0x10000 + r.bdf, minLength: 0, maxLength: 700,
  });

  it('what a writer preserves, the reader of the same layout returns, for v6 and v7', () => {
    const r = startRig();
    fc.assert(fc.property(records, fc.boolean(), (recs, v7) => {
      const w = v7 ? new BlockPciSer(r.k1) : new FlatPciSer(r.k1, Math.max(1, recs.length));
      for (const x of recs) w.add(x.domain, x.bdf, x.refcount);
      const read = v7 ? readPciSerV7(r.machine.memory, w.phys) : readPciSerV6(r.machine.memory, w.phys);
      w.destroy();
      expect(read.problems).toEqual([]);
      expect(read.devices.map((d) => [d.domain, d.bdf, d.refcount]).sort()).toEqual(recs.map((d) => [d.domain, d.bdf, d.refcount]).sort());
    }), { numRuns: 40 });
  });

  it('removing records keeps both layouts dense and readable', () => {
    const r = startRig();
    fc.assert(fc.property(records, fc.array(fc.nat()), fc.boolean(), (recs, drops, v7) => {
      const w = v7 ? new BlockPciSer(r.k1) : new FlatPciSer(r.k1, Math.max(1, recs.length));
      for (const x of recs) w.add(x.domain, x.bdf, x.refcount);
      const gone = new Set<number>();
      for (const d of drops) {
        const x = recs[d % Math.max(1, recs.length)];
        if (!x) continue;
        w.remove(x.domain * 0x10000 + x.bdf);
        gone.add(x.domain * 0x10000 + x.bdf);
      }
      const read = v7 ? readPciSerV7(r.machine.memory, w.phys) : readPciSerV6(r.machine.memory, w.phys);
      w.destroy();
      expect(read.problems).toEqual([]);
      expect(read.devices.length).toBe(recs.length - gone.size);
    }), { numRuns: 40 });
  });

  it('hostile bytes are problems, never exceptions: cycles, bad counts, pointers outside RAM', () => {
    const r = startRig();
    const mem = r.machine.memory;
    const w = new BlockPciSer(r.k1);
    w.add(0, 0x100, 1);
    const head = mem.readU64Number(w.phys + 4);
    mem.writeU64(head, head);
    expect(readPciSerV7(mem, w.phys).problems).toEqual(['cycle in the block chain']);
    mem.writeU64(head, 0);
    mem.writeU64(head + 8, 0);
    expect(readPciSerV7(mem, w.phys).problems).toEqual([`block 0x${head.toString(16)} count 0 outside 1..510`]);
    mem.writeU64(w.phys + 4, 2 ** 52);
    expect(readPciSerV7(mem, w.phys).problems[0]).toMatch(/is not a page of RAM/);
    const f = new FlatPciSer(r.k1, 2);
    mem.writeU32(f.phys, 0xffffffff);
    expect(readPciSerV6(mem, f.phys, PAGE_SIZE).problems).toEqual(['max_nr_devices 4294967295 runs past the preserved allocation (4096 bytes)']);
    expect(readPciSerV6(mem, 12345).problems).toEqual(['pci_ser at 0x3039 is not a page of RAM']);
  });
});

describe('the pci family: why negotiation and not exact strings', () => {
  const a: Plugin[] = [memfd(), pci({ abi: 'v7' })];
  const b: Plugin[] = [memfd(), pci({ abi: 'v6-patch02' })];

  it('exact-string matching hands a v6 (patch 02) reader v7\'s "pci-v2" bytes, which it misreads', () => {
    const r = startRig({ abi: 'v7' });
    const s = createSession(r.p, r.dev, 'vm0');
    preserveFd(r.p, s, openEngine(r.k1, r.p, 'dsa0'), 1);
    const head = r.machine.memory.readU64Number((pciCoreOf(r.k1).writer?.phys ?? 0) + 4);
    // A v6 patch-02 reader that matches strings only: it claims whatever is filed under "pci-v2".
    const exact: Plugin[] = [memfd(), pci({ abi: 'v6-patch02', pciReads: '>=2.0.0 <5.0.0' })];
    r.k1.kexecJump({ cmdline: CMDLINE, plugins: exact });
    const k2 = Kernel.boot(r.machine, { cmdline: CMDLINE, plugins: exact });
    // The v6 array reader takes v7's nr_devices as max_nr_devices and the low half of the block pointer as nr_devices.
    expect(k2.dmesg.entries.filter((l) => /PCI FLB/.test(l.text)).map((l) => l.text)).toEqual([
      `failed to retrieve the incoming PCI FLB: nr_devices ${head % 2 ** 32} > max_nr_devices 4; no devices incoming`,
    ]);
  });

  it('kexec negotiates the pci FLB family of a preserved vfio-pci file: a target that cannot read it is refused before freeze', () => {
    const r = startRig({ abi: 'v7' });
    const s = createSession(r.p, r.dev, 'vm0');
    const fd = openEngine(r.k1, r.p, 'dsa0');
    preserveFd(r.p, s, fd, 1);
    let err: unknown = null;
    try { r.k1.kexecJump({ cmdline: CMDLINE, plugins: b }); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(FormatNegotiationError);
    expect((err as FormatNegotiationError).refusals).toEqual([{ family: 'pci', owner: '@liveupdate/plugin-pci', offered: ['4.0.0'], accepted: '^2.0.0' }]);
    // Nothing was frozen: the kernel keeps running and the device file still answers.
    expect(r.k1.isDead).toBe(false);
    expect(vfioConfigRead(r.p, fd, pciRegs.PCI_COMMAND, 2) & pciRegs.PCI_COMMAND_MASTER).toBe(pciRegs.PCI_COMMAND_MASTER);
  });

  it('negotiation refuses the pair before anything is frozen: pci 4.0.0 is not in ^2.0.0', () => {
    const report = preflight({ plugins: a, release: '7.1.0' }, { plugins: b, release: '7.0.0' });
    expect(report.refusals).toEqual([{ family: 'pci', owner: '@liveupdate/plugin-pci', offered: ['4.0.0'], accepted: '^2.0.0' }]);
    expect(() => assertPreflight(report)).toThrow(FormatNegotiationError);
    // A v7 kernel reads v6's final "pci-v3" as 3.0.0, so v6 → v7 is accepted.
    expect(preflight({ plugins: [memfd(), pci({ abi: 'v6' })], release: '7.0.0' }, { plugins: a, release: '7.1.0' }).ok).toBe(true);
  });
});
