import { describe, expect, it } from 'vitest';
import {
  createSession, finishSession, openLiveupdate, preserveFd, retrieveFd, retrieveSession, type Kernel, type ObjectKind, type Process, type SessionStepContext,
} from '@liveupdate/sdk';
import { liveUpdate } from '@liveupdate/sdk/testing';
import guestMemfd from '../src/index.js';
import type { VmExpect, VmSpec } from '../src/tools/vm-kind.js';
import { plugins } from './support.js';

const kind = guestMemfd().tools.objects?.[0] as unknown as ObjectKind<VmSpec, VmExpect>;
const ctxOf = (kernel: Kernel, vmm: Process, sessionFd: number): SessionStepContext => ({
  kernel, machine: kernel.machine, session: 'vm0', vmm, sessionFd,
  preserve: (fd, token) => preserveFd(vmm, sessionFd, fd, token), retrieve: (token) => retrieveFd(vmm, sessionFd, token),
  peer: () => undefined, section: () => undefined, tick: () => {}, note: () => {},
});

const BUILDS = {
  'upstream only (writes 1.0.0, reads ^1.0.0)': { writes: ['1.0.0'], reads: '^1.0.0' },
  'this release (writes 1.0.0, 2.0.0 and 2.1.0)': {},
} as const;

describe('release x release: the guest continues whichever builds are mixed', () => {
  for (const [fromName, from] of Object.entries(BUILDS)) {
    for (const [toName, to] of Object.entries(BUILDS)) {
      const sparse = 'writes' in from === false && 'writes' in to === false;
      it(`${fromName} -> ${toName}: guest_memfd goes over as ${sparse ? 'guest_memfd@2.1.0' : 'guest_memfd_luo_v1'}`, () => {
        const spec: VmSpec = { type: 'kvm-vm', token: 2, vmToken: 1, vcpus: 2, pagesPerVcpu: 32, pauseAfter: 100 };
        let compatibles: string[] = [];
        const r = liveUpdate({ from: { plugins: plugins(from), release: '7.1.0' }, to: { plugins: plugins(to), release: '7.2.0' } }, {
          machine: { memory: '1GiB', numaNodes: 1 },
          before(k, t) {
            const vmm = t.spawn(k, 'vmm');
            return kind.create(ctxOf(k, vmm, createSession(vmm, openLiveupdate(vmm), 'vm0')), spec).expect;
          },
          after(k, remembered, t) {
            const vmm = t.spawn(k, 'vmm');
            const s = retrieveSession(vmm, openLiveupdate(vmm), 'vm0');
            compatibles = k.luo.sessions.incoming[0]?.fileSet.files.map((f) => f.compatible).sort() ?? [];
            const { check } = kind.restore(ctxOf(k, vmm, s), spec, remembered);
            if (!check.ok) throw new Error(check.problems.join('; '));
            finishSession(vmm, s);
          },
        });
        expect(r.outcome.kind).toBe('updated');
        expect(compatibles).toEqual([sparse ? 'guest_memfd@2.1.0' : 'guest_memfd_luo_v1', 'kvm_vm_luo_v1']);
      });
    }
  }
});
