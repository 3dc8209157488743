/**
 * LUO sessions (kernel/liveupdate/luo_session.c): named groups of preserved files, each
 * behind an anonymous-inode fd. Outgoing sessions are serialized at reboot into a kho_block
 * chain of 80-byte luo_session_ser entries; incoming ones are rebuilt at the first open of
 * /dev/liveupdate.
 */
import { LIVEUPDATE_SESSION_NAME_LENGTH, luoSessionSer } from '../abi/luo.js';
import { ErrnoError } from '../errno.js';
import { Inode, KFile, type FileOperations } from '../kernel/file.js';
import type { Process } from '../kernel/process.js';
import { KhoBlockSet } from '../kho/block.js';
import type { LuoContext } from './context.js';
import { LuoFileSet } from './file.js';
import type { LuoSessionRef } from './types.js';

export class LuoSession<K> implements LuoSessionRef {
  readonly fileSet: LuoFileSet<K>;
  /** The name for messages and hooks (UTF-8 decoded; the identity is nameBytes). */
  readonly name: string;
  /** The name as the kernel keeps it: 1..63 raw bytes, compared byte for byte (strncmp). */
  readonly nameBytes: Uint8Array;
  readonly nameKey: string;
  retrieved = false;
  /** The session's struct file while an fd refers to it. */
  file: KFile | null = null;

  constructor(ctx: LuoContext<K>, name: SessionName, readonly incoming: boolean, private readonly owner: LuoSessions<K>) {
    this.name = name.text;
    this.nameBytes = name.bytes;
    this.nameKey = name.key;
    this.fileSet = new LuoFileSet(ctx, this);
  }

  tokenOf(file: KFile): bigint | undefined {
    return this.fileSet.files.find((f) => f.file === file)?.token;
  }

  /** In-kernel retrieval by token (for handlers that reference a sibling file). */
  fileByToken(token: bigint): KFile {
    if (!this.incoming) throw new ErrnoError('EINVAL', 'liveupdate_get_file_incoming', 'outgoing session');
    const file = this.fileSet.retrieve(token);
    file.put(); // the caller borrows it; LUO keeps its own reference
    return file;
  }

  tokensOfFormat(family: string): bigint[] {
    return this.fileSet.files.filter((f) => f.handler.format === family).map((f) => f.token);
  }

  get sessions(): LuoSessions<K> { return this.owner; }
}

/** A session name: bytes up to the NUL, not necessarily UTF-8. */
export interface SessionName {
  readonly bytes: Uint8Array;
  /** One char per byte: a Map/compare key with strncmp semantics. */
  readonly key: string;
  /** UTF-8 decoded, for messages and hooks only. */
  readonly text: string;
}

/** 1 <= strnlen(name, 64) <= 63 */
export function sessionNameFromBytes(bytes: Uint8Array): SessionName | null {
  let len = 0;
  while (len < LIVEUPDATE_SESSION_NAME_LENGTH && len < bytes.length && bytes[len] !== 0) len++;
  if (len === 0 || len >= LIVEUPDATE_SESSION_NAME_LENGTH) return null;
  const raw = bytes.slice(0, len);
  return { bytes: raw, key: String.fromCharCode(...raw), text: new TextDecoder().decode(raw) };
}

export class LuoSessions<K> {
  readonly outgoing: Array<LuoSession<K>> = [];
  readonly incoming: Array<LuoSession<K>> = [];
  /** Name lookups (nameKey → session) so creating or retrieving n sessions is not O(n²). */
  private readonly outByName = new Map<string, LuoSession<K>>();
  private readonly inByName = new Map<string, LuoSession<K>>();
  readonly outBlocks: KhoBlockSet;
  readonly inBlocks: KhoBlockSet;
  /** Set once serialization succeeded: the rwsem stays held for write until the kexec. */
  serialized = false;

  constructor(private readonly ctx: LuoContext<K>, private readonly sessionFops: (s: LuoSession<K>) => FileOperations, private readonly kernelId: number) {
    this.outBlocks = new KhoBlockSet(ctx.mm, luoSessionSer.size, ctx.kho);
    this.inBlocks = new KhoBlockSet(ctx.mm, luoSessionSer.size, ctx.kho);
  }

  private newFile(s: LuoSession<K>): KFile {
    const file = new KFile(this.sessionFops(s), new Inode(s), s, 0o2, this.kernelId);
    s.file = file;
    return file;
  }

  /** LIVEUPDATE_IOCTL_CREATE_SESSION, in upstream order. */
  create(proc: Process, name: SessionName | null): number {
    // 1. Name check.
    if (name === null) throw new ErrnoError('EINVAL', 'LIVEUPDATE_IOCTL_CREATE_SESSION', 'name length');
    const s = new LuoSession(this.ctx, name, false, this);
    // 2. Grow the session block set for one more entry.
    this.outBlocks.grow(this.outgoing.length + 1);
    // 3. Duplicate names among outgoing sessions only; the grown block is not shrunk back.
    if (this.outByName.has(name.key)) throw new ErrnoError('EEXIST', 'LIVEUPDATE_IOCTL_CREATE_SESSION', name.text);
    this.outgoing.push(s);
    this.outByName.set(s.nameKey, s);
    // 4. The fd (O_CLOEXEC).
    try {
      const fd = proc.fdInstall(this.newFile(s), true);
      this.ctx.hooks.sessionCreated.call(s.name);
      return fd;
    } catch (e) {
      this.outgoing.pop();
      this.outByName.delete(s.nameKey);
      s.file = null;
      this.outBlocks.shrink(this.outgoing.length);
      throw e;
    }
  }

