/**
 * Measures the embedder's cosine scores on ../shared/datasets/lfw-aligned-pairs and prints the thresholds at
 * FAR 1e-2/1e-3/1e-4 to paste into recipes.ts (FR_FEATURE_CALIBRATION). The build never reads the dataset.
 *
 *   tsx models/src/calibrate.ts [--embedder fr-feature] [--data ../shared/datasets/lfw-aligned-pairs]
 */
import { readdir } from "node:fs/promises";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import type { FalseAcceptRate } from "@glance/shared";
import sharp from "sharp";
import { MODELS_ROOT } from "./build.ts";
import { umeyama, warpAffine } from "./inference/align.ts";
import { toRgb } from "./inference/image.ts";
import { cosine, FacePipeline } from "./inference/pipeline.ts";
import { ARCFACE_112 } from "./recipes.ts";

export const LFW_DIR = resolve(MODELS_ROOT, "../../shared/datasets/lfw-aligned-pairs");

export interface PairScores {
  genuine: number[];
  impostor: number[];
  people: number;
}

/** grey border around each 100×100 crop so that BlazeFace sees a whole face rather than a frame-filling one */
const PAD = 50;
/** mean BlazeFace eyes/nose/mouth on these crops (measured 2026-11-25), for a crop where detection fails */
const LFW_MEAN_LANDMARKS: Array<[number, number]> = [
  [26.4, 29.4],
  [73.4, 30.0],
  [50.2, 57.6],
  [49.6, 81.2],
];

/**
 * Genuine = the two photos of one person; impostor = every cross-person photo pair (4 per pair of people, so
 * they are not independent: 70 people give 2,415 person pairs and 9,660 photo pairs).
 *
 * The crops are aligned for MobileFace (eyes at ~30% height, much tighter than ArcFace's 112 template), so a
 * plain resize to 112 feeds the embedder faces it never sees in production (measured: 80.6% accuracy, impostor
 * mean 0.43). Each crop is instead padded, run through the same detect → align as a camera frame, then embedded:
 * the scores, and thus the thresholds, are those of the production path.
 */
export async function lfwScores(pipeline: FacePipeline, dir = LFW_DIR): Promise<PairScores & { undetected: number }> {
  const { embeddings, people, undetected } = await lfwEmbeddings(pipeline, dir);
  return { ...pairScores(embeddings), people, undetected };
}

export interface LfwEmbedding {
  person: number;
  e: Float32Array;
}

/** one embedding per LFW photo through detect → align → embed, in a fixed order (people sorted, files sorted) */
export async function lfwEmbeddings(
  pipeline: FacePipeline,
  dir = LFW_DIR,
): Promise<{ embeddings: LfwEmbedding[]; people: number; undetected: number }> {
  const people = (await readdir(dir, { withFileTypes: true }))
    .filter((e) => e.isDirectory())
    .map((e) => e.name)
    .sort();
  const fallback = umeyama(
    LFW_MEAN_LANDMARKS.map(([x, y]) => [x + PAD - 0.5, y + PAD - 0.5] as [number, number]),
    [...ARCFACE_112.slice(0, 3), mouthCentre(ARCFACE_112)],
  );
  const p = pipeline.embedder.preprocessing;
  const embs: LfwEmbedding[] = [];
  let undetected = 0;
  for (const [i, person] of people.entries()) {
    const files = (await readdir(join(dir, person))).filter((f) => /\.(jpe?g|png)$/i.test(f)).sort();
    for (const f of files) {
      const { data, info } = await sharp(join(dir, person, f))
        .extend({ top: PAD, bottom: PAD, left: PAD, right: PAD, background: { r: 128, g: 128, b: 128 } })
        .raw()
        .toBuffer({ resolveWithObject: true });
      const img = toRgb(new Uint8Array(data), info.width, info.height, info.channels);
      const face = (await pipeline.detect(img, { minScore: 0.3 })).sort((a, b) => b.score - a.score)[0];
      if (!face) undetected++;
      const crop = face ? pipeline.align(img, face) : warpAffine(img, fallback, p.width, p.height);
      embs.push({ person: i, e: await pipeline.embedCrop(crop) });
    }
  }
  return { embeddings: embs, people: people.length, undetected };
}

/**
 * Genuine and impostor cosines over every photo pair a < b. With `other` (the same photos embedded by another
 * model, e.g. fp32 vs int8), photo a comes from `embs` and photo b from `other`: the scores a fleet that mixes
 * the two models would see.
 */
export function pairScores(embs: readonly LfwEmbedding[], other: readonly LfwEmbedding[] = embs): PairScores {
  const genuine: number[] = [];
  const impostor: number[] = [];
  for (let a = 0; a < embs.length; a++) {
    for (let b = a + 1; b < embs.length; b++) {
      const x = embs[a] as LfwEmbedding;
      const y = other[b] as LfwEmbedding;
      (x.person === y.person ? genuine : impostor).push(cosine(x.e, y.e));
    }
  }
  return { genuine, impostor, people: new Set(embs.map((e) => e.person)).size };
}

function mouthCentre(t: Array<[number, number]>): [number, number] {
  const l: [number, number] = t[3] ?? [0, 0];
  const r: [number, number] = t[4] ?? [0, 0];
  return [(l[0] + r[0]) / 2, (l[1] + r[1]) / 2];
}

