/**
 * Preserved files of one session (kernel/liveupdate/luo_file.c): PRESERVE_FD in the upstream
 * check order, freeze/unfreeze on the reboot path, deserialize, RETRIEVE_FD and FINISH.
 * File metadata lives in a kho_block chain of 64-byte luo_file_ser entries (luo-v5).
 */
import { luoFileSer } from '../abi/luo.js';
import { ErrnoError } from '../errno.js';
import type { KFile } from '../kernel/file.js';
import type { Process } from '../kernel/process.js';
import { KhoBlockSet } from '../kho/block.js';
import type { LuoContext } from './context.js';
import type { FileOpEvent } from './hooks.js';
import type { FileOpName, LiveupdateFileHandler, LiveupdateFileOpArgs, LuoSessionRef } from './types.js';

export class LuoFile<K> {
  /** The LUO reference on the file (null until retrieved on the incoming side). */
  file: KFile | null = null;
  serializedData = 0n;
  privateData: unknown = undefined;
  /** 0 not attempted, 1 retrieved, < 0 the sticky -errno. */
  retrieveStatus = 0;
  retrieveError: ErrnoError | null = null;
  /** The key in the global preserved-files table (get_id). */
  id: unknown = undefined;
  constructor(readonly handler: LiveupdateFileHandler<K>, readonly token: bigint, public compatible: string) {}
}

export class LuoFileSet<K> {
  readonly files: Array<LuoFile<K>> = [];
  /** token → file (the first one with that token, as the kernel's list walk finds it). */
  private readonly byToken = new Map<bigint, LuoFile<K>>();
  readonly blocks: KhoBlockSet;
  /** Incoming: file_set_ser.count as serialized. */
  incomingCount = 0;

  constructor(private readonly ctx: LuoContext<K>, private readonly session: LuoSessionRef) {
    this.blocks = new KhoBlockSet(ctx.mm, luoFileSer.size, ctx.kho);
  }

  get count(): number { return this.files.length; }
  find(token: bigint): LuoFile<K> | undefined { return this.byToken.get(token); }

  private push(f: LuoFile<K>): void {
    this.files.push(f);
    if (!this.byToken.has(f.token)) this.byToken.set(f.token, f);
  }

  private pop(): LuoFile<K> {
    const f = this.files.pop() as LuoFile<K>;
    if (this.byToken.get(f.token) === f) this.byToken.delete(f.token);
    return f;
  }

  private args(f: LuoFile<K>): LiveupdateFileOpArgs<K> {
    return {
      handler: f.handler, session: this.session, kernel: this.ctx.kernel, token: f.token, compatible: f.compatible,
      retrieveStatus: f.retrieveStatus, file: f.file, serializedData: f.serializedData, privateData: f.privateData,
    };
  }

  /** Run one handler op with the hooks around it; a non-errno exception is a handler bug reported as EIO. */
  call<R>(f: LuoFile<K>, op: FileOpName, run: (args: LiveupdateFileOpArgs<K>) => R, args = this.args(f)): R {
    const event: FileOpEvent = { op, compatible: f.handler.compatible, owner: f.handler.owner ?? f.handler.compatible, session: this.session.name, token: f.token };
    let err: ErrnoError | null = null;
    try {
      this.ctx.hooks.fileOp.call(event);
      this.ctx.hooks.handler.get(f.handler.compatible)?.call(event);
      const r = run(args);
      f.serializedData = args.serializedData;
      f.privateData = args.privateData;
      if (args.compatible !== f.compatible && !this.session.incoming) f.compatible = args.compatible;
      if (op === 'retrieve') f.file = args.file;
      return r;
    } catch (e) {
      err = e instanceof ErrnoError ? e : new ErrnoError('EIO', op, `${f.handler.owner ?? f.handler.compatible}: ${e instanceof Error ? e.message : String(e)}`);
      // Name who failed: the plugin, the op, the file — as an interceptor tags hook errors.
      if (op !== 'canPreserve') {
        this.ctx.dmesg.log(e instanceof ErrnoError ? 'warn' : 'err', 'liveupdate',
          `${event.owner}: ${op} of token ${f.token} in session ${this.session.name} failed: ${e instanceof ErrnoError ? e.code : `bug (${err.message})`}`);
      }
      throw err;
    } finally {
      this.ctx.hooks.fileOpDone.call(event, err);
    }
  }

