/**
 * The VMM example's flow as a test: guest RAM in memfds, the session held by the broker through
 * the kexec, and every RAM block back with the same bytes in the new kernel.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { CPR_STATE_TOKEN, liveUpdateVm, type VmmLiveUpdateReport } from '../src/index.js';

describe('VMM live update with a luod-style broker', () => {
  let report: VmmLiveUpdateReport;
  beforeAll(() => {
    report = liveUpdateVm({
      ram: [
        { name: 'pc.ram', size: 32 << 20, stride: 8 },
        { name: 'vga.vram', size: 4 << 20, stride: 1 },
      ],
    });
  });

  it('brings every RAM block back with the bytes the guest wrote', () => {
    expect(report.blocks.map((b) => [b.name, b.ok])).toEqual([['pc.ram', true], ['vga.vram', true]]);
    for (const b of report.blocks) expect(b.sha256After).toBe(b.sha256Before);
  });

  it('keeps a sparse block sparse: holes are not materialized by the update', () => {
    const ram = report.blocks.find((b) => b.name === 'pc.ram');
    expect(ram).toMatchObject({ residentBefore: 1024, residentAfter: 1024 });
  });

  it('gets the session back by name and the blocks by the tokens in the CPR state memfd', () => {
    expect(report.session).toBe('vm0');
    expect(report.blocks.map((b) => b.token)).toEqual([CPR_STATE_TOKEN + 1, CPR_STATE_TOKEN + 2]);
  });

  it('leaves the old kernel dead and nothing preserved behind', () => {
    expect(report.oldKernelDead).toBe(true);
    expect(report.leaked).toEqual({ blocks: 0, pages: 0 });
    expect(report.poisonReads).toBe(0);
    expect(report.liveupdateNum).toEqual([1, 2]);
    expect(report.dmesg.some((l) => l.includes('exec from: 7.1.0'))).toBe(true);
  });
});
