/**
 * The plugin surface for tools: everything `liveupdate run`, `inspect`, `report`, `fuzz` and
 * `matrix` need from a plugin, so the tools name no plugin and a third party's plugin is a
 * first-class citizen. A plugin hands it over as `tools` in `definePlugin({...})`; the
 * factory returns it as `plugin.tools`, one plain object (as Vite and Rollup plugins do).
 *
 * Three parts:
 * - scenario vocabulary: object kinds that sessions hold (`objects`: files, VMs, devices), and
 *   machine-level sections (`sections`: PCI topology, a hypervisor's partitions) with their
 *   JSON-schema fragments and the steps that create, fill, preserve, retrieve and verify them;
 * - decoders: for every format family the plugin writes (and its FLBs and KHO subtrees), a
 *   decoder from bytes alone that returns fields, problems and the handover pages it owns;
 * - fuzz targets: the pages a decoder returns, with the words in them that are pointers,
 *   counts or indices, so the fuzzer mutates every byte a plugin owns with structure.
 *
 * Nothing here crosses a kexec: `create` returns what the *test* remembers (an expectation
 * as plain data), and the incoming side's plugin checks the bytes it retrieved against it.
 */
import type { Machine, PhysMemory } from '@liveupdate/hw';
import type { Kernel, Process } from '@liveupdate/runtime';

/** A JSON-schema fragment (plain data; composed by the SDK into the scenario schema). */
export type JsonSchema = { readonly [keyword: string]: unknown };

/** The outcome of checking one object after the update. */
export interface ObjectCheck {
  readonly ok: boolean;
  /** One line for the summary: "4,096 pages compared byte for byte". */
  readonly summary: string;
  /** Each wrong byte, missing page or broken rule, as a sentence. Empty when ok. */
  readonly problems: readonly string[];
  /** Counters the report adds up across objects (e.g. bytesCompared, syntheticPages, holePages). */
  readonly counts?: Readonly<Record<string, number>>;
}

/** Where a step runs: one session of one VMM, in kernel A (create) or kernel B (restore). */
export interface SessionStepContext {
  readonly kernel: Kernel;
  readonly machine: Machine;
  /** The session's name in the scenario. */
  readonly session: string;
  /** The VMM process that owns this session's objects. */
  readonly vmm: Process;
  /** The session fd in `vmm` (created in kernel A, retrieved in kernel B). */
  readonly sessionFd: number;
  /** Kernel A: PRESERVE_FD of `fd` (in `vmm`) under `token`. */
  preserve(fd: number, token: number): void;
  /** Kernel B: RETRIEVE_FD of `token`; throws the ErrnoError upstream returns. */
  retrieve(token: number): number;
  /** What an earlier object of this session (by token) returned from create/restore: lets a VFIO device find its iommufd. */
  peer(token: number): unknown;
  /** The section state a plugin's machine-level section returned (by section key), e.g. the PCI topology. */
  section(key: string): unknown;
  /** Progress: n more work units done (see ObjectKind.units). */
  tick(n: number): void;
  /** A progress line for the log. */
  note(line: string): void;
}

/** What `create` returns: the fds it made (for peers) and what the test expects back, as plain data. */
export interface CreatedObject<E> {
  /** The fd preserved under the object's token (and any other fds the object owns). */
  readonly fd: number;
  /** Pages resident (or other units) when preserved, for the summary. */
  readonly preservedPages?: number;
  /** What restore checks against; plain data (it may be handed to another version's plugin). */
  readonly expect: E;
}

export interface RestoredObject {
  readonly fd: number;
  readonly restoredPages?: number;
  readonly check: ObjectCheck;
}

/**
 * One kind of object a plugin adds to a scenario's sessions. A scenario names it by `type`;
 * `token` is common to every kind. Kernel A's plugin creates and preserves it; kernel B's
 * plugin (maybe another version) retrieves and checks it against `expect`.
 */
