import type { FacePipeline } from "@glance/models";

/** The part of the face models the pipeline uses; only the models package touches onnxruntime. */
export type FaceEngine = Pick<FacePipeline, "space" | "detect" | "quality" | "embed">;
