/**
 * File-Lifecycle-Bound global objects (kernel/liveupdate/luo_flb.c): preserved when the
 * first dependent file is preserved, finished when the last dependent file is finished.
 * Serialized into one preserved page: header { pgcnt, count } + up to 63 entries.
 */
import { PAGE_SIZE, type PhysMemory } from '@liveupdate/hw';
import { LIVEUPDATE_FLB_COMPAT_LENGTH, LUO_FLB_MAX, LUO_FLB_PGCNT, luoFlbHeaderSer, luoFlbSer } from '../abi/luo.js';
import { ErrnoError } from '../errno.js';
import type { LuoHooks } from './hooks.js';
import type { FlbOpName, LiveupdateFileHandler, LiveupdateFlb, LiveupdateFlbOpArgs } from './types.js';

interface FlbState {
  readonly flb: LiveupdateFlb;
  /** Handlers linked to this FLB ("users"). */
  users: number;
  outCount: number;
  outData: bigint;
  outObj: unknown;
  /** Incoming: from the serialized page, or undefined if this FLB was not handed over. */
  inFound: boolean;
  inCount: number;
  inData: bigint;
  inObj: unknown;
  inRetrieved: boolean;
  inFinished: boolean;
}

export interface IncomingFlb {
  readonly name: string;
  readonly data: bigint;
  readonly count: number;
}

export class LuoFlbs<K> {
  private readonly global: FlbState[] = [];
  private readonly byHandler = new Map<LiveupdateFileHandler<K>, FlbState[]>();
  private incoming: IncomingFlb[] | null = null;

  constructor(private readonly kernel: K, private readonly hooks: LuoHooks) {}

  private state(flb: LiveupdateFlb): FlbState | undefined {
    return this.global.find((s) => s.flb === flb);
  }

  /** liveupdate_register_flb; the handler must already be registered (checked by the caller). */
  register(fh: LiveupdateFileHandler<K>, flb: LiveupdateFlb<K>): void {
    const { ops } = flb;
    if (!ops || typeof ops.preserve !== 'function' || typeof ops.unpreserve !== 'function'
      || typeof ops.retrieve !== 'function' || typeof ops.finish !== 'function') {
      throw new ErrnoError('EINVAL', 'liveupdate_register_flb', `${flb.compatible}: missing op`);
    }
    if (flb.compatible.length === 0 || flb.compatible.length >= LIVEUPDATE_FLB_COMPAT_LENGTH) {
      throw new ErrnoError('EINVAL', 'liveupdate_register_flb', `compatible '${flb.compatible}' length`);
    }
    const linked = this.byHandler.get(fh) ?? [];
    if (linked.some((s) => s.flb === flb)) throw new ErrnoError('EEXIST', 'liveupdate_register_flb', `${flb.compatible} already linked to ${fh.compatible}`);
    let st = this.state(flb);
    if (!st) {
      if (this.global.some((s) => s.flb.compatible === flb.compatible)) throw new ErrnoError('EEXIST', 'liveupdate_register_flb', flb.compatible);
      if (this.global.length >= LUO_FLB_MAX) throw new ErrnoError('ENOSPC', 'liveupdate_register_flb');
      const inc = this.incoming?.find((e) => e.name === flb.compatible);
      st = {
        flb, users: 0, outCount: 0, outData: 0n, outObj: undefined,
        inFound: inc !== undefined, inCount: inc?.count ?? 0, inData: inc?.data ?? 0n, inObj: undefined,
        inRetrieved: false, inFinished: false,
      };
      this.global.push(st);
    }
    st.users++;
    linked.push(st);
    this.byHandler.set(fh, linked);
  }

  /** liveupdate_unregister_flb: warns (returns false) if not linked. */
  unregister(fh: LiveupdateFileHandler<K>, flb: LiveupdateFlb<K>): boolean {
    const linked = this.byHandler.get(fh);
    const i = linked?.findIndex((s) => s.flb === flb) ?? -1;
    if (!linked || i < 0) return false;
    const [st] = linked.splice(i, 1);
    if (st && --st.users === 0) this.global.splice(this.global.indexOf(st), 1);
    return true;
  }

  unregisterAll(fh: LiveupdateFileHandler<K>): void {
    for (const st of [...(this.byHandler.get(fh) ?? [])]) this.unregister(fh, st.flb as LiveupdateFlb<K>);
    this.byHandler.delete(fh);
  }

  private call(st: FlbState, op: FlbOpName, args: LiveupdateFlbOpArgs<K>): void {
    const event = { op, compatible: st.flb.compatible, owner: st.flb.owner ?? st.flb.compatible };
    let err: ErrnoError | null = null;
    try {
      this.hooks.flbOp.call(event);
      (st.flb as LiveupdateFlb<K>).ops[op](args);
    } catch (e) {
      err = e instanceof ErrnoError ? e : new ErrnoError('EIO', `flb_${op}`, `${st.flb.compatible}: ${String(e)}`);
      throw err;
    } finally {
      this.hooks.flbOpDone.call(event, err);
    }
  }

  /** A dependent file is being preserved: 0→1 calls preserve. In registration order; rollback in reverse. */
  filePreserve(fh: LiveupdateFileHandler<K>): void {
    const linked = this.byHandler.get(fh) ?? [];
    const done: FlbState[] = [];
    try {
      for (const st of linked) {
        if (st.outCount === 0) {
          const args: LiveupdateFlbOpArgs<K> = { flb: st.flb as LiveupdateFlb<K>, kernel: this.kernel, data: 0n, obj: undefined };
          this.call(st, 'preserve', args);
          st.outData = args.data;
          st.outObj = args.obj;
        }
        st.outCount++;
        done.push(st);
      }
    } catch (e) {
      for (const st of done.reverse()) this.dropOutgoing(st);
      throw e;
    }
  }

