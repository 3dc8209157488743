/**
 * The Live Update Orchestrator (kernel/liveupdate/luo_core.c): initialisation at boot,
 * /dev/liveupdate with its ioctls, handler and FLB registration, and the reboot hook.
 */
import { PAGE_SIZE } from '@liveupdate/hw';
import {
  LIVEUPDATE_HNDL_COMPAT_LENGTH, LUO_ABI_COMPATIBLE, LUO_ABI_COMPAT_LEN, LUO_KHO_ENTRY_NAME, luoSer,
} from '../abi/luo.js';
import {
  LIVEUPDATE_CMD_BASE, LIVEUPDATE_CMD_SESSION_BASE, LIVEUPDATE_IOCTL_CREATE_SESSION, LIVEUPDATE_IOCTL_RETRIEVE_SESSION,
  LIVEUPDATE_SESSION_FINISH, LIVEUPDATE_SESSION_GET_NAME, LIVEUPDATE_SESSION_PRESERVE_FD, LIVEUPDATE_SESSION_RETRIEVE_FD,
  createSessionArgs, finishArgs, getNameArgs, preserveFdArgs, retrieveFdArgs, retrieveSessionArgs,
} from '../abi/uapi.js';
import { ErrnoError } from '../errno.js';
import type { Dmesg } from '../kernel/dmesg.js';
import { Inode, KFile, type FileOperations } from '../kernel/file.js';
import type { Process } from '../kernel/process.js';
import type { KhoIn } from '../kho/kho-in.js';
import type { KhoOut } from '../kho/kho.js';
import type { Mm } from '../mm/mm.js';
import type { LuoContext } from './context.js';
import type { LuoFile } from './file.js';
import { LuoFlbs } from './flb.js';
import { createLuoHooks, type LuoHooks } from './hooks.js';
import { copyStructFromUser, copyToUser, userSize, type IoctlOp } from './ioctl.js';
import { LuoSession, LuoSessions, sessionNameFromBytes } from './session.js';
import type { LiveupdateFileHandler, LiveupdateFlb } from './types.js';

/** LUO found the incoming state unusable at early boot: upstream panics rather than leak data. */
export class KernelPanic extends Error {
  override readonly name = 'KernelPanic';
}

export interface LuoDeps<K> {
  readonly kernel: K;
  readonly kernelId: number;
  readonly mm: Mm;
  readonly dmesg: Dmesg;
  readonly khoOut: KhoOut | null;
  readonly khoIn: KhoIn | null;
  readonly khoEnabled: boolean;
  readonly liveupdate: boolean;
}

const DEV_OPS: readonly IoctlOp[] = [
  { cmd: LIVEUPDATE_IOCTL_CREATE_SESSION, size: createSessionArgs.size, minSize: createSessionArgs.size },
  { cmd: LIVEUPDATE_IOCTL_RETRIEVE_SESSION, size: retrieveSessionArgs.size, minSize: retrieveSessionArgs.size },
];
const SESSION_OPS: readonly IoctlOp[] = [
  { cmd: LIVEUPDATE_SESSION_PRESERVE_FD, size: preserveFdArgs.size, minSize: preserveFdArgs.size },
  { cmd: LIVEUPDATE_SESSION_RETRIEVE_FD, size: retrieveFdArgs.size, minSize: retrieveFdArgs.size },
  { cmd: LIVEUPDATE_SESSION_FINISH, size: finishArgs.size, minSize: finishArgs.size },
  // Upstream declares GET_NAME's slot with struct liveupdate_session_retrieve_fd: 16 bytes in.
  { cmd: LIVEUPDATE_SESSION_GET_NAME, size: retrieveFdArgs.size, minSize: retrieveFdArgs.size },
];

export class Luo<K> {
  readonly hooks: LuoHooks = createLuoHooks();
  enabled: boolean;
  /** Incremented once per live update; 1 after a cold boot. */
  liveupdateNum = 0;
  readonly sessions: LuoSessions<K>;
  readonly flbs: LuoFlbs<K>;
  private readonly ctx: LuoContext<K>;
  private luoSerPhys = 0;
  private flbPagePhys = 0;
  private incomingFlbsPa = 0n;
  private devInUse = false;
  /** The cached result of luo_session_deserialize: undefined until the first open. */
  private deserializeResult: ErrnoError | null | undefined;

  constructor(private readonly deps: LuoDeps<K>) {
    this.enabled = deps.liveupdate;
    this.flbs = new LuoFlbs(deps.kernel, this.hooks);
    this.ctx = {
      kernel: deps.kernel, mm: deps.mm, kho: { out: deps.khoOut, in: deps.khoIn }, dmesg: deps.dmesg,
      hooks: this.hooks, handlers: [], preservedIds: new Map<unknown, LuoFile<K>>(), flbs: this.flbs,
    };
    this.sessions = new LuoSessions(this.ctx, (s) => this.sessionFops(s), deps.kernelId);
  }

