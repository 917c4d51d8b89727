import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { beforeAll, describe, expect, it } from "vitest";
import { buildModels } from "../build.ts";
import { cropToTensor, loadLfw } from "../eval/lfw.ts";
import { cosine } from "../eval/metrics.ts";
import { defaultModelsDir, loadManifest } from "../inference/manifest.ts";
import { encodeModel, readModel } from "../onnx/proto.ts";
import { decomposePRelu } from "../onnx/rewrite.ts";
import { calibrate } from "./calibrate.ts";
import {
  activationQParams,
  activationsToQuantize,
  quantizeQdq,
  quantizeWeightsPerChannel,
  roundHalfEven,
} from "./qdq.ts";

describe("int8 quantization arithmetic", () => {
  it("weights get one symmetric scale per output channel (max |w| ↦ 127)", () => {
    const { q, scales } = quantizeWeightsPerChannel(Float32Array.from([1, -2, 0.5, 0.25]), [2, 2], 0);
    expect(Array.from(scales)).toEqual([Math.fround(2 / 127), Math.fround(0.5 / 127)]);
    // 1 / (2/127) = 63.5 and 0.25 / (0.5/127) = 63.5 round half to even: 64
    expect(Array.from(q)).toEqual([64, -127, 127, 64]);
    // 7-bit ("reduce range"): max |w| ↦ 63
    expect(Array.from(quantizeWeightsPerChannel(Float32Array.from([0.5, -2]), [1, 2], 0, 63).q)).toEqual([16, -63]);
  });

  it("activation ranges always hold zero exactly, as QLinear kernels need", () => {
    expect(activationQParams({ min: -1, max: 3 }, "uint8")).toEqual({ scale: 4 / 255, zeroPoint: 64 });
    expect(activationQParams({ min: 0.5, max: 2 }, "uint8")).toEqual({ scale: 2 / 255, zeroPoint: 0 });
    expect(activationQParams({ min: -1, max: 1 }, "int8").zeroPoint).toBe(0);
    expect(roundHalfEven(2.5)).toBe(2);
    expect(roundHalfEven(-2.5)).toBe(-2);
    expect(roundHalfEven(3.5)).toBe(4);
  });
});

describe("quantizing the shipped embedder", () => {
  let modelPath: string;
  let pre: Parameters<typeof cropToTensor>[1];
  let fp32: ort.InferenceSession;
  let int8: Uint8Array;
  const files = loadLfw().images.map((i) => i.file);

  beforeAll(async () => {
    await buildModels();
    const m = await loadManifest(defaultModelsDir(), "fr-feature");
    modelPath = m.modelPath;
    pre = m.manifest.preprocessing;
    const model = readModel(modelPath);
    const samples = [];
    for (const f of files.filter((_, i) => i % 8 === 0)) {
      samples.push({ feeds: { input: { data: await cropToTensor(f, pre), dims: [1, 3, 112, 112] } } });
    }
    const ranges = await calibrate(model, activationsToQuantize(model), samples, { method: "minmax" });
    int8 = encodeModel(
      decomposePRelu(quantizeQdq(model, { ranges, activationType: "uint8", reduceRange: true }).model).model,
    );
    fp32 = await ort.InferenceSession.create(modelPath);
  });

  it("is under a third of the fp32 file and onnxruntime runs every Conv as an integer QLinearConv", async () => {
    expect(int8.length).toBeLessThan((await readFile(modelPath)).length / 3);
    const dir = await mkdtemp(join(tmpdir(), "glance-qdq-"));
    try {
      const optimized = join(dir, "optimized.onnx");
      const s = await ort.InferenceSession.create(int8, {
        optimizedModelFilePath: optimized,
        graphOptimizationLevel: "all",
      });
      await s.release();
      const ops = (readModel(optimized).graph?.node ?? []).map((n) => n.opType);
      const convs = (readModel(modelPath).graph?.node ?? []).filter((n) => n.opType === "Conv").length;
      expect(ops.filter((op) => op === "QLinearConv")).toHaveLength(convs);
      expect(ops).not.toContain("Conv");
      expect(ops).not.toContain("PRelu");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("gives embeddings that point the same way as fp32 on faces it was not calibrated on (cosine > 0.9)", async () => {
    const s = await ort.InferenceSession.create(int8);
    const sims: number[] = [];
    for (const f of files.filter((_, i) => i % 8 === 3)) {
      const x = new ort.Tensor("float32", await cropToTensor(f, pre), [1, 3, 112, 112]);
      const a = (await fp32.run({ input: x })).output?.data as Float32Array;
      const b = (await s.run({ input: x })).output?.data as Float32Array;
      sims.push(cosine(a, b));
    }
    await s.release();
    expect(Math.min(...sims)).toBeGreaterThan(0.9);
    expect(sims.reduce((x, y) => x + y, 0) / sims.length).toBeGreaterThan(0.95);
  });
});
