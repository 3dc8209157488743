/**
 * Mixing released plugin-memfd versions across a live update: kernel A runs release X,
 * kernel B release Y, for every X and Y (upgrades, same version, downgrades / rollbacks).
 * Before the blackout A negotiates the highest memfd format it writes that B reads; the memfd
 * comes back with its content, size and position, and with its seals when that format carries
 * them. A pair with no common format is refused before anything is frozen. Releases: 1.0.0,
 * 2.0.0, 3.0.0 and 3.1.0 from their tarballs (memfd@3.1.0 = memfd@3.0.0 + a header CRC-32, a
 * minor version a 3.0.0 reader skips), 4.0.0 the workspace package (memfd@3.2.0 = memfd@3.1.0 +
 * a CRC-32 over all metadata, a minor version 3.0 and 3.1 readers skip; memfd@4.0.0 = extents,
 * a new major only 4.x reads; memfd@4.1.0 = memfd@4.0.0 + a CRC-32 binding the header to its
 * session and token, which it writes when both sides run it).
 */
import { describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '@liveupdate/hw';
import { FormatNegotiationError, createSession, finishSession, preserveFd, retrieveFd, retrieveSession, type Process } from '@liveupdate/sdk';
import { F_ADD_SEALS, F_GET_SEALS, MFD_ALLOW_SEALING, MFD_HUGETLB, MFD_HUGE_2MB, memfdAbi } from '@liveupdate/plugin-memfd';
import type { MemfdRelease, MemfdSyscalls } from '@liveupdate/compat';
import {
  CMDLINE, MiB, bootA, bootB, errnoOf, handedOverCompatible, handedOverFile, kexecConfig, pattern, retrieveOne, type Build, type KernelA,
} from './support.js';

const { F_SEAL_SHRINK, F_SEAL_GROW } = memfdAbi;
const SEALS = F_SEAL_SHRINK | F_SEAL_GROW;
const SEEK_SET = 0;
const SEEK_CUR = 1;
const SEEK_END = 2;
const SIZE = 8 * MiB;
const SEED = 0xabc;

/**
 * Guest RAM as a VMM lays it out in kernel A: 8 MiB, a pattern in pages 0..2, page 3 a hole,
 * 2 MiB of synthetic content at 4 MiB, f_pos 4321, seals SHRINK | GROW. Preserved as vm/1.
 */
function guestRam(p: Process, sys: MemfdSyscalls): number {
  const fd = sys.memfdCreate(p, 'guest-ram', MFD_ALLOW_SEALING);
  p.ftruncate(fd, SIZE);
  p.pwrite(fd, pattern(3 * PAGE_SIZE, 1), 0);
  sys.memfdFillSynthetic(p, fd, 4 * MiB, 2 * MiB, SEED);
  p.lseek(fd, 4321, SEEK_SET);
  p.fcntl(fd, F_ADD_SEALS, SEALS);
  return fd;
}

function preserveGuestRam(a: KernelA): number {
  const fd = guestRam(a.p, a.sys);
  preserveFd(a.p, createSession(a.p, a.dev, 'vm'), fd, 1);
  return fd;
}

//          A        B        negotiated      seals carried
const TABLE: ReadonlyArray<readonly [MemfdRelease, MemfdRelease, string, boolean]> = [
  ['1.0.0', '1.0.0', 'memfd-v1', false],
  ['1.0.0', '2.0.0', 'memfd-v1', false], // upgrade 6.19 → mainline: v1 is all A writes
  ['1.0.0', '3.0.0', 'memfd-v1', false],
  ['1.0.0', '3.1.0', 'memfd-v1', false],
  ['1.0.0', '4.0.0', 'memfd-v1', false],
  ['2.0.0', '1.0.0', 'memfd-v1', false], // rollback to 6.19: B reads v1 only, the seals are dropped
  ['2.0.0', '2.0.0', 'memfd-v2', true],
  ['2.0.0', '3.0.0', 'memfd-v2', true], // upgrade mainline → 3.0.0
  ['2.0.0', '3.1.0', 'memfd-v2', true],
  ['2.0.0', '4.0.0', 'memfd-v2', true],
  ['3.0.0', '1.0.0', 'memfd-v1', false],
  ['3.0.0', '2.0.0', 'memfd-v2', true], // rollback 3.0.0 → mainline: the sparse file is converted at freeze
  ['3.0.0', '3.0.0', 'memfd@3.0.0', true],
  ['3.0.0', '3.1.0', 'memfd@3.0.0', true], // upgrade to 3.1.0: all A writes is 3.0, which 3.1 reads (no checksum to check)
  ['3.0.0', '4.0.0', 'memfd@3.0.0', true],
  ['3.1.0', '1.0.0', 'memfd-v1', false],
  ['3.1.0', '2.0.0', 'memfd-v2', true], // the sparse file is converted at freeze, as from 3.0.0
  ['3.1.0', '3.0.0', 'memfd@3.1.0', true], // rollback to 3.0.0: a minor version, its reader skips the checksum
  ['3.1.0', '3.1.0', 'memfd@3.1.0', true],
  ['3.1.0', '4.0.0', 'memfd@3.1.0', true], // upgrade to 4.0.0: 4.0.0 reads every 3.x minor
  ['4.0.0', '1.0.0', 'memfd-v1', false],
  ['4.0.0', '2.0.0', 'memfd-v2', true],
  ['4.0.0', '3.0.0', 'memfd@3.2.0', true], // rollback past the new major: the 3.0 reader reads 48 bytes, skips both checksums
  ['4.0.0', '3.1.0', 'memfd@3.2.0', true], // the 3.1 reader checks the header CRC-32 and skips meta_crc32
  ['4.0.0', '4.0.0', 'memfd@4.1.0', true],
];

describe.each(TABLE)('plugin-memfd %s → %s', (from, to, compatible, sealsCarried) => {
  function update() {
    const a = bootA({ release: from });
    preserveGuestRam(a);
    a.k.kexecJump(kexecConfig({ release: to }));
    const negotiated = handedOverCompatible(a);
    const b = bootB(a.machine, { release: to });
    return { a, b, negotiated, ...retrieveOne(b, 'vm', 1) };
  }

  it(`negotiates '${compatible}'`, () => {
    expect(update().negotiated).toBe(compatible);
  });

  it('restores the size', () => {
    const { b, fd } = update();
    expect(b.p.lseek(fd, 0, SEEK_END)).toBe(SIZE);
  });

  it('restores the position', () => {
    const { b, fd } = update();
    expect(b.p.lseek(fd, 0, SEEK_CUR)).toBe(4321);
  });

  it('restores the content byte for byte, holes reading zero', () => {
    const { b, fd } = update();
    expect(b.p.pread(fd, 3 * PAGE_SIZE, 0)).toEqual(pattern(3 * PAGE_SIZE, 1));
    expect(b.p.pread(fd, PAGE_SIZE, 3 * PAGE_SIZE)).toEqual(new Uint8Array(PAGE_SIZE));
    expect(b.sys.memfdCheckSynthetic(b.p, fd, 4 * MiB, 2 * MiB, SEED)).toBe(true);
  });

  it(sealsCarried ? 'carries the seals (SHRINK | GROW)' : 'drops the seals: memfd-v1 has none', () => {
    const { b, fd } = update();
    expect(b.p.fcntl(fd, F_GET_SEALS)).toBe(sealsCarried ? SEALS : 0);
  });

  it('leaves nothing preserved after FINISH', () => {
    const { b, sfd } = update();
    finishSession(b.p, sfd);
    expect(b.k.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
  });
});

interface Refusal {
  readonly name: string;
  readonly a: Build;
  readonly b: Build;
  readonly family: string;
  readonly offered: readonly string[];
  readonly accepted: string | null;
  readonly hugetlb?: boolean;
}

const REFUSED: readonly Refusal[] = [
  {
    name: '3.0.0 built sparse-only → 2.0.0', a: { release: '3.0.0', options: { writes: ['3.0.0'] } }, b: { release: '2.0.0' },
    family: 'memfd', offered: ['3.0.0'], accepted: '>=1.0.0 <3.0.0',
  },
  {
    name: '3.0.0 built sparse-only → 1.0.0', a: { release: '3.0.0', options: { writes: ['3.0.0'] } }, b: { release: '1.0.0' },
    family: 'memfd', offered: ['3.0.0'], accepted: '^1.0.0',
  },
  {
    name: '2.0.0 built v2-only → 1.0.0', a: { release: '2.0.0', options: { writes: ['2.0.0'] } }, b: { release: '1.0.0' },
    family: 'memfd', offered: ['2.0.0'], accepted: '^1.0.0',
  },
  {
    name: '1.0.0 → 3.0.0 built to read >=2.0.0 only', a: { release: '1.0.0' }, b: { release: '3.0.0', options: { reads: '>=2.0.0 <4.0.0' } },
    family: 'memfd', offered: ['1.0.0'], accepted: '>=2.0.0 <4.0.0',
  },
  {
    name: 'a hugeTLB memfd, 3.0.0 → 2.0.0 (which has no hugeTLB handler)', a: { release: '3.0.0' }, b: { release: '2.0.0' },
    family: 'hugetlb-memfd', offered: ['1.0.0'], accepted: null, hugetlb: true,
  },
];

describe.each(REFUSED)('refused before freeze: $name', (r) => {
  const HUGE_CMDLINE = `${CMDLINE} hugepagesz=2M hugepages=4`;

  function attempt() {
    const a = bootA(r.a, '8GiB', r.hugetlb ? HUGE_CMDLINE : CMDLINE);
    let fd: number;
    if (r.hugetlb) {
      fd = a.sys.memfdCreate(a.p, 'guest-ram', MFD_HUGETLB | MFD_HUGE_2MB);
      a.p.ftruncate(fd, 2 * MiB);
      a.sys.memfdStore(a.p, fd, pattern(64, 5), 0);
      preserveFd(a.p, createSession(a.p, a.dev, 'vm'), fd, 1);
    } else {
      fd = preserveGuestRam(a);
    }
    let freezes = 0;
    a.k.luo.hooks.fileOp.tap('count-freezes', (ev) => { if (ev.op === 'freeze') freezes++; });
    let error: unknown;
    try { a.k.kexecJump(kexecConfig(r.b, r.hugetlb ? HUGE_CMDLINE : CMDLINE)); } catch (e) { error = e; }
    return { a, fd, error, freezes };
  }

  it('with a FormatNegotiationError naming the plugin, what A writes and what B reads', () => {
    const { error } = attempt();
    expect(error).toBeInstanceOf(FormatNegotiationError);
    const e = error as FormatNegotiationError;
    expect(e.code).toBe('LIVEUPDATE_FORMAT_UNSUPPORTED');
    expect(e.refusals).toEqual([{ family: r.family, owner: '@liveupdate/plugin-memfd', offered: r.offered, accepted: r.accepted }]);
    expect(e.message).toContain('@liveupdate/plugin-memfd');
  });

  it('before any freeze: kernel A keeps running with the memfd preserved and usable', () => {
    const { a, fd, freezes } = attempt();
    expect(freezes).toBe(0);
    expect(a.k.isDead).toBe(false);
    expect(a.p.pread(fd, 64, 0).length).toBe(64);
    expect(errnoOf(() => preserveFd(a.p, createSession(a.p, a.dev, 'again'), fd, 1))).toBe('EBUSY');
  });

  it('and a retry towards a kernel of the same release succeeds', () => {
    const { a } = attempt();
    const cmdline = r.hugetlb ? HUGE_CMDLINE : CMDLINE;
    a.k.kexecJump(kexecConfig(r.a, cmdline));
    const b = bootB(a.machine, r.a, cmdline);
    const { fd } = retrieveOne(b, 'vm', 1);
    expect(b.p.pread(fd, 64, 0)).toEqual(r.hugetlb ? pattern(64, 5) : pattern(3 * PAGE_SIZE, 1).subarray(0, 64));
  });
});

describe("3.1.0 → 3.0.0: a minor version's appended checksum is skipped by the older reader", () => {
  function jump(corruptChecksum: boolean) {
    const a = bootA({ release: '3.1.0' });
    preserveGuestRam(a);
    a.k.kexecJump(kexecConfig({ release: '3.0.0' }));
    const f = handedOverFile(a);
    const header = Number(f.data);
    if (corruptChecksum) a.machine.memory.writeU32(header + 48, (a.machine.memory.readU32(header + 48) ^ 0x8000_0001) >>> 0);
    return { a, f, header };
  }

  it("hands over 'memfd@3.1.0': the 48-byte 3.0 header, then a non-zero crc32 and a zero pad", () => {
    const { a, f, header } = jump(false);
    expect(f.compatible).toBe('memfd@3.1.0');
    const h = memfdAbi.memfdLuoSerV3_1.decode(a.machine.memory.read(header, memfdAbi.memfdLuoSerV3_1.size));
    expect(h).toMatchObject({ size: BigInt(SIZE), pos: 4321n, seals: SEALS, flags: 0, reserved: 0, pad: 0 });
    expect(h.crc32).not.toBe(0);
  });

  it('the 3.0.0 release restores content, size, position and seals, reading the first 48 bytes', () => {
    const { a } = jump(false);
    const b = bootB(a.machine, { release: '3.0.0' });
    const { sfd, fd } = retrieveOne(b, 'vm', 1);
    expect(b.p.lseek(fd, 0, SEEK_CUR)).toBe(4321);
    expect(b.p.lseek(fd, 0, SEEK_END)).toBe(SIZE);
    expect(b.p.fcntl(fd, F_GET_SEALS)).toBe(SEALS);
    expect(b.p.pread(fd, 3 * PAGE_SIZE, 0)).toEqual(pattern(3 * PAGE_SIZE, 1));
    expect(b.sys.memfdCheckSynthetic(b.p, fd, 4 * MiB, 2 * MiB, SEED)).toBe(true);
    finishSession(b.p, sfd);
    expect(b.k.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
  });

  it('it never looks at the checksum: a corrupted crc32 still restores on 3.0.0, while 3.1.0 refuses it (EINVAL)', () => {
    const old = jump(true);
    const b = bootB(old.a.machine, { release: '3.0.0' });
    const { fd } = retrieveOne(b, 'vm', 1);
    expect(b.p.pread(fd, 3 * PAGE_SIZE, 0)).toEqual(pattern(3 * PAGE_SIZE, 1));

    const neu = jump(true);
    const b2 = bootB(neu.a.machine, { release: '3.1.0' });
    const sfd = retrieveSession(b2.p, b2.dev, 'vm');
    expect(errnoOf(() => retrieveFd(b2.p, sfd, 1))).toBe('EINVAL');
  });
});

describe('a round trip: upgrade 2.0.0 → 3.0.0, then roll back 3.0.0 → 2.0.0', () => {
  it("keeps content, size, position and seals through both live updates, in 'memfd-v2' both ways", () => {
    const a = bootA({ release: '2.0.0' });
    preserveGuestRam(a);
    a.k.kexecJump(kexecConfig({ release: '3.0.0' }));
    const up = handedOverCompatible(a);

    // Kernel B (3.0.0): retrieve, finish, run the guest a little, preserve again for the rollback.
    const b = bootB(a.machine, { release: '3.0.0' });
    const { sfd, fd } = retrieveOne(b, 'vm', 1);
    finishSession(b.p, sfd);
    b.p.pwrite(fd, pattern(PAGE_SIZE, 9), 6 * MiB);
    b.p.lseek(fd, 999, SEEK_SET);
    preserveFd(b.p, createSession(b.p, b.dev, 'vm'), fd, 1);
    const asA = { machine: a.machine, k: b.k, p: b.p, dev: b.dev, sys: b.sys };
    b.k.kexecJump(kexecConfig({ release: '2.0.0' }));
    const down = handedOverCompatible(asA);

    // Kernel A' (2.0.0 again).
    const a2 = bootB(a.machine, { release: '2.0.0' });
    const got = retrieveOne(a2, 'vm', 1);
    expect([up, down]).toEqual(['memfd-v2', 'memfd-v2']);
    expect(a2.p.lseek(got.fd, 0, SEEK_CUR)).toBe(999);
    expect(a2.p.fcntl(got.fd, F_GET_SEALS)).toBe(SEALS);
    expect(a2.p.pread(got.fd, 3 * PAGE_SIZE, 0)).toEqual(pattern(3 * PAGE_SIZE, 1));
    expect(a2.sys.memfdCheckSynthetic(a2.p, got.fd, 4 * MiB, 2 * MiB, SEED)).toBe(true);
    expect(a2.p.pread(got.fd, PAGE_SIZE, 6 * MiB)).toEqual(pattern(PAGE_SIZE, 9));
    expect(a2.p.lseek(got.fd, 0, SEEK_END)).toBe(SIZE);
    finishSession(a2.p, got.sfd);
    expect(a2.k.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
  });
});

describe('3.0.0 → 2.0.0 converts a sparse memfd at freeze', () => {
  it('keeps the inode growable in A until the kexec, then materializes every hole for memfd-v2', () => {
    const a = bootA({ release: '3.0.0' });
    const fd = preserveGuestRam(a);
    expect(a.sys.memfdResidentPages(a.p, fd)).toBe(3 + 512);
    a.k.kexecJump(kexecConfig({ release: '2.0.0' }));
    const b = bootB(a.machine, { release: '2.0.0' });
    const { fd: got } = retrieveOne(b, 'vm', 1);
    expect(b.sys.memfdResidentPages(b.p, got)).toBe(SIZE / PAGE_SIZE);
  });

  it('a ftruncate after PRESERVE_FD is still allowed in A (3.0.0 semantics) and handed over', () => {
    const a = bootA({ release: '3.0.0' });
    const fd = a.sys.memfdCreate(a.p, 'guest-ram', 0);
    a.p.pwrite(fd, pattern(PAGE_SIZE, 3), 0);
    preserveFd(a.p, createSession(a.p, a.dev, 'vm'), fd, 1);
    a.p.ftruncate(fd, 4 * PAGE_SIZE);
    a.k.kexecJump(kexecConfig({ release: '2.0.0' }));
    const b = bootB(a.machine, { release: '2.0.0' });
    const { fd: got } = retrieveOne(b, 'vm', 1);
    expect(b.p.lseek(got, 0, SEEK_END)).toBe(4 * PAGE_SIZE);
    expect(b.sys.memfdResidentPages(b.p, got)).toBe(4);
    expect(b.p.pread(got, PAGE_SIZE, 0)).toEqual(pattern(PAGE_SIZE, 3));
  });

  it('but a 2.0.0 kernel freezes the inode at PRESERVE_FD: the same ftruncate fails EPERM', () => {
    const a = bootA({ release: '2.0.0' });
    const fd = a.sys.memfdCreate(a.p, 'guest-ram', 0);
    preserveFd(a.p, createSession(a.p, a.dev, 'vm'), fd, 1);
    expect(errnoOf(() => a.p.ftruncate(fd, 4 * PAGE_SIZE))).toBe('EPERM');
  });
});
