/**
 * What a plugin author writes. A plugin is a plain object from a factory (as Vite and Rollup
 * plugins are); `definePlugin` validates its manifest once, up front, and turns its file
 * handlers into LUO handler ops tables whose formats are negotiated before every kexec.
 */
import {
  compatibleFor, ErrnoError, newestVersion, tapView, versionOf, versionSatisfies, type BootPhase, type ShutdownPhase, type TapView,
  type FormatSpec, type Kernel, type KFile, type LiveupdateFileHandler, type LiveupdateFileOpArgs,
  type LiveupdateFlb, type LiveupdateFlbOpArgs, type LuoSessionRef, type RuntimePlugin,
} from '@liveupdate/runtime';
import { assertManifest, type PluginManifest } from './schemas.js';
import type { PluginTools } from './tools.js';
import { SDK_IDENTITY, type SdkIdentity } from './copies.js';

/** A format family and the versions one handler writes and reads. */
export interface FormatDeclaration {
  readonly family: string;
  /** Concrete versions this handler can write; the newest is the default. */
  readonly writes: readonly string[];
  /** What it can read, e.g. '>=1.0.0 <4.0.0'. */
  readonly reads: string;
  /** Upstream compatible strings per major: { 2: 'memfd-v2' } writes 2.0.0 byte-exact as upstream does. */
  readonly aliases?: Readonly<Record<number, string>>;
}

/** A file this handler's files cannot go without, in the same session (checked at freeze). */
export interface Dependency {
  readonly family: string;
  readonly sameSession: true;
  readonly reason?: string;
}

/** One call of a handler op: the kernel's liveupdate_file_op_args plus the format version in force. */
export interface HandlerContext<S> {
  readonly kernel: Kernel;
  readonly session: LuoSessionRef;
  readonly token: bigint;
  /**
   * preserve/unpreserve: the newest version this handler writes; freeze/unfreeze: the version
   * negotiated with the target kernel; retrieve/canFinish/finish: the version that was handed over.
   */
  readonly version: string;
  /** 0 not attempted, 1 retrieved, < 0 the saved -errno. */
  readonly retrieveStatus: number;
  file: KFile | null;
  /** The u64 handed over in luo_file_ser.data (usually the physical address of your struct). */
  data: bigint;
  /** Runtime-only state between preserve and freeze/unpreserve; never crosses the kexec. */
  state: S | undefined;
}

export interface FileHandlerDefinition<S = unknown> {
  readonly format: FormatDeclaration;
  readonly requires?: readonly Dependency[];
  canPreserve(file: KFile, kernel: Kernel): boolean;
  preserve(ctx: HandlerContext<S>): void;
  unpreserve(ctx: HandlerContext<S>): void;
  /** Write the final handover in ctx.version (the negotiated one). */
  freeze?(ctx: HandlerContext<S>): void;
  unfreeze?(ctx: HandlerContext<S>): void;
  /** Rebuild the file from the bytes of ctx.version and set ctx.file. */
  retrieve(ctx: HandlerContext<S>): void;
  canFinish?(ctx: HandlerContext<S>): boolean;
  /** Release what was never retrieved (retrieveStatus 0) and the handover metadata. */
  finish(ctx: HandlerContext<S>): void;
  /** Identity for the double-preservation check (EBUSY); default: the struct file. */
  getId?(file: KFile): unknown;
}

/** The identity helper: types the definition, checks it once. */
export function defineFileHandler<S>(def: FileHandlerDefinition<S>): FileHandlerDefinition<S> {
  for (const op of ['canPreserve', 'preserve', 'unpreserve', 'retrieve', 'finish'] as const) {
    if (typeof def[op] !== 'function') throw new TypeError(`file handler '${def.format?.family}': required op '${op}' is missing`);
  }
  return def;
}

export interface FlbContext<O> {
  readonly kernel: Kernel;
  data: bigint;
  obj: O | undefined;
}

export interface FlbDefinition<O = unknown> {
  /** At most 47 characters; matched exactly after the kexec. */
  readonly compatible: string;
  preserve(ctx: FlbContext<O>): void;
  unpreserve(ctx: FlbContext<O>): void;
  retrieve(ctx: FlbContext<O>): void;
  finish(ctx: FlbContext<O>): void;
}

export function defineFlb<O>(def: FlbDefinition<O>): FlbDefinition<O> {
  for (const op of ['preserve', 'unpreserve', 'retrieve', 'finish'] as const) {
    if (typeof def[op] !== 'function') throw new TypeError(`FLB '${def.compatible}': required op '${op}' is missing`);
  }
  return def;
}

