import { readdir } from "node:fs/promises";
import { join, resolve } from "node:path";
import { isGlanceError } from "@glance/shared";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildModels, MODELS_ROOT } from "../build.ts";
import { decodeImage } from "./image.ts";
import { cosine, DEFAULT_EMBEDDER, defaultEmbedder, FacePipeline } from "./pipeline.ts";

const SCENES = resolve(MODELS_ROOT, "../../shared/datasets/people/scenes");
const ENROLL = resolve(MODELS_ROOT, "../demo/people/enroll");

let pipeline: FacePipeline;
const gallery = new Map<string, Float32Array[]>();

beforeAll(async () => {
  await buildModels();
  pipeline = await FacePipeline.load();
  for (const person of (await readdir(ENROLL)).sort()) {
    for (const file of await readdir(join(ENROLL, person))) {
      const faces = await pipeline.process(await decodeImage(join(ENROLL, person, file)));
      // enrolment photos are portraits: the largest face is the member
      const best = faces.sort((a, b) => b.face.box.width - a.face.box.width)[0];
      if (!best) throw new Error(`no face in enrolment photo ${person}/${file}`);
      gallery.set(person, [...(gallery.get(person) ?? []), best.embedding]);
    }
  }
});

afterAll(async () => {
  await pipeline?.close();
});

/** best cosine per enrolled person */
function scoresFor(embedding: Float32Array): Array<[string, number]> {
  return [...gallery].map(
    ([person, embs]) => [person, Math.max(...embs.map((g) => cosine(embedding, g)))] as [string, number],
  );
}

describe("a camera frame of an enrolled member", () => {
  for (const res of ["480p", "720p", "1080p"]) {
    it(`identifies barack_obama at ${res}, and nobody else, at the 1e-3 threshold`, async () => {
      const img = await decodeImage(join(SCENES, `barack_obama-${res}.jpg`));
      const faces = await pipeline.process(img);
      expect(faces).toHaveLength(1);
      const [f] = faces;
      if (!f) throw new Error("unreachable");
      // the manifest's dimension, which load() checked against the model's output
      expect(f.embedding).toHaveLength(pipeline.embedder.outputs[0]?.shape.at(-1) as number);
      expect(f.embedding.length).toBe(pipeline.embedder.embedding?.dim);
      expect(Math.hypot(...f.embedding)).toBeCloseTo(1, 4);
      const t = pipeline.threshold("1e-3");
      const scores = scoresFor(f.embedding);
      const above = scores.filter(([, s]) => s >= t).map(([p]) => p);
      expect(above).toEqual(["barack_obama"]);
      // identity should not hinge on resolution: the face is 110–260 px wide across these frames
      expect(f.quality.reasons).not.toContain("blurry");
    });
  }
});

describe("detection", () => {
  it("finds both people in two-faces.jpg, with landmarks inside their boxes", async () => {
    const faces = await pipeline.detect(await decodeImage(join(SCENES, "two-faces.jpg")));
    expect(faces).toHaveLength(2);
    const names = pipeline.detector.decoding.landmarkNames as string[];
    for (const f of faces) {
      expect(f.landmarks).toHaveLength(6);
      for (const [i, [x, y]] of f.landmarks.entries()) {
        // BlazeFace's box is the face; the ear tragions sit on its edge and stick out on a turned head
        const m = names[i]?.endsWith("Ear") ? 0.15 * f.box.width : 0;
        expect(x).toBeGreaterThanOrEqual(f.box.x - m);
        expect(x).toBeLessThanOrEqual(f.box.x + f.box.width + m);
        expect(y).toBeGreaterThanOrEqual(f.box.y - m);
        expect(y).toBeLessThanOrEqual(f.box.y + f.box.height + m);
      }
      // subject's right eye is on the image's left for a frontal face
      const [re, le] = f.landmarks;
      expect(re?.[0]).toBeLessThan(le?.[0] ?? 0);
    }
    const img = await decodeImage(join(SCENES, "two-faces.jpg"));
    const [a, b] = await Promise.all(faces.map((f) => pipeline.embed(img, f)));
    expect(cosine(a as Float32Array, b as Float32Array)).toBeLessThan(pipeline.threshold("1e-2"));
  });

  it("reads a 32-bit RGBA PNG and finds its one face", async () => {
    const img = await decodeImage(join(SCENES, "rgba-one-face.png"));
    expect(img.data.length).toBe(img.width * img.height * 3);
    expect(await pipeline.detect(img)).toHaveLength(1);
  });

  it("the short-range detector finds the same face in a portrait", async () => {
    const img = await decodeImage(join(SCENES, "rgba-one-face.png"));
    const front = await FacePipeline.load({ detector: "blazeface-front" });
    try {
      const [a] = await front.detect(img);
      const [b] = await pipeline.detect(img);
      if (!a || !b) throw new Error("no face");
      const ix = Math.min(a.box.x + a.box.width, b.box.x + b.box.width) - Math.max(a.box.x, b.box.x);
      const iy = Math.min(a.box.y + a.box.height, b.box.y + b.box.height) - Math.max(a.box.y, b.box.y);
      const inter = Math.max(0, ix) * Math.max(0, iy);
      expect(inter / (a.box.width * a.box.height + b.box.width * b.box.height - inter)).toBeGreaterThan(0.7);
    } finally {
      await front.close();
    }
  });

  it("finds nothing in a blank frame", async () => {
    const img = { data: new Uint8Array(640 * 480 * 3).fill(90), width: 640, height: 480 };
    expect(await pipeline.detect(img)).toEqual([]);
  });

  it("flags a face cut by the frame edge and a tiny face in quality", async () => {
    const cut = await decodeImage(join(SCENES, "barack_obama-partial-1.jpg"));
    const [c] = await pipeline.process(cut);
    expect(c?.quality.reasons).toContain("cut-off");
    const small = await decodeImage(join(SCENES, "barack_obama-240p.jpg"));
    const [s] = await pipeline.process(small);
    expect(s?.quality.reasons).toContain("small-face");
    const full = await decodeImage(join(SCENES, "barack_obama-720p.jpg"));
    const [f] = await pipeline.process(full);
    expect(f?.quality.score).toBeGreaterThan(s?.quality.score ?? 1);
    expect(f?.quality.score).toBeGreaterThan(c?.quality.score ?? 1);
    expect(f?.quality.reasons).toEqual([]);
  });

  it("marks an out-of-focus face as blurry and scores it below the sharp one", async () => {
    const path = join(SCENES, "barack_obama-720p.jpg");
    const [sharpFace] = await pipeline.process(await decodeImage(path));
    const [blurred] = await pipeline.process(await decodeImage(await sharp(path).blur(4).jpeg().toBuffer()));
    expect(blurred?.quality.reasons).toContain("blurry");
    expect(blurred?.quality.score).toBeLessThan((sharpFace?.quality.score ?? 0) * 0.7);
  });
});

