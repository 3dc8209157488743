/**
 * The LUO handler interfaces (include/linux/liveupdate.h): a file handler is an ops table
 * with a compatible string; an FLB is global state bound to the lifecycle of the files that
 * depend on it. Ops signal failure by throwing ErrnoError.
 */
import type { KFile } from '../kernel/file.js';

/** What a handler may ask of LUO about the session it is called for (cross-file APIs). */
export interface LuoSessionRef {
  readonly name: string;
  readonly incoming: boolean;
  /** liveupdate_get_token_outgoing: the token of another file preserved in this session. */
  tokenOf(file: KFile): bigint | undefined;
  /** liveupdate_get_file_incoming: an incoming file of this session by token, retrieving it on demand. */
  fileByToken(token: bigint): KFile;
  /** Tokens of this session's files whose handler writes format `family` (for declared dependencies). */
  tokensOfFormat(family: string): bigint[];
}

export interface LiveupdateFileOpArgs<K = unknown> {
  readonly handler: LiveupdateFileHandler<K>;
  readonly session: LuoSessionRef;
  /** The kernel the op runs in (KHO, memory, processes). */
  readonly kernel: K;
  readonly token: bigint;
  /**
   * The compatible string of this file's entry: the one it was handed over under (incoming),
   * or the one it will be written under (outgoing; a versioned handler's freeze may change it
   * to the negotiated format's string).
   */
  compatible: string;
  /** 0: not attempted; 1: retrieved; < 0: the saved -errno (sticky). */
  retrieveStatus: number;
  /** In for preserve/freeze/unpreserve; out for retrieve. */
  file: KFile | null;
  /** The u64 the handler hands over (luo_file_ser.data). */
  serializedData: bigint;
  /** Runtime-only state between preserve and unpreserve/freeze; never crosses the kexec. */
  privateData: unknown;
}

export interface LiveupdateFileOps<K = unknown> {
  canPreserve(handler: LiveupdateFileHandler<K>, file: KFile): boolean;
  preserve(args: LiveupdateFileOpArgs<K>): void;
  unpreserve(args: LiveupdateFileOpArgs<K>): void;
  freeze?(args: LiveupdateFileOpArgs<K>): void;
  unfreeze?(args: LiveupdateFileOpArgs<K>): void;
  retrieve(args: LiveupdateFileOpArgs<K>): void;
  canFinish?(args: LiveupdateFileOpArgs<K>): boolean;
  finish(args: LiveupdateFileOpArgs<K>): void;
  /** Identity for the double-preservation check; default: the struct file. */
  getId?(file: KFile): unknown;
}

export interface LiveupdateFileHandler<K = unknown> {
  /** At most 47 characters; matched exactly after the kexec. */
  readonly compatible: string;
  readonly ops: LiveupdateFileOps<K>;
  /** The plugin that owns it: named in errors, hooks and the timeline. */
  readonly owner?: string;
  /** The format family it writes (versions negotiated before the kexec). */
  readonly format?: string;
  /**
   * Beyond upstream's exact strcmp: other compatible strings this handler reads (a versioned
   * handler accepts 'family@x.y.z' within its read range). Exact matches are tried first.
   */
  accepts?(compatible: string): boolean;
}

export interface LiveupdateFlbOpArgs<K = unknown> {
  readonly flb: LiveupdateFlb<K>;
  readonly kernel: K;
  data: bigint;
  obj: unknown;
}

export interface LiveupdateFlbOps<K = unknown> {
  preserve(args: LiveupdateFlbOpArgs<K>): void;
  unpreserve(args: LiveupdateFlbOpArgs<K>): void;
  retrieve(args: LiveupdateFlbOpArgs<K>): void;
  finish(args: LiveupdateFlbOpArgs<K>): void;
}

export interface LiveupdateFlb<K = unknown> {
  readonly compatible: string;
  readonly ops: LiveupdateFlbOps<K>;
  readonly owner?: string;
}

export type FileOpName = 'canPreserve' | 'preserve' | 'unpreserve' | 'freeze' | 'unfreeze' | 'retrieve' | 'canFinish' | 'finish';
export type FlbOpName = 'preserve' | 'unpreserve' | 'retrieve' | 'finish';
