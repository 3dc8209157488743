export {
  liveUpdate, InvariantError,
  type KernelSide, type LiveUpdateScenario, type LiveUpdateResult, type Outcome, type PhaseTime, type ScenarioTools,
} from './harness.js';
export { type FaultSpec, type FaultRecord, OUTGOING_OPS } from './faults.js';
export { pattern } from './pattern.js';
export { errnoOf } from '@liveupdate/runtime';
