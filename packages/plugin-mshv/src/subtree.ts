/**
 * Step 2, RFC 00/20 (2026-05-27), drivers/hv/mshv_page_preserve.c and the partition freeze of
 * mshv_root_main.c: at kexec the radix tree is frozen, every key page and node page is
 * KHO-preserved (order 0, one by one), the partition ids go into a kho_alloc_preserve()'d
 * array, and a one-page FDT is added as the KHO subtree "mshv_prsv_pt". Any failure there
 * panics: the pages are deposited and the next kernel would not know it.
 *
 * The next kernel (restore_tree, restore_page_structs, vacuum_stale_partitions): no subtree
 * means a fresh tree; an incompatible one, or a missing or short root_table, panics. It
 * reserves every tracked page in memblock before the page allocator runs, restores every
 * page it tracks, adopts the tree and tears down every recorded partition.
 */
import {
  ErrnoError, FdtError, KernelPanic, PAGE_SIZE, fdtCheckHeader, fdtCreate, fdtNode, fdtParse, propString, propU64LE,
  readPropString, type FdtNode, type Kernel,
} from '@liveupdate/sdk';
import { hvStatus, hvStatusName } from '@liveupdate/hw';
import {
  FDT_SUBTREE_MSHV, MSHV_KHO_COMPAT_STR, MSHV_MAX_PARTITION_IDS, MSHV_PROP_NR_PARTITION_IDS, MSHV_PROP_PARTITION_IDS,
  MSHV_PROP_ROOT_TABLE,
} from './abi/mshv.js';
import type { MshvRoot } from './driver.js';
import { MshvRadixTree, walkRadix } from './tracking/radix.js';

/** The subtree's properties as the kernel writes them (fdt_property with native, little-endian, values). */
export function mshvSubtreeFdt(rootTable: number, partitionIdsPhys: number, nrPartitionIds: number): Uint8Array {
  const props: Record<string, Uint8Array> = {
    compatible: propString(MSHV_KHO_COMPAT_STR),
    [MSHV_PROP_ROOT_TABLE]: propU64LE(BigInt(rootTable)),
  };
  if (nrPartitionIds > 0) {
    props[MSHV_PROP_PARTITION_IDS] = propU64LE(BigInt(partitionIdsPhys));
    const count = new Uint8Array(4);
    new DataView(count.buffer).setUint32(0, nrPartitionIds, true);
    props[MSHV_PROP_NR_PARTITION_IDS] = count;
  }
  return fdtCreate(fdtNode('', props), { maxSize: PAGE_SIZE });
}

const errnoText = (e: unknown): string => (e instanceof ErrnoError ? `-${e.code}` : String(e));

/** reboot_cb with kexec_in_progress: freeze partitions, then preserve_tree(); a failure panics. */
export function preserveTree(kernel: Kernel, root: MshvRoot, fdtPfn: number): void {
  const out = kernel.khoOut;
  const tree = root.tracker;
  if (!out || !tree) return; // KHO disabled: deposits were refused, nothing to hand over
  const ids = root.freezePartitions();
  let idsPhys = 0;
  if (ids.length > 0) {
    try {
      idsPhys = out.allocPreserve(ids.length * 8);
    } catch (e) {
      throw new KernelPanic(`mshv_freeze_and_get_partition_ids() failed - must not kexec: ${errnoText(e)}`);
    }
    const mem = kernel.mm.memory;
    ids.forEach((id, i) => mem.writeU64(idsPhys + i * 8, id));
  }
  kernel.dmesg.log('info', 'mshv', `Frozen ${ids.length} partition(s) for kexec`);
  const fail = (what: string, e: unknown): never => {
    kernel.dmesg.log('warn', 'mshv', `preserve_tree() - ${what} failed: ${errnoText(e)}`);
    throw new KernelPanic(`preserve_tree() failed - must not kexec: ${errnoText(e)}`);
  };
  const frozen = tree.freeze();
  if (frozen) fail('kho_radix_tree_freeze()', new ErrnoError(frozen, 'kho_radix_tree_freeze'));
  const bytes = mshvSubtreeFdt(tree.rootPhys, idsPhys, ids.length);
  const page = kernel.mm.memory.mapPage(fdtPfn);
  page.fill(0);
  page.set(bytes);
  // Both data and meta pages, each as one order-0 page: they are withdrawn one by one later.
  let err: unknown = null;
  const res = tree.walk({
    run: (s, e) => {
      try { for (let pfn = s; pfn < e; pfn++) out.preserveFolio(pfn, 0); } catch (x) { err = x; return 'preserve'; }
      return undefined;
    },
    node: (pfn) => {
      try { out.preserveFolio(pfn, 0); } catch (x) { err = x; return 'preserve'; }
      return undefined;
    },
  });
  if (!res.ok) fail('kho_radix_walk_tree()', err ?? res.reason);
  try { out.preserveFolio(fdtPfn, 0); } catch (e) { fail('kho_preserve_pages(fdt)', e); }
  try { out.addSubtree(FDT_SUBTREE_MSHV, fdtPfn * PAGE_SIZE, PAGE_SIZE); } catch (e) { fail('kho_add_subtree()', e); }
}

