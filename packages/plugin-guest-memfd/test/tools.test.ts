import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PAGE_SIZE, createMachine } from '@liveupdate/hw';
import {
  createSession, finishSession, openLiveupdate, preserveFd, retrieveFd, retrieveSession,
  type Kernel, type ObjectKind, type Process, type SessionStepContext,
} from '@liveupdate/sdk';
import { liveUpdate } from '@liveupdate/sdk/testing';
import guestMemfd from '../src/index.js';
import type { VmExpect, VmSpec } from '../src/tools/vm-kind.js';
import { bootNext, jumpOnly, setU64 } from './handover.js';
import { plugins, start } from './support.js';

const tools = guestMemfd().tools;
const kind = tools.objects?.find((k) => k.type === 'kvm-vm') as unknown as ObjectKind<VmSpec, VmExpect>;
const decoder = (family: string) => {
  const d = tools.decoders?.find((x) => x.target.kind === 'file' && x.target.family === family);
  if (!d) throw new Error(`no decoder for ${family}`);
  return d;
};

function stepContext(kernel: Kernel, vmm: Process, sessionFd: number, notes: string[]): SessionStepContext {
  return {
    kernel, machine: kernel.machine, session: 'vm0', vmm, sessionFd,
    preserve: (fd, token) => preserveFd(vmm, sessionFd, fd, token),
    retrieve: (token) => retrieveFd(vmm, sessionFd, token),
    peer: () => undefined, section: () => undefined, tick: () => {}, note: (l) => notes.push(l),
  };
}

