/**
 * dtc reads what the kernel writes: the live root FDT from debugfs kho/out/fdt, decompiled by
 * the real device-tree compiler. Without dtc these tests are skipped with a printed reason,
 * except under CI=true (.ci/run installs dtc), where they fail.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createMachine } from '@liveupdate/hw';
import { fdtParse, fdtToDts, type Kernel, type KhoOut } from '@liveupdate/runtime';
import { systemTool } from '../../../test-support/system-tool.js';
import { coldBoot } from './fixtures/kho-helpers.js';

const dtcTool = systemTool(process.env.DTC ?? 'dtc', 'dtc (device-tree compiler)', 'apt-get install -y device-tree-compiler');

function dtc(args: string[], blob: Uint8Array): Buffer {
  const dir = mkdtempSync(path.join(tmpdir(), 'kho-dtc-'));
  try {
    const file = path.join(dir, 'fdt.dtb');
    writeFileSync(file, blob);
    const outFile = path.join(dir, 'out');
    try {
      execFileSync(dtcTool.command, [...args, '-o', outFile, file], { stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (e) {
      throw new Error(`dtc (device-tree-compiler, /usr/bin/dtc) must be installed and accept the blob: ${String(e)}`, { cause: e });
    }
    return readFileSync(outFile);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
const dtcToDts = (blob: Uint8Array): string => dtc(['-I', 'dtb', '-O', 'dts'], blob).toString('utf8');

/** How dtc prints an 8-byte little-endian u64 property: two big-endian cells. */
function u64Cells(v: number): string {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(v));
  return `<0x${b.readUInt32BE(0).toString(16).padStart(2, '0')} 0x${b.readUInt32BE(4).toString(16).padStart(2, '0')}>`;
}

let k1: Kernel;
let out: KhoOut;
let fdt: Uint8Array;
let dts: string;

beforeAll(() => {
  const machine = createMachine({ memory: '4GiB' });
  k1 = coldBoot(machine, 'kho=on liveupdate=on');
  out = k1.khoOut as KhoOut;
  fdt = k1.debugfs.read('kho/out/fdt');
  dts = dtcToDts(fdt);
});

const sub = (name: string): { phys: number; size: number } => {
  const s = out.subtreeList.find((x) => x.name === name);
  if (!s) throw new Error(`no subtree ${name}`);
  return s;
};

/** The text dtc prints for child `name`. */
const nodeText = (name: string): string => {
  const m = new RegExp(`\\n\\t${name} \\{\\n([\\s\\S]*?)\\n\\t\\};`).exec(dts);
  return m?.[1] ?? '';
};

describe.runIf(dtcTool.run)('dtc -I dtb -O dts on debugfs kho/out/fdt', () => {
  it('shows the root compatible "kho-v4"', () => {
    expect(dts).toContain('\tcompatible = "kho-v4";\n');
  });

  it('shows preserved-memory-map as the tracker root address (u64, little-endian)', () => {
    expect(dts).toContain(`\tpreserved-memory-map = ${u64Cells(out.trackerRootPhys)};\n`);
  });

  it('shows the LUO node with preserved-data and blob-size', () => {
    const luo = sub('LUO');
    expect(nodeText('LUO')).toBe(`\t\tpreserved-data = ${u64Cells(luo.phys)};\n\t\tblob-size = ${u64Cells(luo.size)};`);
  });

  it('shows the kexec-metadata node with preserved-data and blob-size 73', () => {
    const meta = sub('kexec-metadata');
    expect(meta.size).toBe(73);
    expect(nodeText('kexec-metadata')).toBe(`\t\tpreserved-data = ${u64Cells(meta.phys)};\n\t\tblob-size = <0x49000000 0x00>;`);
  });

  it("prints exactly what the project's own fdtToDts prints", () => {
    expect(dts).toBe(fdtToDts(fdtParse(fdt)));
  });

  it('recompiles (dtc -I dtb -O dtb) to the same bytes the kernel wrote', () => {
    expect(new Uint8Array(dtc(['-I', 'dtb', '-O', 'dtb'], fdt))).toEqual(fdt);
  });

  it('reads a subtree added at runtime, and the incoming kho/in/fdt after a kexec is the same blob', () => {
    const phys = out.allocPreserve(100);
    out.addSubtree('test_kho', phys, 100);
    const outgoing = k1.debugfs.read('kho/out/fdt');
    expect(dts).not.toContain('test_kho'); // the blob read at boot did not have it
    expect(dtcToDts(outgoing)).toContain(`\ttest_kho {\n\t\tpreserved-data = ${u64Cells(phys)};\n\t\tblob-size = <0x64000000 0x00>;\n\t};`);
    const k2 = k1.kexec({ cmdline: 'kho=on liveupdate=on' });
    const incoming = k2.debugfs.read('kho/in/fdt');
    expect(incoming).toEqual(outgoing);
    expect(dtcToDts(incoming)).toBe(dtcToDts(outgoing));
  });
});