/** What the memblock phase found, for the late restore. */
export interface IncomingTree {
  readonly fdtPhys: number;
  readonly rootTable: number;
  readonly keys: number;
  readonly idsPhys: number;
  readonly nrIds: number;
  readonly idsProblem: string | null;
}

/** The subtree's fields, checked in restore_tree's order; a string is why it must panic. */
export function parseSubtree(bytes: Uint8Array): { root: FdtNode; rootTable: number } | string {
  const bad = fdtCheckHeader(bytes);
  if (bad) return 'Could not find root node in KHO-preserved FDT.';
  let root: FdtNode;
  try { root = fdtParse(bytes); } catch (e) {
    if (e instanceof FdtError) return 'Could not find root node in KHO-preserved FDT.';
    throw e;
  }
  const compatible = readPropString(root, 'compatible');
  if (compatible !== MSHV_KHO_COMPAT_STR) {
    return compatible === undefined
      ? "Incompatible kernel: preserved misses 'compatible' mark."
      : `Incompatible kernel: Current is ${MSHV_KHO_COMPAT_STR}, preserved is ${compatible}`;
  }
  const rt = root.props.get(MSHV_PROP_ROOT_TABLE);
  if (!rt || rt.length !== 8) return 'Could not obtain root_table property from KHO-preserved FDT.';
  const v = new DataView(rt.buffer, rt.byteOffset, 8);
  return { root, rootTable: v.getUint32(4, true) * 0x1_0000_0000 + v.getUint32(0, true) };
}

/** mshv_retrieve_frozen_partition_ids: properties absent means none; malformed ones are -EINVAL. */
export function partitionIdsOf(root: FdtNode): { phys: number; nr: number } | string {
  const ids = root.props.get(MSHV_PROP_PARTITION_IDS);
  if (!ids) return { phys: 0, nr: 0 };
  if (ids.length !== 8) return 'Malformed preserved FDT: invalid partition_ids property.';
  const count = root.props.get(MSHV_PROP_NR_PARTITION_IDS);
  if (!count || count.length !== 4) return 'Malformed preserved FDT: invalid nr_partition_ids property.';
  const nr = new DataView(count.buffer, count.byteOffset, 4).getUint32(0, true);
  if (nr > MSHV_MAX_PARTITION_IDS) return `Malformed preserved FDT: nr_partition_ids=${nr} exceeds page`;
  const v = new DataView(ids.buffer, ids.byteOffset, 8);
  return { phys: v.getUint32(4, true) * 0x1_0000_0000 + v.getUint32(0, true), nr };
}

/**
 * The memblock phase of the next kernel: find the subtree, validate the whole tree, reserve
 * every tracked page. Null when there is nothing to restore (a fresh tree follows).
 */
export function reserveTracked(kernel: Kernel): IncomingTree | null {
  const kin = kernel.khoIn;
  if (!kin) return null;
  let blob: { phys: number; size: number };
  try {
    blob = kin.retrieveSubtree(FDT_SUBTREE_MSHV);
  } catch (e) {
    if (e instanceof ErrnoError && e.code === 'ENOENT') return null;
    throw new KernelPanic(`Could not restore page tree from KHO: ${errnoText(e)}`);
  }
  const mem = kernel.mm.memory;
  // Only preserved order-0 pages are read: a pointer anywhere else (a deposited page) is never followed.
  const preserved = (pfn: number): boolean => kin.heads.peek(pfn) === 0;
  const parsed = blob.phys % PAGE_SIZE !== 0 || !preserved(blob.phys / PAGE_SIZE) ? 'Could not find root node in KHO-preserved FDT.'
    : blob.size < 40 || blob.size > PAGE_SIZE ? 'Could not find root node in KHO-preserved FDT.' : parseSubtree(mem.read(blob.phys, blob.size));
  if (typeof parsed === 'string') {
    kernel.dmesg.log('err', 'mshv', parsed);
    throw new KernelPanic(`Could not restore page tree from KHO: -EINVAL (${parsed})`);
  }
  const scratch = kin.scratch.map((a) => [a.addr / PAGE_SIZE, (a.addr + a.size) / PAGE_SIZE] as const);
  const inScratch = (pfn: number): boolean => scratch.some(([s, e]) => pfn >= s && pfn < e);
  const runs: Array<[number, number]> = [];
  const res = walkRadix(mem, parsed.rootTable, {
    run: (s, e) => {
      for (const [a, b] of scratch) if (s < b && e > a) return `tracked pages 0x${s.toString(16)}..0x${e.toString(16)} overlap a scratch area`;
      runs.push([s, e]);
      return undefined;
    },
  }, (pfn) => !inScratch(pfn) && preserved(pfn));
  if (!res.ok) {
    kernel.dmesg.log('err', 'mshv', `page tree: ${res.reason}`);
    throw new KernelPanic(`Could not restore page tree from KHO: -EINVAL (${res.reason})`);
  }
  // Before anything can allocate them: the hypervisor still holds every one of these.
  for (const [s, e] of runs) kernel.mm.memblock.reserve(s, e);
  let ids = partitionIdsOf(parsed.root);
  // The id array must be a preserved page of RAM holding every id, or nothing of it is read.
  if (typeof ids !== 'string' && ids.nr > 0 && (ids.phys % PAGE_SIZE !== 0 || ids.phys + ids.nr * 8 > mem.size || kin.heads.peek(ids.phys / PAGE_SIZE) < 0)) {
    ids = `partition_ids 0x${ids.phys.toString(16)} is not a preserved page`;
  }
  return {
    fdtPhys: blob.phys, rootTable: parsed.rootTable, keys: res.keys,
    idsPhys: typeof ids === 'string' ? 0 : ids.phys, nrIds: typeof ids === 'string' ? 0 : ids.nr,
    idsProblem: typeof ids === 'string' ? ids : null,
  };
}

