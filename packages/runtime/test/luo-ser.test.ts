/**
 * The bytes of the luo-v5 handover (include/linux/kho/abi/luo.h): struct luo_ser as the "LUO"
 * KHO blob, the session kho_block chain of 80-byte luo_session_ser, per-session file chains of
 * 64-byte luo_file_ser. Checked after k1.kexecJump, straight from physical memory, both with
 * the abi.luo codecs and against hand-assembled little-endian bytes.
 */
import { describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '@liveupdate/hw';
import { abi, boot, fdtFindNode, fdtParse, readPropU64LE } from '@liveupdate/runtime';
import { createSession, openLuo, preserveFd, retrieveFd, retrieveSession } from './support/client.js';
import { bootLuo, CMDLINE, outgoingLuoPhys, pattern, walkBlocks } from './support/harness.js';
import { createTestFile, readTestFile, testfileSer, TESTFILE_MAGIC } from './support/testfile.js';

const { luo, block } = abi;

const le64 = (v: bigint | number): number[] => {
  const out: number[] = [];
  let x = BigInt(v);
  for (let i = 0; i < 8; i++) { out.push(Number(x & 0xffn)); x >>= 8n; }
  return out;
};
const padded = (s: string, n: number): number[] => {
  const b = [...new TextEncoder().encode(s)];
  return [...b, ...new Array<number>(n - b.length).fill(0)];
};

describe('luo-v5 serialization bytes', () => {
  it('luo_ser, the session block and entry, the file block and entry, the handler data', () => {
    const { machine, k: k1, proc, dev, plugin } = bootLuo();
    const s = createSession(proc, dev, 'ser-session');
    const data = pattern(9, 4096 + 100);
    const fd = createTestFile(k1, proc, data);
    const pfns = [...(proc.file(fd, 't').privateData as { pfns: number[] }).pfns];
    preserveFd(proc, s, fd, 0xfeedface_cafebeefn);
    createSession(proc, dev, 'ser-empty');

    const luoPhys = outgoingLuoPhys(k1);
    const sub = k1.khoOut!.subtreeList.find((x) => x.name === 'LUO')!;
    expect(sub.size).toBe(32);
    const sessionHead = k1.luo.sessions.outBlocks.headPa;
    const fileHead = k1.luo.sessions.outgoing[0]!.fileSet.blocks.headPa;
    k1.kexecJump(CMDLINE);
    const mem = machine.memory;

    // The root FDT names the blob: /LUO { preserved-data = <luo_ser>; blob-size = <32>; }
    const fdt = fdtParse(mem.read(k1.khoOut!.fdtPhys, PAGE_SIZE));
    const node = fdtFindNode(fdt, '/LUO');
    expect(node && readPropU64LE(node, 'preserved-data')).toBe(BigInt(luoPhys));
    expect(node && readPropU64LE(node, 'blob-size')).toBe(32n);

    // struct luo_ser (32 bytes)
    const raw = mem.read(luoPhys, 32);
    expect([...raw.subarray(0, 8)]).toEqual([...new TextEncoder().encode('luo-v5'), 0, 0]);
    const ser = luo.luoSer.decode(raw);
    expect(ser.compatible).toBe('luo-v5');
    expect(ser.liveupdate_num).toBe(1n);
    expect(ser.sessions_pa).toBe(BigInt(sessionHead));
    expect(ser.sessions_pa).not.toBe(0n);
    expect(Number(ser.sessions_pa) % PAGE_SIZE).toBe(0);
    expect(ser.flbs_pa).not.toBe(0n);
    expect([...raw]).toEqual([...padded('luo-v5', 8), ...le64(1), ...le64(sessionHead), ...le64(ser.flbs_pa)]);

    // Session block: header { next 0, count 2 }, then two 80-byte entries in creation order.
    const sb = Number(ser.sessions_pa);
    expect(block.khoBlockHeader.decode(mem.read(sb, 16))).toEqual({ next: 0n, count: 2n });
    const e0 = mem.read(sb + 16, 80);
    expect([...e0]).toEqual([...padded('ser-session', 64), ...le64(fileHead), ...le64(1)]);
    expect(luo.luoSessionSer.decode(e0)).toEqual({ name: 'ser-session', files: BigInt(fileHead), count: 1n });
    expect(luo.luoSessionSer.decode(mem.read(sb + 16 + 80, 80))).toEqual({ name: 'ser-empty', files: 0n, count: 0n });
    expect(mem.read(sb + 16 + 160, PAGE_SIZE - 176).every((b) => b === 0)).toBe(true);

    // File block: header { next 0, count 1 }, then one 64-byte entry.
    expect(block.khoBlockHeader.decode(mem.read(fileHead, 16))).toEqual({ next: 0n, count: 1n });
    const fe = mem.read(fileHead + 16, 64);
    const f = luo.luoFileSer.decode(fe);
    expect(f.compatible).toBe('testfile-v1');
    expect(f.token).toBe(0xfeedface_cafebeefn);
    expect([...fe]).toEqual([...padded('testfile-v1', 48), ...le64(f.data), ...le64(0xfeedface_cafebeefn)]);

    // The handler's data: the testfile header naming the content pages.
    const hdr = testfileSer.decode(mem.read(Number(f.data), testfileSer.size));
    expect(hdr).toEqual({ magic: TESTFILE_MAGIC, size: BigInt(data.length), nr_pages: 2n });
    expect([mem.readU64Number(Number(f.data) + 24), mem.readU64Number(Number(f.data) + 32)]).toEqual(pfns);

    // Every page of the graph survived the scrub.
    for (const phys of [luoPhys, sb, fileHead, Number(f.data), Number(ser.flbs_pa), ...pfns.map((p) => p * PAGE_SIZE)]) {
      expect(mem.pageKind(phys / PAGE_SIZE)).toBe('data');
    }
    // FLB page: header { pgcnt 1, count 0 } (no FLB in use).
    expect(luo.luoFlbHeaderSer.decode(mem.read(Number(ser.flbs_pa), 16))).toEqual({ pgcnt: 1n, count: 0n });

    // And the next kernel reads exactly that.
    const k2 = boot(machine, { plugins: [plugin] });
    const p = k2.spawn('vmm');
    const si = retrieveSession(p, openLuo(p), 'ser-session');
    expect(readTestFile(k2, p, retrieveFd(p, si, 0xfeedface_cafebeefn))).toEqual(data);
  });

  it('chains blocks: 52 sessions → 51 + 1; 64 files → 63 + 1', () => {
    const { machine, k: k1, proc, dev } = bootLuo();
    const first = createSession(proc, dev, 'chain-0');
    for (let i = 0; i < 64; i++) {
      const fd = createTestFile(k1, proc, new Uint8Array(0));
      preserveFd(proc, first, fd, i);
      proc.close(fd);
    }
    for (let i = 1; i < 52; i++) createSession(proc, dev, `chain-${i}`);
    const luoPhys = outgoingLuoPhys(k1);
    k1.kexecJump(CMDLINE);
    const mem = machine.memory;
    const ser = luo.luoSer.decode(mem.read(luoPhys, 32));
    const sessions = walkBlocks(mem, ser.sessions_pa);
    expect(sessions.map((b) => [b.next === 0n ? 0 : 1, b.count])).toEqual([[1, 51n], [0, 1n]]);
    expect(sessions[0]!.next).toBe(BigInt(sessions[1]!.phys));
    // The 52nd session is the first entry of the second block.
    expect(luo.luoSessionSer.decode(mem.read(sessions[1]!.phys + 16, 80)).name).toBe('chain-51');
    const s0 = luo.luoSessionSer.decode(mem.read(sessions[0]!.phys + 16, 80));
    expect(s0.count).toBe(64n);
    const files = walkBlocks(mem, s0.files);
    expect(files.map((b) => b.count)).toEqual([63n, 1n]);
    // Tokens in preservation order across the block boundary.
    expect(luo.luoFileSer.decode(mem.read(files[0]!.phys + 16 + 62 * 64, 64)).token).toBe(62n);
    expect(luo.luoFileSer.decode(mem.read(files[1]!.phys + 16, 64)).token).toBe(63n);
    // An empty testfile still has a header: nr_pages 0.
    const e = luo.luoFileSer.decode(mem.read(files[1]!.phys + 16, 64));
    expect(testfileSer.decode(mem.read(Number(e.data), 24)).nr_pages).toBe(0n);
  });

  it('liveupdate_num in the outgoing luo_ser counts live updates', () => {
    const { k: k1, plugin } = bootLuo();
    const k2 = k1.kexec({ cmdline: CMDLINE, plugins: [plugin] });
    const k3 = k2.kexec({ cmdline: CMDLINE, plugins: [plugin] });
    const ser = luo.luoSer.decode(k3.machine.memory.read(outgoingLuoPhys(k3), 32));
    expect(ser.liveupdate_num).toBe(3n);
    expect(ser.sessions_pa).toBe(0n);
  });
});