  /** luo_preserve_file, checks in upstream order; each failure undoes what came before it. */
  preserve(proc: Process, fd: number, token: bigint): void {
    // 1. Tokens are unique within a session only.
    if (this.find(token)) throw new ErrnoError('EEXIST', 'LIVEUPDATE_SESSION_PRESERVE_FD', `token ${token}`);
    // 2. Grow the block set first, so freeze never runs out of slots.
    this.blocks.grow(this.files.length + 1);
    let file: KFile | null = null;
    let id: unknown;
    let idInserted = false;
    let flbDone = false;
    let f: LuoFile<K> | null = null;
    try {
      // 3. fget
      file = proc.fget(fd, 'LIVEUPDATE_SESSION_PRESERVE_FD');
      // 4. The first handler (registration order) that can preserve it.
      const fh = this.ctx.handlers.find((h) => {
        const probe = new LuoFile(h, token, h.compatible);
        probe.file = file;
        try { return this.call(probe, 'canPreserve', () => h.ops.canPreserve(h, file as KFile)); } catch { return false; }
      });
      if (!fh) throw new ErrnoError('ENOENT', 'LIVEUPDATE_SESSION_PRESERVE_FD', 'no handler can preserve this file');
      // 5. The same object may be preserved once, across all sessions.
      id = fh.ops.getId ? fh.ops.getId(file) : file;
      if (this.ctx.preservedIds.has(id)) throw new ErrnoError('EBUSY', 'LIVEUPDATE_SESSION_PRESERVE_FD', 'already preserved');
      f = new LuoFile(fh, token, fh.compatible);
      f.file = file;
      f.id = id;
      this.ctx.preservedIds.set(id, f);
      idInserted = true;
      // 6. FLBs of the handler (refcounted).
      this.ctx.flbs.filePreserve(fh);
      flbDone = true;
      // 8. The handler.
      const pf = f;
      this.call(f, 'preserve', (a) => fh.ops.preserve(a));
      this.push(pf);
    } catch (e) {
      if (flbDone && f) this.ctx.flbs.fileUnpreserve(f.handler);
      if (idInserted) this.ctx.preservedIds.delete(id);
      file?.put();
      this.blocks.shrink(this.files.length);
      throw e;
    }
  }

  /** Close of an outgoing session: unpreserve every file, newest first. */
  unpreserveAll(): void {
    while (this.files.length > 0) {
      const f = this.pop();
      try { this.call(f, 'unpreserve', (a) => f.handler.ops.unpreserve(a)); } catch { /* void upstream */ }
      this.ctx.flbs.fileUnpreserve(f.handler);
      this.ctx.preservedIds.delete(f.id);
      this.blocks.shrink(this.files.length);
      f.file?.put();
      f.file = null;
    }
    this.blocks.destroy();
  }

  /**
   * luo_file_freeze: FIFO; reserve a slot, freeze, write { compatible, data, token }. On a
   * freeze failure every earlier file is unfrozen (the failing one is not) and the entries
   * are zeroed. Returns the file_set_ser { files, count }.
   */
  freeze(): { files: bigint; count: bigint } {
    const entries: Uint8Array[] = [];
    for (let i = 0; i < this.files.length; i++) {
      const f = this.files[i] as LuoFile<K>;
      if (i >= this.blocks.capacity) {
        this.ctx.dmesg.log('warn', 'liveupdate', `no block slot for file ${i} of session ${this.session.name}`);
        this.unfreezeFirst(i);
        throw new ErrnoError('ENOSPC', 'liveupdate_reboot');
      }
      try {
        if (f.handler.ops.freeze) {
          const freeze = f.handler.ops.freeze;
          this.call(f, 'freeze', (a) => freeze(a));
        }
      } catch (e) {
        this.unfreezeFirst(i);
        throw e;
      }
      entries.push(luoFileSer.encode({ compatible: f.compatible, data: f.serializedData, token: f.token }));
    }
    this.blocks.writeEntries(entries);
    return { files: BigInt(this.files.length > 0 ? this.blocks.headPa : 0), count: BigInt(this.files.length) };
  }