export interface ObjectKind<Spec extends ScenarioObjectSpec = ScenarioObjectSpec, E = unknown> {
  /** The scenario's `type` (e.g. 'memfd', 'kvm-vm', 'vfio-device'). Unique across loaded plugins. */
  readonly type: string;
  readonly description: string;
  /** JSON-schema `properties` of this kind besides `type` and `token`. */
  readonly properties: Readonly<Record<string, JsonSchema>>;
  readonly required?: readonly string[];
  /**
   * Checks the schema cannot express (a size in whole huge pages), run when the scenario is
   * loaded: each problem names the field (relative to the object, '' for the object itself).
   */
  validate?(spec: Spec): ReadonlyArray<{ readonly field: string; readonly message: string }>;
  /** Kernel command-line words the scenario's objects of this kind need (e.g. 'hugepagesz=2M hugepages=8'). */
  cmdline?(specs: readonly Spec[]): string;
  /** Host memory (bytes) creating this object costs the tool, so the runner can refuse up front. */
  hostBytes?(spec: Spec): number;
  /** Work units for progress bars (pages written, pages checked). */
  units?(spec: Spec): number;
  /** Whether this plugin build can preserve this object at all (old releases without hugeTLB: false, reason). */
  supports?(spec: Spec): true | string;
  /** Kernel A: create, fill and PRESERVE_FD the object. */
  create(ctx: SessionStepContext, spec: Spec): CreatedObject<E>;
  /** Kernel B: RETRIEVE_FD it and check every byte against `expect`. */
  restore(ctx: SessionStepContext, spec: Spec, expect: E): RestoredObject;
}

/** Every session object in a scenario has these two; the rest is the kind's. */
export interface ScenarioObjectSpec {
  readonly type: string;
  readonly token: number;
  readonly [field: string]: unknown;
}

/** Context of machine-level steps (no session): PCI topology, hypervisor partitions, vCPUs. */
export interface MachineStepContext {
  readonly kernel: Kernel;
  readonly machine: Machine;
  /** A process the harness exits on cleanup. */
  spawn(name: string): Process;
  note(line: string): void;
}

/**
 * A top-level scenario section a plugin owns (`"pci": {...}`, `"mshv": {...}`): hardware added
 * before kernel A boots, work around the sessions, checks after the update. State is what the
 * test remembers; it never crosses the kexec.
 */
export interface ScenarioSection<Spec = unknown, State = unknown> {
  /** The top-level key in the scenario. */
  readonly key: string;
  readonly description: string;
  readonly schema: JsonSchema;
  cmdline?(spec: Spec): string;
  /** Before kernel A boots: add devices, IOMMUs, a hypervisor to the machine. */
  machine?(machine: Machine, spec: Spec): State;
  /** Kernel A, before the sessions' objects are created. */
  before?(ctx: MachineStepContext, spec: Spec, state: State): void;
  /** Kernel A, after every session object is preserved, right before the kexec. */
  beforeKexec?(ctx: MachineStepContext, spec: Spec, state: State): void;
  /** Kernel B, after every session was restored and finished: device, DMA and hypervisor checks. */
  after?(ctx: MachineStepContext, spec: Spec, state: State): readonly ObjectCheck[];
}

/** One decoded field of a handover structure. */
export type DecodedValue = string | number | bigint | boolean | null;

/** A handover page (or run of pages) a plugin owns, for dumps, memory maps and the fuzzer. */
export interface OwnedPages {
  readonly pfn: number;
  /** Pages in the run (default 1). */
  readonly count?: number;
  /** Groups runs in the fuzz summary and the memory map ('memfd header', 'memfd xarray node'). */
  readonly structure: string;
  /** This page's role ('memfd header (vm-web token 1)'). */
  readonly role: string;
  /** Words with meaning, for structure-aware mutation: byte offset in the first page, width, what it is. */
  readonly words?: ReadonlyArray<{ readonly offset: number; readonly size: 4 | 8; readonly kind: 'pointer' | 'count' | 'index' | 'flags' }>;
  /**
   * The layout is upstream's (mainline, a posted series or the hardware's, such as IOMMU page
   * tables) and carries no integrity check: a corruption may be served as upstream serves it.
   * The fuzzer reports wrong answers after corrupting such a page apart from those in the
   * plugin's own formats, which must detect any corruption. Default: the plugin's own format.
   */
  readonly upstream?: boolean;
}

