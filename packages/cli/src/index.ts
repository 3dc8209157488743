/**
 * @liveupdate/cli: the `liveupdate` command, and the pieces it is made of for tools that want
 * them programmatically (run a scenario, a version matrix or the handover fuzzer, decode a handover
 * dump, render a report).
 */
export { main, buildProgram, type CliIo } from './program.js';
export { EXIT, EXIT_CODES_HELP, UsageError, type ExitCode } from './exit.js';
export { resolvePlugin, resolvePlugins, memfdSyscallsOf, MEMFD_PLUGIN, type ResolvedPlugin, type MemfdSyscalls } from './plugins.js';
export { DEFAULT_SCENARIO } from './scenario/default-scenario.js';
export { SMALL_SCENARIO } from './scenario/small-scenario.js';
export { loadScenario, checkScenario } from './scenario/load.js';
export { runScenario, type RunResult, type RunOptions, type FileResult, type RunOutcome, type NegotiationRefusalResult } from './scenario/runner.js';
export { runMatrix, formatMatrix, withMemfdReleases, type MatrixReport, type MatrixCell, type MatrixOutcome } from './matrix/matrix.js';
export { runFuzz, formatFuzz, chooseCorruption, FUZZ_CLASSES, type FuzzReport, type FuzzRun, type FuzzClass, type Corruption } from './fuzz/fuzz.js';
export { fuzzTargets, type FuzzTarget } from './fuzz/targets.js';
export { decodeHandover, type HandoverView } from './handover/decode.js';
export { captureDump, serializeDump, parseDump, dumpMemory, DUMP_FORMAT, DUMP_VERSION, type HandoverDump } from './handover/dump.js';
export { inspectDump, formatInspect, type InspectReport } from './handover/inspect.js';
export { summarize, formatSummary, type RunSummary } from './output/summary.js';
export { createProgress, noProgress, type Progress, type ProgressMode } from './output/progress.js';
export { renderReport } from './report/html.js';
