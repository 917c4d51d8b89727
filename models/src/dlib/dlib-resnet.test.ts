import { cp, mkdtemp, readdir, rm } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { isGlanceError } from "@glance/shared";
import * as ort from "onnxruntime-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildModels, DEFAULT_DIST, MODELS_ROOT } from "../build.ts";
import { noise } from "../convert/parity.ts";
import { umeyama, warpAffine } from "../inference/align.ts";
import { decodeImage } from "../inference/image.ts";
import { cosine, FacePipeline } from "../inference/pipeline.ts";
import { DLIB_INPUT, DLIB_MEAN_RGB, DLIB_OUTPUT, DLIB_STD, dlibOnnxFromFaceApi } from "./face-api-resnet.ts";
import { DLIB_150, dlibResnetRecipe } from "./recipe.ts";

type Point = [number, number];

const require = createRequire(import.meta.url);
const FACE_API_DIR = dirname(require.resolve("@vladmandic/face-api/package.json"));
const DEMO = resolve(MODELS_ROOT, "../demo/people");
const SCENES = resolve(MODELS_ROOT, "../../shared/datasets/people/scenes");

let scratch: string;

beforeAll(async () => {
  await buildModels({ only: ["blazeface-back"] });
  scratch = await mkdtemp(join(tmpdir(), "glance-dlib-"));
}, 300_000);

afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

describe("dlib ResNet from @vladmandic/face-api weights", () => {
  it("gives the descriptors face-api computes in TF.js, on noise and on a real face", async () => {
    interface FaceApi {
      tf: {
        setBackend(b: string): Promise<boolean>;
        ready(): Promise<void>;
        tensor3d(v: Float32Array, s: number[]): unknown;
      };
      nets: {
        faceRecognitionNet: {
          loadFromDisk(dir: string): Promise<void>;
          computeFaceDescriptor(t: unknown): Promise<Float32Array>;
        };
      };
    }
    const faceapi = require(join(FACE_API_DIR, "dist/face-api.node-wasm.js")) as FaceApi;
    await faceapi.tf.setBackend("cpu");
    await faceapi.tf.ready();
    await faceapi.nets.faceRecognitionNet.loadFromDisk(join(FACE_API_DIR, "model"));
    const session = await ort.InferenceSession.create(await dlibOnnxFromFaceApi(FACE_API_DIR));

    const face = await decodeImage(join(DEMO, "enroll/barack_obama/1.jpg"));
    const p = await FacePipeline.load({ modelsDir: DEFAULT_DIST, embedder: "fr-feature" });
    const [det] = await p.detect(face);
    if (!det) throw new Error("no face in the Obama enrolment photo");
    // any 150×150 crop will do for parity; the fr-feature pipeline only supplies a real face's landmarks
    const [re, le, nose, ml, mr] = DLIB_150 as [Point, Point, Point, Point, Point];
    const m = umeyama(
      det.landmarks.slice(0, 4).map(([x, y]) => [x - 0.5, y - 0.5] as Point),
      [re, le, nose, [(ml[0] + mr[0]) / 2, (ml[1] + mr[1]) / 2]],
    );
    await p.close();
    const crop = warpAffine(face, m, 150, 150);
    const inputs = [noise(150 * 150 * 3, 0, 255, 7).map(Math.round), Float32Array.from(crop.data)];
    for (const px of inputs) {
      const ref = await faceapi.nets.faceRecognitionNet.computeFaceDescriptor(faceapi.tf.tensor3d(px, [150, 150, 3]));
      const t = new Float32Array(px.length);
      const n = 150 * 150;
      for (let c = 0; c < 3; c++)
        for (let i = 0; i < n; i++) t[c * n + i] = ((px[i * 3 + c] ?? 0) - (DLIB_MEAN_RGB[c] ?? 0)) / DLIB_STD;
      const out = await session.run({ [DLIB_INPUT]: new ort.Tensor("float32", t, [1, 3, 150, 150]) });
      const got = out[DLIB_OUTPUT]?.data as Float32Array;
      expect(got.length).toBe(128);
      const diff = Math.max(...Array.from(got, (v, i) => Math.abs(v - (ref[i] ?? 0))));
      expect(diff).toBeLessThan(1e-4);
      expect(Math.max(...Array.from(ref, Math.abs))).toBeGreaterThan(0.1);
    }
    await session.release();
  }, 120_000);

  it("builds from npm as a signed dlib-resnet model that tells Obama from the other demo members", async () => {
    const dist = join(scratch, "dist");
    await cp(join(DEFAULT_DIST, "blazeface-back"), join(dist, "blazeface-back"), { recursive: true });
    const [built] = await buildModels({ distDir: dist, recipes: [dlibResnetRecipe], only: ["dlib-resnet"] });
    expect(built?.status).toBe("built");
    const p = await FacePipeline.load({ modelsDir: dist, embedder: "dlib-resnet" });
    try {
      expect(p.space).toBe("dlib-resnet@1.0.0");
      const gallery = new Map<string, Float32Array[]>();
      for (const person of await readdir(join(DEMO, "enroll"))) {
        for (const f of await readdir(join(DEMO, "enroll", person))) {
          const [best] = (await p.process(await decodeImage(join(DEMO, "enroll", person, f)))).sort(
            (a, b) => b.face.box.width - a.face.box.width,
          );
          if (best) gallery.set(person, [...(gallery.get(person) ?? []), best.embedding]);
        }
      }
      const [scene] = await p.process(await decodeImage(join(SCENES, "barack_obama-720p.jpg")));
      if (!scene) throw new Error("no face in the 720p Obama scene");
      const scores = [...gallery].map(
        ([n, es]) => [n, Math.max(...es.map((e) => cosine(e, scene.embedding)))] as const,
      );
      const t = p.threshold("1e-3");
      expect(scores.filter(([, s]) => s >= t).map(([n]) => n)).toEqual(["barack_obama"]);
    } finally {
      await p.close();
    }
  }, 300_000);

  it("refuses to build from a face-api package whose weight shard differs from its pin", async () => {
    const bad = {
      ...dlibResnetRecipe,
      derive: {
        ...(dlibResnetRecipe.derive as NonNullable<typeof dlibResnetRecipe.derive>),
        files: { "model/face_recognition_model.bin": "0".repeat(64) },
      },
    };
    const err = await buildModels({ distDir: join(scratch, "bad"), recipes: [bad], only: ["dlib-resnet"] }).catch(
      (e: unknown) => e,
    );
    expect(isGlanceError(err) && err.code).toBe("MODEL_CORRUPT");
  }, 300_000);
});
