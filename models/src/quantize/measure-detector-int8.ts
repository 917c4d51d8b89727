/**
 * Does int8 pay for BlazeFace? Quantizes blazeface-back the way the build quantizes the embedder (percentile
 * 99.999 ranges, 7-bit weights, uint8 activations) on the letterboxed demo stills (CALIBRATION_IMAGES, default all
 * 21), then compares it with fp32 on the stills and clip frames: latency (1 thread, interleaved) and, anchor by
 * anchor, which score logits clear the detector's minimum score. Prints one JSON object; writes nothing.
 * Measured 2026-11-25 (load 7): 15.80 → 38.21 ms median, 1,715 anchors above the minimum score in int8 against 230
 * in fp32 with 12 in common: slower and wrong, so BlazeFace stays fp32.
 *
 *   tsx models/src/quantize/measure-detector-int8.ts
 */
import * as os from "node:os";
import * as ort from "onnxruntime-node";
import { type BlazeFaceDecoding, letterbox } from "../inference/blazeface.ts";
import { defaultModelsDir, loadManifest } from "../inference/manifest.ts";
import { DEFAULT_DETECTOR } from "../inference/pipeline.ts";
import { sessionOptions } from "../inference/session.ts";
import { readModel } from "../onnx/proto.ts";
import type { CalibrationSample } from "./calibrate.ts";
import { demoImages } from "./demo-set.ts";
import { compareLatency } from "./quantize-dir.ts";
import { quantizeModel } from "./quantize-model.ts";

const { manifest, modelPath } = await loadManifest(defaultModelsDir(), DEFAULT_DETECTOR);
const d = manifest.decoding as unknown as BlazeFaceDecoding;
const p = manifest.preprocessing;
const input = manifest.inputs[0]?.name ?? "input:0";
const { stills, frames } = await demoImages();
const images = [...stills, ...frames];
const boxes = await Promise.all(
  images.map((img) => letterbox(img, d.inputSize, p.mean[0] ?? 127.5, p.std[0] ?? 127.5)),
);
const dims = [1, d.inputSize, d.inputSize, 3];
// calibrate on the stills only: exposing every BlazeFace activation makes each calibration run heavy (GBs of RSS
// over the whole set); detections are compared on stills and clip frames alike
const calibrationImages = Number(process.env.CALIBRATION_IMAGES ?? stills.length);
const samples: CalibrationSample[] = boxes
  .slice(0, calibrationImages)
  .map((lb) => ({ feeds: { [input]: { data: lb.tensor, dims } } }));
const log = (what: string) => process.stderr.write(`${new Date().toISOString()} ${what}\n`);
log(`calibrating on ${samples.length} images`);
const q = await quantizeModel(readModel(modelPath), samples, {
  method: "percentile",
  percentile: 99.999,
  activationType: "uint8",
  reduceRange: true,
  significantDigits: 4,
});
log("quantized");
const fp = await ort.InferenceSession.create(modelPath, sessionOptions(1));
const qs = await ort.InferenceSession.create(q.bytes, sessionOptions(1));
// raw comparison, anchor by anchor: how many anchors clear the detector's minimum score, and how far the score
// logits move (decoding int8 outputs that fire everywhere would only measure NMS)
const logit = Math.log(d.minScore / (1 - d.minScore));
const scoreNames = d.layers.map((l) => l.scores);
let fpAbove = 0;
let qAbove = 0;
let bothAbove = 0;
let maxLogitShift = 0;
for (const lb of boxes) {
  const feeds = { [input]: new ort.Tensor("float32", lb.tensor, dims) };
  const [a, b] = [await fp.run(feeds), await qs.run(feeds)];
  for (const n of scoreNames) {
    const x = a[n]?.data as Float32Array;
    const y = b[n]?.data as Float32Array;
    for (let i = 0; i < x.length; i++) {
      const fx = (x[i] ?? 0) > logit;
      const qy = (y[i] ?? 0) > logit;
      fpAbove += fx ? 1 : 0;
      qAbove += qy ? 1 : 0;
      bothAbove += fx && qy ? 1 : 0;
      if (fx) maxLogitShift = Math.max(maxLogitShift, Math.abs((x[i] ?? 0) - (y[i] ?? 0)));
    }
  }
}
await fp.release();
await qs.release();
log("scores compared");
const tensor = boxes[0]?.tensor ?? new Float32Array(dims.reduce((x, y) => x * y, 1));
const fpBytes = new Uint8Array(await (await import("node:fs/promises")).readFile(modelPath));
const [fpMs = 0, qMs = 0] = await compareLatency([fpBytes, q.bytes], input, tensor, dims, 100);
const _mean = (v: number[]) => v.reduce((x, y) => x + y, 0) / Math.max(1, v.length);
const r = (x: number) => Math.round(x * 1e4) / 1e4;
console.log(
  JSON.stringify(
    {
      date: new Date().toISOString(),
      machine: `${os.cpus()[0]?.model} × ${os.cpus().length}, load ${os
        .loadavg()
        .map((x) => x.toFixed(2))
        .join(" ")}`,
      images: images.length,
      calibration: { crops: samples.length, quantizedWeights: q.summary.quantizedWeights },
      bytes: { fp32: fpBytes.length, int8: q.bytes.length },
      medianMs1Thread: { fp32: r(fpMs), int8: r(qMs) },
      anchorsAboveMinScore: { fp32: fpAbove, int8: qAbove, both: bothAbove },
      maxLogitShiftOnFp32Detections: r(maxLogitShift),
    },
    null,
    2,
  ),
);
