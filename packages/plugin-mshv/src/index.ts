/**
 * @liveupdate/plugin-mshv: Linux as the root (or L1 virtual host) partition of a Microsoft
 * Hypervisor. The default export is the plugin factory: `boot(machine, { plugins: [mshv()] })`
 * on a machine with `attachHypervisor(machine, { l1vh: true })`.
 */
import { definePlugin, FormatNegotiationError, Inode, KFile, preserveFd, retrieveFd, type Kernel, type Plugin } from '@liveupdate/sdk';
import { hypervisorOf } from '@liveupdate/hw';
import { MSHV_FAMILY, MSHV_SESSION_NAME, MSHV_SESSION_TOKEN } from './abi/mshv.js';
import { MshvRoot, rootOf, setRoot } from './driver.js';
import { mshvDevFops, MshvDevFile } from './device.js';
import { mshvHandler, planOf } from './handler.js';
import { preserveTree, reserveTracked, restoreTracked, type IncomingTree } from './subtree.js';
import { toolsFor } from './tools.js';
import { PLUGIN_VERSION } from './version.js';

export interface MshvPluginOptions {
  /** `mshv` format versions this build writes: ['1.0.0'] is a step-1-only kernel. Default all three. */
  readonly writes?: readonly string[];
  /** Default: every major up to the newest written. */
  readonly reads?: string;
  /** Create the in-kernel session "mshv_root" at init (step 1's vehicle). Default true. */
  readonly session?: boolean;
  /**
   * The version this build calls itself (default: this package's). A package that re-exports the
   * plugin with other formats pinned (a step-1-only build, for `liveupdate matrix`) names its own
   * version here, the one in its package.json.
   */
  readonly version?: string;
}

export const DEFAULT_WRITES: readonly string[] = ['1.0.0', '2.0.0', '3.0.0'];

interface KernelState { incoming: IncomingTree | null; fdtPfn: number | null }
const states = new WeakMap<Kernel, KernelState>();
const stateOf = (k: Kernel): KernelState => {
  let s = states.get(k);
  if (!s) { s = { incoming: null, fdtPfn: null }; states.set(k, s); }
  return s;
};

function sessionName(text: string): { bytes: Uint8Array; key: string; text: string } {
  const bytes = new TextEncoder().encode(text);
  return { bytes, key: String.fromCharCode(...bytes), text };
}