describe('the plugin surface for tools', () => {
  it('declares one object kind, a decoder per family and built-in scenarios that validate', () => {
    expect(tools.objects?.map((k) => k.type)).toEqual(['kvm-vm']);
    expect(tools.decoders?.map((d) => d.target)).toEqual([{ kind: 'file', family: 'kvm_vm' }, { kind: 'file', family: 'guest_memfd' }, { kind: 'file', family: 'kvm_vcpu' }]);
    expect(tools.scenarios?.map((s) => s.name)).toEqual(['guest-memfd-vm', 'guest-memfd-relaxed-fault', 'guest-memfd-two-vms', 'guest-memfd-vm-with-memfd']);
  });

  for (const [flow, writes, faults] of [['pause', ['1.0.0'], 0], ['relaxed', ['1.0.0'], 2], ['relaxed', ['1.0.0', '2.0.0'], 0]] as const) {
    it(`the kvm-vm kind's create and restore steps pass inside liveUpdate() (flow ${flow}, writes ${writes.join(',')})`, () => {
      const spec: VmSpec = { type: 'kvm-vm', token: 2, vmToken: 1, vcpus: 2, pagesPerVcpu: 64, pauseAfter: 200, flow };
      const notes: string[] = [];
      const r = liveUpdate({ from: { plugins: plugins({ writes }), release: '7.1.0' }, to: { plugins: plugins({ writes }), release: '7.2.0' } }, {
        machine: { memory: '1GiB', numaNodes: 1 },
        before(k, t) {
          const vmm = t.spawn(k, 'vmm');
          const s = createSession(vmm, openLiveupdate(vmm), 'vm0');
          return kind.create(stepContext(k, vmm, s, notes), spec).expect;
        },
        after(k, remembered, t) {
          const vmm = t.spawn(k, 'vmm');
          const s = retrieveSession(vmm, openLiveupdate(vmm), 'vm0');
          const restored = kind.restore(stepContext(k, vmm, s, notes), spec, remembered);
          if (!restored.check.ok) throw new Error(restored.check.problems.join('; '));
          // The jump alone (KEXEC_JUMP_NS) passes while the vCPUs are paused.
          const paused = restored.check.counts?.['ns paused (VM vm0/2)'] ?? 0;
          if (paused < 20_000_000) throw new Error(`blackout ${paused} ns`);
          finishSession(vmm, s);
        },
      });
      expect(r.outcome.kind).toBe('updated');
      expect(r.state?.memoryFaults).toBe(faults);
      expect(notes[0]).toMatch(/2 vCPUs paused/);
    });
  }

  it('decoders read both formats with no problem, and name every metadata page and the folio runs', () => {
    for (const writes of [['1.0.0'], ['1.0.0', '2.0.0']]) {
      const o = start({ plugins: plugins({ writes }), next: plugins({ writes }) });
      const spec: VmSpec = { type: 'kvm-vm', token: 2, vmToken: 1, vcpus: 2, pagesPerVcpu: 64, pauseAfter: 500 };
      const s = createSession(o.p, o.dev, 'vm0');
      const created = kind.create(stepContext(o.k1, o.p, s, []), spec);
      const data = jumpOnly(o);
      const version = writes.length === 1 ? '1.0.0' : '2.0.0';
      const g = decoder('guest_memfd').decode(o.machine.memory, BigInt(data(2)), version, { label: 'vm0 token 2' });
      expect(g.problems).toEqual([]);
      expect(g.fields.vm_token).toBe(1n);
      expect(g.fields.nr_folios).toBe(BigInt(created.preservedPages ?? 0) + 1n); // + the VMM's save area page
      const dataPages = (g.dataRuns ?? []).reduce((n, [a, b]) => n + b - a, 0);
      expect(dataPages).toBe((created.preservedPages ?? 0) + 1);
      expect(g.pages[0]?.structure).toBe('guest_memfd_luo_ser');
      expect(g.pages.length).toBeGreaterThan(1);
      const v = decoder('kvm_vm').decode(o.machine.memory, BigInt(data(1)), '1.0.0', { label: 'vm0 token 1' });
      expect(v.problems).toEqual([]);
      expect(v.fields.type).toBe(0n);
      expect(v.pages.map((p) => p.structure)).toEqual(['kvm_luo_ser']);
      bootNext(o);
    }
  });

  it('decoders report corruption as problems', () => {
    const o = start({ plugins: plugins(), next: plugins() });
    const s = createSession(o.p, o.dev, 'vm0');
    kind.create(stepContext(o.k1, o.p, s, []), { type: 'kvm-vm', token: 2, vmToken: 1, vcpus: 1, pagesPerVcpu: 8 });
    const data = jumpOnly(o);
    setU64(o.machine, data(2), 0x12345n);
    setU64(o.machine, data(1), 77n);
    expect(decoder('guest_memfd').decode(o.machine.memory, BigInt(data(2)), '2.0.0', { label: 'x' }).problems[0]).toMatch(/^header checksum/);
    expect(decoder('kvm_vm').decode(o.machine.memory, BigInt(data(1)), '1.0.0', { label: 'x' }).problems).toEqual(['VM type 77 is not one this kernel creates']);
  });

  it('decoders never throw on hostile bytes (property)', () => {
    const machine = createMachine({ memory: '64MiB' });
    const base = 16 * PAGE_SIZE;
    fc.assert(fc.property(
      fc.uint8Array({ minLength: 64, maxLength: 64 }), fc.uint8Array({ minLength: 64, maxLength: 64 }), fc.constantFrom('1.0.0', '2.0.0', '9.0.0'),
      fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
      (header, page2, version, ptr) => {
        machine.memory.write(base, header);
        machine.memory.write(base + PAGE_SIZE, page2);
        for (const d of [decoder('guest_memfd'), decoder('kvm_vm'), decoder('kvm_vcpu')]) {
          d.decode(machine.memory, BigInt(base), version, { label: 'fuzz' });
          d.decode(machine.memory, ptr, version, { label: 'fuzz' });
        }
      },
    ), { numRuns: 300 });
  });

  it('the built-in scenarios use this plugin on both sides and give every kvm-vm its required properties', () => {
    for (const s of tools.scenarios ?? []) {
      const doc = s.scenario as { from: { plugins: Record<string, string> }; to: { plugins: Record<string, string> }; sessions: Array<{ objects: Array<Record<string, unknown>> }> };
      // Every scenario runs this plugin on both sides; the VMM one adds plugin-memfd for its memfd.
      const others = s.name === 'guest-memfd-vm-with-memfd' ? ['@liveupdate/plugin-memfd'] : [];
      expect(Object.keys(doc.from.plugins)).toEqual(['@liveupdate/plugin-guest-memfd', ...others]);
      expect(Object.keys(doc.to.plugins)).toEqual(['@liveupdate/plugin-guest-memfd', ...others]);
      const objects = doc.sessions.flatMap((x) => x.objects).filter((f) => f.type === 'kvm-vm');
      expect(objects.length).toBeGreaterThan(0);
      for (const o of objects) {
        for (const r of kind.required ?? []) expect(o[r]).toBeTypeOf('number');
        for (const key of Object.keys(o)) expect(['type', 'token', ...Object.keys(kind.properties)]).toContain(key);
      }
    }
  });
});
