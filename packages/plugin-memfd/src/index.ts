/**
 * @liveupdate/plugin-memfd: memfd and hugeTLB memfd preservation. The default export is the
 * plugin factory: `boot(machine, { plugins: [memfd()] })`.
 */
import {
  PAGE_SIZE, defineFileHandler, defineFlb, definePlugin, ErrnoError,
  type FileHandlerDefinition, type FlbContext, type Kernel, type Plugin,
} from '@liveupdate/sdk';
import {
  HUGETLB_AS_MEMFD, HUGETLB_FAMILY, HUGETLB_FLB_COMPATIBLE, HUGETLB_MAX_HSTATES, MEMFD_ALIASES, MEMFD_FAMILY, hugetlbHstateSer,
} from './abi/memfd.js';
import {
  freezeMemfd, majorOf, preserveMemfd, unfreezeMemfd, unpreserveMemfd, type MemfdPreservation,
} from './handler.js';
import { finishMemfd, retrieveMemfd } from './retrieve.js';
import { hugetlbInit } from './hugetlb-pool.js';
import { inodeOf, isMemfd } from './memfd.js';
import { memfdTools } from './tools/index.js';
import { PLUGIN_VERSION } from './version.js';

export interface MemfdPluginOptions {
  /** memfd format versions this build writes (default: DEFAULT_WRITES). */
  readonly writes?: readonly string[];
  /** What it reads (default: DEFAULT_READS). */
  readonly reads?: string;
  /** Preserve hugeTLB memfds too (default: DEFAULT_HUGETLB). */
  readonly hugetlb?: boolean;
  /** hugetlb-memfd format versions this build writes (default: 1.0.0 and 2.0.0). */
  readonly hugetlbWrites?: readonly string[];
  /** What it reads of them (default: '>=1.0.0 <3.0.0'). */
  readonly hugetlbReads?: string;
}

/*
 * This release's defaults, one per line: @liveupdate/compat's scripts/make-release.mjs rewrites
 * exactly these three lines to rebuild the earlier releases (1.0.0: memfd-v1 only, as 6.19;
 * 2.0.0: memfd-v1 and memfd-v2, as mainline; neither handled hugeTLB memfds; 3.0.0: up to the
 * sparse memfd@3.0.0, without the 3.1 header checksum; 3.1.0: up to memfd@3.1.0, without the 3.2
 * whole-metadata checksum and the 4.x extents).
 */
const DEFAULT_WRITES: readonly string[] = ['1.0.0', '2.0.0', '3.0.0', '3.1.0', '3.2.0', '4.0.0', '4.1.0'];
const DEFAULT_READS = '>=1.0.0 <5.0.0';
const DEFAULT_HUGETLB = true;
/** hugetlb-memfd versions written (1.0.0: the memfd@3.0.0 xarray; 2.0.0: the memfd@4.1.0 extents) and read. */
const HUGETLB_WRITES: readonly string[] = ['1.0.0', '2.0.0'];
const HUGETLB_READS = '>=1.0.0 <3.0.0';

/** Per kernel: preserved huge pages by order, and the hugetlb FLB page they are written to. */
const hugetlbOut = new WeakMap<Kernel, { counts: Map<number, number>; page: number }>();

function writeHstates(kernel: Kernel): void {
  const st = hugetlbOut.get(kernel);
  if (!st || st.page === 0) return;
  const page = new Uint8Array(HUGETLB_MAX_HSTATES * hugetlbHstateSer.size);
  let i = 0;
  for (const [order, n] of [...st.counts].sort((a, b) => a[0] - b[0])) {
    if (n <= 0 || i >= HUGETLB_MAX_HSTATES) continue;
    hugetlbHstateSer.encodeInto(page, i++ * hugetlbHstateSer.size, { nr_pages: BigInt(n), order });
  }
  kernel.machine.memory.write(st.page, page);
}