describe("alignment", () => {
  it("puts the eyes where the embedder's template expects them", async () => {
    const img = await decodeImage(join(SCENES, "barack_obama-720p.jpg"));
    const [face] = await pipeline.detect(img);
    if (!face) throw new Error("no face");
    const m = pipeline.alignmentTransform(face);
    const map = ([x, y]: [number, number]) => [
      m[0] * (x - 0.5) + m[1] * (y - 0.5) + m[2],
      m[3] * (x - 0.5) + m[4] * (y - 0.5) + m[5],
    ];
    const [re, le] = face.landmarks as [[number, number], [number, number]];
    const tmpl = pipeline.embedder.preprocessing.alignment?.points ?? [];
    expect(Math.hypot(...(map(re).map((v, i) => v - (tmpl[0]?.[i] ?? 0)) as [number, number]))).toBeLessThan(3);
    expect(Math.hypot(...(map(le).map((v, i) => v - (tmpl[1]?.[i] ?? 0)) as [number, number]))).toBeLessThan(3);
    const crop = pipeline.align(img, face);
    const { width, height } = pipeline.embedder.preprocessing;
    expect(width).toBeGreaterThan(0);
    expect([crop.width, crop.height, crop.data.length]).toEqual([width, height, width * height * 3]);
  });
});

describe("choosing the embedder", () => {
  it("loads GLANCE_EMBEDDER when it is set, so node and orchestrator swap embedders by manifest name alone", async () => {
    expect(defaultEmbedder({})).toBe("dlib-resnet-int8");
    expect(DEFAULT_EMBEDDER).toBe("dlib-resnet-int8");
    expect(pipeline.embedder.name).toBe(defaultEmbedder());
    const saved = process.env.GLANCE_EMBEDDER;
    process.env.GLANCE_EMBEDDER = "fr-feature";
    try {
      const p = await FacePipeline.load();
      try {
        expect(p.space).toBe("fr-feature@0.0.1");
      } finally {
        await p.close();
      }
      // the explicit option wins over the environment
      const q = await FacePipeline.load({ embedder: "dlib-resnet" });
      try {
        expect(q.space).toBe("dlib-resnet@1.0.0");
      } finally {
        await q.close();
      }
    } finally {
      if (saved === undefined) delete process.env.GLANCE_EMBEDDER;
      else process.env.GLANCE_EMBEDDER = saved;
    }
  });
});

describe("bad input", () => {
  it("refuses a frame whose buffer does not match its size", async () => {
    const err = await pipeline.detect({ data: new Uint8Array(100), width: 640, height: 480 }).catch((e: unknown) => e);
    expect(isGlanceError(err, "IMAGE_UNREADABLE")).toBe(true);
  });

  it("rejects a corrupt JPEG with IMAGE_UNREADABLE", async () => {
    const jpeg = Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x46, 0x00, 0x01, 0x02, 0x03]);
    const err = await decodeImage(jpeg).catch((e: unknown) => e);
    expect(isGlanceError(err, "IMAGE_UNREADABLE")).toBe(true);
    const truncated = (await import("node:fs/promises")).readFile(join(SCENES, "barack_obama-480p.jpg"));
    const half = (await truncated).subarray(0, 2000);
    expect(isGlanceError(await decodeImage(half).catch((e: unknown) => e), "IMAGE_UNREADABLE")).toBe(true);
  });
});