/** The driver's in-kernel session (liveupdate_session_create): take the incoming one over, then open the next. */
function inKernelSession(kernel: Kernel, root: MshvRoot): void {
  const luo = kernel.luo;
  const kproc = kernel.spawn('mshv_root');
  const name = sessionName(MSHV_SESSION_NAME);
  if (kernel.isKhoBoot) {
    // The incoming sessions are deserialized on the first open of /dev/liveupdate (its error is sticky).
    try { kproc.close(kproc.open('/dev/liveupdate')); } catch (e) {
      kernel.dmesg.log('err', 'mshv', `incoming live update state unreadable: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
  if (luo.sessions.incoming.some((s) => s.name === MSHV_SESSION_NAME)) {
    const sfd = luo.sessions.retrieve(kproc, name);
    try {
      kproc.close(retrieveFd(kproc, sfd, MSHV_SESSION_TOKEN));
    } catch (e) {
      kernel.dmesg.log('err', 'mshv', `retrieving the mshv_root session failed: ${e instanceof Error ? e.message : String(e)}`);
    }
    kproc.close(sfd);
  }
  const sfd = luo.sessions.create(kproc, name);
  const fd = kproc.fdInstall(new KFile(mshvDevFops(kernel), new Inode(), new MshvDevFile(root), 0o2, kernel.id), false);
  preserveFd(kproc, sfd, fd, MSHV_SESSION_TOKEN);
  kernel.dmesg.log('info', 'mshv', 'mshv_root live update handler registered');
}

export default function mshv(options: MshvPluginOptions = {}): Plugin {
  const writes = options.writes ?? DEFAULT_WRITES;
  if (writes.length === 0 || writes.some((v) => !/^[123]\.\d+\.\d+$/.test(v))) {
    throw new TypeError(`mshv({ writes }): expected versions 1.x, 2.x or 3.x of the mshv format, got ${JSON.stringify(writes)}`);
  }
  const top = Math.max(...writes.map((v) => Number(v.split('.')[0])));
  const reads = options.reads ?? `>=1.0.0 <${top + 1}.0.0`;
  const tracks = top >= 2;
  return definePlugin({
    name: '@liveupdate/plugin-mshv',
    version: options.version ?? PLUGIN_VERSION,
    sdk: '^0.1.0',
    handlers: [mshvHandler(writes, reads)],
    init(_kernel, hooks) {
      // late_initcall, once /dev/liveupdate exists: the driver's own session.
      hooks.boot.late.tap((k) => {
        const root = rootOf(k);
        if (root && k.luo.enabled && (options.session ?? true)) inKernelSession(k, root);
      });
      if (!tracks) return;
      // setup_arch, after kho_memory_init: the hypervisor's pages are reserved before the allocator starts.
      hooks.boot.memblock.tap((k) => {
        if (hypervisorOf(k.machine)) stateOf(k).incoming = reserveTracked(k);
      });
      // reboot notifier with kexec_in_progress: step 2 unless the file carried the tracking (3.x) or step 1 ran.
      hooks.shutdown.reboot.tap((k) => {
        const root = rootOf(k);
        const fdtPfn = stateOf(k).fdtPfn;
        const how = planOf(k).frozenAs;
        if (root && fdtPfn !== null && (how === null || how === 2)) preserveTree(k, root, fdtPfn);
      });

    },
    setup(kernel) {
      const hv = hypervisorOf(kernel.machine);
      if (!hv) return; // not running on a Microsoft Hypervisor: no /dev/mshv
      const root = new MshvRoot(kernel, hv, tracks);
      setRoot(kernel, root);
      const st = stateOf(kernel);
      if (tracks) {
        if (!kernel.khoEnabled) {
          kernel.dmesg.log('err', 'mshv', 'KHO is disabled; page deposits will fail.');
        } else if (st.incoming) {
          st.fdtPfn = restoreTracked(kernel, root, st.incoming);
        } else {
          root.initTracker();
          st.fdtPfn = kernel.mm.allocZeroedPages(0);
          if (!root.tracker || st.fdtPfn === null) kernel.dmesg.log('err', 'mshv', 'Could not allocate page tree; page deposits will fail.');
        }
      }
      // hv_set_msr(HV_MSR_CRASH_P2, root): a crash kernel finds the tracked pages without this kernel's FDT.
      if (root.tracker) hv.crashP2 = BigInt(root.tracker.rootPhys);
      kernel.registerDevice('/dev/mshv', (_proc, flags) => new KFile(mshvDevFops(kernel), new Inode(), new MshvDevFile(root), flags, kernel.id));
      if (!kernel.luo.enabled) return;
      kernel.luo.hooks.reboot.tap('@liveupdate/plugin-mshv', (ev) => {
        if (ev.phase !== 'freeze') return;
        const plan = planOf(kernel);
        plan.frozenAs = null;
        plan.writer = null;
        // Before any freeze: a target that reads only 1.x cannot take running partitions over.
        const chosen = kernel.formats.chosen(MSHV_FAMILY);
        if (tracks && chosen !== undefined && chosen.startsWith('1.') && root.partitions.size > 0) {
          // A negotiation refusal (nothing frozen, this kernel keeps running), with the reason named.
          const e = new FormatNegotiationError('the target kernel', [{ family: MSHV_FAMILY, owner: '@liveupdate/plugin-mshv', offered: writes, accepted: chosen }]);
          e.message = `mshv: the target kernel reads mshv ${chosen} only (step 1, mshv-v1), which cannot hand over ${root.partitions.size} running VM partition(s); stop them first`;
          throw e;
        }
      });
    },
    tools: toolsFor(writes),
  });
}

export { MSHV_FAMILY } from './abi/mshv.js';
export * as mshvAbi from './abi/mshv.js';
export { MshvRoot, type DepositPattern, type KPartition } from './driver.js';
export {
  mshvOpen, mshvCreatePartitionFd, mshvInitializePartition, mshvCreateVpFd, mshvRunVp, mshvPartitionId, mshvRoot,
} from './device.js';
export { MshvRadixTree, walkRadix, type RadixWalk } from './tracking/radix.js';
export { walkXarray, readTracking, writeTracking, type TrackingRead } from './tracking/xarray-format.js';
export { mshvSubtreeFdt, parseSubtree, partitionIdsOf } from './subtree.js';
export { PLUGIN_VERSION } from './version.js';

