/**
 * @liveupdate/cli: the `liveupdate` command, and the pieces it is made of for tools that want
 * them programmatically (run a scenario, a version matrix or the handover fuzzer, decode a handover
 * dump, render a report). It knows plugins only through their public surface (`plugin.tools`).
 */
export { main, buildProgram, type CliIo } from './program.js';
export { EXIT, EXIT_CODES_HELP, UsageError, type ExitCode } from './exit.js';
export {
  resolvePlugin, resolvePlugins, installedPackages, installedVersions, defaultPlugin, DEFAULT_PLUGIN,
  type ResolvedPlugin, type InstalledPackage,
} from './plugins.js';
export { loadScenario, loadScenarioFile, builtinScenario, checkScenario, type LoadedScenario } from './scenario/load.js';
export { runScenario, type RunResult, type RunOptions, type ObjectResult, type RunOutcome } from './scenario/runner.js';
export { runMatrix, formatMatrix, withReleases, parseVersions, classify as classifyCell, type MatrixReport, type MatrixCell, type MatrixOutcome } from './matrix/matrix.js';
export { runFuzz, formatFuzz, chooseCorruption, classify as classifyFuzzRun, FUZZ_CLASSES, type FuzzReport, type FuzzRun, type FuzzClass, type Corruption } from './fuzz/fuzz.js';
export { fuzzTargets, structuresOf, CORE_STRUCTURES, type FuzzTarget } from './fuzz/targets.js';
export { decodeHandover, type HandoverView, type DecodedView } from './handover/decode.js';
export { captureDump, serializeDump, parseDump, dumpMemory, DUMP_FORMAT, DUMP_VERSION, type HandoverDump } from './handover/dump.js';
export { inspectDump, formatInspect, type InspectReport } from './handover/inspect.js';
export { summarize, formatSummary, type RunSummary, type ObjectSummary } from './output/summary.js';
export { createProgress, noProgress, type Progress, type ProgressMode } from './output/progress.js';
export { renderReport } from './report/html.js';
export { runCampaign, mergeCampaign, mutationTargets, structureList, scenarioOfSeed, type CampaignRun, type CampaignResult, type CampaignOptions } from './fuzz/campaign.js';
export { pluginScenarios, type FuzzScenario } from './fuzz/scenarios.js';
export { chooseMutation, mutatedPage, inferWords, MUTATIONS, type Mutation, type MutationKind, type MutationTarget } from './fuzz/mutate.js';
export { sweepFaults, type SweepRun, type SweepClass } from './fuzz/fault-sweep.js';
