/**
 * What run, inspect, report, fuzz and matrix need from this plugin: the `mshv` scenario section
 * (a hypervisor below the machine, L1VH or classic root, partitions, a deposit of a given size
 * and pattern), the `mshv-tracking` object kind (the reviewers' direction: a VMM preserves a
 * /dev/mshv fd), decoders for the "mshv_prsv_pt" subtree and the `mshv` file, and a built-in
 * scenario.
 */
import {
  defineDecoder, defineObjectKind, defineSection, PAGE_SIZE,
  type Decoded, type DecodedValue, type ObjectCheck, type OwnedPages, type PluginTools, type ScenarioObjectSpec,
} from '@liveupdate/sdk';
import { attachHypervisor, hypervisorOf, parseSize, type Hypervisor, type PhysMemory } from '@liveupdate/hw';
import { FDT_SUBTREE_MSHV, MSHV_FAMILY } from './abi/mshv.js';
import { rootOf, type MshvRoot } from './driver.js';
import { mshvCreatePartitionFd, mshvCreateVpFd, mshvInitializePartition, mshvOpen, mshvPartitionId, mshvRunVp } from './device.js';
import { parseSubtree, partitionIdsOf } from './subtree.js';
import { walkRadix } from './tracking/radix.js';
import { readTracking } from './tracking/xarray-format.js';
import { PLUGIN_VERSION } from './version.js';

export interface MshvSectionSpec {
  readonly mode: 'l1vh' | 'root';
  readonly partitions: number;
  readonly vpsPerPartition?: number;
  /** Pages deposited to the partitions in all, e.g. '1GiB', split evenly. */
  readonly deposit: string;
  readonly pattern: 'dense' | 'scattered';
  readonly seed?: number;
}

export interface MshvSectionState {
  readonly hv: Hypervisor;
  partitionIds: string[];
  depositedBefore: number;
  trackedBefore: number;
}

/** Deposited runs as the hypervisor has them vs tracked runs as the driver has them: the problems, if any. */
export function compareTracked(hv: Hypervisor, root: MshvRoot): string[] {
  const dep: Array<[number, number]> = [];
  hv.forEachDepositedRun((s, e) => dep.push([s, e]));
  const tr = root.trackedRuns();
  if (dep.length === tr.length && dep.every(([s, e], i) => tr[i]?.[0] === s && tr[i]?.[1] === e)) return [];
  const count = (r: Array<[number, number]>): number => r.reduce((n, [s, e]) => n + e - s, 0);
  return [`tracked set (${count(tr)} pages in ${tr.length} runs) differs from the hypervisor's deposited set (${count(dep)} pages in ${dep.length} runs)`];
}

const check = (problems: string[], summary: string, counts?: Record<string, number>): ObjectCheck => ({ ok: problems.length === 0, summary, problems, ...(counts ? { counts } : {}) });