/**
 * Late init: restore the FDT page, every tracked page and every node page (each exactly one
 * preserved order-0 page, or panic), adopt the tree, then vacuum the stale partitions.
 * Returns the FDT page, reused for the next kexec.
 */
export function restoreTracked(kernel: Kernel, root: MshvRoot, inc: IncomingTree): number {
  const kin = kernel.khoIn;
  if (!kin) throw new KernelPanic('Failed to restore MSHV page structs');
  const one = (phys: number): boolean => { const f = kin.restoreFolio(phys); return f !== null && f.order === 0; };
  if (!one(inc.fdtPhys)) throw new KernelPanic('Could not restore page tree from KHO: -EINVAL (FDT page)');
  const res = walkRadix(kernel.mm.memory, inc.rootTable, {
    run: (s, e) => { for (let pfn = s; pfn < e; pfn++) if (!one(pfn * PAGE_SIZE)) return `page 0x${pfn.toString(16)}`; return undefined; },
    node: (pfn) => (one(pfn * PAGE_SIZE) ? undefined : `node 0x${pfn.toString(16)}`),
  });
  // Unrestored struct pages would BUG when freed at withdraw time.
  if (!res.ok) throw new KernelPanic(`Failed to restore MSHV page structs (${res.reason})`);
  const mm = kernel.mm;
  root.tracker = MshvRadixTree.adopt(mm.memory, { alloc: () => mm.allocZeroedPages(0), free: (pfn) => mm.freePages(pfn, 0) }, inc.rootTable, inc.keys);
  root.pagesDeposited = inc.keys;
  vacuumStalePartitions(kernel, root, inc);
  return inc.fdtPhys / PAGE_SIZE;
}

/** vacuum_stale_partitions: finalize, withdraw, delete each recorded partition; errors are logged. */
export function vacuumStalePartitions(kernel: Kernel, root: MshvRoot, inc: { idsPhys: number; nrIds: number; idsProblem: string | null }): void {
  const log = (level: 'info' | 'warn' | 'err', line: string): void => kernel.dmesg.log(level, 'mshv', line);
  if (inc.idsProblem) { log('err', `Failed to retrieve stale partition IDs: -EINVAL (${inc.idsProblem})`); return; }
  if (inc.nrIds === 0) return;
  const mem = kernel.mm.memory;
  const ids: bigint[] = [];
  for (let i = 0; i < inc.nrIds; i++) ids.push(mem.readU64(inc.idsPhys + i * 8));
  for (const id of ids) {
    log('info', `Cleaning up stale partition ${id}`);
    const fin = root.hv.finalizePartition(id);
    if (fin === hvStatus.HV_STATUS_INVALID_PARTITION_ID) { log('info', `partition ${id} already gone`); continue; }
    if (fin !== hvStatus.HV_STATUS_SUCCESS) log('warn', `finalize partition ${id} failed: ${hvStatusName(fin)}`);
    try { root.withdraw(id); } catch (e) { log('warn', `withdraw memory ${id} failed: ${errnoText(e)}`); }
    const del = root.hv.deletePartition(id);
    if (del !== hvStatus.HV_STATUS_SUCCESS) log('warn', `delete partition ${id} failed: ${hvStatusName(del)}`);
  }
  kernel.khoIn?.restoreFree(inc.idsPhys);
}

