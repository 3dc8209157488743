/**
 * The LUO hook surface (tapable), one frozen object as webpack's Compiler.hooks. Observers
 * (timeline, tracing) tap `fileOp`/`fileOpDone`; fault injection taps `fileOp` and throws an
 * ErrnoError, which LUO treats exactly as a failure of that op. `handler` is keyed by
 * compatible string so a plugin can watch one format.
 */
import { HookMap, SyncHook } from 'tapable';
import { loopingSyncHook } from '../lib/sync-hook.js';
import type { ErrnoError } from '../errno.js';
import type { FileOpName, FlbOpName } from './types.js';

export interface FileOpEvent {
  readonly op: FileOpName;
  readonly compatible: string;
  readonly owner: string;
  readonly session: string;
  readonly token: bigint;
}

export interface FlbOpEvent {
  readonly op: FlbOpName;
  readonly compatible: string;
  readonly owner: string;
}

export interface RebootEvent {
  readonly phase: 'freeze' | 'serialize-flbs' | 'rollback';
  readonly sessions: number;
  readonly files: number;
}

export function createLuoHooks() {
  return Object.freeze({
    /** Before a handler op; a tap may throw ErrnoError to fail it. */
    fileOp: loopingSyncHook(new SyncHook<[event: FileOpEvent]>(['event'])),
    /** After a handler op, with the error it failed with (null on success). */
    fileOpDone: loopingSyncHook(new SyncHook<[event: FileOpEvent, error: ErrnoError | null]>(['event', 'error'])),
    /** Before an FLB op; a tap may throw ErrnoError to fail it. */
    flbOp: loopingSyncHook(new SyncHook<[event: FlbOpEvent]>(['event'])),
    flbOpDone: loopingSyncHook(new SyncHook<[event: FlbOpEvent, error: ErrnoError | null]>(['event', 'error'])),
    /** Per compatible string: fires with every op of that handler. */
    handler: new HookMap((_compatible: string) => loopingSyncHook(new SyncHook<[event: FileOpEvent]>(['event']))),
    sessionCreated: loopingSyncHook(new SyncHook<[name: string]>(['name'])),
    sessionRetrieved: loopingSyncHook(new SyncHook<[name: string]>(['name'])),
    /** Reboot path phases (freeze, FLB serialization, rollback). */
    reboot: loopingSyncHook(new SyncHook<[event: RebootEvent]>(['event'])),
  });
}

export type LuoHooks = ReturnType<typeof createLuoHooks>;