export const mshvSection = defineSection<MshvSectionSpec, MshvSectionState>({
  key: 'mshv',
  description: 'A Microsoft Hypervisor below the machine: L1VH or classic root, VM partitions with VPs, and pages deposited to them',
  schema: {
    type: 'object', additionalProperties: false, required: ['mode', 'partitions', 'deposit', 'pattern'],
    properties: {
      mode: { enum: ['l1vh', 'root'] },
      partitions: { type: 'integer', minimum: 0, maximum: 512 },
      vpsPerPartition: { type: 'integer', minimum: 0, maximum: 256 },
      deposit: { type: 'string', format: 'size' },
      pattern: { enum: ['dense', 'scattered'] },
      seed: { type: 'integer', minimum: 0 },
    },
  },
  machine(machine, spec) {
    const hv = hypervisorOf(machine) ?? attachHypervisor(machine, { l1vh: spec.mode === 'l1vh' });
    return { hv, partitionIds: [], depositedBefore: 0, trackedBefore: 0 };
  },
  before(ctx, spec, state) {
    const root = rootOf(ctx.kernel);
    if (!root) throw new Error('mshv section: the kernel has no mshv driver (plugin not loaded?)');
    const p = ctx.spawn('vmm-mshv');
    const dev = mshvOpen(p);
    const pages = Math.floor(parseSize(spec.deposit) / PAGE_SIZE);
    for (let i = 0; i < spec.partitions; i++) {
      const pfd = mshvCreatePartitionFd(p, dev);
      mshvInitializePartition(p, pfd);
      for (let v = 0; v < (spec.vpsPerPartition ?? 1); v++) mshvRunVp(p, mshvCreateVpFd(p, pfd, v));
      const id = mshvPartitionId(p, pfd);
      const share = Math.floor(pages / spec.partitions) + (i < pages % spec.partitions ? 1 : 0);
      if (share > 0) root.depositPages(id, share, spec.pattern === 'scattered' ? { scattered: (spec.seed ?? 1) + i } : 'dense');
      state.partitionIds.push(id.toString());
    }
    ctx.note(`mshv: ${spec.partitions} partition(s), ${state.hv.depositedPages} pages deposited (${spec.pattern})`);
  },
  beforeKexec(ctx, _spec, state) {
    const root = rootOf(ctx.kernel);
    state.depositedBefore = state.hv.depositedPages;
    state.trackedBefore = root?.tracker?.size ?? 0;
  },
  after(ctx, _spec, state) {
    const root = rootOf(ctx.kernel);
    const hv = state.hv;
    const problems: string[] = [];
    if (hv.faultCount > 0) problems.push(`${hv.faultCount} access(es) to hypervisor-owned pages, first pfn 0x${hv.faults[0]?.pfn.toString(16)}`);
    // No tracking taken over while the hypervisor still holds pages: the tracking file never
    // reached the new kernel (its session or file entry was lost with the LUO blocks).
    const lost = root && root.trackingRefused === null && root.trackedRuns().length === 0 && hv.depositedPages > 0 ? 'no tracking file reached the new kernel' : null;
    const refused = root?.trackingRefused ?? lost;
    if (refused) {
      // The new kernel refused bad tracking bytes (its file's retrieve failed), or got none: the
      // safe answer, if every page the hypervisor holds stayed reserved (preserved, never claimed) and untouched.
      const reserved = ctx.kernel.khoIn?.leaked().pages ?? 0;
      if (reserved < hv.depositedPages) problems.push(`tracking refused, but only ${reserved} preserved pages stayed reserved for ${hv.depositedPages} deposited`);
      return [check(problems, `tracking refused by the new kernel (${refused}); ${hv.depositedPages} deposited pages stay reserved; ${hv.faultCount} faults`, {
        depositedBefore: state.depositedBefore, depositedAfter: hv.depositedPages, faults: hv.faultCount,
      })];
    }
    for (const id of state.partitionIds) if (hv.partition(BigInt(id))) problems.push(`partition ${id} of the previous kernel is still alive`);
    if (root) problems.push(...compareTracked(hv, root));
    else problems.push('the new kernel has no mshv driver');
    return [check(problems, `${state.depositedBefore} pages deposited before the jump, ${hv.depositedPages} after teardown; ${hv.faultCount} faults`, {
      depositedBefore: state.depositedBefore, depositedAfter: hv.depositedPages, faults: hv.faultCount,
    })];
  },
});

interface TrackingSpec extends ScenarioObjectSpec { readonly type: 'mshv-tracking' }
interface TrackingExpect { readonly depositedBefore: number }

/**
 * The 'mshv-tracking' object kind of a build that writes `writes`: a build that writes no 3.x
 * (step 1 or step 2 only) has no tracking file to hand over, and says so (matrix: "not supported by A").
 */