  get handlers(): ReadonlyArray<LiveupdateFileHandler<K>> { return this.ctx.handlers; }

  /** luo_early_startup: incoming state, or a panic if it is there but unusable. */
  earlyStartup(): void {
    const { dmesg, khoIn } = this.deps;
    if (!this.deps.khoEnabled) {
      if (this.enabled) dmesg.log('warn', 'liveupdate', 'Disabling liveupdate because KHO is disabled');
      this.enabled = false;
      return;
    }
    if (!this.enabled) return;
    if (!khoIn) return; // kho_retrieve_subtree: -ENOENT, no incoming state
    let blob: { phys: number; size: number };
    try {
      blob = khoIn.retrieveSubtree(LUO_KHO_ENTRY_NAME);
    } catch (e) {
      if (e instanceof ErrnoError && e.code === 'ENOENT') return;
      return this.restoreFail(e);
    }
    try {
      if (blob.size < luoSer.size) throw new ErrnoError('EINVAL', 'luo_early_startup', `LUO blob is ${blob.size} bytes`);
      const raw = this.deps.mm.memory.read(blob.phys, luoSer.size);
      const compat = raw.subarray(0, LUO_ABI_COMPAT_LEN);
      const want = new TextEncoder().encode(LUO_ABI_COMPATIBLE);
      // strncmp over LUO_ABI_COMPAT_LEN bytes
      for (let i = 0; i < LUO_ABI_COMPAT_LEN; i++) {
        const c = compat[i] ?? 0;
        const w = want[i] ?? 0;
        if (c !== w) throw new ErrnoError('EINVAL', 'luo_early_startup', `incompatible LUO ABI '${new TextDecoder().decode(compat).replace(/\0.*$/s, '')}'`);
        if (c === 0) break;
      }
      const ser = luoSer.decode(raw);
      this.liveupdateNum = Number(ser.liveupdate_num);
      this.sessions.setupIncoming(ser.sessions_pa);
      this.incomingFlbsPa = ser.flbs_pa;
      this.flbs.setupIncoming(this.deps.mm.memory, Number(ser.flbs_pa));
      khoIn.restoreFree(blob.phys);
      if (ser.flbs_pa !== 0n) khoIn.restoreFree(Number(ser.flbs_pa));
    } catch (e) {
      this.restoreFail(e);
    }
  }

  private restoreFail(e: unknown): never {
    this.enabled = false;
    const why = e instanceof ErrnoError ? `${e.code}: ${e.message}` : String(e);
    this.deps.dmesg.log('err', 'liveupdate', `Failed to restore incoming state (${why})`);
    throw new KernelPanic(`liveupdate: Failed to restore incoming state (${why}); continuing could leak private data`);
  }

  /** luo_late_startup → luo_state_setup: the outgoing luo_ser, FLB page, "LUO" subtree. */
  lateStartup(): void {
    if (!this.enabled) return;
    const out = this.deps.khoOut;
    if (!out) { this.enabled = false; return; }
    let ser = 0;
    let flb = 0;
    try {
      ser = out.allocPreserve(luoSer.size);
      flb = out.allocPreserve(PAGE_SIZE);
      this.liveupdateNum += 1;
      this.deps.mm.memory.write(ser, luoSer.encode({
        compatible: LUO_ABI_COMPATIBLE, liveupdate_num: BigInt(this.liveupdateNum), sessions_pa: 0n, flbs_pa: BigInt(flb),
      }));
      out.addSubtree(LUO_KHO_ENTRY_NAME, ser, luoSer.size);
    } catch (e) {
      out.unpreserveFree(flb);
      out.unpreserveFree(ser);
      this.enabled = false;
      this.deps.dmesg.log('err', 'liveupdate', `failed to set up outgoing state (${e instanceof ErrnoError ? e.code : String(e)}); disabled`);
      return;
    }
    this.luoSerPhys = ser;
    this.flbPagePhys = flb;
    this.deps.dmesg.log('info', 'liveupdate', `Live Update Orchestrator enabled, liveupdate_num ${this.liveupdateNum}`);
  }

  // ---- registration -----------------------------------------------------------------------

