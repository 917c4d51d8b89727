export {
  ATTRIBUTES_MODEL,
  AttributesModel,
  type AttributesModelOptions,
  type CoarseFaceAttributes,
  type FaceAttributes,
  summariseAttributes,
} from "./attributes/attributes.ts";
export { type BuildOptions, type BuildResult, buildModels } from "./build.ts";
export { type Affine, umeyama, warpAffine } from "./inference/align.ts";
export type { DetectedFace } from "./inference/blazeface.ts";
export { decodeImage, type RawImage } from "./inference/image.ts";
export { defaultModelsDir, loadManifest } from "./inference/manifest.ts";
export {
  cosine,
  DEFAULT_DETECTOR,
  DEFAULT_EMBEDDER,
  defaultEmbedder,
  type EmbeddedFace,
  FacePipeline,
  type FacePipelineOptions,
} from "./inference/pipeline.ts";
export { DEFAULT_QUALITY_LIMITS, type FaceQuality, type QualityLimits } from "./inference/quality.ts";
export { recipes } from "./recipes.ts";
