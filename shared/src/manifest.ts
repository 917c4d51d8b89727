import { z } from "zod";

/**
 * The model manifest: the contract between the models workspace, the node and the orchestrator.
 * Written by `models:build`, signed by the HQ model-signing key, verified before any model is loaded.
 */
export const TensorSpec = z.object({
  name: z.string(),
  type: z.string(),
  shape: z.array(z.union([z.number().int(), z.string()])),
});
export type TensorSpec = z.infer<typeof TensorSpec>;

export const Preprocessing = z.object({
  width: z.number().int().positive(),
  height: z.number().int().positive(),
  layout: z.enum(["NCHW", "NHWC"]),
  colour: z.enum(["RGB", "BGR", "GRAY"]),
  /** value fed = (pixel - mean) / std, per channel, pixel in 0..255 */
  mean: z.array(z.number()),
  std: z.array(z.number()),
  /** how the input is formed from a frame: the whole frame letterboxed, or an aligned face crop */
  resize: z.enum(["letterbox", "stretch", "aligned-crop"]),
  /** for aligned crops: destination landmark template in input pixels (ArcFace 5-point for 112×112) */
  alignment: z.object({ template: z.string(), points: z.array(z.tuple([z.number(), z.number()])) }).optional(),
});
export type Preprocessing = z.infer<typeof Preprocessing>;

export const FalseAcceptRate = z.enum(["1e-2", "1e-3", "1e-4"]);
export type FalseAcceptRate = z.infer<typeof FalseAcceptRate>;

export const EmbeddingSpec = z.object({
  dim: z.number().int().positive(),
  /** templates are comparable only within one space: name@version of the embedder that made them */
  space: z.string(),
  metric: z.literal("cosine"),
  /** cosine-similarity thresholds calibrated at the given false-accept rates (1:1) */
  thresholds: z.record(FalseAcceptRate, z.number()),
  calibration: z.string(),
});
export type EmbeddingSpec = z.infer<typeof EmbeddingSpec>;

export const Licence = z.object({
  /** SPDX id of the weights' licence, or "unknown" */
  spdx: z.string(),
  status: z.enum(["permissive", "unclear", "non-commercial"]),
  notes: z.string(),
});
export type Licence = z.infer<typeof Licence>;

export const Provenance = z.object({
  npmPackage: z.string(),
  npmVersion: z.string(),
  npmIntegrity: z.string(),
  pathInPackage: z.string(),
  upstream: z.string(),
  trainingData: z.string(),
  trainingDataLicence: z.string(),
  conversion: z.string(),
});
export type Provenance = z.infer<typeof Provenance>;

export const ModelManifest = z.object({
  schema: z.literal("glance.model/v1"),
  name: z.string().regex(/^[a-z0-9][a-z0-9-]*$/),
  task: z.enum(["detector", "embedder", "attributes"]),
  version: z.string(),
  precision: z.enum(["fp32", "fp16", "int8"]),
  precisionReason: z.string(),
  file: z.string(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  bytes: z.number().int().positive(),
  inputs: z.array(TensorSpec),
  outputs: z.array(TensorSpec),
  preprocessing: Preprocessing,
  /** task-specific decoding parameters (anchors, score threshold, landmark names, ...) */
  decoding: z.record(z.string(), z.unknown()).default({}),
  embedding: EmbeddingSpec.optional(),
  licence: Licence,
  provenance: Provenance,
  metrics: z.record(z.string(), z.unknown()).default({}),
  createdAt: z.string(),
  signature: z.object({ alg: z.literal("ed25519"), keyId: z.string(), value: z.string() }).optional(),
});
export type ModelManifest = z.infer<typeof ModelManifest>;
