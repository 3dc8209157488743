/** Built-in scenarios (`liveupdate run --scenario <name>`). */
import type { BuiltinScenario } from '@liveupdate/sdk';
import { PLUGIN_VERSION } from '../version.js';

const side = (release: string) => ({ release, plugins: { '@liveupdate/plugin-guest-memfd': PLUGIN_VERSION } });

export const vmScenario: BuiltinScenario = {
  name: 'guest-memfd-vm',
  description: 'a VM with two vCPUs running a guest that writes into guest_memfd RAM: the VMM pauses the vCPUs, preserves the VM file and its guest_memfd, updates, retrieves by token and resumes',
  scenario: {
    name: 'guest-memfd-vm',
    description: 'two vCPUs continue their guest program across the update; every guest page identical',
    machine: { memory: '2GiB' },
    from: side('7.1.0'),
    to: side('7.2.0'),
    sessions: [{ name: 'vm0', objects: [{ type: 'kvm-vm', token: 2, vmToken: 1, vcpus: 2, pagesPerVcpu: 64, pauseAfter: 200, flow: 'pause' }] }],
  },
};

export const relaxedFaultScenario: BuiltinScenario = {
  name: 'guest-memfd-relaxed-fault',
  description: 'the VMM preserves while the vCPUs run, then pauses them: under guest_memfd_luo_v1 (a build that writes only it) a fault that needs a new page exits with KVM_EXIT_MEMORY_FAULT and the retried fault succeeds after the kexec; the sparse format lets faults allocate until freeze',
  scenario: {
    name: 'guest-memfd-relaxed-fault',
    machine: { memory: '2GiB' },
    from: side('7.1.0'),
    to: side('7.2.0'),
    sessions: [{ name: 'vm0', objects: [{ type: 'kvm-vm', token: 2, vmToken: 1, vcpus: 2, pagesPerVcpu: 64, pauseAfter: 300, flow: 'relaxed' }] }],
  },
};

export const twoVmsScenario: BuiltinScenario = {
  name: 'guest-memfd-two-vms',
  description: 'two VMs in two sessions, paused one after the other: each VM\'s blackout (paused time on the machine clock) is its own count',
  scenario: {
    name: 'guest-memfd-two-vms',
    machine: { memory: '2GiB' },
    from: side('7.1.0'),
    to: side('7.2.0'),
    sessions: [
      { name: 'vm0', objects: [{ type: 'kvm-vm', token: 2, vmToken: 1, vcpus: 2, pagesPerVcpu: 64, pauseAfter: 200, flow: 'pause' }] },
      { name: 'vm1', objects: [{ type: 'kvm-vm', token: 2, vmToken: 1, vcpus: 1, pagesPerVcpu: 256, pauseAfter: 900, flow: 'pause' }] },
    ],
  },
};

/**
 * The VMM of Documentation/liveupdate/vmm.rst: the VM file, its guest_memfd and a memfd (the
 * VMM's own state, e.g. device emulation) in one session. It names the plugin-memfd release it
 * was written against; a host with another release installed runs it through a scenario file.
 */
export const vmWithMemfdScenario: BuiltinScenario = {
  name: 'guest-memfd-vm-with-memfd',
  description: 'a VM with two vCPUs on guest_memfd RAM plus a memfd of VMM state in the same session: the VM file, its guest_memfd and the memfd are preserved, retrieved by token and checked',
  scenario: {
    name: 'guest-memfd-vm-with-memfd',
    machine: { memory: '2GiB' },
    from: { release: '7.1.0', plugins: { '@liveupdate/plugin-guest-memfd': PLUGIN_VERSION, '@liveupdate/plugin-memfd': '4.0.0' } },
    to: { release: '7.2.0', plugins: { '@liveupdate/plugin-guest-memfd': PLUGIN_VERSION, '@liveupdate/plugin-memfd': '4.0.0' } },
    sessions: [{
      name: 'vm0',
      objects: [
        { type: 'kvm-vm', token: 2, vmToken: 1, vcpus: 2, pagesPerVcpu: 64, pauseAfter: 200, flow: 'pause' },
        { type: 'memfd', token: 3, size: '1MiB', fill: 'pattern', seals: ['seal', 'grow', 'shrink'] },
      ],
    }],
  },
};
