import { describe, it, expect } from 'vitest';
import { createMachine, dmarOf, type Machine } from '@liveupdate/hw';
import {
  createSession, finishSession, preserveFd, retrieveFd, retrieveSession,
  type Kernel, type ObjectKind, type Process, type ScenarioObjectSpec, type SessionStepContext,
} from '@liveupdate/sdk';
import { InvariantError, liveUpdate } from '@liveupdate/sdk/testing';
import memfd from '@liveupdate/plugin-memfd';
import iommu from '../src/index.js';
import { CMDLINE, MiB, REG_BASE, errnoOf, guestRam } from './support.js';

interface Expect { hwptToken: number; maps: unknown[] }
const kind = iommu().tools.objects?.find((o) => o.type === 'iommufd') as unknown as ObjectKind<ScenarioObjectSpec & { maps: Array<{ file: number; iova: number; length: number }> }, Expect>;
const spec = { type: 'iommufd', token: 2, maps: [{ file: 1, iova: 0x40_0000, length: 2 * MiB }], hwptToken: 77 };

function stepCtx(kernel: Kernel, machine: Machine, vmm: Process, sessionFd: number, peers: Map<number, unknown>, log: string[]): SessionStepContext {
  return {
    kernel, machine, session: 'vm0', vmm, sessionFd,
    preserve: (fd, token) => preserveFd(vmm, sessionFd, fd, token),
    retrieve: (token) => retrieveFd(vmm, sessionFd, token),
    peer: (token) => peers.get(token),
    section: () => undefined,
    tick: () => undefined,
    note: (line) => { log.push(line); },
  };
}

function scenario(writes: string[], log: string[] = [], toWrites = writes): ReturnType<typeof liveUpdate<Expect>> {
  const machine = createMachine({ memory: '4GiB' });
  dmarOf(machine).addUnit({ segment: 0, regBase: REG_BASE });
  const plugins = [memfd(), iommu({ writes })];
  const next = [memfd(), iommu({ writes: toWrites })];
  return liveUpdate<Expect>({ from: { plugins, release: '7.1.0', cmdline: CMDLINE }, to: { plugins: next, release: '7.2.0', cmdline: CMDLINE } }, {
    machine,
    before(k, t) {
      const p = t.spawn(k, 'vmm');
      const s = createSession(p, p.open('/dev/liveupdate'), 'vm0');
      const ram = guestRam(p, 2 * MiB, 0x22);
      preserveFd(p, s, ram, 1);
      const created = kind.create(stepCtx(k, machine, p, s, new Map([[1, { fd: ram }]]), log), spec);
      expect(created.expect).toEqual({ hwptToken: 77, maps: [{ file: 1, iova: 0x40_0000, offset: 0, length: 2 * MiB }] });
      return created.expect;
    },
    after(k, exp, t) {
      const p = t.spawn(k, 'vmm');
      const s = retrieveSession(p, p.open('/dev/liveupdate'), 'vm0');
      const ram = retrieveFd(p, s, 1);
      const r = kind.restore(stepCtx(k, machine, p, s, new Map([[1, { fd: ram }]]), log), spec, exp);
      expect(r.check.problems).toEqual([]);
      expect(r.check.ok).toBe(true);
      log.push(r.check.summary);
      if (writes.includes('2.0.0')) finishSession(p, s);
      else {
        let busy: unknown;
        try { finishSession(p, s); } catch (e) { busy = e; }
        expect(errnoOf(() => { throw busy; })).toBe('EBUSY');
        // The message names the format handed over (iommufd-v1), not the newest this build writes.
        log.push((busy as Error).message);
      }
    },
  });
}

describe('the "iommufd" scenario object kind, run step by step inside liveUpdate()', () => {
  it('2.x: the restore step finds the HWPT by its token and every IOVA page on the retrieved memfd; the update keeps every invariant', () => {
    const r = scenario(['1.0.0', '2.0.0']);
    expect(r.outcome.kind).toBe('updated');
    expect(r.violations).toEqual([]);
  });

  it('1.x as posted: RETRIEVE_FD is EOPNOTSUPP, so FINISH fails and the harness reports the session never finished', () => {
    let err: unknown;
    const log: string[] = [];
    try { scenario(['1.0.0'], log); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(InvariantError);
    expect((err as InvariantError).violations[0]).toMatch(/^incoming session 'vm0' was never finished: token 1 \(memfd@4\.1\.0\), token 2 \(iommufd-v1\)/);
  });

  it('1.x to a kernel that writes 2.x too: the EBUSY of FINISH names the format handed over, iommufd-v1', () => {
    const log: string[] = [];
    try { scenario(['1.0.0'], log, ['1.0.0', '2.0.0']); } catch { /* the harness's InvariantError, shown above */ }
    expect(log.filter((l) => l.includes('FINISH'))).toEqual([expect.stringMatching(/LIVEUPDATE_SESSION_FINISH: iommufd-v1 token 2 cannot finish yet/)]);
  });
});