  /** liveupdate_register_file_handler: EOPNOTSUPP disabled, EINVAL missing op, EEXIST duplicate. */
  registerFileHandler(fh: LiveupdateFileHandler<K>): void {
    if (!this.enabled) throw new ErrnoError('EOPNOTSUPP', 'liveupdate_register_file_handler');
    const o = fh.ops as Partial<LiveupdateFileHandler<K>['ops']> | undefined;
    if (!o || typeof o.canPreserve !== 'function' || typeof o.preserve !== 'function' || typeof o.unpreserve !== 'function'
      || typeof o.retrieve !== 'function' || typeof o.finish !== 'function') {
      throw new ErrnoError('EINVAL', 'liveupdate_register_file_handler', `${fh.compatible}: a required op is missing`);
    }
    if (fh.compatible.length === 0 || new TextEncoder().encode(fh.compatible).length >= LIVEUPDATE_HNDL_COMPAT_LENGTH) {
      throw new ErrnoError('EINVAL', 'liveupdate_register_file_handler', `compatible '${fh.compatible}' must be 1..47 bytes`);
    }
    if (this.ctx.handlers.some((h) => h.compatible === fh.compatible)) throw new ErrnoError('EEXIST', 'liveupdate_register_file_handler', fh.compatible);
    this.ctx.handlers.push(fh);
  }

  /** liveupdate_unregister_file_handler: also unregisters the handler's FLBs. */
  unregisterFileHandler(fh: LiveupdateFileHandler<K>): void {
    const i = this.ctx.handlers.indexOf(fh);
    if (i < 0) return;
    this.ctx.handlers.splice(i, 1);
    this.flbs.unregisterAll(fh);
  }

  /** liveupdate_register_flb */
  registerFlb(fh: LiveupdateFileHandler<K>, flb: LiveupdateFlb<K>): void {
    if (!this.enabled) throw new ErrnoError('EOPNOTSUPP', 'liveupdate_register_flb');
    if (!this.ctx.handlers.includes(fh)) throw new ErrnoError('EINVAL', 'liveupdate_register_flb', `handler ${fh.compatible} is not registered`);
    this.flbs.register(fh, flb);
  }

  // ---- /dev/liveupdate ----------------------------------------------------------------------

  /** open: single opener (EBUSY); the first open deserializes, and its error is sticky (EIO). */
  openDevice(kernelId: number): KFile {
    if (this.devInUse) throw new ErrnoError('EBUSY', 'open', '/dev/liveupdate');
    this.devInUse = true;
    if (this.deserializeResult === undefined) {
      try {
        this.sessions.deserialize();
        this.deserializeResult = null;
      } catch (e) {
        this.deserializeResult = e instanceof ErrnoError ? e : new ErrnoError('EIO', 'luo_session_deserialize', String(e));
        this.deps.dmesg.log('err', 'liveupdate', `Failed to deserialize sessions: ${this.deserializeResult.message}`);
      }
    }
    if (this.deserializeResult) {
      this.devInUse = false;
      throw new ErrnoError('EIO', 'open', '/dev/liveupdate: incoming state could not be deserialized');
    }
    const fops: FileOperations = {
      kind: '/dev/liveupdate',
      ioctl: (_f, cmd, arg, proc) => this.devIoctl(cmd, arg, proc),
      release: () => { this.devInUse = false; },
    };
    return new KFile(fops, new Inode(this), this, 0o2, kernelId);
  }

  private devIoctl(cmd: number, arg: Uint8Array, proc: Process): number {
    const nr = cmd & 0xff;
    // 1. nr out of the table → EINVAL
    const op = DEV_OPS[nr - LIVEUPDATE_CMD_BASE];
    if (nr - LIVEUPDATE_CMD_BASE >= DEV_OPS.length || !op) throw new ErrnoError('EINVAL', 'ioctl', `nr 0x${nr.toString(16)}`);
    // 2. the size word (EFAULT), 3. the exact number (ENOIOCTLCMD → ENOTTY), 4. size and copy-in.
    const usize = userSize(arg);
    if (op.cmd !== cmd) throw new ErrnoError('ENOIOCTLCMD', 'ioctl');
    if (usize < op.minSize) throw new ErrnoError('EINVAL', 'ioctl', `size ${usize} < ${op.minSize}`);
    const k = copyStructFromUser(arg, op.size, usize);
    if (cmd === LIVEUPDATE_IOCTL_CREATE_SESSION) {
      const a = createSessionArgs.decode(k);
      const fd = this.sessions.create(proc, sessionNameFromBytes(a.name));
      this.respondFd(arg, createSessionArgs.encode({ ...a, fd }), usize, proc, fd);
    } else {
      const a = retrieveSessionArgs.decode(k);
      const fd = this.sessions.retrieve(proc, sessionNameFromBytes(a.name));
      this.respondFd(arg, retrieveSessionArgs.encode({ ...a, fd }), usize, proc, fd);
    }
    return 0;
  }

  private respondFd(arg: Uint8Array, out: Uint8Array, usize: number, proc: Process, fd: number): void {
    try {
      copyToUser(arg, out, usize);
    } catch {
      proc.close(fd);
      throw new ErrnoError('EFAULT', 'ioctl');
    }
  }