  /** Unfreeze the first n files (FIFO) and zero every entry: the rollback of a freeze. */
  unfreezeFirst(n: number): void {
    for (let i = 0; i < n; i++) {
      const f = this.files[i] as LuoFile<K>;
      if (f.handler.ops.unfreeze) {
        const unfreeze = f.handler.ops.unfreeze;
        try { this.call(f, 'unfreeze', (a) => unfreeze(a)); } catch { /* void upstream */ }
      }
    }
    this.blocks.clear();
  }

  /** luo_file_deserialize: handler by exact compatible (ENOENT), then the count must match (EINVAL). */
  deserialize(filesPa: bigint, count: bigint): void {
    this.incomingCount = Number(count);
    try {
      this.blocks.restore(Number(filesPa), this.ctx.dmesg);
      for (const raw of this.blocks.readEntries()) {
        const e = luoFileSer.decode(raw);
        // Exact strcmp first, as upstream; then a versioned handler that reads this format.
        const fh = this.ctx.handlers.find((h) => h.compatible === e.compatible)
          ?? this.ctx.handlers.find((h) => h.accepts?.(e.compatible) === true);
        if (!fh) {
          this.ctx.dmesg.log('err', 'liveupdate', `No registered handler for compatible '${e.compatible}'`);
          throw new ErrnoError('ENOENT', 'luo_file_deserialize', e.compatible);
        }
        const f = new LuoFile(fh, e.token, e.compatible);
        f.serializedData = e.data;
        this.push(f);
      }
      if (BigInt(this.files.length) !== count) {
        throw new ErrnoError('EINVAL', 'luo_file_deserialize', `${this.files.length} files in blocks, ${count} in file_set_ser`);
      }
    } catch (e) {
      this.files.length = 0;
      this.byToken.clear();
      this.blocks.destroy();
      throw e;
    }
  }

  /** luo_retrieve_file: idempotent after success, sticky after failure. Returns a new reference. */
  retrieve(token: bigint): KFile {
    const f = this.find(token);
    if (!f) throw new ErrnoError('ENOENT', 'LIVEUPDATE_SESSION_RETRIEVE_FD', `token ${token}`);
    if (f.retrieveStatus < 0 && f.retrieveError) throw new ErrnoError(f.retrieveError.code, 'LIVEUPDATE_SESSION_RETRIEVE_FD', 'sticky error of an earlier retrieve');
    if (f.retrieveStatus > 0 && f.file) return f.file.get();
    try {
      this.call(f, 'retrieve', (a) => f.handler.ops.retrieve(a));
    } catch (e) {
      const err = e instanceof ErrnoError ? e : new ErrnoError('EIO', 'retrieve');
      f.retrieveStatus = -err.errno;
      f.retrieveError = err;
      throw new ErrnoError(err.code, 'LIVEUPDATE_SESSION_RETRIEVE_FD', err.message);
    }
    const file = f.file;
    if (!file) {
      f.retrieveStatus = -22;
      f.retrieveError = new ErrnoError('EINVAL', 'retrieve', 'handler returned no file');
      throw new ErrnoError('EINVAL', 'LIVEUPDATE_SESSION_RETRIEVE_FD', 'handler returned no file');
    }
    f.retrieveStatus = 1;
    f.id = f.handler.ops.getId ? f.handler.ops.getId(file) : file;
    this.ctx.preservedIds.set(f.id, f);
    return file.get();
  }

  /** luo_file_finish: can_finish on all (EBUSY, nothing changed), then finish newest first. */
  finish(): void {
    if (this.files.length === 0) return;
    for (const f of this.files) {
      const canFinish = f.handler.ops.canFinish;
      if (!canFinish) continue;
      let ok: boolean;
      try { ok = this.call(f, 'canFinish', (a) => canFinish(a)); } catch { ok = false; }
      if (!ok) throw new ErrnoError('EBUSY', 'LIVEUPDATE_SESSION_FINISH', `${f.compatible} token ${f.token} cannot finish yet`);
    }
    while (this.files.length > 0) {
      const f = this.pop();
      try { this.call(f, 'finish', (a) => f.handler.ops.finish(a)); } catch { /* void upstream */ }
      this.ctx.flbs.fileFinish(f.handler);
      if (f.retrieveStatus > 0) {
        this.ctx.preservedIds.delete(f.id);
        f.file?.put();
        f.file = null;
      }
    }
    this.blocks.destroy();
  }
}
