/**
 * The kernel's boot and shutdown as phases, each a tapable hook in one frozen object (as
 * webpack's Compiler.hooks), so a device plugin restores early state where upstream does: the
 * MSHV tracker reserves hypervisor pages in memblock before the page allocator is up, the IOMMU
 * adopts its preserved tables before PCI enumeration, PCI inherits bridge bus numbers while it
 * enumerates, drivers bind at probe. Plugins tap them from their `init` (the initcall table is
 * part of the kernel image); the kernel calls them in order, every tap with the kernel.
 *
 * Boot order (start_kernel → initcalls):
 *   memblock      setup_arch: kho_populate/kho_memory_init done, preserved memory reserved,
 *                 the page allocator not yet running
 *   luoEarly      early_initcall: LUO has read the incoming state
 *   iommuInit     IOMMU driver init (before any device is enumerated)
 *   pciEnumerate  PCI bus scan
 *   probe         device probe and driver bind
 *   late          late_initcall: LUO outgoing state set up, plugins' handlers registered
 *
 * Shutdown order (kernel_kexec):
 *   reboot           liveupdate_reboot() succeeded: every preserved file frozen, FLBs serialized
 *   deviceShutdown   device_shutdown(): drivers' .shutdown (PCI clears bus mastering)
 *   syscoreShutdown  syscore_shutdown(): IOMMU shutdown
 *   beforeJump       machine_kexec(): what survives is fixed, the jump comes next
 * A shutdown tap may throw KernelPanic (e.g. MSHV's "must not kexec"); nothing rolls back there.
 */
import { SyncHook } from 'tapable';
import { loopingSyncHook } from '../lib/sync-hook.js';

export function createBootHooks<K>() {
  return Object.freeze({
    memblock: loopingSyncHook(new SyncHook<[kernel: K]>(['kernel'])),
    luoEarly: loopingSyncHook(new SyncHook<[kernel: K]>(['kernel'])),
    iommuInit: loopingSyncHook(new SyncHook<[kernel: K]>(['kernel'])),
    pciEnumerate: loopingSyncHook(new SyncHook<[kernel: K]>(['kernel'])),
    probe: loopingSyncHook(new SyncHook<[kernel: K]>(['kernel'])),
    late: loopingSyncHook(new SyncHook<[kernel: K]>(['kernel'])),
  });
}

export function createShutdownHooks<K>() {
  return Object.freeze({
    reboot: loopingSyncHook(new SyncHook<[kernel: K]>(['kernel'])),
    deviceShutdown: loopingSyncHook(new SyncHook<[kernel: K]>(['kernel'])),
    syscoreShutdown: loopingSyncHook(new SyncHook<[kernel: K]>(['kernel'])),
    beforeJump: loopingSyncHook(new SyncHook<[kernel: K]>(['kernel'])),
  });
}

export type BootHooks<K> = ReturnType<typeof createBootHooks<K>>;
export type ShutdownHooks<K> = ReturnType<typeof createShutdownHooks<K>>;
export type BootPhase = keyof BootHooks<unknown>;
export type ShutdownPhase = keyof ShutdownHooks<unknown>;

/** A view of a phase-hooks object that can tap (under a fixed name) but not call. */
export type TapView<K, P extends string> = { readonly [Q in P]: { tap(fn: (kernel: K) => void): void } };

export function tapView<K, P extends string>(hooks: Readonly<Record<P, SyncHook<[kernel: K]>>>, name: string): TapView<K, P> {
  const view = {} as Record<P, { tap(fn: (kernel: K) => void): void }>;
  for (const phase of Object.keys(hooks) as P[]) {
    const hook = hooks[phase];
    view[phase] = { tap: (fn) => hook.tap(name, fn) };
  }
  return Object.freeze(view);
}
