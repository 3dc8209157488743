import { describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '@liveupdate/hw';
import { ErrnoError, createSession, finishSession, retrieveFd, retrieveSession, type ObjectKind, type SessionStepContext, preserveFd } from '@liveupdate/sdk';
import guestMemfd from '../src/index.js';
import type { VmExpect, VmSpec } from '../src/tools/vm-kind.js';
import { bootNext, jumpOnly } from './handover.js';
import { plugins, start } from './support.js';

const tools = guestMemfd().tools;
const kind = tools.objects?.[0] as unknown as ObjectKind<VmSpec, VmExpect>;

/** xorshift32: the fuzzer's reproducible choices. */
function rng(seed: number): () => number {
  let x = Math.imul(seed, 2654435761) >>> 0 || 1;
  const next = (): number => { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; return (x >>> 0) / 2 ** 32; };
  for (let i = 0; i < 8; i++) next();
  return next;
}

describe('structure-aware corruption of the pages the decoders own', () => {
  for (const writes of [['1.0.0'], ['1.0.0', '2.0.0']]) {
    it(`every outcome is a typed errno or a verified guest, never a handler bug (writes ${writes.join(',')})`, () => {
      const outcomes = new Map<string, number>();
      for (let seed = 1; seed <= 40; seed++) {
        const o = start({ memory: '512MiB', plugins: plugins({ writes }), next: plugins({ writes }) });
        const s = createSession(o.p, o.dev, 'vm0');
        const ctx = (k = o.k1, p = o.p, sfd = s): SessionStepContext => ({
          kernel: k, machine: k.machine, session: 'vm0', vmm: p, sessionFd: sfd,
          preserve: (fd, token) => preserveFd(p, sfd, fd, token), retrieve: (token) => retrieveFd(p, sfd, token),
          peer: () => undefined, section: () => undefined, tick: () => {}, note: () => {},
        });
        const spec: VmSpec = { type: 'kvm-vm', token: 2, vmToken: 1, vcpus: 2, pagesPerVcpu: 16, pauseAfter: 60 };
        const created = kind.create(ctx(), spec);
        const data = jumpOnly(o);
        const r = rng(seed);
        const version = writes.length === 1 ? '1.0.0' : '2.0.0';
        const owned = [
          ...(tools.decoders?.[0]?.decode(o.machine.memory, BigInt(data(1)), '1.0.0', { label: 'vm' }).pages ?? []),
          ...(tools.decoders?.[1]?.decode(o.machine.memory, BigInt(data(2)), version, { label: 'gmem' }).pages ?? []),
        ];
        const victim = owned[Math.floor(r() * owned.length)];
        if (!victim) throw new Error('no owned pages');
        const word = victim.words && r() < 0.7 ? victim.words[Math.floor(r() * victim.words.length)] : undefined;
        const at = victim.pfn * PAGE_SIZE + (word ? word.offset : Math.floor(r() * PAGE_SIZE));
        o.machine.memory.writeU8(at, o.machine.memory.readU8(at) ^ (1 << Math.floor(r() * 8)));
        const i = bootNext(o);
        const s2 = retrieveSession(i.p2, i.dev2, 'vm0');
        let outcome: string;
        try {
          const restored = kind.restore(ctx(i.k2, i.p2, s2), spec, created.expect);
          outcome = restored.check.ok ? 'verified' : 'detected by the check';
        } catch (e) {
          if (!(e instanceof ErrnoError)) throw e;
          expect(e.message).not.toMatch(/bug \(/);
          outcome = e.code;
        }
        expect(i.k2.dmesg.lines().filter((l) => / bug /.test(l))).toEqual([]);
        finishSession(i.p2, s2);
        outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
      }
      expect([...outcomes.values()].reduce((a, b) => a + b, 0)).toBe(40);
      // Some corruption must be caught: a fuzzer that sees only successes mutated nothing that matters.
      expect([...outcomes.keys()].some((k) => k !== 'verified')).toBe(true);
    });
  }
});
