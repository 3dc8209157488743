/**
 * The incoming side under hostile bytes and at FINISH: a corrupt folio record fails
 * RETRIEVE_FD with EIO, stickily, without touching the other files of the session; a corrupt
 * folio array fails EINVAL; an unretrieved memfd is discarded by FINISH, leaving nothing
 * preserved behind.
 */
import { describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '@liveupdate/hw';
import { finishSession, retrieveFd, retrieveSession } from '@liveupdate/sdk';
import memfd, { type MemfdPluginOptions } from '@liveupdate/plugin-memfd';
import {
  bootNext, errnoOf, handOverAs, patternMemfd, folioRecordPhys, handedOver, pattern, readV2, readV3, start, xarraySlotPhys, type Outgoing,
} from './support.js';

/** Two memfds in session 'vm': token 1 (3 pages, pattern 1) and token 2 (2 pages, pattern 2). Jumps. */
function twoMemfds(options: MemfdPluginOptions): Outgoing {
  const o = start([memfd(options)]);
  handOverAs(o, [patternMemfd(o.p, 'a', 3, 1), patternMemfd(o.p, 'b', 2, 2)]);
  return o;
}

/** A build that writes up to memfd@3.0.0 (no header checksum), so each header check is reached on its own. */
const V3_0: MemfdPluginOptions = { writes: ['1.0.0', '2.0.0', '3.0.0'] };

/** pfn 1 is firmware's: never preserved, so it carries no KHO magic in the next kernel. */
const BOGUS_ENTRY = (3n << 52n) | 1n;

describe.each([
  {
    label: 'memfd-v2: a folio record of the vmalloc array', options: { writes: ['2.0.0'] },
    corrupt: (o: Outgoing) => o.machine.memory.writeU64(folioRecordPhys(o.machine, readV2(o.machine, Number(handedOver(o, 'vm', 1).data)).folios_first, 0), BOGUS_ENTRY),
  },
  {
    label: 'memfd@3.0.0: an entry of the KHO xarray', options: V3_0,
    corrupt: (o: Outgoing) => o.machine.memory.writeU64(xarraySlotPhys(o.machine, readV3(o.machine, Number(handedOver(o, 'vm', 1).data)).folios_xa, 0), BOGUS_ENTRY),
  },
])('corrupting $label between the jump and the boot', ({ options, corrupt }) => {
  function corrupted() {
    const o = twoMemfds(options);
    corrupt(o);
    const next = bootNext(o);
    return { o, next, sfd: retrieveSession(next.p2, next.dev2, 'vm') };
  }

  it('fails RETRIEVE_FD of that memfd with EIO', () => {
    const { next, sfd } = corrupted();
    expect(errnoOf(() => retrieveFd(next.p2, sfd, 1))).toBe('EIO');
  });

  it('fails it again with EIO without calling the handler (sticky)', () => {
    const { next, sfd } = corrupted();
    errnoOf(() => retrieveFd(next.p2, sfd, 1));
    let retrieves = 0;
    next.k2.luo.hooks.fileOp.tap('count', (ev) => { if (ev.op === 'retrieve') retrieves++; });
    expect(errnoOf(() => retrieveFd(next.p2, sfd, 1))).toBe('EIO');
    expect(retrieves).toBe(0);
  });

  it('leaves the other memfd of the session retrievable with its content', () => {
    const { next, sfd } = corrupted();
    errnoOf(() => retrieveFd(next.p2, sfd, 1));
    const b = retrieveFd(next.p2, sfd, 2);
    expect(next.p2.pread(b, 2 * PAGE_SIZE, 0)).toEqual(pattern(2 * PAGE_SIZE, 2));
  });

  it('after FINISH only the folio the corrupt record lost stays reserved: 1 block of 1 page', () => {
    const { next, sfd } = corrupted();
    errnoOf(() => retrieveFd(next.p2, sfd, 1));
    retrieveFd(next.p2, sfd, 2);
    finishSession(next.p2, sfd);
    expect(next.k2.khoIn?.leaked()).toEqual({ blocks: 1, pages: 1 });
  });
});

describe('corrupting the kho_vmalloc descriptor of a memfd-v2 header', () => {
  it('fails RETRIEVE_FD with EINVAL (the folio array cannot be restored), stickily', () => {
    const o = twoMemfds({ writes: ['2.0.0'] });
    // folios_first (offset 32) → a page with no chunk chain: zero runs for total_pages 1.
    o.machine.memory.writeU64(Number(handedOver(o, 'vm', 1).data) + 32, PAGE_SIZE);
    const next = bootNext(o);
    const sfd = retrieveSession(next.p2, next.dev2, 'vm');
    expect(errnoOf(() => retrieveFd(next.p2, sfd, 1))).toBe('EINVAL');
    expect(errnoOf(() => retrieveFd(next.p2, sfd, 1))).toBe('EINVAL');
    expect(next.p2.pread(retrieveFd(next.p2, sfd, 2), 2 * PAGE_SIZE, 0)).toEqual(pattern(2 * PAGE_SIZE, 2));
  });
});

// Still reserved while the session is open, with token 2 retrieved: token 1's 3 folios, its
// header page and its folio metadata (upstream: the array page and its kho_vmalloc chunk;
// 3.x: one xarray node per level, 6; 4.x: the extent stream's page and chunk), plus the session's luo_file_ser block.
describe.each([
  { label: 'memfd-v1', options: { writes: ['1.0.0'] }, pending: 3 + 1 + 2 + 1 },
  { label: 'memfd-v2', options: { writes: ['2.0.0'] }, pending: 3 + 1 + 2 + 1 },
  { label: 'memfd@3.0.0', options: V3_0, pending: 3 + 1 + 6 + 1 },
  { label: 'memfd@3.1.0', options: { writes: ['3.1.0'] }, pending: 3 + 1 + 6 + 1 },
  { label: 'memfd@3.2.0', options: { writes: ['3.2.0'] }, pending: 3 + 1 + 6 + 1 },
  // 4.x: the extent stream is one vmalloc page and its kho_vmalloc chunk.
  { label: 'memfd@4.0.0', options: {}, pending: 3 + 1 + 2 + 1 },
])('an unretrieved $label memfd', ({ options, pending }) => {
  it(`is discarded by FINISH: its ${pending - 1} preserved blocks and the file block are restored and freed`, () => {
    const o = twoMemfds(options);
    const next = bootNext(o);
    const sfd = retrieveSession(next.p2, next.dev2, 'vm');
    retrieveFd(next.p2, sfd, 2);
    expect(next.k2.khoIn?.leaked()).toEqual({ blocks: pending, pages: pending });
    finishSession(next.p2, sfd);
    expect(next.k2.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
  });

  it('is discarded when the retrieved session is closed without FINISH', () => {
    const o = twoMemfds(options);
    const next = bootNext(o);
    next.p2.close(retrieveSession(next.p2, next.dev2, 'vm'));
    expect(next.k2.khoIn?.leaked()).toEqual({ blocks: 0, pages: 0 });
  });

  it('gives its pages back to the allocator: 3 data pages more are free after FINISH than with it retrieved', () => {
    const free = (retrieveA: boolean): number => {
      const next = bootNext(twoMemfds(options));
      const sfd = retrieveSession(next.p2, next.dev2, 'vm');
      if (retrieveA) retrieveFd(next.p2, sfd, 1);
      finishSession(next.p2, sfd);
      return next.k2.mm.allocator?.freePages ?? 0;
    };
    expect(free(false) - free(true)).toBe(3);
  });
});

describe.each([
  { label: 'memfd-v2 flags (unused, must be 0)', options: { writes: ['2.0.0'] }, offset: 20, value: 1n, width: 4 },
  { label: 'memfd-v2 size beyond MAX_LFS_FILESIZE', options: { writes: ['2.0.0'] }, offset: 8, value: 1n << 60n, width: 8 },
  { label: 'memfd@3.0.0 nr_folios disagreeing with the xarray', options: V3_0, offset: 24, value: 4n, width: 8 },
  { label: 'memfd@3.0.0 reserved word', options: V3_0, offset: 44, value: 7n, width: 4 },
  { label: 'memfd@3.0.0 folio order', options: V3_0, offset: 40, value: 3n, width: 4 },
])('a header with a corrupt $label', ({ options, offset, value, width }) => {
  it('fails RETRIEVE_FD of that memfd with EINVAL, stickily, while the other memfd retrieves', () => {
    const o = twoMemfds(options);
    const header = Number(handedOver(o, 'vm', 1).data);
    if (width === 8) o.machine.memory.writeU64(header + offset, value);
    else o.machine.memory.writeU32(header + offset, Number(value));
    const next = bootNext(o);
    const sfd = retrieveSession(next.p2, next.dev2, 'vm');
    expect(errnoOf(() => retrieveFd(next.p2, sfd, 1))).toBe('EINVAL');
    expect(errnoOf(() => retrieveFd(next.p2, sfd, 1))).toBe('EINVAL');
    const b = retrieveFd(next.p2, sfd, 2);
    expect(next.p2.pread(b, 2 * PAGE_SIZE, 0)).toEqual(pattern(2 * PAGE_SIZE, 2));
  });
});
