/**
 * The guest_memfd plugin: /dev/kvm with VM, vCPU and guest_memfd files, and the LUO handlers
 * of the VM file and guest_memfd.
 */
import { defineFileHandler, definePlugin, type FileHandlerDefinition, type Plugin } from '@liveupdate/sdk';
import { semver } from '@liveupdate/sdk';
import { GUEST_MEMFD_ALIASES, GUEST_MEMFD_FAMILY, KVM_VCPU_ALIASES, KVM_VCPU_FAMILY, KVM_VM_ALIASES, KVM_VM_FAMILY } from './abi/luo.js';
import { gmemOf } from './gmem.js';
import {
  canPreserveGmem, freezeGmem, preserveGmem, unfreezeGmem, unpreserveGmem, type GmemPreservation,
} from './handlers/gmem.js';
import { finishGmem, retrieveGmem } from './handlers/gmem-retrieve.js';
import {
  armCaretakers, canPreserveVcpu, finishVcpu, freezeVcpu, preserveVcpu, retrieveVcpu, unfreezeVcpu, unpreserveVcpu, type VcpuPreservation,
} from './handlers/vcpu.js';
import { canPreserveVm, finishVm, freezeVm, preserveVm, retrieveVm, unfreezeVm, unpreserveVm, type VmPreservation } from './handlers/vm.js';
import { registerKvmDevice } from './kvm.js';
import { guestMemfdTools } from './tools/index.js';
import { PLUGIN_VERSION } from './version.js';

export interface GuestMemfdPluginOptions {
  /** guest_memfd format versions this build writes (default DEFAULT_GMEM_WRITES). */
  readonly writes?: readonly string[];
  /** What it reads (default DEFAULT_GMEM_READS). */
  readonly reads?: string;
  /**
   * The OrphanVM / Caretaker follow-up RFC: vCPU files are preservable ("kvm_vcpu_luo_v1"), a
   * VM with preserved vCPUs hands over its second-stage table, and its vCPUs keep running
   * during the kexec (default false: the posted v3 series).
   */
  readonly orphanVm?: boolean;
  /**
   * The version this build calls itself (default: this package's). A package that re-exports the
   * plugin with other formats pinned (a build of an older release, for `liveupdate matrix`) names
   * its own version here, the one in its package.json.
   */
  readonly version?: string;
}

/** 1.0.0 = guest_memfd_luo_v1 (upstream), 2.0.0 = sparse on the KHO xarray, 2.1.0 = 2.0 bound to its session and token. */
export const DEFAULT_GMEM_WRITES: readonly string[] = ['1.0.0', '2.0.0', '2.1.0'];
export const DEFAULT_GMEM_READS = '>=1.0.0 <3.0.0';

export default function guestMemfd(options: GuestMemfdPluginOptions = {}): Plugin {
  const writes = options.writes ?? DEFAULT_GMEM_WRITES;
  const reads = options.reads ?? DEFAULT_GMEM_READS;
  const sparse = writes.some((v) => semver.major(v) >= 2);
  const vmHandler: FileHandlerDefinition<VmPreservation> = defineFileHandler<VmPreservation>({
    format: { family: KVM_VM_FAMILY, writes: ['1.0.0'], reads: '^1.0.0', aliases: KVM_VM_ALIASES },
    canPreserve: (file) => canPreserveVm(file),
    preserve: (ctx) => preserveVm(ctx),
    freeze: (ctx) => freezeVm(ctx),
    unfreeze: (ctx) => unfreezeVm(ctx),
    unpreserve: (ctx) => unpreserveVm(ctx),
    retrieve: (ctx) => retrieveVm(ctx),
    finish: (ctx) => finishVm(ctx),
  });
  const gmemHandler: FileHandlerDefinition<GmemPreservation> = defineFileHandler<GmemPreservation>({
    format: { family: GUEST_MEMFD_FAMILY, writes, reads, aliases: GUEST_MEMFD_ALIASES },
    canPreserve: (file) => canPreserveGmem(file, sparse),
    getId: (file) => gmemOf(file).inode,
    preserve: (ctx) => preserveGmem(ctx),
    freeze: (ctx) => freezeGmem(ctx),
    unfreeze: (ctx) => unfreezeGmem(ctx),
    unpreserve: (ctx) => unpreserveGmem(ctx),
    retrieve: (ctx) => retrieveGmem(ctx),
    finish: (ctx) => finishGmem(ctx),
  });
  const vcpuHandler: FileHandlerDefinition<VcpuPreservation> = defineFileHandler<VcpuPreservation>({
    format: { family: KVM_VCPU_FAMILY, writes: ['1.0.0'], reads: '^1.0.0', aliases: KVM_VCPU_ALIASES },
    canPreserve: (file) => canPreserveVcpu(file),
    preserve: (ctx) => preserveVcpu(ctx),
    freeze: (ctx) => freezeVcpu(ctx),
    unfreeze: (ctx) => unfreezeVcpu(ctx),
    unpreserve: (ctx) => unpreserveVcpu(ctx),
    retrieve: (ctx) => retrieveVcpu(ctx),
    finish: (ctx) => finishVcpu(ctx),
  });
  const orphanVm = options.orphanVm ?? false;
  return definePlugin({
    name: '@liveupdate/plugin-guest-memfd',
    version: options.version ?? PLUGIN_VERSION,
    sdk: '^0.1.0',
    handlers: orphanVm ? [vmHandler, gmemHandler, vcpuHandler] : [vmHandler, gmemHandler],
    init(_kernel, hooks) {
      // The kvm module's /dev/kvm exists before any VM file can be preserved or retrieved.
      hooks.boot.probe.tap((kernel) => registerKvmDevice(kernel));
      // The last step before the jump: preserved vCPUs go to their caretakers.
      if (orphanVm) hooks.shutdown.beforeJump.tap((kernel) => armCaretakers(kernel));
    },
    tools: guestMemfdTools,
  });
}
