/**
 * Which calibration is best for an embedder? Quantizes it with each method × activation type and measures LFW
 * AUC / TAR@FAR 1e-2 (template-placed crops, embedder only) and fp32 parity on the photos not used for calibration.
 *   tsx models/src/quantize/compare.ts [model dir, default models/dist/fr-feature/0.0.1] [methods, e.g. minmax,percentile] [uint8,uint8-7bit,int8]
 */
import { readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { ModelManifest } from "@glance/shared";
import { cropToTensor, loadLfw } from "../eval/lfw.ts";
import { cosine, verificationMetrics } from "../eval/metrics.ts";
import { embedAll, scorePairs } from "../eval/verification.ts";
import { encodeModel, readModel } from "../onnx/proto.ts";
import { type CalibrationMethod, type CalibrationSample, calibrate } from "./calibrate.ts";
import { type ActivationType, activationsToQuantize, quantizeQdq } from "./qdq.ts";

const dir = resolve(process.argv[2] ?? join(fileURLToPath(import.meta.url), "../../../dist/fr-feature/0.0.1"));
const manifest = ModelManifest.parse(JSON.parse(await readFile(join(dir, "manifest.json"), "utf8")));
const input = manifest.inputs[0]?.name ?? "input";
const output = manifest.outputs[0]?.name ?? "output";
const shape = (manifest.inputs[0]?.shape ?? []).map((d) => (typeof d === "number" ? d : 1));
const modelPath = join(dir, manifest.file);
const model = readModel(modelPath);
const set = loadLfw();
// calibrate on the first photo of each person, judge parity on the second
const firsts = set.images.filter((im, i) => set.images[i - 1]?.person !== im.person);
const calibSet = new Set(firsts.map((f) => f.file));
const samples: CalibrationSample[] = [];
for (const im of firsts)
  samples.push({ feeds: { [input]: { data: await cropToTensor(im.file, manifest.preprocessing), dims: shape } } });
const files = set.images.map((i) => i.file);
const spec = (m: Uint8Array | string) => ({ model: m, input, output, preprocessing: manifest.preprocessing });
const base = await embedAll(spec(modelPath), files);
const row = (label: string, embs: Float32Array[]) => {
  const s = scorePairs(set, embs);
  const m = verificationMetrics(s.genuine, s.impostor);
  const held = files
    .map((f, i) => (calibSet.has(f) ? null : cosine(base[i] ?? [], embs[i] ?? [])))
    .filter((x): x is number => x !== null);
  return {
    label,
    auc: +m.auc.toFixed(4),
    "TAR@1e-2": +(m.tarAtFar[0]?.tar ?? 0).toFixed(3),
    "TAR@1e-3": +(m.tarAtFar[1]?.tar ?? 0).toFixed(3),
    "parity mean (held-out)": +(held.reduce((a, b) => a + b, 0) / held.length).toFixed(4),
    "parity min": +Math.min(...held).toFixed(4),
  };
};
const rows = [row("fp32", base)];
const tensors = activationsToQuantize(model);
const configs: [CalibrationMethod, number | undefined][] = [
  ["minmax", undefined],
  ["percentile", 99.999],
  ["percentile", 99.99],
  ["percentile", 99.9],
  ["entropy", undefined],
];
const only = process.argv[3]?.split(",");
const activations = (process.argv[4] ?? "uint8,uint8-7bit,int8").split(",");
for (const [method, percentile] of configs.filter(([m]) => !only || only.includes(m))) {
  const ranges = await calibrate(model, tensors, samples, { method, ...(percentile ? { percentile } : {}) });
  for (const [activationType, reduceRange] of [
    ["uint8", false],
    ["uint8", true],
    ["int8", false],
  ] as [ActivationType, boolean][]) {
    if (!activations.includes(`${activationType}${reduceRange ? "-7bit" : ""}`)) continue;
    const q = encodeModel(quantizeQdq(model, { ranges, activationType, reduceRange }).model);
    const label = `${method}${percentile ? ` ${percentile}` : ""} ${activationType}${reduceRange ? " 7-bit w" : ""}`;
    rows.push(row(label, await embedAll(spec(q), files)));
    console.error(`done ${label}`);
  }
}
console.table(rows);
