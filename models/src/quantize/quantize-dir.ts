/**
 * Quantize a built model directory (models/dist/<name>/<version>) into a new one,
 * models/dist/<name>-int8/<version>, with its own manifest: precision "int8", a precisionReason with the figures
 * measured here, sha256/bytes of the new file, and thresholds re-calibrated on LFW through the production
 * detect → align → embed path (an int8 embedder's scores shift, so it gets its own embedding space).
 */
import { createHash } from "node:crypto";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import * as os from "node:os";
import { basename, dirname, join } from "node:path";
import { GlanceError, ModelManifest } from "@glance/shared";
import * as ort from "onnxruntime-node";
import { calibrate as calibrateThresholds, lfwScores } from "../calibrate.ts";
import { cropToTensor, loadLfw } from "../eval/lfw.ts";
import { verifyOnLfw } from "../eval/verification.ts";
import { FacePipeline } from "../inference/pipeline.ts";
import { encodeModel, readModel } from "../onnx/proto.ts";
import { decomposePRelu } from "../onnx/rewrite.ts";
import { devSigningKey } from "../signing/keys.ts";
import { signManifest } from "../signing/sign.ts";
import type { CalibrationMethod, CalibrationSample } from "./calibrate.ts";
import type { ActivationType } from "./qdq.ts";
import { quantizeModel } from "./quantize-model.ts";

export interface QuantizeDirOptions {
  method?: CalibrationMethod;
  percentile?: number;
  activationType?: ActivationType;
  /**
   * 7-bit weights (default): no int16 saturation in u8×s8 kernels on AVX2 machines without VNNI. Measured on
   * fr-feature (percentile 99.99): held-out fp32 parity mean/min 0.9758/0.8823 with 8-bit weights, 0.982/0.9586
   * with 7-bit; with percentile 99.999 and 7-bit 0.9862/0.9744 (the default; `tsx models/src/quantize/compare.ts`).
   */
  reduceRange?: boolean;
  /** where the new model dir goes: <distDir>/<name>/<version> (default: beside the source's name dir) */
  distDir?: string;
  /**
   * the new model's name (default <source>-int8-lfw): `models:build` makes <source>-int8 itself, calibrated on the
   * bundled demo set, and this hand-made LFW-calibrated variant must not overwrite it
   */
  name?: string;
  onStage?: (stage: string, done: number, total: number) => void;
}

export interface QuantizeDirResult {
  dir: string;
  manifest: ModelManifest;
  figures: QuantizeFigures;
}

export interface QuantizeFigures {
  method: string;
  activationType: ActivationType;
  reduceRange: boolean;
  calibrationImages: number;
  fp32: { bytes: number; medianMs: number; auc: number };
  /** the fp32 model with the same PRelu rewrite: how much of the gain is the rewrite, not int8 */
  fp32PReluRewritten: { medianMs: number };
  preluRewritten: number;
  int8: { bytes: number; medianMs: number; auc: number };
  /** mean cosine between fp32 and int8 embeddings of the same crop */
  parity: number;
  quantizedWeights: number;
  quantizedActivations: number;
  opset: string;
}

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** median single-image latency of each model, interleaved run by run so that machine load hits all alike */
export async function compareLatency(
  models: readonly Uint8Array[],
  input: string,
  data: Float32Array,
  shape: number[],
  runs = 60,
  threads = 1,
): Promise<number[]> {
  const sessions = [];
  for (const m of models) sessions.push(await ort.InferenceSession.create(m, { intraOpNumThreads: threads }));
  const feeds = { [input]: new ort.Tensor("float32", data, shape) };
  for (let i = 0; i < 5; i++) for (const s of sessions) await s.run(feeds);
  const times: number[][] = sessions.map(() => []);
  for (let i = 0; i < runs; i++) {
    for (const [k, s] of sessions.entries()) {
      const t = performance.now();
      await s.run(feeds);
      times[k]?.push(performance.now() - t);
    }
  }
  for (const s of sessions) await s.release();
  const median = (v: number[]) => [...v].sort((x, y) => x - y)[Math.floor(v.length / 2)] ?? Number.NaN;
  return times.map(median);
}

const round = (x: number, d = 4) => Math.round(x * 10 ** d) / 10 ** d;