export function trackingKind(writes: readonly string[] = ['1.0.0', '2.0.0', '3.0.0']) {
  const fileFormat = writes.some((v) => v.startsWith('3.'));
  return defineObjectKind<TrackingSpec, TrackingExpect>({
    type: 'mshv-tracking',
    description: 'A /dev/mshv fd the VMM preserves: the tracking of hypervisor-owned pages handed over as a file (mshv 3.x)',
    properties: {},
    supports: () => (fileFormat ? true : `this build writes mshv ${writes.join(', ')} only: no tracking file (mshv 3.x) to preserve, and a live update with running partitions is refused at freeze (EBUSY)`),
    create(ctx, spec) {
      const fd = mshvOpen(ctx.vmm);
      const hv = hypervisorOf(ctx.machine);
      ctx.preserve(fd, spec.token);
      return { fd, expect: { depositedBefore: hv?.depositedPages ?? 0 } };
    },
    restore(ctx, spec, expect) {
      const fd = ctx.retrieve(spec.token);
      const hv = hypervisorOf(ctx.machine);
      const root = rootOf(ctx.kernel);
      const problems = hv && root ? compareTracked(hv, root) : ['no hypervisor or no mshv driver'];
      const tracked = root?.tracker?.size ?? 0;
      return {
        fd,
        check: check(problems, `tracking retrieved: ${tracked} pages tracked, equal to the hypervisor's deposited set; ${expect.depositedBefore} pages were deposited before the jump, ${hv?.depositedPages ?? 0} now`, {
          'tracked pages compared': tracked,
        }),
      };
    },
  });
}

export const mshvTrackingKind = trackingKind();

// ---- decoders (from bytes alone, never throwing) ----------------------------------------------

const hex = (n: number | bigint): string => `0x${n.toString(16)}`;

function guarded(fn: () => Decoded): Decoded {
  try { return fn(); } catch (e) {
    return { fields: {}, problems: [`decoder stopped: ${e instanceof Error ? e.message : String(e)}`], pages: [] };
  }
}

export function decodeSubtree(memory: PhysMemory, fdtPhys: number): Decoded {
  return guarded(() => {
    const fields: Record<string, DecodedValue> = {};
    const problems: string[] = [];
    const pages: OwnedPages[] = [];
    if (!Number.isSafeInteger(fdtPhys) || fdtPhys < 0 || fdtPhys % PAGE_SIZE !== 0 || fdtPhys + PAGE_SIZE > memory.size) {
      return { fields, problems: [`FDT ${hex(fdtPhys)} is not a page of RAM`], pages };
    }
    pages.push({ pfn: fdtPhys / PAGE_SIZE, structure: 'mshv_prsv_pt FDT', upstream: true, role: `${FDT_SUBTREE_MSHV} (compatible, root_table, partition_ids)` });
    const parsed = parseSubtree(memory.read(fdtPhys, PAGE_SIZE));
    if (typeof parsed === 'string') return { fields, problems: [parsed], pages };
    fields.compatible = 'mshv_kho-v1';
    fields.root_table = hex(parsed.rootTable);
    const ids = partitionIdsOf(parsed.root);
    if (typeof ids === 'string') problems.push(ids);
    else {
      fields.nr_partition_ids = ids.nr;
      fields.partition_ids = ids.nr > 0 ? hex(ids.phys) : null;
      if (ids.nr > 0) {
        if (ids.phys % PAGE_SIZE !== 0 || ids.phys + ids.nr * 8 > memory.size) problems.push(`partition_ids ${hex(ids.phys)} is not in RAM`);
        else {
          pages.push({ pfn: ids.phys / PAGE_SIZE, structure: 'mshv partition ids', upstream: true, role: `${ids.nr} frozen partition id(s)` });
          fields.partitions = Array.from({ length: ids.nr }, (_, i) => memory.readU64(ids.phys + i * 8).toString()).join(',');
        }
      }
    }
    const runs: Array<readonly [number, number]> = [];
    const res = walkRadix(memory, parsed.rootTable, {
      run: (s, e) => { runs.push([s, e]); return undefined; },
      node: (pfn, level) => { pages.push({ pfn, structure: 'mshv radix node', upstream: true, role: level === 0 ? 'bitmap leaf' : `table level ${level}`, words: level === 0 ? [] : [{ offset: 0, size: 8, kind: 'pointer' }] }); return undefined; },
    });
    if (!res.ok) problems.push(res.reason);
    else { fields.tracked_pages = res.keys; fields.nodes = res.nodes; }
    return { fields, problems, pages, dataRuns: runs };
  });
}

