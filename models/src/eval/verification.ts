/**
 * LFW 1:1 verification of an embedder: embed every aligned crop once, score every pair by cosine similarity.
 * Only the embedder is involved (the crops are already aligned), so this runs without the detector pipeline.
 */
import * as ort from "onnxruntime-node";
import { type CropPlacement, type CropPreprocessing, cropToTensor, type LfwSet, loadLfw } from "./lfw.ts";
import { cosine, type VerificationMetrics, verificationMetrics } from "./metrics.ts";

export interface EmbedderSpec {
  /** ONNX bytes or a file path */
  model: Uint8Array | string;
  input: string;
  output: string;
  preprocessing: CropPreprocessing;
  intraOpThreads?: number;
}

export async function embedAll(
  spec: EmbedderSpec,
  files: readonly string[],
  onProgress?: (done: number, total: number) => void,
  placement: CropPlacement = "arcface",
): Promise<Float32Array[]> {
  const session = await ort.InferenceSession.create(spec.model as Uint8Array, {
    intraOpNumThreads: spec.intraOpThreads ?? 0,
  });
  const p = spec.preprocessing;
  const shape = p.layout === "NCHW" ? [1, 3, p.height, p.width] : [1, p.height, p.width, 3];
  const out: Float32Array[] = [];
  for (const file of files) {
    const data = await cropToTensor(file, p, placement);
    const res = await session.run({ [spec.input]: new ort.Tensor("float32", data, shape) });
    const emb = res[spec.output]?.data;
    if (!(emb instanceof Float32Array)) throw new Error(`embedder gave no float32 output "${spec.output}"`);
    out.push(Float32Array.from(emb));
    onProgress?.(out.length, files.length);
  }
  await session.release();
  return out;
}

export interface PairScores {
  genuine: number[];
  impostor: number[];
}

export function scorePairs(set: LfwSet, embeddings: readonly Float32Array[]): PairScores {
  const genuine: number[] = [];
  const impostor: number[] = [];
  for (const pair of set.pairs) {
    const a = embeddings[pair.a];
    const b = embeddings[pair.b];
    if (!a || !b) continue;
    (pair.genuine ? genuine : impostor).push(cosine(a, b));
  }
  return { genuine, impostor };
}

export interface VerificationResult {
  metrics: VerificationMetrics;
  scores: PairScores;
  embeddings: Float32Array[];
}

export async function verifyOnLfw(
  spec: EmbedderSpec,
  opts: { set?: LfwSet; onProgress?: (done: number, total: number) => void } = {},
): Promise<VerificationResult> {
  const set = opts.set ?? loadLfw();
  const embeddings = await embedAll(
    spec,
    set.images.map((i) => i.file),
    opts.onProgress,
  );
  const scores = scorePairs(set, embeddings);
  return { metrics: verificationMetrics(scores.genuine, scores.impostor), scores, embeddings };
}
