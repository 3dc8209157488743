export {
  definePlugin, defineFileHandler, defineFlb, isPlugin,
  type Plugin, type PluginDefinition, type FileHandlerDefinition, type FlbDefinition, type FormatDeclaration,
  type Dependency, type HandlerContext, type PluginBootHooks, type FlbContext, type PluginKernelApi,
} from './plugin.js';
export {
  defineObjectKind, defineSection, defineDecoder,
  type PluginTools, type ObjectKind, type ScenarioObjectSpec, type ScenarioSection, type SessionStepContext, type MachineStepContext,
  type CreatedObject, type RestoredObject, type ObjectCheck, type FormatDecoder, type DecodeContext, type DecoderTarget, type Decoded, type DecodedValue,
  type OwnedPages, type BuiltinScenario, type JsonSchema,
} from './tools.js';
export {
  validateManifest, validateScenario, parseScenario, parseScenarioJson, checkScenarioData, composeScenarioSchema, sessionObjects, assertManifest, lineOfPointer,
  SchemaError, scenarioSchema, SCENARIO_EXPECTATIONS,
  type PluginManifest, type ManifestFormat, type Scenario, type ScenarioSession, type ScenarioObject, type ScenarioFile, type ScenarioSide,
  type ScenarioExpectation, type ScenarioVocabulary, type SchemaIssue,
} from './schemas.js';
export { pickVersion, intersectRanges, preflight, assertPreflight, type PreflightReport, type PreflightEntry } from './versions.js';
export { KhoXarray, type XarrayKey, type XarrayValue } from './xarray.js';
export * as xarrayAbi from './abi/xarray.js';
export { openLiveupdate, createSession, retrieveSession, preserveFd, retrieveFd, finishSession, getName } from './client.js';
export { SDK_VERSION } from './version.js';
export { parseSizeStrict, isSize, SizeFormatError, SIZE_UNITS_HELP, MAX_SIZE } from './size.js';
export { checkSdkCopy, DuplicateSdkError, SDK_IDENTITY, type SdkIdentity } from './copies.js';
/** The page size of the emulated machine: handlers size their allocations and headers in it. */
export { PAGE_SIZE, PAGE_SHIFT } from '@liveupdate/hw';
// Building blocks and kernel types re-exported so plugins need only the SDK.
export {
  ErrnoError, ERRNO, KernelDeadError, isErrno, errnoOf, KhoBlockSet, khoPreserveVmalloc, khoUnpreserveVmalloc, khoRestoreVmalloc, vzalloc, vfree, VmArea,
  defineStruct, u8, u16, u32, s32, u64, bytes, cstring, StructError, KFile, Inode, compatibleFor, versionOf,
  FormatNegotiationError, PluginLoadError, KernelPanic, Kernel, boot, abi,
  type ErrnoCode, type StructCodec, type StructValue, type FieldSpec, type FileOperations, type Process, type KhoVmallocDesc,
  type LuoSessionRef, type RuntimePlugin, type KernelManifest, type FormatSpec, type Folio, type BootConfig, type KexecConfig,
  type BootHooks, type ShutdownHooks, type BootPhase, type ShutdownPhase, type TapView,
} from '@liveupdate/runtime';
/** FDT building blocks for plugins that hand state over in a KHO subtree (libfdt's sequential write and read). */
export { fdtCreate, fdtParse, fdtNode, fdtCheckHeader, fdtTotalSize, FdtError, propString, propU64LE, readPropString, readPropU64LE, type FdtNode } from '@liveupdate/runtime';
export { BOOT_PHASE_NS, SHUTDOWN_PHASE_NS, OP_NS, chargeOp, type KernelOp } from '@liveupdate/runtime';
/** npm's semver, the one copy the runtime negotiates formats with (handlers compare versions with it). */
export { semver, remembered } from '@liveupdate/runtime';
export { KhoSlab } from './slab.js';
/** CRC-32 (IEEE 802.3 / zlib) for the integrity checks the project's own formats carry. */
export { CRC32_START, Crc32, crc32, crc32Final, crc32Identity, crc32U32, crc32Update, crc32Word, identityCrc32, identityProblem } from './crc32.js';