export async function quantizeModelDir(srcDir: string, opts: QuantizeDirOptions = {}): Promise<QuantizeDirResult> {
  const method = opts.method ?? "percentile";
  const percentile = opts.percentile ?? 99.999;
  const activationType = opts.activationType ?? "uint8";
  const stage = opts.onStage ?? (() => {});
  const src = ModelManifest.parse(JSON.parse(await readFile(join(srcDir, "manifest.json"), "utf8")));
  if (src.precision !== "fp32") {
    throw new GlanceError("CONFIG_INVALID", `${src.name} is already ${src.precision}: quantize its fp32 build.`);
  }
  if (src.task !== "embedder") {
    // calibration here feeds aligned face crops, which is only right for an embedder's input
    throw new GlanceError(
      "CONFIG_INVALID",
      `${src.name} is a ${src.task}: only embedders are quantized. Detectors stay fp32 (BlazeFace measured slower and less accurate in int8 in earlier research).`,
    );
  }
  const input = src.inputs[0];
  if (!input || src.inputs.length !== 1) throw new GlanceError("CONFIG_INVALID", `${src.name}: expected one input.`);
  const shape = input.shape.map((d) => (typeof d === "number" ? d : 1));
  const output = src.outputs[0]?.name ?? "output";
  const modelPath = join(srcDir, src.file);
  const fp32Bytes = new Uint8Array(await readFile(modelPath));
  const model = readModel(modelPath);

  // calibration set: the first photo of each LFW person (70 crops), no labels used
  const set = loadLfw();
  const seen = new Set<string>();
  const calibFiles = set.images.filter((im) => !seen.has(im.person) && seen.add(im.person)).map((im) => im.file);
  const samples: CalibrationSample[] = [];
  for (const [i, f] of calibFiles.entries()) {
    samples.push({ feeds: { [input.name]: { data: await cropToTensor(f, src.preprocessing), dims: shape } } });
    stage("load calibration crops", i + 1, calibFiles.length);
  }
  const reduceRange = opts.reduceRange ?? true;
  const {
    bytes: int8Bytes,
    summary,
    preluRewritten,
  } = await quantizeModel(model, samples, {
    method,
    percentile,
    activationType,
    reduceRange,
    onProgress: (d, t) => stage(`calibrate (${method})`, d, t),
  });
  const fp32Rewritten = encodeModel(decomposePRelu(model).model);
  // it must load (and fuse) in onnxruntime before anything is written
  await (await ort.InferenceSession.create(int8Bytes)).release();

  const embSpec = (bytes: Uint8Array) => ({
    model: bytes,
    input: input.name,
    output,
    preprocessing: src.preprocessing,
  });
  const fpEval = await verifyOnLfw(embSpec(fp32Bytes), { set, onProgress: (d, t) => stage("LFW fp32", d, t) });
  const qEval = await verifyOnLfw(embSpec(int8Bytes), { set, onProgress: (d, t) => stage("LFW int8", d, t) });
  let parity = 0;
  for (const [i, a] of fpEval.embeddings.entries()) {
    const b = qEval.embeddings[i];
    if (!b) continue;
    let dot = 0;
    let na = 0;
    let nb = 0;
    for (let k = 0; k < a.length; k++) {
      dot += (a[k] ?? 0) * (b[k] ?? 0);
      na += (a[k] ?? 0) ** 2;
      nb += (b[k] ?? 0) ** 2;
    }
    parity += dot / Math.sqrt(na * nb) / fpEval.embeddings.length;
  }
  stage("latency", 0, 1);
  const [fpMs = Number.NaN, fpRwMs = Number.NaN, qMs = Number.NaN] = await compareLatency(
    [fp32Bytes, fp32Rewritten, int8Bytes],
    input.name,
    samples[0]?.feeds[input.name]?.data ?? new Float32Array(),
    shape,
  );
  stage("latency", 1, 1);

  const figures: QuantizeFigures = {
    method: method === "percentile" ? `percentile ${percentile}` : method,
    activationType,
    reduceRange,
    calibrationImages: samples.length,
    fp32: { bytes: fp32Bytes.length, medianMs: round(fpMs, 2), auc: round(fpEval.metrics.auc) },
    fp32PReluRewritten: { medianMs: round(fpRwMs, 2) },
    preluRewritten,
    int8: { bytes: int8Bytes.length, medianMs: round(qMs, 2), auc: round(qEval.metrics.auc) },
    parity: round(parity),
    quantizedWeights: summary.quantizedWeights,
    quantizedActivations: summary.quantizedActivations,
    opset: `${summary.opsetFrom} → ${summary.opsetTo}`,
  };

  const name = opts.name ?? `${src.name}-int8-lfw`;
  const distDir = opts.distDir ?? dirname(dirname(srcDir));
  const outDir = join(distDir, name, src.version);
  const reason =
    `int8 QDQ (per-channel symmetric ${reduceRange ? "7-bit" : "int8"} weights, ${activationType} activations, ${figures.method} ranges from ` +
    `${samples.length} LFW crops), measured ${new Date().toISOString().slice(0, 10)} on ${os.cpus()[0]?.model ?? "this CPU"} ` +
    `(load average ${os.loadavg()[0]?.toFixed(1)} over ${os.cpus().length} cores), 1 thread: ` +
    `${figures.fp32.medianMs} → ${figures.int8.medianMs} ms median (fp32 with the same PRelu rewrite: ` +
    `${figures.fp32PReluRewritten.medianMs} ms), ${(fp32Bytes.length / 1e6).toFixed(2)} → ` +
    `${(int8Bytes.length / 1e6).toFixed(2)} MB, LFW AUC (embedder on template-placed crops) ${figures.fp32.auc} → ` +
    `${figures.int8.auc}, fp32/int8 embedding cosine ${figures.parity}.`;
  // signed with this checkout's development key, like models:build does; a fleet re-signs at HQ (models:sign)
  const key = await devSigningKey();
  const manifest = (embedding: ModelManifest["embedding"], lfw: unknown) =>
    signManifest(
      ModelManifest.parse({
        ...src,
        name,
        precision: "int8",
        precisionReason: reason,
        sha256: sha256(int8Bytes),
        bytes: int8Bytes.length,
        ...(embedding ? { embedding } : {}),
        provenance: {
          ...src.provenance,
          conversion: `${src.provenance.conversion}; then int8 static QDQ quantization of ${src.name}@${src.version} (sha256 ${src.sha256.slice(0, 12)}…) by models/src/quantize, opset ${figures.opset}`,
        },
        metrics: { quantization: figures, ...(lfw ? { lfw } : {}) },
        createdAt: new Date().toISOString(),
        signature: undefined,
      }),
      key,
    );

  // write to a staging dir and rename, so a half-written model dir never appears
  const staging = join(distDir, name, `.${src.version}-staging`);
  await rm(staging, { recursive: true, force: true });
  await mkdir(staging, { recursive: true });
  await writeFile(join(staging, src.file), int8Bytes);
  const provisional = manifest(
    src.embedding ? { ...src.embedding, space: `${name}@${src.version}` } : undefined,
    undefined,
  );
  await writeFile(join(staging, "manifest.json"), `${JSON.stringify(provisional, null, 2)}\n`);
  await rm(outDir, { recursive: true, force: true });
  await rename(staging, outDir);

  if (!src.embedding) return { dir: outDir, manifest: provisional, figures };

  // thresholds for the int8 space, through the same production path that calibrated the fp32 model
  stage("re-calibrate thresholds (detect → align → embed)", 0, 1);
  const pipeline = await FacePipeline.load({ modelsDir: distDir, embedder: `${name}@${src.version}`, threads: 1 });
  let final: ModelManifest;
  try {
    const scores = await lfwScores(pipeline);
    const c = calibrateThresholds(scores);
    final = manifest(
      {
        ...src.embedding,
        space: `${name}@${src.version}`,
        thresholds: c.thresholds,
        calibration:
          `Cosine on LFW (70 people × 2 photos) through detect → align → embed, measured ${new Date().toISOString().slice(0, 10)} ` +
          `by models/src/quantize (same method as the fp32 model): ${c.genuinePairs} genuine, ${c.impostorPairs} impostor photo pairs ` +
          `(2415 person pairs, not independent). 1e-2 and 1e-3 empirical (1e-3 rests on ~9 impostor scores); 1e-4 ${c.method["1e-4"]}: ` +
          `not supported by this sample. TAR at 1e-2/1e-3/1e-4: ${round(c.tar["1e-2"], 3)}/${round(c.tar["1e-3"], 3)}/${round(c.tar["1e-4"], 3)}; AUC ${round(c.auc)}. ` +
          "LFW is celebrity photos, not store cameras: re-calibrate on site data before relying on a FAR.",
      },
      {
        date: new Date().toISOString().slice(0, 10),
        genuinePairs: c.genuinePairs,
        impostorPairs: c.impostorPairs,
        thresholds: c.thresholds,
        tar: Object.fromEntries(Object.entries(c.tar).map(([k, v]) => [k, round(v, 4)])),
        auc: round(c.auc),
        lfwAccuracy: round(c.bestAccuracy),
        undetected: scores.undetected,
      },
    );
  } finally {
    await pipeline.close();
  }
  await writeFile(join(outDir, "manifest.json"), `${JSON.stringify(final, null, 2)}\n`);
  stage("re-calibrate thresholds (detect → align → embed)", 1, 1);
  return { dir: outDir, manifest: final, figures };
}

export function describeDir(dir: string): string {
  return `${basename(dirname(dir))}@${basename(dir)}`;
}
