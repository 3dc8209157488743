/**
 * Corruption of the handover between the jump and the next boot (the harness's afterJump,
 * when only memory is left): every byte of the mshv_prsv_pt FDT and of the tracking header
 * gives an outcome upstream defines (the update, a panic at boot, a refused file), never an
 * uncaught exception and never a touch of a hypervisor page.
 */
import { describe, expect, it } from 'vitest';
import { liveUpdate } from '@liveupdate/sdk/testing';
import { HV_PARTITION_ID_SELF } from '@liveupdate/hw';
import type { Kernel } from '@liveupdate/sdk';
import mshv, { mshvAbi, mshvRoot } from '@liveupdate/plugin-mshv';
import { compareTracked } from '../src/tools.js';
import { hvMachine } from './support.js';

function runWith(toWrites: readonly string[], target: (k: Kernel) => number, offset: number) {
  const { machine, hv } = hvMachine(true, '4GiB');
  let k1: Kernel | undefined;
  const r = liveUpdate({ from: { plugins: [mshv()], release: '7.1.0' }, to: { plugins: [mshv({ writes: toWrites })], release: '7.2.0' } }, {
    machine,
    before(k) {
      k1 = k;
      const root = mshvRoot(k);
      const p = root.createPartition();
      root.initializePartition(p);
      root.depositPages(p.id, 100, { scattered: 3 });
      root.depositPages(HV_PARTITION_ID_SELF, 30);
      return null;
    },
    afterJump(m) {
      const at = target(k1 as Kernel) + offset;
      m.memory.writeU8(at, m.memory.readU8(at) ^ 0xff);
    },
    after() { /* the kernel's own session was retrieved at boot */ },
    // A declared fault makes the harness report outcome classes instead of throwing.
    faults: [{ kind: 'corrupt', target: { phys: 0 }, offset: 0, xor: 0 }],
  });
  return { r, hv };
}

const subtreePhys = (k: Kernel): number => k.khoOut?.subtreeList.find((s) => s.name === mshvAbi.FDT_SUBTREE_MSHV)?.phys as number;
const trackingHeader = (k: Kernel): number => Number(k.luo.sessions.outgoing.find((s) => s.name === 'mshv_root')?.fileSet.files[0]?.serializedData);

describe('fuzzing the handover', () => {
  it('each byte of the mshv_prsv_pt FDT: updated or a panic at boot, no fault', () => {
    const kinds = new Set<string>();
    for (let off = 0; off < 205; off += 4) {
      const { r, hv } = runWith(['1.0.0', '2.0.0'], subtreePhys, off);
      kinds.add(r.outcome.kind);
      expect(['updated', 'refused-incoming']).toContain(r.outcome.kind);
      expect(hv.faultCount).toBe(0);
    }
    expect(kinds).toEqual(new Set(['updated', 'refused-incoming']));
  });

  it('each byte of the tracking header: refused by the file (its pages stay reserved), no fault, nothing handed out', () => {
    for (let off = 0; off < 48; off += 1) {
      const { r, hv } = runWith(['1.0.0', '2.0.0', '3.0.0'], trackingHeader, off);
      expect(r.outcome.kind).toBe('updated');
      const k2 = r.to as Kernel;
      expect(k2.dmesg.lines().some((l) => l.startsWith('mshv: tracking file:'))).toBe(true);
      expect(hv.faultCount).toBe(0);
      // The tracked set was not adopted: the hypervisor still holds pages the kernel keeps reserved.
      expect(compareTracked(hv, mshvRoot(k2)).length).toBe(1);
      expect(k2.khoIn?.leaked().pages).toBeGreaterThanOrEqual(hv.depositedPages);
    }
  });
});
