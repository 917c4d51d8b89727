import type { FacePipeline } from "@glance/models";

/** The part of the face models the pipeline uses; only the models package touches onnxruntime. */
export type FaceEngine = Pick<FacePipeline, "space" | "detect" | "quality" | "embed">;

/** A loaded engine as the agent runs it: the pipeline's part plus what status reports and stop releases. */
export type AgentEngine = FaceEngine & Pick<FacePipeline, "detector" | "embedder" | "close">;
