import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { ModelManifest } from "@glance/shared";
import * as tf from "@tensorflow/tfjs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildModels } from "../build.ts";
import { humanModelsDir } from "../convert/human-models.ts";
import { imageInput, noise } from "../convert/parity.ts";
import { loadTfjsRunner } from "../convert/tfjs-runtime.ts";
import { FacePipeline } from "../inference/pipeline.ts";
import { ort } from "../inference/session.ts";
import { arcfaceTemplate, recipes } from "../recipes.ts";
import { AttributesModel, summariseAttributes } from "./attributes.ts";
import { evaluatePeople } from "./evaluate.ts";
import { ARCFACE_224, ATTRIBUTES_OUTPUTS } from "./graph.ts";

const LFW_CROP = resolve(
  import.meta.dirname,
  "../../../../shared/datasets/lfw-aligned-pairs/Abdoulaye_Wade/Abdoulaye_Wade_0001.jpg",
);
const CAFFE_MEAN_BGR = [103.939, 116.779, 123.68];

let dist = "";
let built: ModelManifest;
beforeAll(async () => {
  dist = await mkdtemp(join(tmpdir(), "glance-attributes-"));
  await buildModels({ distDir: dist, only: ["attributes"] });
  built = ModelManifest.parse(JSON.parse(await readFile(join(dist, "attributes/3.0.4/manifest.json"), "utf8")));
}, 300_000);
afterAll(async () => {
  if (dist) await rm(dist, { recursive: true, force: true });
});

describe("the attributes model (age band, gender, emotion)", () => {
  it("is left out of a plain models:build and built, signed, only when asked for by name", () => {
    const recipe = recipes.find((r) => r.name === "attributes");
    expect(recipe?.candidate).toBe(true);
    expect(built.task).toBe("attributes");
    expect(built.signature?.alg).toBe("ed25519");
    expect(built.inputs).toEqual([{ name: "face", type: "float32", shape: ["batch", 224, 224, 3] }]);
    expect(built.outputs.map((o) => [o.name, o.shape])).toEqual([
      [ATTRIBUTES_OUTPUTS.age, ["batch", 100]],
      [ATTRIBUTES_OUTPUTS.gender, ["batch", 1]],
      [ATTRIBUTES_OUTPUTS.emotion, ["batch", 7]],
    ]);
    expect(built.licence.status).toBe("unclear");
    expect(built.provenance.trainingData).toMatch(/IMDB-WIKI/);
    expect(built.provenance.trainingData).toMatch(/FER2013/);
    expect(ARCFACE_224).toEqual(arcfaceTemplate(224).map(([x, y]) => [round3(x), round3(y)]));
  });

  it("gives TF.js's outputs when TF.js is fed each model's own preprocessing (noise and a real face, within 1e-3)", async () => {
    const dir = await humanModelsDir();
    const faceres = await loadTfjsRunner(join(dir, "faceres.json"));
    const emotion = await loadTfjsRunner(join(dir, "emotion.json"));
    const session = await ort.InferenceSession.create(join(dist, "attributes/3.0.4/model.onnx"));
    const cases = {
      noise: noise(224 * 224 * 3, 0, 255, 11),
      face: await imageInput(LFW_CROP, 224, 224, 3, [0, 255]),
    };
    try {
      for (const [label, rgb] of Object.entries(cases)) {
        const got = await session.run({ face: new ort.Tensor("float32", rgb, [1, 224, 224, 3]) });
        // faceres as HSE_FaceRec_tf feeds it: BGR minus the Caffe means
        const bgr = new Float32Array(rgb.length);
        for (let i = 0; i < rgb.length; i += 3)
          for (let c = 0; c < 3; c++) bgr[i + c] = (rgb[i + 2 - c] ?? 0) - (CAFFE_MEAN_BGR[c] ?? 0);
        const [age, gender] = await faceres.run(bgr, [1, 224, 224, 3], ["age_pred/Softmax:0", "gender_pred/Sigmoid:0"]);
        // emotion as @vladmandic/human feeds it: 0..1 image resized to 64, grey, [-1, 1]
        const grey = tf.tidy(() => {
          const x = tf.tensor4d(rgb, [1, 224, 224, 3]).div<tf.Tensor4D>(255);
          const r = tf.image.resizeBilinear(x, [64, 64], false);
          return r
            .mul(tf.tensor1d([0.2989, 0.587, 0.114]))
            .sum(3, true)
            .sub(0.5)
            .mul(2);
        });
        const greyData = Float32Array.from(await grey.data());
        grey.dispose();
        const [emo] = await emotion.run(greyData, [1, 64, 64, 1], ["Identity:0"]);
        const pairs = [
          [ATTRIBUTES_OUTPUTS.age, age],
          [ATTRIBUTES_OUTPUTS.gender, gender],
          [ATTRIBUTES_OUTPUTS.emotion, emo],
        ] as const;
        for (const [name, ref] of pairs) {
          const a = got[name]?.data as Float32Array;
          expect(a.length, `${label} ${name}`).toBe(ref?.data.length);
          const diff = Math.max(...a.map((v, k) => Math.abs(v - (ref?.data[k] ?? Number.NaN))));
          console.log(`attributes ${label} ${name} max|Δ|=${diff.toExponential(2)}`);
          expect(diff, `${label} ${name}`).toBeLessThan(1e-3);
        }
      }
    } finally {
      faceres.dispose();
      emotion.dispose();
      await session.release();
    }
  }, 240_000);

  it("on the six known adults of the demo data: every photo an adult band, each gender as the person is publicly known", async () => {
    const pipeline = await FacePipeline.load();
    const model = await AttributesModel.load({ modelsDir: dist });
    try {
      const rows = await evaluatePeople({ pipeline, model });
      for (const r of rows) console.log(JSON.stringify(r));
      expect(rows).toHaveLength(11);
      for (const r of rows) {
        expect(r.ageBand, r.photo).not.toBe("0-17");
        expect(r.pMale > 0.5 ? "male" : "female", r.photo).toBe(r.person === "rose_leslie" ? "female" : "male");
      }
    } finally {
      await Promise.all([pipeline.close(), model.close()]);
    }
  }, 120_000);

  it("a track's summary averages its faces: one confident face does not outvote several others", () => {
    const face = (pMale: number, happy: number) => ({
      ageYears: 30,
      ageBands: { "0-17": 0, "18-24": 0.2, "25-34": 0.6, "35-44": 0.2, "45-54": 0, "55-64": 0, "65+": 0 },
      pMale,
      emotions: { angry: 0, disgust: 0, fear: 0, happy, sad: 0, surprise: 0, neutral: 1 - happy },
    });
    const s = summariseAttributes([face(0.99, 0.9), face(0.2, 0.2), face(0.2, 0.2)]);
    expect(s).toEqual({
      ageBand: "25-34",
      ageBandConfidence: 0.6,
      gender: "female",
      genderConfidence: 0.54,
      emotion: "neutral",
      emotionConfidence: 0.57,
      samples: 3,
    });
    expect(summariseAttributes([])).toBeUndefined();
  });
});

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}
