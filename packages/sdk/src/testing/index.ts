export {
  liveUpdate, InvariantError, UnexpectedOutcomeError,
  type KernelSide, type LiveUpdateScenario, type LiveUpdateResult, type Outcome, type PhaseTime, type ScenarioTools,
} from './harness.js';
export { type FaultSpec, type FaultRecord, OUTGOING_OPS } from './faults.js';
export { pattern } from './pattern.js';
export { errnoOf } from '@liveupdate/runtime';
export {
  runScenario, vocabularyOf, unsupportedBy, cmdlineOf, hostBytesOf, noRunProgress, BASE_CMDLINE,
  type RunProgress, type ObjectResult, type SessionResult, type RunOutcome, type NegotiationRefusal, type ScenarioRunResult, type ScenarioRunOptions,
} from './run-scenario.js';
