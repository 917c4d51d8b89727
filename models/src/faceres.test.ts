import { existsSync } from "node:fs";
import { readdir } from "node:fs/promises";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildModels, DEFAULT_DIST, MODELS_ROOT } from "./build.ts";
import { decodeImage } from "./inference/image.ts";
import { loadManifest } from "./inference/manifest.ts";
import { cosine, FacePipeline } from "./inference/pipeline.ts";
import { FACERES_CALIBRATION } from "./recipes.ts";

const DEMO = resolve(MODELS_ROOT, "../demo/people");
const SCENES = resolve(MODELS_ROOT, "../../shared/datasets/people/scenes");
// beside the project, not in a user's clone: skipped without it, except where GLANCE_REQUIRE_DATASETS is set (CI)
const haveScenes = existsSync(SCENES);

describe("faceres (HSE FaceRes, converted from TF.js at build)", () => {
  let p: FacePipeline;
  beforeAll(async () => {
    await buildModels({ only: ["blazeface-back", "faceres"] });
    p = await FacePipeline.load({ embedder: "faceres", threads: 1 });
  }, 300_000);
  afterAll(async () => {
    await p?.close();
  });

  it("is built on demand as a signed embedder in its own space, fed BGR minus the Caffe means on a 224 ArcFace crop", async () => {
    const { manifest, signedBy } = await loadManifest(DEFAULT_DIST, "faceres");
    // converted from TF.js at build time: NHWC input, only the embedding output
    expect(manifest.inputs).toEqual([{ name: "input_1", type: "float32", shape: ["batch", 224, 224, 3] }]);
    expect(manifest.outputs).toEqual([{ name: "global_pooling/Mean:0", type: "float32", shape: ["batch", 1024] }]);
    expect(signedBy).toMatch(/\S/);
    expect(p.space).toBe("faceres@3.0.4");
    expect(manifest.preprocessing).toMatchObject({ width: 224, height: 224, layout: "NHWC", colour: "BGR" });
    expect(manifest.preprocessing.mean).toEqual([103.939, 116.779, 123.68]);
    expect(manifest.embedding?.dim).toBe(1024);
    expect(p.threshold("1e-3")).toBe(FACERES_CALIBRATION.thresholds["1e-3"]);
  });

  it.skipIf(!haveScenes && !process.env.GLANCE_REQUIRE_DATASETS)(
    "tells Obama in a 720p scene from the other demo members at FAR 1e-3",
    async () => {
      if (!haveScenes) {
        throw new Error(
          `GLANCE_REQUIRE_DATASETS is set but ${SCENES} is missing: put shared/datasets beside the project.`,
        );
      }
      const gallery = new Map<string, Float32Array[]>();
      for (const person of await readdir(join(DEMO, "enroll"))) {
        for (const f of await readdir(join(DEMO, "enroll", person))) {
          const [best] = (await p.process(await decodeImage(join(DEMO, "enroll", person, f)))).sort(
            (a, b) => b.face.box.width - a.face.box.width,
          );
          if (best) gallery.set(person, [...(gallery.get(person) ?? []), best.embedding]);
        }
      }
      expect(gallery.size).toBe(6);
      const [scene] = await p.process(await decodeImage(join(SCENES, "barack_obama-720p.jpg")));
      if (!scene) throw new Error("no face in the 720p Obama scene");
      expect(scene.embedding).toHaveLength(1024);
      const scores = [...gallery].map(
        ([n, es]) => [n, Math.max(...es.map((e) => cosine(e, scene.embedding)))] as const,
      );
      const t = p.threshold("1e-3");
      expect(scores.filter(([, s]) => s >= t).map(([n]) => n)).toEqual(["barack_obama"]);
    },
    120_000,
  );
});