export interface Calibration {
  genuinePairs: number;
  impostorPairs: number;
  genuineMean: number;
  impostorMean: number;
  /** best (TAR + TNR) / 2 over all thresholds: LFW-style accuracy on balanced classes */
  bestAccuracy: number;
  bestThreshold: number;
  auc: number;
  thresholds: Record<FalseAcceptRate, number>;
  /** how each threshold was obtained */
  method: Record<FalseAcceptRate, "empirical" | "gaussian-tail">;
  tar: Record<FalseAcceptRate, number>;
}

/**
 * Threshold at FAR f: the smallest score with at most f of impostor pairs at or above it. Where f × impostors is
 * under 1 the sample cannot support it, so it is extrapolated from a normal fit to the impostor scores (never
 * below the highest impostor score seen).
 */
export function calibrate(s: PairScores): Calibration {
  const imp = [...s.impostor].sort((a, b) => b - a);
  const gen = [...s.genuine].sort((a, b) => a - b);
  const mean = (v: number[]) => v.reduce((x, y) => x + y, 0) / Math.max(1, v.length);
  const im = mean(imp);
  const sd = Math.sqrt(mean(imp.map((x) => (x - im) ** 2)));
  const fars: FalseAcceptRate[] = ["1e-2", "1e-3", "1e-4"];
  const thresholds = {} as Record<FalseAcceptRate, number>;
  const method = {} as Calibration["method"];
  const tar = {} as Record<FalseAcceptRate, number>;
  for (const far of fars) {
    const f = Number(far);
    const allowed = Math.floor(f * imp.length);
    let t: number;
    if (allowed >= 1) {
      // scores strictly above the (allowed+1)-th highest impostor
      t = (imp[allowed] ?? 0) + 1e-6;
      method[far] = "empirical";
    } else {
      t = Math.max((imp[0] ?? 0) + 1e-6, im + sd * normalQuantile(1 - f));
      method[far] = "gaussian-tail";
    }
    thresholds[far] = round4(t);
    tar[far] = gen.filter((g) => g >= thresholds[far]).length / Math.max(1, gen.length);
  }
  let bestAccuracy = 0;
  let bestThreshold = 0;
  for (const t of [...gen, ...imp]) {
    const acc = (gen.filter((g) => g >= t).length / gen.length + imp.filter((x) => x < t).length / imp.length) / 2;
    if (acc > bestAccuracy) [bestAccuracy, bestThreshold] = [acc, t];
  }
  let wins = 0;
  for (const g of gen) for (const x of imp) wins += g > x ? 1 : g === x ? 0.5 : 0;
  return {
    genuinePairs: gen.length,
    impostorPairs: imp.length,
    genuineMean: mean(gen),
    impostorMean: im,
    bestAccuracy,
    bestThreshold,
    auc: wins / Math.max(1, gen.length * imp.length),
    thresholds,
    method,
    tar,
  };
}

/** Acklam's rational approximation of the standard normal quantile (|error| < 1.2e-9) */
function normalQuantile(p: number): number {
  const a = [
    -39.69683028665376, 220.9460984245205, -275.9285104469687, 138.357751867269, -30.66479806614716, 2.506628277459239,
  ];
  const b = [-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572];
  const c = [
    -0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734, 4.374664141464968,
    2.938163982698783,
  ];
  const d = [0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416];
  const [a0, a1, a2, a3, a4, a5] = a as [number, number, number, number, number, number];
  const [b0, b1, b2, b3, b4] = b as [number, number, number, number, number];
  const [c0, c1, c2, c3, c4, c5] = c as [number, number, number, number, number, number];
  const [d0, d1, d2, d3] = d as [number, number, number, number];
  const lo = 0.02425;
  if (p < lo) {
    const q = Math.sqrt(-2 * Math.log(p));
    return (((((c0 * q + c1) * q + c2) * q + c3) * q + c4) * q + c5) / ((((d0 * q + d1) * q + d2) * q + d3) * q + 1);
  }
  if (p > 1 - lo) {
    const q = Math.sqrt(-2 * Math.log(1 - p));
    return -(((((c0 * q + c1) * q + c2) * q + c3) * q + c4) * q + c5) / ((((d0 * q + d1) * q + d2) * q + d3) * q + 1);
  }
  const q = p - 0.5;
  const r = q * q;
  return (
    ((((((a0 * r + a1) * r + a2) * r + a3) * r + a4) * r + a5) * q) /
    (((((b0 * r + b1) * r + b2) * r + b3) * r + b4) * r + 1)
  );
}

function round4(x: number): number {
  return Math.ceil(x * 1e4) / 1e4;
}

async function main(argv: string[]): Promise<void> {
  const arg = (name: string) => {
    const i = argv.indexOf(name);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const pipeline = await FacePipeline.load({ embedder: arg("--embedder") ?? "fr-feature", threads: 2 });
  try {
    const t0 = performance.now();
    const scores = await lfwScores(pipeline, arg("--data") ?? LFW_DIR);
    const c = calibrate(scores);
    console.log(
      JSON.stringify(
        {
          embedder: `${pipeline.embedder.name}@${pipeline.embedder.version}`,
          date: new Date().toISOString().slice(0, 10),
          people: scores.people,
          undetected: scores.undetected,
          ...c,
          ms: Math.round(performance.now() - t0),
        },
        null,
        2,
      ),
    );
  } finally {
    await pipeline.close();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href)
  await main(process.argv.slice(2));