/** What a decoder found in the bytes. Problems include checksum mismatches: `inspect` fails on any. */
export interface Decoded {
  readonly fields: Readonly<Record<string, DecodedValue>>;
  readonly problems: readonly string[];
  /** Metadata pages of the handover this object owns. */
  readonly pages: readonly OwnedPages[];
  /** Data pages (guest memory, folios) the object hands over, as [startPfn, endPfn) runs. */
  readonly dataRuns?: ReadonlyArray<readonly [number, number]>;
}

/** Which bytes a decoder reads: a LUO file's data, an FLB's data, or a KHO subtree. */
export type DecoderTarget =
  | { readonly kind: 'file'; readonly family: string }
  | { readonly kind: 'flb'; readonly compatible: string }
  | { readonly kind: 'subtree'; readonly name: string };

/** What the caller knows of the bytes it hands a decoder. */
export interface DecodeContext {
  /** How problems name the object ('session vm0 token 1', 'FLB iommu-liveupdate'). */
  readonly label: string;
  /** A LUO file's session name and token (file decoders), for formats bound to them. */
  readonly file?: { readonly session: string; readonly token: bigint };
}

export interface FormatDecoder {
  readonly target: DecoderTarget;
  /**
   * Decode from bytes alone. `data` is luo_file_ser.data / the FLB's data / the subtree's FDT
   * address; `version` is the format version the compatible string names (null for subtrees
   * and FLBs without one). Must not throw on hostile bytes: problems instead.
   */
  decode(memory: PhysMemory, data: bigint, version: string | null, context: DecodeContext): Decoded;
}

/** A scenario shipped with the plugin (`liveupdate run --scenario <name>`). */
export interface BuiltinScenario {
  readonly name: string;
  readonly description: string;
  /** The scenario document (validated like a file). */
  readonly scenario: Readonly<Record<string, unknown>>;
  /** The commands that run it when given no scenario ('run': `liveupdate run`; 'matrix', 'fuzz'). */
  readonly defaultFor?: ReadonlyArray<'run' | 'matrix' | 'fuzz'>;
}

/** The plugin surface for tools. */
export interface PluginTools {
  // <never, unknown> admits every kind's spec: its steps are methods, so their parameters are bivariant
  // and any expectation or state it returns (a return type must be a supertype: unknown).
  readonly objects?: ReadonlyArray<ObjectKind<never, unknown>>;
  readonly sections?: ReadonlyArray<ScenarioSection<never, unknown>>;
  readonly decoders?: readonly FormatDecoder[];
  readonly scenarios?: readonly BuiltinScenario[];
}

/** The identity helpers: types for a plugin's tools. */
export function defineObjectKind<Spec extends ScenarioObjectSpec, E>(kind: ObjectKind<Spec, E>): ObjectKind<Spec, E> {
  if (!/^[a-z][a-z0-9-]{0,31}$/.test(kind.type)) throw new TypeError(`object kind '${kind.type}': type must match ^[a-z][a-z0-9-]{0,31}$`);
  for (const op of ['create', 'restore'] as const) {
    if (typeof kind[op] !== 'function') throw new TypeError(`object kind '${kind.type}': required step '${op}' is missing`);
  }
  return kind;
}

export function defineSection<Spec, State>(section: ScenarioSection<Spec, State>): ScenarioSection<Spec, State> {
  if (!/^[a-z][a-z0-9-]{0,31}$/.test(section.key)) throw new TypeError(`scenario section '${section.key}': key must match ^[a-z][a-z0-9-]{0,31}$`);
  return section;
}

export function defineDecoder(decoder: FormatDecoder): FormatDecoder {
  if (typeof decoder.decode !== 'function') throw new TypeError('decoder: decode() is missing');
  return decoder;
}
