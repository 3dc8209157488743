/** Built-in scenarios (`liveupdate run --scenario <name>`). */
import type { BuiltinScenario } from '@liveupdate/sdk';
import { PLUGIN_VERSION } from '../version.js';

type ScenarioObject = Readonly<Record<string, unknown>>;

/** One VM: the VM file under token 1, its guest_memfd under token 2 (what the `kvm-vm` object checks). */
const vm = (vcpus: number, pagesPerVcpu: number, pauseAfter: number, flow: 'pause' | 'relaxed'): ScenarioObject =>
  ({ type: 'kvm-vm', token: 2, vmToken: 1, vcpus, pagesPerVcpu, pauseAfter, flow });

/**
 * A 2 GiB host updated from 7.1.0 to 7.2.0 with this plugin on both sides (and `extraPlugins`,
 * by the release the scenario was written against).
 */
function builtin(name: string, description: string, sessions: ReadonlyArray<{ name: string; objects: readonly ScenarioObject[] }>, extraPlugins: Readonly<Record<string, string>> = {}): BuiltinScenario {
  const side = (release: string) => ({ release, plugins: { '@liveupdate/plugin-guest-memfd': PLUGIN_VERSION, ...extraPlugins } });
  return { name, description, scenario: { name, description, machine: { memory: '2GiB' }, from: side('7.1.0'), to: side('7.2.0'), sessions } };
}

export const vmScenario = builtin('guest-memfd-vm',
  'a VM with two vCPUs running a guest that writes into guest_memfd RAM: the VMM pauses the vCPUs, preserves the VM file and its guest_memfd, updates, retrieves by token and resumes; every guest page identical',
  [{ name: 'vm0', objects: [vm(2, 64, 200, 'pause')] }]);

export const relaxedFaultScenario = builtin('guest-memfd-relaxed-fault',
  'the VMM preserves while the vCPUs run, then pauses them: under guest_memfd_luo_v1 (a build that writes only it) a fault that needs a new page exits with KVM_EXIT_MEMORY_FAULT and the retried fault succeeds after the kexec; the sparse format lets faults allocate until freeze',
  [{ name: 'vm0', objects: [vm(2, 64, 300, 'relaxed')] }]);

export const twoVmsScenario = builtin('guest-memfd-two-vms',
  'two VMs in two sessions, paused one after the other: each VM\'s blackout (paused time on the machine clock) is its own count',
  [{ name: 'vm0', objects: [vm(2, 64, 200, 'pause')] }, { name: 'vm1', objects: [vm(1, 256, 900, 'pause')] }]);

/**
 * The VMM of Documentation/liveupdate/vmm.rst: the VM file, its guest_memfd and a memfd (the
 * VMM's own state, e.g. device emulation) in one session. It names the plugin-memfd release it
 * was written against; a host with another release installed runs it through a scenario file.
 */
export const vmWithMemfdScenario = builtin('guest-memfd-vm-with-memfd',
  'a VM with two vCPUs on guest_memfd RAM plus a memfd of VMM state in the same session: the VM file, its guest_memfd and the memfd are preserved, retrieved by token and checked',
  [{ name: 'vm0', objects: [vm(2, 64, 200, 'pause'), { type: 'memfd', token: 3, size: '1MiB', fill: 'pattern', seals: ['seal', 'grow', 'shrink'] }] }],
  { '@liveupdate/plugin-memfd': '4.0.0' });