export function decodeTrackingFile(memory: PhysMemory, data: bigint, version: string | null): Decoded {
  return guarded(() => {
    const major = Number((version ?? '0').split('.')[0]);
    if (major === 1 || major === 2) {
      return {
        fields: { version, carries: major === 1 ? 'nothing (freeze veto)' : 'nothing (tracking in the mshv_prsv_pt subtree)', data: hex(data) },
        problems: data === 0n ? [] : [`data ${hex(data)} should be 0 in mshv ${version}`], pages: [],
      };
    }
    if (data === 0n) return { fields: { version, carries: 'nothing (another mshv file carries the tracking)' }, problems: [], pages: [] };
    const phys = Number(data);
    const t = readTracking(memory, phys);
    const header: OwnedPages = {
      pfn: Math.floor(phys / PAGE_SIZE), structure: 'mshv tracking header', role: 'struct mshv_track_ser',
      words: [
        { offset: 0, size: 8, kind: 'pointer' }, { offset: 8, size: 8, kind: 'count' }, { offset: 16, size: 8, kind: 'count' },
        { offset: 24, size: 8, kind: 'pointer' }, { offset: 32, size: 4, kind: 'count' }, { offset: 36, size: 4, kind: 'flags' },
      ],
    };
    if (typeof t === 'string') return { fields: { version }, problems: [t], pages: Number.isSafeInteger(phys) && phys % PAGE_SIZE === 0 && phys < memory.size ? [header] : [] };
    const pages: OwnedPages[] = [header, ...t.nodes.map((pfn) => ({ pfn, structure: 'mshv tracking xarray node', role: 'KHO xarray node', words: [{ offset: 0, size: 8 as const, kind: 'pointer' as const }] }))];
    if (t.ids.length > 0) pages.push({ pfn: t.idsPhys / PAGE_SIZE, structure: 'mshv partition ids', role: `${t.ids.length} frozen partition id(s)` });
    return {
      fields: {
        version, xa_root: hex(t.xaRoot), nr_pages: t.nrPages, nr_nodes: t.nodes.length, nr_partition_ids: t.ids.length,
        partitions: t.ids.map(String).join(','), l1vh: (t.flags & 1) === 1, crc: hex(t.crc),
      },
      problems: [], pages, dataRuns: t.runs,
    };
  });
}

/** The tools of a build that writes `writes`. */
export const toolsFor = (writes?: readonly string[]): PluginTools => ({
  sections: [mshvSection],
  objects: [writes ? trackingKind(writes) : mshvTrackingKind],
  decoders: [
    defineDecoder({ target: { kind: 'subtree', name: FDT_SUBTREE_MSHV }, decode: (memory, data) => decodeSubtree(memory, Number(data)) }),
    defineDecoder({ target: { kind: 'file', family: MSHV_FAMILY }, decode: (memory, data, version) => decodeTrackingFile(memory, data, version) }),
  ],
  scenarios: [{
    name: 'mshv-l1vh-1g-scattered',
    description: 'An L1VH host with three partitions and 1 GiB deposited in a scattered pattern, live updated: partitions frozen and recorded, torn down by the next kernel',
    scenario: {
      name: 'mshv-l1vh-1g-scattered',
      machine: { memory: '8GiB' },
      from: { release: '7.1.0', plugins: { '@liveupdate/plugin-mshv': PLUGIN_VERSION } },
      to: { release: '7.2.0', plugins: { '@liveupdate/plugin-mshv': PLUGIN_VERSION } },
      mshv: { mode: 'l1vh', partitions: 3, vpsPerPartition: 2, deposit: '1GiB', pattern: 'scattered', seed: 1 },
      sessions: [{ name: 'vmm', objects: [{ type: 'mshv-tracking', token: 1 }] }],
    },
  }],
});

export const mshvTools: PluginTools = toolsFor();
