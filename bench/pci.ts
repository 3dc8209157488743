/**
 * PCI device records: what 1, 64, 4096 and 65536 preserved devices cost in handover metadata
 * and in preserve/restore time, under four layouts (the question the June 1 LUO call left open:
 * an xarray page per 8-byte record is too expensive; preserve slab caches, or use kho_block):
 *   - v6 flat:   struct pci_ser { u32 max_nr_devices; u32 nr_devices; pci_dev_ser devices[] }
 *   - v7 block:  struct pci_ser { u32 nr_devices; u64 devices } → kho_block set of pci_dev_ser
 *   - xarray:    a KHO xarray keyed (domain << 16) | bdf, value = refcount
 *   - slab:      KhoSlab of 8-byte pci_dev_ser objects
 * Preserve = writing every record; restore = the next kernel validating the structure,
 * restoring its pages and building the (domain << 16) | bdf → refcount map PCI enumeration uses.
 *
 *   npm run bench -- pci            node --import tsx bench/pci.ts [--max N]
 */
import { createMachine, PAGE_SIZE, type Machine } from '@liveupdate/hw';
import { Kernel, KhoSlab, KhoXarray } from '@liveupdate/sdk';
import { BlockPciSer, FlatPciSer, readPciSerV6, readPciSerV7, pciAbi } from '@liveupdate/plugin-pci';

const CMDLINE = 'kho=on';
const SUBTREE = 'bench-pci';
const arg = (name: string, dflt: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
};
const MAX = arg('max', 65536);
const SIZES = [1, 64, 4096, 65536].filter((n) => n <= MAX);
const time = (fn: () => void): number => { const t = performance.now(); fn(); return performance.now() - t; };

interface Scheme {
  readonly name: string;
  /** Write n records; returns [root physical address, metadata bytes]. */
  preserve(k: Kernel, n: number): [number, number];
  /** Validate, restore and map; returns the number of records. */
  restore(k: Kernel, root: number): number;
}

/**
 * Device i's address, spread the way hosts are: one function per bus first (device i on bus
 * i mod 256, devfn i div 256), so 64 devices sit on 64 buses, as 64 root ports would place them.
 */
const domainOf = (i: number): number => i >>> 16;
const bdfOf = (i: number): number => ((i & 0xff) << 8) | ((i >>> 8) & 0xff);

function restoreFolios(k: Kernel, pages: ReadonlyArray<{ pfn: number }>): void {
  for (const p of pages) if (!k.khoIn?.restoreFolio(p.pfn * PAGE_SIZE)) throw new Error('page not preserved');
}

const schemes: Scheme[] = [
  {
    name: 'v6 flat (pci-v3)',
    preserve(k, n) {
      const w = new FlatPciSer(k, n);
      for (let i = 0; i < n; i++) w.add(domainOf(i), bdfOf(i), 1);
      return [w.phys, w.metadataBytes];
    },
    restore(k, root) {
      const f = k.khoIn?.restoreFolio(root);
      if (!f) throw new Error('pci_ser not preserved');
      const r = readPciSerV6(k.machine.memory, root, PAGE_SIZE * 2 ** f.order);
      const map = new Map<number, number>();
      for (const d of r.devices) map.set(pciAbi.pciDevKey(d.domain, d.bdf), d.refcount);
      if (r.problems.length) throw new Error(r.problems[0]);
      return map.size;
    },
  },
  {
    name: 'v7 kho_block (pci-v2)',
    preserve(k, n) {
      const w = new BlockPciSer(k);
      for (let i = 0; i < n; i++) w.add(domainOf(i), bdfOf(i), 1);
      return [w.phys, w.metadataBytes];
    },
    restore(k, root) {
      const r = readPciSerV7(k.machine.memory, root);
      if (r.problems.length) throw new Error(r.problems[0]);
      restoreFolios(k, r.pages);
      const map = new Map<number, number>();
      for (const d of r.devices) map.set(pciAbi.pciDevKey(d.domain, d.bdf), d.refcount);
      return map.size;
    },
  },
  {
    name: 'KHO xarray',
    preserve(k, n) {
      const xa = KhoXarray.create(k);
      for (let i = 0; i < n; i++) xa.set(pciAbi.pciDevKey(domainOf(i), bdfOf(i)), 1);
      return [xa.rootPhys, xa.nodePages * PAGE_SIZE];
    },
    restore(k, root) {
      const xa = KhoXarray.restore(k, root);
      const map = new Map<number, number>();
      xa.forEach((key, v) => { map.set(key, v); });
      return map.size;
    },
  },
  {
    name: 'KhoSlab',
    preserve(k, n) {
      const s = KhoSlab.create(k, 'pci_dev_ser', pciAbi.pciDevSer.size);
      const mem = k.machine.memory;
      for (let i = 0; i < n; i++) {
        // pci_dev_ser { u32 domain; u16 bdf; u16 refcount }, as the PCI writers store it.
        const at = s.alloc();
        mem.writeU32(at, domainOf(i));
        mem.writeU32(at + 4, (bdfOf(i) | (1 << 16)) >>> 0);
      }
      return [s.descPhys, s.metadataBytes];
    },
    restore(k, root) {
      const s = KhoSlab.restore(k, root, pciAbi.pciDevSer.size);
      const mem = k.machine.memory;
      const map = new Map<number, number>();
      for (const at of s.objectsPhys()) map.set(mem.readU32(at) * 0x10000 + (mem.readU32(at + 4) & 0xffff), mem.readU32(at + 4) >>> 16);
      return map.size;
    },
  },
];