const hugetlbFlb = defineFlb<Map<number, number>>({
  compatible: HUGETLB_FLB_COMPATIBLE,
  preserve(ctx: FlbContext<Map<number, number>>) {
    const out = ctx.kernel.khoOut;
    if (!out) throw new ErrnoError('EOPNOTSUPP', 'hugetlb_flb_preserve');
    const page = out.allocPreserve(HUGETLB_MAX_HSTATES * hugetlbHstateSer.size);
    const st = hugetlbOut.get(ctx.kernel) ?? { counts: new Map<number, number>(), page: 0 };
    st.page = page;
    hugetlbOut.set(ctx.kernel, st);
    ctx.data = BigInt(page);
    ctx.obj = st.counts;
    writeHstates(ctx.kernel);
  },
  unpreserve(ctx) {
    const st = hugetlbOut.get(ctx.kernel);
    ctx.kernel.khoOut?.unpreserveFree(Number(ctx.data));
    if (st) st.page = 0;
  },
  retrieve(ctx) {
    const counts = new Map<number, number>();
    const phys = Number(ctx.data);
    const bytes = HUGETLB_MAX_HSTATES * hugetlbHstateSer.size;
    // The hstate page is read in place (finish releases it): an address outside RAM is refused.
    if (!Number.isSafeInteger(phys) || phys <= 0 || phys % PAGE_SIZE !== 0 || phys + bytes > ctx.kernel.machine.memory.size) {
      throw new ErrnoError('EINVAL', 'hugetlb_flb_retrieve', `hstate page 0x${phys.toString(16)} is not a page of RAM`);
    }
    const raw = ctx.kernel.machine.memory.read(phys, bytes);
    for (let i = 0; i < HUGETLB_MAX_HSTATES; i++) {
      const h = hugetlbHstateSer.decode(raw, i * hugetlbHstateSer.size);
      if (h.nr_pages > 0n) counts.set(h.order, Number(h.nr_pages));
    }
    ctx.obj = counts;
  },
  finish(ctx) {
    ctx.kernel.khoIn?.restoreFree(Number(ctx.data));
  },
});

function countHuge(kernel: Kernel, order: number, delta: number): void {
  const st = hugetlbOut.get(kernel) ?? { counts: new Map<number, number>(), page: 0 };
  hugetlbOut.set(kernel, st);
  st.counts.set(order, (st.counts.get(order) ?? 0) + delta);
  writeHstates(kernel);
}

/**
 * The memfd plugin. Format 1.x = memfd-v1, 2.x = memfd-v2 (upstream, byte-exact), 3.x = sparse
 * (3.1: + header CRC-32; 3.2: + CRC-32 over all metadata), 4.x = extents with a whole-metadata CRC-32
 * (4.1: + a CRC-32 binding the header to the file's session name and token).
 */