  private sessionFops(s: LuoSession<K>): FileOperations {
    return {
      kind: `anon_inode:[luo_session] ${s.name}`,
      ioctl: (_f, cmd, arg, proc) => this.sessionIoctl(s, cmd, arg, proc),
      release: () => this.sessions.release(s),
    };
  }

  private sessionIoctl(s: LuoSession<K>, cmd: number, arg: Uint8Array, proc: Process): number {
    const nr = cmd & 0xff;
    // 1. nr range
    if (nr < LIVEUPDATE_CMD_SESSION_BASE || nr - LIVEUPDATE_CMD_SESSION_BASE >= SESSION_OPS.length) {
      throw new ErrnoError('EINVAL', 'ioctl', `nr 0x${nr.toString(16)}`);
    }
    const op = SESSION_OPS[nr - LIVEUPDATE_CMD_SESSION_BASE] as IoctlOp;
    // 2. exact number
    if (op.cmd !== cmd) throw new ErrnoError('ENOIOCTLCMD', 'ioctl');
    // 3. session type: PRESERVE_FD outgoing only; RETRIEVE_FD and FINISH incoming only
    if (cmd === LIVEUPDATE_SESSION_PRESERVE_FD && s.incoming) throw new ErrnoError('EINVAL', 'ioctl', 'PRESERVE_FD on an incoming session');
    if ((cmd === LIVEUPDATE_SESSION_RETRIEVE_FD || cmd === LIVEUPDATE_SESSION_FINISH) && !s.incoming) {
      throw new ErrnoError('EINVAL', 'ioctl', 'incoming-only command on an outgoing session');
    }
    // 4. size, 5. copy-in
    const usize = userSize(arg);
    if (usize < op.minSize) throw new ErrnoError('EINVAL', 'ioctl', `size ${usize} < ${op.minSize}`);
    const k = copyStructFromUser(arg, op.size, usize);
    // 6. the serialize rwsem for read: after a successful serialization the kernel is gone.
    if (cmd === LIVEUPDATE_SESSION_PRESERVE_FD) {
      const a = preserveFdArgs.decode(k);
      s.fileSet.preserve(proc, a.fd, a.token);
      // A copy-out failure would return EFAULT with the file still preserved; nothing to copy here.
      copyToUser(arg, preserveFdArgs.encode(a), usize);
      return 0;
    }
    if (cmd === LIVEUPDATE_SESSION_RETRIEVE_FD) {
      const a = retrieveFdArgs.decode(k);
      const file = s.fileSet.retrieve(a.token);
      let fd: number;
      try {
        fd = proc.fdInstall(file, true);
      } catch (e) {
        file.put();
        throw e;
      }
      this.respondFd(arg, retrieveFdArgs.encode({ ...a, fd }), usize, proc, fd);
      return 0;
    }
    if (cmd === LIVEUPDATE_SESSION_FINISH) {
      s.fileSet.finish();
      return 0;
    }
    // GET_NAME: reserved must be 0; the name goes back in the 72-byte struct.
    const full = new Uint8Array(getNameArgs.size);
    full.set(k);
    const a = getNameArgs.decode(full);
    if (a.reserved !== 0) throw new ErrnoError('EINVAL', 'ioctl', 'GET_NAME reserved != 0');
    const name = new Uint8Array(64);
    name.set(s.nameBytes);
    copyToUser(arg, getNameArgs.encode({ size: a.size, reserved: 0, name }), Math.min(usize, getNameArgs.size));
    return 0;
  }

  // ---- reboot -------------------------------------------------------------------------------

  /** liveupdate_reboot: serialize sessions (may fail after a full rollback), then FLBs (cannot fail). */
  reboot(): void {
    if (!this.enabled) return;
    const filesTotal = this.sessions.outgoing.reduce((n, s) => n + s.fileSet.count, 0);
    this.hooks.reboot.call({ phase: 'freeze', sessions: this.sessions.outgoing.length, files: filesTotal });
    let sessionsPa: bigint;
    try {
      sessionsPa = this.sessions.serialize();
    } catch (e) {
      this.hooks.reboot.call({ phase: 'rollback', sessions: this.sessions.outgoing.length, files: filesTotal });
      throw e;
    }
    const mem = this.deps.mm.memory;
    mem.writeU64(this.luoSerPhys + luoSer.offsets.sessions_pa, sessionsPa);
    const n = this.flbs.serialize(mem, this.flbPagePhys);
    this.hooks.reboot.call({ phase: 'serialize-flbs', sessions: this.sessions.outgoing.length, files: n });
  }

  /** Incoming FLB page address (for reports). */
  get incomingFlbPage(): bigint { return this.incomingFlbsPa; }
}
