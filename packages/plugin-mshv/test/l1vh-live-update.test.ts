/**
 * The headline: an L1VH host with three partitions and 1 GiB deposited in a scattered pattern
 * is live updated (mshv 3.x negotiated between two current kernels, and 2.x with a target that
 * reads up to the radix subtree). Driven through the plugin's own scenario section steps
 * inside the SDK harness.
 */
import { describe, expect, it } from 'vitest';
import { liveUpdate } from '@liveupdate/sdk/testing';
import { PAGE_SIZE, type Machine } from '@liveupdate/hw';
import type { Kernel } from '@liveupdate/sdk';
import mshv, { mshvRoot, type MshvRoot } from '@liveupdate/plugin-mshv';
import { compareTracked, mshvSection, mshvTools, type MshvSectionSpec, type MshvSectionState } from '../src/tools.js';
import { createMachine } from '@liveupdate/hw';
import { depositedRuns, pagesIn } from './support.js';

/** The built-in scenario's own section: what `liveupdate run --scenario mshv-l1vh-1g-scattered` runs. */
const SPEC = (mshvTools.scenarios?.[0]?.scenario as { mshv: MshvSectionSpec }).mshv;
const GIB_PAGES = (1 << 30) / PAGE_SIZE;

interface Remembered { state: MshvSectionState; ids: bigint[]; trackedEqualBefore: string[]; frozenBeforeJump: boolean[]; rootDeposits: number }

function run(toWrites?: readonly string[]) {
  const machine: Machine = createMachine({ memory: '8GiB' });
  const state = mshvSection.machine?.(machine, SPEC) as MshvSectionState;
  const ctx = (k: Kernel) => ({ kernel: k, machine, spawn: (n: string) => k.spawn(n), note: () => undefined });
  const roots: { a?: MshvRoot; b?: MshvRoot } = {};
  const r = liveUpdate<Remembered>({
    from: { plugins: [mshv()], release: '7.1.0' },
    to: { plugins: [mshv(toWrites ? { writes: toWrites } : {})], release: '7.2.0' },
  }, {
    machine,
    before(k) {
      mshvSection.before?.(ctx(k), SPEC, state);
      mshvSection.beforeKexec?.(ctx(k), SPEC, state);
      roots.a = mshvRoot(k);
      // Observe the freeze from inside the reboot path: after LUO froze, before the jump.
      const frozen: boolean[] = [];
      k.shutdownHooks.beforeJump.tap('test', () => { for (const id of roots.a?.partitions.keys() ?? []) frozen.push(state.hv.partition(id)?.vps.every((v) => v.dispatchSuspended) ?? false); });
      return { state, ids: state.partitionIds.map(BigInt), trackedEqualBefore: compareTracked(state.hv, mshvRoot(k)), frozenBeforeJump: frozen, rootDeposits: state.hv.depositedTo(2n ** 64n - 1n) };
    },
    after(k) {
      roots.b = mshvRoot(k);
    },
  });
  return { r, machine, state, roots };
}

describe('the built-in scenario', () => {
  it('is an L1VH host with three partitions and 1 GiB deposited scattered, its section valid against the section schema', () => {
    expect(SPEC).toMatchObject({ mode: 'l1vh', partitions: 3, deposit: '1GiB', pattern: 'scattered' });
    const schema = mshvSection.schema as { required: string[]; properties: Record<string, unknown> };
    for (const key of schema.required) expect(SPEC).toHaveProperty(key);
    for (const key of Object.keys(SPEC)) expect(schema.properties).toHaveProperty(key);
  });
});

describe('L1VH host, three partitions, 1 GiB deposited scattered: live update (mshv 3.x, the tracking file)', () => {
  const { r, state, roots } = run();
  const hv = state.hv;

  it('updates with no invariant broken', () => {
    expect(r.outcome.kind).toBe('updated');
    expect(r.violations).toEqual([]);
  });

  it('deposited 1 GiB to the partitions (plus their bookkeeping) in scattered runs, all tracked before the jump', () => {
    expect(state.depositedBefore).toBeGreaterThanOrEqual(GIB_PAGES);
    expect(r.state?.trackedEqualBefore).toEqual([]);
    expect(state.trackedBefore).toBe(state.depositedBefore);
  });

  it('froze the partitions (every VP suspended) and recorded them before the jump', () => {
    expect(r.state?.frozenBeforeJump).toEqual([true, true, true]);
    expect(r.state?.ids.length).toBe(3);
  });

  it('the new kernel touched no deposited page', () => {
    expect(hv.faultCount).toBe(0);
  });

  it('tore the recorded partitions down: they are gone and only the root\'s deposits stay', () => {
    for (const id of r.state?.ids ?? []) expect(hv.partition(id)).toBeUndefined();
    expect(hv.depositedPages).toBe(r.state?.rootDeposits);
    expect(hv.partitionIds).toEqual([]);
  });

  it('the tracked set equals the deposited set after the update', () => {
    expect(roots.b && compareTracked(hv, roots.b)).toEqual([]);
    expect(roots.b?.pagesDeposited).toBe(hv.depositedPages);
  });

  it('the section\'s after-check passes', () => {
    const k = r.to as Kernel;
    const checks = mshvSection.after?.({ kernel: k, machine: k.machine, spawn: (n) => k.spawn(n), note: () => undefined }, SPEC, state) ?? [];
    expect(checks.map((c) => c.problems)).toEqual([[]]);
  });

  it('its allocator hands out the withdrawn pages but never a page still deposited', () => {
    const k = r.to as Kernel;
    const mm = k.mm;
    let handedOut = 0;
    let bad = 0;
    for (let pfn = mm.allocPages(0); pfn !== null; pfn = mm.allocPages(0)) {
      handedOut++;
      if (hv.isDeposited(pfn)) bad++;
    }
    expect(bad).toBe(0);
    expect(handedOut).toBeGreaterThan(GIB_PAGES);
    expect(hv.faultCount).toBe(0);
  });
});

describe('the same host live updated into a kernel that reads up to mshv 2.x (the radix subtree of RFC 00/20)', () => {
  const { r, state, roots } = run(['1.0.0', '2.0.0']);
  const hv = state.hv;

  it('updates, touches no deposited page and tears the partitions down', () => {
    expect(r.outcome.kind).toBe('updated');
    expect(r.violations).toEqual([]);
    expect(hv.faultCount).toBe(0);
    for (const id of r.state?.ids ?? []) expect(hv.partition(id)).toBeUndefined();
  });

  it('the KHO subtree mshv_prsv_pt was handed over and the tracked set equals the deposited set', () => {
    expect((r.to as Kernel).debugfs.list()).toContain('kho/in/sub_fdts/mshv_prsv_pt');
    expect(roots.b && compareTracked(hv, roots.b)).toEqual([]);
    expect(pagesIn(depositedRuns(hv))).toBe(r.state?.rootDeposits);
  });
});