/**
 * `reps` structures of n records each are preserved in one kernel and restored in the next
 * (so small sizes are timed over many structures, not one noisy call); times are per structure.
 */
function run(m: Machine, s: Scheme, n: number): { bytes: number; preserveMs: number; restoreMs: number } {
  const reps = Math.max(1, Math.min(64, Math.floor(8192 / n)));
  const k1 = Kernel.boot(m, { cmdline: CMDLINE });
  const roots: number[] = [];
  let bytes = 0;
  const preserveMs = time(() => { for (let i = 0; i < reps; i++) { const [root, b] = s.preserve(k1, n); roots.push(root); bytes = b; } });
  const out = k1.khoOut as NonNullable<Kernel['khoOut']>;
  const blob = out.allocPreserve(8 * reps);
  roots.forEach((r, i) => m.memory.writeU64(blob + 8 * i, r));
  out.addSubtree(SUBTREE, blob, 8 * reps);
  k1.kexecJump(CMDLINE);
  const k2 = Kernel.boot(m, { cmdline: CMDLINE });
  const kin = k2.khoIn as NonNullable<Kernel['khoIn']>;
  const { phys } = kin.retrieveSubtree(SUBTREE);
  const back = roots.map((_, i) => m.memory.readU64Number(phys + 8 * i));
  kin.restoreFree(phys);
  let got = 0;
  const restoreMs = time(() => { for (const r of back) got += s.restore(k2, r); });
  if (got !== n * reps) throw new Error(`${s.name}: restored ${got} of ${n * reps}`);
  k2.kexecJump(CMDLINE);
  return { bytes, preserveMs: preserveMs / reps, restoreMs: restoreMs / reps };
}

const m = createMachine({ memory: '4GiB' });
// Warm-up: JIT every path once at a middle size; not printed.
for (const s of schemes) run(m, s, 4096);
const rows: string[][] = [['layout', 'devices', 'metadata', 'B/device', 'preserve ns/dev', 'restore ns/dev', 'vs v7 bytes']];
for (const n of SIZES) {
  const results = schemes.map((s) => ({ s, r: run(m, s, n) }));
  const v7 = results[1]?.r.bytes ?? 1;
  for (const { s, r } of results) {
    rows.push([s.name, String(n), `${(r.bytes / 1024).toFixed(0)} KiB`, (r.bytes / n).toFixed(1), ((r.preserveMs * 1e6) / n).toFixed(0), ((r.restoreMs * 1e6) / n).toFixed(0), (r.bytes / v7).toFixed(2)]);
  }
}
const widths = rows[0]?.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length))) ?? [];
for (const r of rows) console.log(r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c] ?? 0) : cell.padStart(widths[c] ?? 0))).join('  '));