  /** LIVEUPDATE_IOCTL_RETRIEVE_SESSION: ENOENT unknown, EINVAL already retrieved. */
  retrieve(proc: Process, name: SessionName | null): number {
    const s = name === null ? undefined : this.inByName.get(name.key);
    if (!s) throw new ErrnoError('ENOENT', 'LIVEUPDATE_IOCTL_RETRIEVE_SESSION', name?.text ?? '');
    if (s.retrieved) throw new ErrnoError('EINVAL', 'LIVEUPDATE_IOCTL_RETRIEVE_SESSION', `${s.name} already retrieved`);
    const fd = proc.fdInstall(this.newFile(s), true);
    s.retrieved = true;
    this.ctx.hooks.sessionRetrieved.call(s.name);
    return fd;
  }

  /** Release of a session fd. */
  release(s: LuoSession<K>): void {
    s.file = null;
    if (s.incoming) {
      // A retrieved session runs finish; if that fails the session stays (leaked until the next update).
      try {
        s.fileSet.finish();
      } catch (e) {
        this.ctx.dmesg.log('warn', 'liveupdate', `session ${s.name}: finish on close failed (${e instanceof ErrnoError ? e.code : String(e)}); it stays until the next live update`);
        return;
      }
      this.incoming.splice(this.incoming.indexOf(s), 1);
      this.inByName.delete(s.nameKey);
      return;
    }
    // Outgoing: closing the fd is how userspace cancels. Unpreserve everything, newest first.
    s.fileSet.unpreserveAll();
    const i = this.outgoing.indexOf(s);
    if (i >= 0) this.outgoing.splice(i, 1);
    if (this.outByName.get(s.nameKey) === s) this.outByName.delete(s.nameKey);
    this.outBlocks.shrink(this.outgoing.length);
  }

  /**
   * luo_session_serialize: sessions in creation order; a failure unfreezes every earlier
   * session in reverse and returns the error (reboot fails and may be retried). Returns
   * sessions_pa (0 when there are none).
   */
  serialize(): bigint {
    const frozen: Array<LuoSession<K>> = [];
    const entries: Uint8Array[] = [];
    try {
      for (let i = 0; i < this.outgoing.length; i++) {
        const s = this.outgoing[i] as LuoSession<K>;
        if (i >= this.outBlocks.capacity) {
          this.ctx.dmesg.log('warn', 'liveupdate', `no block slot for session ${s.name}`);
          throw new ErrnoError('ENOSPC', 'liveupdate_reboot');
        }
        const set = s.fileSet.freeze();
        frozen.push(s);
        // The name goes in as the user's bytes (not re-encoded text: it need not be UTF-8).
        const entry = luoSessionSer.encode({ files: set.files, count: set.count });
        entry.set(s.nameBytes, luoSessionSer.offsets.name);
        entries.push(entry);
      }
    } catch (e) {
      for (const s of frozen.reverse()) s.fileSet.unfreezeFirst(s.fileSet.count);
      this.outBlocks.clear();
      throw e;
    }
    this.outBlocks.writeEntries(entries);
    this.serialized = true;
    return this.outgoing.length > 0 ? BigInt(this.outBlocks.headPa) : 0n;
  }

  /** Early boot: restore the incoming session chain (corruption is fatal: the caller panics). */
  setupIncoming(sessionsPa: bigint): void {
    this.inBlocks.restore(Number(sessionsPa), this.ctx.dmesg);
  }

  /**
   * luo_session_deserialize: on the first error stop, destroy the block set and return the
   * error (sessions already created are deliberately leaked). On success free the blocks.
   */
  deserialize(): void {
    try {
      for (const raw of this.inBlocks.readEntries()) {
        const e = luoSessionSer.decode(raw);
        const name = sessionNameFromBytes(raw.subarray(luoSessionSer.offsets.name, luoSessionSer.offsets.name + LIVEUPDATE_SESSION_NAME_LENGTH));
        if (name === null) throw new ErrnoError('EINVAL', 'luo_session_deserialize', 'bad session name');
        if (this.inByName.has(name.key)) throw new ErrnoError('EEXIST', 'luo_session_deserialize', name.text);
        const s = new LuoSession(this.ctx, name, true, this);
        this.incoming.push(s);
        this.inByName.set(s.nameKey, s);
        s.fileSet.deserialize(e.files, e.count);
      }
    } finally {
      this.inBlocks.destroy();
    }
  }
}
