/**
 * Handover faults an outside fuzzing campaign found, reproduced by writing the corrupt bytes
 * between the jump and the boot: a folio entry aimed at the file's own header page (memfd 3.x),
 * a memfd-v2 folio array with one page-cache index twice, and two files whose metadata name
 * the same folio. Each is a file error, never served data, and nothing is orphaned.
 */
import { describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '@liveupdate/hw';
import { createSession, finishSession, preserveFd, retrieveFd, retrieveSession } from '@liveupdate/sdk';
import memfd, { FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, memfdCreate, type MemfdPluginOptions } from '@liveupdate/plugin-memfd';
import {
  bootNext, errnoOf, folioRecordPhys, handOverAs, handedOver, pattern, patternMemfd, readV2, readV3, start, xarraySlotPhys,
  type Incoming, type Outgoing,
} from './support.js';

const FLAGS = 3n << 52n;
const ONLY = (v: string): MemfdPluginOptions => ({ writes: [v] });

/** Session 'vm': token 1 (3 pages, pattern 1), token 2 (2 pages, pattern 2). Jumps. */
function twoFiles(options: MemfdPluginOptions): Outgoing {
  const o = start([memfd(options)]);
  handOverAs(o, [patternMemfd(o.p, 'a', 3, 1), patternMemfd(o.p, 'b', 2, 2)]);
  return o;
}

const xaSlot = (o: Outgoing, token: number, index: number): number =>
  xarraySlotPhys(o.machine, readV3(o.machine, Number(handedOver(o, 'vm', token).data)).folios_xa, index);

/** Pages kernel B holds beyond what it held at boot, once everything retrieved is closed and every session finished. */
function heldAfterCleanup(next: Incoming, baseline: number, fds: number[], sfd: number): number {
  for (const fd of fds) next.p2.close(fd);
  finishSession(next.p2, sfd);
  return (next.k2.mm.allocator?.allocatedPages ?? 0) - baseline;
}

describe.each(['3.0.0', '3.1.0', '3.2.0'])('memfd@%s: an xarray folio entry aimed at the file\'s own header page', (version) => {
  function corrupted() {
    const o = twoFiles(ONLY(version));
    const header = Number(handedOver(o, 'vm', 1).data);
    o.machine.memory.writeU64(xaSlot(o, 1, 1), BigInt(header / PAGE_SIZE) | FLAGS);
    const next = bootNext(o);
    return { next, sfd: retrieveSession(next.p2, next.dev2, 'vm') };
  }

  it('fails RETRIEVE_FD (the header is restored before the folios, and a folio that is handover metadata is refused)', () => {
    const { next, sfd } = corrupted();
    expect(['EIO', 'EINVAL']).toContain(errnoOf(() => retrieveFd(next.p2, sfd, 1)));
  });

  it('leaves the other file intact', () => {
    const { next, sfd } = corrupted();
    errnoOf(() => retrieveFd(next.p2, sfd, 1));
    expect(next.p2.pread(retrieveFd(next.p2, sfd, 2), 2 * PAGE_SIZE, 0)).toEqual(pattern(2 * PAGE_SIZE, 2));
  });
});

describe('memfd-v2: a folio array with one page-cache index twice', () => {
  function corrupted() {
    const o = twoFiles(ONLY('2.0.0'));
    const first = readV2(o.machine, Number(handedOver(o, 'vm', 1).data)).folios_first;
    // Record 2 (index 2) claims index 0: index 0 is inserted twice.
    o.machine.memory.writeU64(folioRecordPhys(o.machine, first, 2) + 8, 0n);
    const next = bootNext(o);
    const baseline = next.k2.mm.allocator?.allocatedPages ?? 0;
    return { next, baseline, sfd: retrieveSession(next.p2, next.dev2, 'vm') };
  }

  it('fails RETRIEVE_FD with EEXIST, as shmem_add_to_page_cache does for an occupied index', () => {
    const { next, sfd } = corrupted();
    expect(errnoOf(() => retrieveFd(next.p2, sfd, 1))).toBe('EEXIST');
  });

  it('orphans no page: once everything is closed and finished kernel B holds nothing more than at boot', () => {
    const { next, baseline, sfd } = corrupted();
    errnoOf(() => retrieveFd(next.p2, sfd, 1));
    const b = retrieveFd(next.p2, sfd, 2);
    expect(heldAfterCleanup(next, baseline, [b], sfd)).toBe(0);
  });

  it('leaks nothing else either: no preserved block stays reserved', () => {
    const { next, sfd } = corrupted();
    errnoOf(() => retrieveFd(next.p2, sfd, 1));
    finishSession(next.p2, sfd);
    expect(next.k2.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
  });
});

describe('a normal retrieve keeps kernel B\'s page accounting exact', () => {
  it.each(['2.0.0', '3.1.0', '3.2.0', '4.0.0'])('memfd@%s: after close and finish kernel B holds what it held at boot', (version) => {
    const o = twoFiles(ONLY(version));
    const next = bootNext(o);
    const baseline = next.k2.mm.allocator?.allocatedPages ?? 0;
    const sfd = retrieveSession(next.p2, next.dev2, 'vm');
    const a = retrieveFd(next.p2, sfd, 1);
    const b = retrieveFd(next.p2, sfd, 2);
    expect(next.k2.mm.allocator?.allocatedPages).toBeGreaterThanOrEqual(baseline + 5);
    expect(heldAfterCleanup(next, baseline, [a, b], sfd)).toBe(0);
  });
});

describe('two files whose metadata name the same folio', () => {
  it.each(['2.0.0', '3.1.0'])('memfd@%s (no whole-metadata check): the first claimant wins, the second fails EIO, as upstream', (version) => {
    const o = twoFiles(ONLY(version));
    if (version === '2.0.0') {
      const rec = (t: number, i: number) => folioRecordPhys(o.machine, readV2(o.machine, Number(handedOver(o, 'vm', t).data)).folios_first, i);
      o.machine.memory.writeU64(rec(1, 0), o.machine.memory.readU64(rec(2, 0)));
    } else {
      o.machine.memory.writeU64(xaSlot(o, 1, 0), o.machine.memory.readU64(xaSlot(o, 2, 0)));
    }
    const next = bootNext(o);
    const sfd = retrieveSession(next.p2, next.dev2, 'vm');
    const a = retrieveFd(next.p2, sfd, 1);
    expect(next.p2.pread(a, PAGE_SIZE, 0)).toEqual(pattern(2 * PAGE_SIZE, 2).subarray(0, PAGE_SIZE));
    expect(errnoOf(() => retrieveFd(next.p2, sfd, 2))).toBe('EIO');
  });

  it('memfd@3.2.0: the retargeted entry fails the whole-metadata check (EINVAL) and the other file keeps its data', () => {
    const o = twoFiles(ONLY('3.2.0'));
    o.machine.memory.writeU64(xaSlot(o, 1, 0), o.machine.memory.readU64(xaSlot(o, 2, 0)));
    const next = bootNext(o);
    const sfd = retrieveSession(next.p2, next.dev2, 'vm');
    expect(errnoOf(() => retrieveFd(next.p2, sfd, 1))).toBe('EINVAL');
    expect(next.p2.pread(retrieveFd(next.p2, sfd, 2), 2 * PAGE_SIZE, 0)).toEqual(pattern(2 * PAGE_SIZE, 2));
  });
});

describe('mainline formats: fallocate on a frozen (preserved) memfd', () => {
  it.each([
    ['mode 0 inside EOF', 0, 0],
    ['FALLOC_FL_KEEP_SIZE inside EOF', FALLOC_FL_KEEP_SIZE, 0],
    ['FALLOC_FL_KEEP_SIZE past EOF', FALLOC_FL_KEEP_SIZE, 4 * PAGE_SIZE],
    ['PUNCH_HOLE | KEEP_SIZE', FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0],
  ])('%s is EPERM (shmem_fallocate checks the frozen mapping before the mode)', (_label, mode, offset) => {
    const o = start([memfd(ONLY('2.0.0'))]);
    const fd = patternMemfd(o.p, 'a', 3, 1);
    preserveFd(o.p, createSession(o.p, o.dev, 'vm'), fd, 1);
    expect(errnoOf(() => o.p.fallocate(fd, mode, offset, PAGE_SIZE))).toBe('EPERM');
  });

  it('an unknown mode bit is still EOPNOTSUPP', () => {
    const o = start([memfd(ONLY('2.0.0'))]);
    const fd = patternMemfd(o.p, 'a', 3, 1);
    preserveFd(o.p, createSession(o.p, o.dev, 'vm'), fd, 1);
    expect(errnoOf(() => o.p.fallocate(fd, 0x40, 0, PAGE_SIZE))).toBe('EOPNOTSUPP');
  });
});

describe('an empty memfd (size 0, no folio)', () => {
  it.each(['3.1.0', '3.2.0', '4.0.0'])('round-trips under memfd@%s with nothing left reserved', (version) => {
    const o = start([memfd(ONLY(version))]);
    handOverAs(o, [memfdCreate(o.p, 'empty', 0)]);
    const next = bootNext(o);
    const sfd = retrieveSession(next.p2, next.dev2, 'vm');
    const fd = retrieveFd(next.p2, sfd, 1);
    expect(next.p2.lseek(fd, 0, 2)).toBe(0);
    finishSession(next.p2, sfd);
    expect(next.k2.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
  });
});
