export { ErrnoError, ERRNO, KernelDeadError, isErrno, errnoOf, type ErrnoCode } from './errno.js';
export { Kernel, boot, BootError, type BootConfig, type KexecConfig } from './kernel/kernel.js';
export { Dmesg, type LogLine, type LogLevel } from './kernel/dmesg.js';
export { Debugfs, type DebugfsDir } from './kernel/debugfs.js';
export { parseBootOptions, parseKhoScratch, kstrtobool, memparse, type BootOptions, type ScratchSizing } from './kernel/cmdline.js';
export { KhoOut, splitRun, folioPhys, type Folio, type Subtree } from './kho/kho.js';
export { KhoIn, khoPopulate, type KhoPopulated } from './kho/kho-in.js';
export { KhoBlockSet } from './kho/block.js';
export { khoPreserveVmalloc, khoUnpreserveVmalloc, khoRestoreVmalloc, type KhoVmallocDesc } from './kho/vmalloc.js';
export { encodeKey, decodeKey, tableIndex, bitmapIndex, walkTracker } from './kho/radix.js';
export { type ScratchArea } from './kho/scratch.js';
export { type KexecMetadata } from './kho/metadata.js';
export { Mm } from './mm/mm.js';
export { VmArea, vzalloc, vfree } from './mm/vmalloc.js';
export * as abi from './abi/index.js';
export {
  defineStruct, u8, u16, u32, s32, u64, bytes, cstring, StructError,
  type StructCodec, type FieldSpec, type FieldValue, type StructValue,
} from './abi/struct.js';
export {
  fdtCreate, fdtParse, fdtCheckHeader, fdtTotalSize, fdtFindNode, fdtNode, fdtToDts, FdtError,
  propU64LE, readPropU64LE, propString, readPropString, type FdtNode, type FdtErrorCode,
} from './lib/fdt.js';
export { remembered } from './lib/remembered.js';
export { type RuntimePlugin } from './kernel/kernel.js';
export {
  createBootHooks, createShutdownHooks, tapView,
  type BootHooks, type ShutdownHooks, type BootPhase, type ShutdownPhase, type TapView,
} from './kernel/boot-hooks.js';
export { Process, DEFAULT_NOFILE } from './kernel/process.js';
export { KFile, Inode, type FileOperations } from './kernel/file.js';
export { Luo, KernelPanic } from './luo/luo.js';
export { createLuoHooks, type LuoHooks, type FileOpEvent, type FlbOpEvent, type RebootEvent } from './luo/hooks.js';
export type {
  LiveupdateFileHandler, LiveupdateFileOps, LiveupdateFileOpArgs, LiveupdateFlb, LiveupdateFlbOps, LiveupdateFlbOpArgs,
  LuoSessionRef, FileOpName, FlbOpName,
} from './luo/types.js';
export {
  FormatRegistry, FormatNegotiationError, PluginLoadError, compatibleFor, versionOf, coreFormats, checkPluginSdk, SDK_API_VERSION,
  highestSatisfying, newestVersion, versionSatisfies,
  type FormatSpec, type KernelManifest, type ManifestEntry, type NegotiationRefusal,
} from './kernel/formats.js';
export { imageManifest, type CoreAbiRanges } from './kernel/kernel.js';
export { openLiveupdate, createSession, retrieveSession, preserveFd, retrieveFd, finishSession, getName, nameBytes } from './uapi/client.js';
export { BOOT_PHASE_NS, SHUTDOWN_PHASE_NS, OP_NS, chargeOp, type KernelOp } from './kernel/costs.js';
/**
 * The semver implementation format negotiation uses (npm's semver, bundled once here): the SDK,
 * the CLI and our plugins take it from this package, so a process loads one copy.
 */
export { default as semver } from 'semver';
