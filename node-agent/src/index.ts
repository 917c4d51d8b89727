export { type Agent, type AgentOptions, type AgentStats, startAgent } from "./agent.ts";
export { SequenceStore } from "./sequence.ts";
export type { Frame, FrameSource, Pace, SourceSpec } from "./sources/index.ts";
