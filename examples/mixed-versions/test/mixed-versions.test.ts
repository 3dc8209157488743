/**
 * The example's flow, as a test: upgrade 7.0.0 (plugin-memfd 2.0.0, the released tarball) →
 * 7.1.0 (3.1.0), the guest writes, rollback → 7.0.0 (2.0.0).
 */
import { describe, expect, it } from 'vitest';
import { memfdAbi } from '@liveupdate/plugin-memfd';
import { upgradeAndRollback, type MixedVersionsReport } from '../src/index.js';

const MiB = 2 ** 20;

describe('upgrade 2.0.0 → 3.1.0, then rollback 3.1.0 → 2.0.0', () => {
  let report: MixedVersionsReport | undefined;
  const run = (): MixedVersionsReport => (report ??= upgradeAndRollback({ ramBytes: 64 * MiB, log: () => {} }));

  it('goes 7.0.0 (2.0.0) → 7.1.0 (3.1.0) → 7.0.0 (2.0.0)', () => {
    expect(run().hops.map((h) => [h.from.release, h.from.memfd, h.to.release, h.to.memfd])).toEqual([
      ['7.0.0', '2.0.0', '7.1.0', '3.1.0'],
      ['7.1.0', '3.1.0', '7.0.0', '2.0.0'],
    ]);
  });

  it("negotiates memfd 2.0.0 ('memfd-v2') both ways, and the new kernel finds exactly that", () => {
    expect(run().hops.map((h) => [h.chosen, h.chosenCompatible, h.found])).toEqual([
      ['2.0.0', 'memfd-v2', 'memfd-v2'],
      ['2.0.0', 'memfd-v2', 'memfd-v2'],
    ]);
  });

  it('keeps guest RAM intact: content, size 64 MiB, position 4096, seals SHRINK | GROW', () => {
    const seals = memfdAbi.F_SEAL_SHRINK | memfdAbi.F_SEAL_GROW;
    expect(run().hops.map((h) => [h.contentIntact, h.size, h.pos, h.seals])).toEqual([
      [true, 64 * MiB, 4096, seals],
      [true, 64 * MiB, 4096, seals],
    ]);
  });

  it('leaves no preserved block behind after each FINISH', () => {
    expect(run().hops.map((h) => h.leakedBlocks)).toEqual([0, 0]);
  });
});
