/**
 * The guest_memfd plugin: /dev/kvm with VM, vCPU and guest_memfd files, and the LUO handlers
 * of the VM file and guest_memfd.
 */
import { defineFileHandler, definePlugin, type FileHandlerDefinition, type Plugin } from '@liveupdate/sdk';
import semver from 'semver';
import { GUEST_MEMFD_ALIASES, GUEST_MEMFD_FAMILY, KVM_VM_ALIASES, KVM_VM_FAMILY } from './abi/luo.js';
import { gmemOf } from './gmem.js';
import {
  canPreserveGmem, finishGmem, freezeGmem, preserveGmem, retrieveGmem, unfreezeGmem, unpreserveGmem, type GmemPreservation,
} from './handlers/gmem.js';
import { canPreserveVm, finishVm, preserveVm, retrieveVm, unpreserveVm, type VmPreservation } from './handlers/vm.js';
import { registerKvmDevice } from './kvm.js';
import { guestMemfdTools } from './tools/index.js';
import { PLUGIN_VERSION } from './version.js';

export interface GuestMemfdPluginOptions {
  /** guest_memfd format versions this build writes (default DEFAULT_GMEM_WRITES). */
  readonly writes?: readonly string[];
  /** What it reads (default DEFAULT_GMEM_READS). */
  readonly reads?: string;
}

/** 1.0.0 = guest_memfd_luo_v1 (upstream), 2.0.0 = sparse on the KHO xarray. */
export const DEFAULT_GMEM_WRITES: readonly string[] = ['1.0.0', '2.0.0'];
export const DEFAULT_GMEM_READS = '>=1.0.0 <3.0.0';

export default function guestMemfd(options: GuestMemfdPluginOptions = {}): Plugin {
  const writes = options.writes ?? DEFAULT_GMEM_WRITES;
  const reads = options.reads ?? DEFAULT_GMEM_READS;
  const sparse = writes.some((v) => semver.major(v) >= 2);
  const vmHandler: FileHandlerDefinition<VmPreservation> = defineFileHandler<VmPreservation>({
    format: { family: KVM_VM_FAMILY, writes: ['1.0.0'], reads: '^1.0.0', aliases: KVM_VM_ALIASES },
    canPreserve: (file) => canPreserveVm(file),
    preserve: (ctx) => preserveVm(ctx),
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
  return definePlugin({
    name: '@liveupdate/plugin-guest-memfd',
    version: PLUGIN_VERSION,
    sdk: '^0.1.0',
    handlers: [vmHandler, gmemHandler],
    // The kvm module's /dev/kvm exists before any VM file can be preserved or retrieved.
    init(_kernel, hooks) { hooks.boot.probe.tap((kernel) => registerKvmDevice(kernel)); },
    tools: guestMemfdTools,
  });
}
