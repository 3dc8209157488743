/**
 * Fault injection: fail any hook of any handler at its k-th call, or corrupt a chosen byte of
 * the handover between the old kernel's jump and the new kernel's boot.
 */
import { ErrnoError, type ErrnoCode, type FileOpName, type FlbOpName, type Kernel } from '@liveupdate/runtime';

export type FaultSpec =
  | {
    readonly kind: 'file-op';
    readonly op: FileOpName;
    /** Fail the k-th matching call (1-based). */
    readonly call: number;
    /** Only ops of this plugin (owner) or compatible string. */
    readonly owner?: string;
    readonly compatible?: string;
    readonly errno?: ErrnoCode;
  }
  | { readonly kind: 'flb-op'; readonly op: FlbOpName; readonly call: number; readonly owner?: string; readonly errno?: ErrnoCode }
  | {
    readonly kind: 'corrupt';
    /** Which handover structure: the root FDT, the "LUO" blob, the first session block, the FLB page, a subtree, or a raw address. */
    readonly target: 'fdt' | 'luo_ser' | 'sessions' | 'flbs' | { readonly subtree: string } | { readonly phys: number };
    readonly offset: number;
    /** XOR mask applied to the byte (default 0xff), or an exact byte value. */
    readonly xor?: number;
    readonly value?: number;
  };

/** Ops that run in the old kernel; the others (retrieve, canFinish, finish) in the new one. */
export const OUTGOING_OPS: ReadonlySet<FileOpName> = new Set<FileOpName>(['canPreserve', 'preserve', 'unpreserve', 'freeze', 'unfreeze']);

export interface FaultRecord {
  readonly fault: FaultSpec;
  /** How many matching calls were seen, and whether the fault fired. */
  seen: number;
  fired: boolean;
}

/** Tap a kernel's LUO hooks so that the matching k-th call throws the chosen errno. */
export function armHookFaults(kernel: Kernel, records: FaultRecord[], side: 'outgoing' | 'incoming'): void {
  for (const rec of records) {
    const f = rec.fault;
    if (f.kind === 'file-op') {
      if ((side === 'outgoing') !== OUTGOING_OPS.has(f.op)) continue;
      kernel.luo.hooks.fileOp.tap('liveupdate-fault-injection', (ev) => {
        if (ev.op !== f.op || (f.owner && ev.owner !== f.owner) || (f.compatible && ev.compatible !== f.compatible)) return;
        if (++rec.seen === f.call) {
          rec.fired = true;
          throw new ErrnoError(f.errno ?? 'EIO', ev.op, `injected fault at call ${f.call} of ${ev.owner} ${ev.op}`);
        }
      });
    } else if (f.kind === 'flb-op') {
      const outgoing = f.op === 'preserve' || f.op === 'unpreserve';
      if ((side === 'outgoing') !== outgoing) continue;
      kernel.luo.hooks.flbOp.tap('liveupdate-fault-injection', (ev) => {
        if (ev.op !== f.op || (f.owner && ev.owner !== f.owner)) return;
        if (++rec.seen === f.call) {
          rec.fired = true;
          throw new ErrnoError(f.errno ?? 'EIO', `flb_${ev.op}`, `injected fault at call ${f.call} of ${ev.owner} ${ev.op}`);
        }
      });
    }
  }
}

/** Resolve corruption targets against the old kernel before it jumps (its structures are still readable). */
export function resolveCorruptions(k1: Kernel, records: FaultRecord[]): Array<{ rec: FaultRecord; phys: number }> {
  const out: Array<{ rec: FaultRecord; phys: number }> = [];
  const kho = k1.khoOut;
  for (const rec of records) {
    const f = rec.fault;
    if (f.kind !== 'corrupt' || !kho) continue;
    const luo = kho.subtreeList.find((s) => s.name === 'LUO');
    let base: number | undefined;
    const t = f.target;
    if (t === 'fdt') base = kho.fdtPhys;
    else if (t === 'luo_ser') base = luo?.phys;
    else if (t === 'sessions') base = k1.luo.sessions.outBlocks.headPa || undefined;
    else if (t === 'flbs') base = luo ? k1.machine.memory.readU64Number(luo.phys + 24) : undefined;
    else if ('subtree' in t) base = kho.subtreeList.find((s) => s.name === t.subtree)?.phys;
    else base = t.phys;
    if (base !== undefined) out.push({ rec, phys: base + f.offset });
  }
  return out;
}

/** Apply resolved corruptions to memory (after the jump: only bytes are left). */
export function applyCorruptions(k1: Kernel, list: Array<{ rec: FaultRecord; phys: number }>): void {
  const mem = k1.machine.memory;
  for (const { rec, phys } of list) {
    const f = rec.fault;
    if (f.kind !== 'corrupt') continue;
    const old = mem.readU8(phys);
    mem.writeU8(phys, f.value ?? (old ^ (f.xor ?? 0xff)));
    rec.seen = 1;
    rec.fired = true;
  }
}
