/** Reading and corrupting the handover between the jump and the next boot. */
import { PAGE_SIZE, type Machine } from '@liveupdate/hw';
import { Kernel, openLiveupdate } from '@liveupdate/sdk';
import type { Incoming, Outgoing } from './support.js';

/** Phase 1 of an update: the jump only (the bytes are in memory, nothing booted yet). Returns luo_file_ser.data by token. */
export function jumpOnly(o: Outgoing): (token: number) => number {
  const files = o.k1.luo.sessions.outgoing.flatMap((s) => s.fileSet.files.map((f) => [Number(f.token), Number(f.serializedData)] as const));
  o.k1.kexecJump(o.cfg);
  const byToken = new Map(files);
  return (token) => {
    const phys = byToken.get(token);
    if (phys === undefined) throw new Error(`no preserved file with token ${token}`);
    return phys;
  };
}

export function bootNext(o: Outgoing): Incoming {
  const k2 = Kernel.boot(o.machine, o.cfg);
  const p2 = k2.spawn('vmm');
  return { k2, p2, dev2: openLiveupdate(p2), kvm2: p2.open('/dev/kvm') };
}

export const u64 = (m: Machine, phys: number): bigint => m.memory.readU64(phys);
export const setU64 = (m: Machine, phys: number, v: bigint): void => m.memory.writeU64(phys, v);

/** The data page of a v1 folio array: the first run of its first kho_vmalloc chunk. */
export const recordsPhys = (m: Machine, ser: number): number => Number(u64(m, Number(u64(m, ser + 32)) + 8));

/** The leaf of a KHO xarray holding keys 0..511: slot 0 down five levels. */
export function xaLeaf(m: Machine, root: number): number {
  let node = root;
  for (let level = 0; level < 5; level++) node = Number(u64(m, node));
  return node;
}

export const PAGE = PAGE_SIZE;