export interface PluginDefinition {
  readonly name: string;
  readonly version: string;
  /** The SDK range this plugin was built against. */
  readonly sdk: string;
  readonly handlers?: ReadonlyArray<FileHandlerDefinition<never>>;
  /** FLBs and the handlers (by format family) that depend on them. */
  readonly flbs?: ReadonlyArray<{ readonly flb: FlbDefinition<never>; readonly handlers: readonly string[] }>;
  /**
   * Link time, before the kernel boots: tap its boot phases (memblock → luoEarly → iommuInit →
   * pciEnumerate → probe → late) and kexec shutdown phases (reboot → deviceShutdown →
   * syscoreShutdown → beforeJump). Taps run under the plugin's name.
   */
  init?(kernel: Kernel, hooks: PluginBootHooks): void;
  /** Anything else at late_initcall: devices, syscalls, hooks, pools sized from incoming FLB data. */
  setup?(kernel: Kernel, api: PluginKernelApi): void;
  /** What run, inspect, report, fuzz and matrix need from this plugin (scenario vocabulary, decoders, fuzz targets). */
  readonly tools?: PluginTools;
}

/** Tap-only views of a kernel's boot and shutdown phases. */
export interface PluginBootHooks {
  readonly boot: TapView<Kernel, BootPhase>;
  readonly shutdown: TapView<Kernel, ShutdownPhase>;
}

/** What a plugin's setup may ask of LUO about its own FLBs. */
export interface PluginKernelApi {
  /** The incoming object of this plugin's FLB (retrieved on demand), or undefined when none was handed over. */
  flbIncoming(compatible: string): unknown;
  /** The outgoing object of this plugin's FLB, or undefined before its first dependent file. */
  flbOutgoing(compatible: string): unknown;
}

/** A plugin as the runtime loads it, with its manifest as data. */
export interface Plugin extends RuntimePlugin {
  readonly manifest: PluginManifest;
  /** The plugin surface for tools (empty when the plugin declares none). */
  readonly tools: PluginTools;
  /** The copy of the SDK and runtime that made this plugin (see checkSdkCopy). */
  readonly sdkIdentity: SdkIdentity;
  /** The LUO handler of a format family in a given kernel (for tests and cross-plugin lookups). */
  handlerIn(kernel: Kernel, family: string): LiveupdateFileHandler<Kernel> | undefined;
}

const PLUGIN_BRAND = Symbol.for('liveupdate.plugin');

export function isPlugin(x: unknown): x is Plugin {
  return typeof x === 'object' && x !== null && (x as Record<symbol, unknown>)[PLUGIN_BRAND] === true;
}

function newest(format: FormatDeclaration): string {
  return newestVersion(format.writes) as string;
}

/** The LUO handler for one definition in one kernel. */
function toLuoHandler<S>(plugin: string, def: FileHandlerDefinition<S>, kernel: Kernel): LiveupdateFileHandler<Kernel> {
  const { format } = def;
  const top = newest(format);
  const ctxOf = (a: LiveupdateFileOpArgs<Kernel>, version: string): HandlerContext<S> => ({
    kernel: a.kernel, session: a.session, token: a.token, version, retrieveStatus: a.retrieveStatus,
    file: a.file, data: a.serializedData, state: a.privateData as S | undefined,
  });
  const writeBack = (a: LiveupdateFileOpArgs<Kernel>, c: HandlerContext<S>): void => {
    a.file = c.file;
    a.serializedData = c.data;
    a.privateData = c.state;
  };
  const incomingVersion = (a: LiveupdateFileOpArgs<Kernel>): string => {
    const v = versionOf(format, a.compatible);
    if (v === null) throw new ErrnoError('EINVAL', 'retrieve', `${plugin}: '${a.compatible}' is not a ${format.family} format`);
    return v;
  };
  const run = (a: LiveupdateFileOpArgs<Kernel>, version: string, op: (c: HandlerContext<S>) => void): void => {
    const c = ctxOf(a, version);
    op(c);
    writeBack(a, c);
  };
  const outVersion = (): string => kernel.formats.chosen(format.family) ?? top;
  return {
    compatible: compatibleFor(format, top),
    owner: plugin,
    format: format.family,
    accepts: (compatible) => {
      const v = versionOf(format, compatible);
      return v !== null && versionSatisfies(v, format.reads);
    },
    ops: {
      canPreserve: (_h, file) => def.canPreserve(file, kernel),
      preserve: (a) => run(a, top, (c) => def.preserve(c)),
      unpreserve: (a) => run(a, outVersion(), (c) => def.unpreserve(c)),
      freeze: (a) => {
        const version = outVersion();
        for (const dep of def.requires ?? []) {
          // A declared dependency missing from the session fails the freeze, so the kexec fails.
          if (a.session.tokensOfFormat(dep.family).length === 0) {
            throw new ErrnoError('ENOENT', 'freeze', `${plugin}: needs a '${dep.family}' file in session ${a.session.name}${dep.reason ? ` (${dep.reason})` : ''}`);
          }
        }
        a.compatible = compatibleFor(format, version);
        if (def.freeze) run(a, version, (c) => (def.freeze as (c: HandlerContext<S>) => void)(c));
      },
      unfreeze: (a) => { if (def.unfreeze) run(a, outVersion(), (c) => (def.unfreeze as (c: HandlerContext<S>) => void)(c)); },
      retrieve: (a) => run(a, incomingVersion(a), (c) => def.retrieve(c)),
      canFinish: (a) => (def.canFinish ? def.canFinish(ctxOf(a, incomingVersion(a))) : true),
      finish: (a) => run(a, incomingVersion(a), (c) => def.finish(c)),
      ...(def.getId ? { getId: def.getId } : {}),
    },
  };
}