  /** A dependent file was unpreserved: the last one calls unpreserve. */
  fileUnpreserve(fh: LiveupdateFileHandler<K>): void {
    for (const st of [...(this.byHandler.get(fh) ?? [])].reverse()) this.dropOutgoing(st);
  }

  private dropOutgoing(st: FlbState): void {
    if (st.outCount === 0) return;
    if (--st.outCount === 0) {
      const args: LiveupdateFlbOpArgs<K> = { flb: st.flb as LiveupdateFlb<K>, kernel: this.kernel, data: st.outData, obj: st.outObj };
      try { this.call(st, 'unpreserve', args); } catch { /* unpreserve is void upstream */ }
      st.outData = 0n;
      st.outObj = undefined;
    }
  }

  /** liveupdate_flb_get_outgoing */
  getOutgoing(flb: LiveupdateFlb<K>): unknown {
    return this.state(flb)?.outObj;
  }

  /** luo_flb_serialize: cannot fail; writes every FLB with outgoing users. */
  serialize(memory: PhysMemory, pagePhys: number): number {
    let n = 0;
    const page = new Uint8Array(PAGE_SIZE);
    for (const st of this.global) {
      if (st.outCount === 0) continue;
      luoFlbSer.encodeInto(page, luoFlbHeaderSer.size + n * luoFlbSer.size, { name: st.flb.compatible, data: st.outData, count: BigInt(st.outCount) });
      n++;
    }
    luoFlbHeaderSer.encodeInto(page, 0, { pgcnt: BigInt(LUO_FLB_PGCNT), count: BigInt(n) });
    memory.write(pagePhys, page);
    return n;
  }

  /** luo_flb_setup_incoming: parse the page; a bad header is an incoming-state error. */
  setupIncoming(memory: PhysMemory, pagePhys: number): void {
    if (pagePhys === 0) { this.incoming = []; return; }
    const page = memory.read(pagePhys, PAGE_SIZE);
    const hdr = luoFlbHeaderSer.decode(page);
    if (hdr.pgcnt !== BigInt(LUO_FLB_PGCNT) || hdr.count > BigInt(LUO_FLB_MAX)) {
      throw new ErrnoError('EINVAL', 'luo_flb_setup_incoming', `header pgcnt ${hdr.pgcnt} count ${hdr.count}`);
    }
    const list: IncomingFlb[] = [];
    for (let i = 0; i < Number(hdr.count); i++) {
      const e = luoFlbSer.decode(page, luoFlbHeaderSer.size + i * luoFlbSer.size);
      list.push({ name: e.name, data: e.data, count: Number(e.count) });
    }
    this.incoming = list;
    for (const st of this.global) {
      const inc = list.find((e) => e.name === st.flb.compatible);
      st.inFound = inc !== undefined;
      st.inCount = inc?.count ?? 0;
      st.inData = inc?.data ?? 0n;
    }
  }

  get incomingList(): readonly IncomingFlb[] { return this.incoming ?? []; }

  private retrieveIncoming(st: FlbState): void {
    if (st.inRetrieved) return;
    const args: LiveupdateFlbOpArgs<K> = { flb: st.flb as LiveupdateFlb<K>, kernel: this.kernel, data: st.inData, obj: undefined };
    this.call(st, 'retrieve', args);
    st.inObj = args.obj;
    st.inRetrieved = true;
  }

  /**
   * Whether liveupdate_flb_get_incoming would find an object (the FLB is registered, was handed
   * over and is not finished): a plugin's setup asks on every boot, and most boots (a cold one, or
   * an update that did not use the FLB) have none, which getIncoming reports by throwing.
   */
  hasIncoming(flb: LiveupdateFlb<K>): boolean {
    const st = this.state(flb);
    return st !== undefined && this.incoming !== null && this.incoming.length > 0 && !st.inFinished && st.inFound;
  }

  /** liveupdate_flb_get_incoming: lazily retrieved; takes a reference to pair with putIncoming. */
  getIncoming(flb: LiveupdateFlb<K>): unknown {
    const st = this.state(flb);
    if (!st) throw new ErrnoError('ENOENT', 'liveupdate_flb_get_incoming', flb.compatible);
    if (this.incoming === null || this.incoming.length === 0 || st.inFinished) throw new ErrnoError('ENODATA', 'liveupdate_flb_get_incoming', flb.compatible);
    if (!st.inFound) throw new ErrnoError('ENOENT', 'liveupdate_flb_get_incoming', flb.compatible);
    this.retrieveIncoming(st);
    st.inCount++;
    return st.inObj;
  }

  putIncoming(flb: LiveupdateFlb<K>): void {
    const st = this.state(flb);
    if (st) this.dropIncoming(st);
  }

  /** A dependent file finished: drop one incoming reference; at 0 retrieve if needed, then finish. */
  fileFinish(fh: LiveupdateFileHandler<K>): void {
    for (const st of [...(this.byHandler.get(fh) ?? [])].reverse()) if (st.inFound) this.dropIncoming(st);
  }

  private dropIncoming(st: FlbState): void {
    if (st.inFinished || st.inCount === 0) return;
    if (--st.inCount > 0) return;
    try {
      this.retrieveIncoming(st);
      this.call(st, 'finish', { flb: st.flb as LiveupdateFlb<K>, kernel: this.kernel, data: st.inData, obj: st.inObj });
    } catch { /* finish is void upstream */ }
    st.inFinished = true;
  }

  /** For reports: FLBs with their counts. */
  describe(): Array<{ compatible: string; outgoing: number; incoming: number; finished: boolean }> {
    return this.global.map((s) => ({ compatible: s.flb.compatible, outgoing: s.outCount, incoming: s.inCount, finished: s.inFinished }));
  }
}
