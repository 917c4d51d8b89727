import { beforeAll, describe, expect, it } from "vitest";
import { buildModels } from "../build.ts";
import { defaultModelsDir, loadManifest } from "../inference/manifest.ts";
import { type LfwSet, loadLfw } from "./lfw.ts";
import { rocAuc, verificationMetrics } from "./metrics.ts";
import { type EmbedderSpec, embedAll, scorePairs } from "./verification.ts";

let spec: EmbedderSpec;
let set: LfwSet;
/** embeddings of every crop, placed on the ArcFace template */
let embeddings: Float32Array[];

beforeAll(async () => {
  await buildModels();
  const { manifest, modelPath } = await loadManifest(defaultModelsDir(), "fr-feature");
  spec = {
    model: modelPath,
    input: manifest.inputs[0]?.name ?? "input",
    output: manifest.outputs[0]?.name ?? "output",
    preprocessing: manifest.preprocessing,
  };
  set = loadLfw();
  embeddings = await embedAll(
    spec,
    set.images.map((i) => i.file),
  );
});

/** deterministic shuffle (mulberry32), so a failure reproduces */
function shuffled<T>(items: readonly T[], seed: number): T[] {
  let s = seed >>> 0;
  const rand = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}

describe("LFW verification of the shipped embedder", () => {
  it("tells the same person from different people (AUC ≥ 0.95, TAR ≥ 80% at FAR 1e-2)", async () => {
    const s = scorePairs(set, embeddings);
    const metrics = verificationMetrics(s.genuine, s.impostor);
    expect(metrics.genuinePairs).toBe(70);
    expect(metrics.impostorPairs).toBe(9660);
    expect(metrics.auc).toBeGreaterThanOrEqual(0.95);
    expect(metrics.tarAtFar.find((t) => t.far === 1e-2)?.tar).toBeGreaterThanOrEqual(0.8);
    expect(metrics.tarAtFar.find((t) => t.far === 1e-4)?.supported).toBe(false);
  });

  it("scores nothing better than chance when the identity labels are shuffled (control)", async () => {
    const people = shuffled(
      set.images.map((i) => i.person),
      42,
    );
    const control: LfwSet = { ...set, images: set.images.map((im, i) => ({ ...im, person: people[i] ?? "" })) };
    control.pairs = control.pairs.map((p) => ({
      ...p,
      genuine: control.images[p.a]?.person === control.images[p.b]?.person,
    }));
    const s = scorePairs(control, embeddings);
    expect(s.genuine.length).toBeGreaterThan(20);
    expect(Math.abs(rocAuc(s.genuine, s.impostor) - 0.5)).toBeLessThan(0.15);
  });

  it("feeding the crops stretched to 112×112 instead of placed on the ArcFace template costs accuracy", async () => {
    const template = scorePairs(
      set,
      await embedAll(
        spec,
        set.images.map((i) => i.file),
        undefined,
        "arcface",
      ),
    );
    const stretch = scorePairs(
      set,
      await embedAll(
        spec,
        set.images.map((i) => i.file),
        undefined,
        "stretch",
      ),
    );
    expect(rocAuc(template.genuine, template.impostor)).toBeGreaterThan(
      rocAuc(stretch.genuine, stretch.impostor) + 0.05,
    );
  });
});