function toLuoFlb<O>(plugin: string, def: FlbDefinition<O>): LiveupdateFlb<Kernel> {
  const wrap = (op: (c: FlbContext<O>) => void) => (a: LiveupdateFlbOpArgs<Kernel>): void => {
    const c: FlbContext<O> = { kernel: a.kernel, data: a.data, obj: a.obj as O | undefined };
    op(c);
    a.data = c.data;
    a.obj = c.obj;
  };
  return {
    compatible: def.compatible, owner: plugin,
    ops: { preserve: wrap((c) => def.preserve(c)), unpreserve: wrap((c) => def.unpreserve(c)), retrieve: wrap((c) => def.retrieve(c)), finish: wrap((c) => def.finish(c)) },
  };
}

/**
 * Validate a plugin definition (manifest errors name the field) and make it loadable by the
 * runtime: formats become the kernel's manifest entries, handlers and FLBs are registered at
 * late_initcall in declaration order.
 */
export function definePlugin(def: PluginDefinition): Plugin {
  const formats: FormatSpec[] = (def.handlers ?? []).map((h) => ({
    family: h.format.family, writes: [...h.format.writes], reads: h.format.reads, owner: def.name,
    ...(h.format.aliases ? { aliases: h.format.aliases } : {}),
  }));
  const manifest: PluginManifest = {
    name: def.name, version: def.version, sdk: def.sdk,
    formats: formats.map((f) => ({ family: f.family, writes: [...f.writes], reads: f.reads, ...(f.aliases ? { aliases: Object.fromEntries(Object.entries(f.aliases)) } : {}) })),
    requires: (def.handlers ?? []).flatMap((h) => (h.requires ?? []).map((r) => ({ from: h.format.family, family: r.family, sameSession: true }))),
  };
  assertManifest(manifest);
  const perKernel = new WeakMap<Kernel, Map<string, LiveupdateFileHandler<Kernel>>>();
  const plugin: Plugin & { [PLUGIN_BRAND]: true } = {
    [PLUGIN_BRAND]: true,
    name: def.name,
    version: def.version,
    sdk: def.sdk,
    formats,
    manifest,
    tools: def.tools ?? {},
    sdkIdentity: SDK_IDENTITY,
    handlerIn: (kernel, family) => perKernel.get(kernel)?.get(family),
    ...(def.init ? {
      init(kernel: Kernel): void {
        (def.init as NonNullable<PluginDefinition['init']>)(kernel, {
          boot: tapView(kernel.bootHooks, def.name), shutdown: tapView(kernel.shutdownHooks, def.name),
        });
      },
    } : {}),
    setup(kernel: Kernel): void {
      const mine = new Map<string, LiveupdateFileHandler<Kernel>>();
      const flbs = new Map<string, LiveupdateFlb<Kernel>>();
      perKernel.set(kernel, mine);
      if (kernel.luo.enabled) {
        for (const h of def.handlers ?? []) {
          const luoHandler = toLuoHandler(def.name, h as FileHandlerDefinition<unknown>, kernel);
          kernel.luo.registerFileHandler(luoHandler);
          mine.set(h.format.family, luoHandler);
        }
        for (const { flb, handlers } of def.flbs ?? []) {
          const luoFlb = toLuoFlb(def.name, flb as FlbDefinition<unknown>);
          flbs.set(flb.compatible, luoFlb);
          for (const family of handlers) {
            const fh = mine.get(family);
            if (!fh) throw new TypeError(`plugin ${def.name}: FLB ${flb.compatible} names unknown handler family '${family}'`);
            kernel.luo.registerFlb(fh, luoFlb);
          }
        }
      }
      def.setup?.(kernel, {
        flbIncoming: (compatible) => {
          const f = flbs.get(compatible);
          // None handed over (a cold boot, or an update that did not use it): no exception per boot.
          if (!f || !kernel.luo.flbs.hasIncoming(f)) return undefined;
          try {
            const obj = kernel.luo.flbs.getIncoming(f);
            kernel.luo.flbs.putIncoming(f);
            return obj;
          } catch (e) {
            if (e instanceof ErrnoError && (e.code === 'ENODATA' || e.code === 'ENOENT')) return undefined;
            throw e;
          }
        },
        flbOutgoing: (compatible) => {
          const f = flbs.get(compatible);
          return f ? kernel.luo.flbs.getOutgoing(f) : undefined;
        },
      });
    },
  };
  return plugin;
}
