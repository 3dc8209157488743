/** State LUO's parts share: the kernel services, the handler registry and the global tables. */
import type { Dmesg } from '../kernel/dmesg.js';
import type { KhoIn } from '../kho/kho-in.js';
import type { KhoOut } from '../kho/kho.js';
import type { Mm } from '../mm/mm.js';
import type { LuoFile } from './file.js';
import type { LuoFlbs } from './flb.js';
import type { LuoHooks } from './hooks.js';
import type { LiveupdateFileHandler } from './types.js';

export interface LuoContext<K> {
  readonly kernel: K;
  readonly mm: Mm;
  readonly kho: { readonly out: KhoOut | null; readonly in: KhoIn | null };
  readonly dmesg: Dmesg;
  readonly hooks: LuoHooks;
  /** Registration order: PRESERVE_FD asks them in this order. */
  readonly handlers: Array<LiveupdateFileHandler<K>>;
  /** luo_preserved_files: get_id → file, across every session. */
  readonly preservedIds: Map<unknown, LuoFile<K>>;
  readonly flbs: LuoFlbs<K>;
}