export default function memfd(options: MemfdPluginOptions = {}): Plugin {
  const writes = options.writes ?? DEFAULT_WRITES;
  const reads = options.reads ?? DEFAULT_READS;
  const withHugetlb = options.hugetlb ?? DEFAULT_HUGETLB;
  const shmem: FileHandlerDefinition<MemfdPreservation> = defineFileHandler<MemfdPreservation>({
    format: { family: MEMFD_FAMILY, writes, reads, aliases: MEMFD_ALIASES },
    // Only unlinked shmem: hugetlbfs memfds are not shmem.
    canPreserve: (file) => isMemfd(file) && !inodeOf(file).hugetlb && file.inode.nlink === 0,
    getId: (file) => file.inode,
    preserve: (ctx) => preserveMemfd(ctx),
    freeze: (ctx) => freezeMemfd(ctx),
    unfreeze: (ctx) => unfreezeMemfd(ctx),
    unpreserve: (ctx) => unpreserveMemfd(ctx),
    retrieve: (ctx) => retrieveMemfd(ctx, false),
    finish: (ctx) => finishMemfd(ctx),
  });
  const asMemfd = <C extends { version: string }>(ctx: C): C => ctxWithVersion(ctx, HUGETLB_AS_MEMFD[majorOf(ctx.version)] ?? '3.0.0');
  const huge: FileHandlerDefinition<MemfdPreservation> = defineFileHandler<MemfdPreservation>({
    format: { family: HUGETLB_FAMILY, writes: options.hugetlbWrites ?? HUGETLB_WRITES, reads: options.hugetlbReads ?? HUGETLB_READS },
    canPreserve: (file) => isMemfd(file) && inodeOf(file).hugetlb && file.inode.nlink === 0,
    getId: (file) => file.inode,
    preserve: (ctx) => preserveMemfd(asMemfd(ctx), (order, delta) => countHuge(ctx.kernel, order, delta)),
    freeze: (ctx) => freezeMemfd(asMemfd(ctx)),
    unfreeze: (ctx) => unfreezeMemfd(asMemfd(ctx)),
    unpreserve: (ctx) => unpreserveMemfd(asMemfd(ctx)),
    retrieve: (ctx) => retrieveMemfd(asMemfd(ctx), true),
    finish: (ctx) => finishMemfd(asMemfd(ctx)),
  });
  return definePlugin({
    name: '@liveupdate/plugin-memfd',
    version: PLUGIN_VERSION,
    sdk: '^0.1.0',
    handlers: withHugetlb ? [shmem, huge] : [shmem],
    flbs: withHugetlb ? [{ flb: hugetlbFlb, handlers: [HUGETLB_FAMILY] }] : [],
    setup(kernel, api) {
      let incoming: unknown;
      try {
        incoming = api.flbIncoming(HUGETLB_FLB_COMPATIBLE);
      } catch (e) {
        // A refused FLB (its retrieve failed, stickily) leaves the pools as configured; the files that need it fail on their own.
        if (!(e instanceof ErrnoError)) throw e;
        kernel.dmesg.log('warn', 'hugetlb', `incoming FLB ${HUGETLB_FLB_COMPATIBLE}: ${e.message}; pools sized as configured`);
      }
      hugetlbInit(kernel, incoming instanceof Map ? incoming as Map<number, number> : new Map());
    },
    tools: memfdTools({ hugetlb: withHugetlb }),
  });
}

/**
 * The hugetlb family's layouts are memfd's with the folio order filled in (HUGETLB_AS_MEMFD):
 * the shared code is driven with that memfd version while the family keeps its own line.
 */
function ctxWithVersion<C extends { version: string }>(ctx: C, version: string): C {
  return new Proxy(ctx, {
    get: (t, p) => (p === 'version' ? version : Reflect.get(t, p)),
    set: (t, p, v) => Reflect.set(t, p, v),
  });
}

export { memfd, DEFAULT_WRITES, DEFAULT_READS, DEFAULT_HUGETLB };
export {
  memfdCreate, memfdStore, memfdFillSynthetic, memfdCheckSynthetic, memfdResidentPages, isMemfd,
  MFD_CLOEXEC, MFD_ALLOW_SEALING, MFD_HUGETLB, MFD_NOEXEC_SEAL, MFD_EXEC, MFD_HUGE_2MB, MFD_HUGE_1GB, MFD_NAME_MAX_LEN,
  F_ADD_SEALS, F_GET_SEALS, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE,
} from './memfd.js';
export { memfdPagemap, memfdPinFolios, memfdPinRuns, memfdSeals, memfdSize, type PinnedFolios } from './pagemap.js';
export { hugetlbPools, parseHugepages, type HugetlbPool } from './hugetlb-pool.js';
export * as memfdAbi from './abi/memfd.js';
export { PLUGIN_VERSION };
export { crc32 } from './crc32.js';
export { memfdTools, guestFile, touchedRuns, dataPages, patternBytes, HUGE_PAGE_BYTES, type GuestFile, type MemfdSpec } from './tools/index.js';
