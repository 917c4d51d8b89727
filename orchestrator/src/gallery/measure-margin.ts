/**
 * Measures what a second-best margin does to 1:N decisions on real faces, to choose DEFAULT_MARGIN (open-set.ts).
 * Not a test: it prints a table.
 *
 *   tsx orchestrator/src/gallery/measure-margin.ts [--embedder dlib-resnet]
 *       [--data ../shared/datasets/lfw-aligned-pairs] [--margins 0,0.005,0.01]
 *
 * LFW pairs (70 people × 2 photos), each crop padded and run through detect → align → embed like a camera frame.
 * - members: one photo of every person enrolled (70 identities), the other photo of each is the probe (both ways:
 *   140 probes). A right answer is the probe's own person above the threshold; a wrong one is anyone else above it.
 * - strangers: the same probes against a gallery without their own person (69 identities): anything above the
 *   threshold is a false accept.
 * For each margin: how many right answers it costs, and how many wrong answers and false accepts it stops.
 *
 * Measured 2026-11-25, dlib-resnet@1.0.0, 70 people, 140 probes each way (right / wrong member / stranger accepted):
 *   threshold 0.9346 (1:1 FAR 1e-3): margin 0 → 121 / 3 / 12; 0.005 → 120 / 2 / 11; 0.01 → 114 / 1 / 9;
 *   0.02 → 103 / 0 / 4; 0.03 → 76 / 0 / 1
 *   threshold 0.9209 (1:1 FAR 1e-2): margin 0 → 133 / 4 / 57; 0.005 → 131 / 2 / 43; 0.01 → 124 / 1 / 33
 * 0.005 costs one right answer in 121 and stops one wrong member in three: the default. Larger margins stop more
 * strangers but cost right answers fast (0.01: −6%; 0.02: −15%); the size-adjusted threshold, not the margin, is
 * what holds strangers out (12 of 140 strangers pass the 1:1 1e-3 threshold against 69 people: FAR 1e-3 per
 * comparison is ~7% per search). dlib's size-adjusted 1:N threshold at 70 identities is clamped to 0.999.
 */
import { readdir } from "node:fs/promises";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { decodeImage, FacePipeline, type RawImage } from "@glance/models";
import type { FalseAcceptRate } from "@glance/shared";
import { openSetThreshold } from "./open-set.ts";

const { values: args } = parseArgs({
  options: {
    embedder: { type: "string" },
    data: { type: "string", default: resolve(import.meta.dirname, "../../../../shared/datasets/lfw-aligned-pairs") },
    margins: { type: "string", default: "0,0.0025,0.005,0.01,0.015,0.02,0.03,0.05" },
  },
});

const PAD = 50;

/** the crop on a grey border, so that the detector sees a whole face rather than a frame-filling one */
function pad(img: RawImage): RawImage {
  const width = img.width + 2 * PAD;
  const height = img.height + 2 * PAD;
  const data = new Uint8Array(width * height * 3).fill(128);
  for (let y = 0; y < img.height; y++)
    data.set(img.data.subarray(y * img.width * 3, (y + 1) * img.width * 3), ((y + PAD) * width + PAD) * 3);
  return { data, width, height };
}

const dot = (a: Float32Array, b: Float32Array) => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i] as number) * (b[i] as number);
  return s;
};

const pipeline = await FacePipeline.load(args.embedder ? { embedder: args.embedder } : {});
const people = (await readdir(args.data, { withFileTypes: true }))
  .filter((e) => e.isDirectory())
  .map((e) => e.name)
  .sort();
const photos: [Float32Array, Float32Array][] = [];
let skipped = 0;
for (const person of people) {
  const files = (await readdir(join(args.data, person))).filter((f) => /\.(jpe?g|png)$/i.test(f)).sort();
  const embs: Float32Array[] = [];
  for (const f of files.slice(0, 2)) {
    const img = pad(await decodeImage(join(args.data, person, f)));
    const face = (await pipeline.detect(img, { minScore: 0.3 })).sort((a, b) => b.score - a.score)[0];
    if (face) embs.push(await pipeline.embed(img, face));
  }
  if (embs.length === 2) photos.push(embs as [Float32Array, Float32Array]);
  else skipped++;
}
await pipeline.close();

interface Trial {
  genuine: boolean;
  /** the best identity is the probe's own */
  right: boolean;
  best: number;
  second: number;
}
const trials: Trial[] = [];
for (let p = 0; p < photos.length; p++) {
  for (const side of [0, 1] as const) {
    const probe = (photos[p] as [Float32Array, Float32Array])[side];
    for (const genuine of [true, false]) {
      const scores: { id: number; s: number }[] = [];
      for (let q = 0; q < photos.length; q++) {
        if (!genuine && q === p) continue;
        scores.push({ id: q, s: dot(probe, (photos[q] as [Float32Array, Float32Array])[1 - side] as Float32Array) });
      }
      scores.sort((a, b) => b.s - a.s);
      const [a, b] = scores as [{ id: number; s: number }, { id: number; s: number }];
      trials.push({ genuine, right: genuine && a.id === p, best: a.s, second: b.s });
    }
  }
}

const embedder = pipeline.embedder;
const thresholds: Partial<Record<FalseAcceptRate, number>> = embedder.embedding?.thresholds ?? {};
console.log(
  `${embedder.name}@${embedder.version}: ${photos.length} people (${skipped} skipped: a photo without a detected face), ${trials.length / 2} probes; 1:N threshold at ${photos.length} identities, FAR 1e-3: ${openSetThreshold(thresholds, photos.length).threshold.toFixed(4)}`,
);
const margins = args.margins.split(",").map(Number);
const genuineCount = trials.filter((t) => t.genuine).length;
for (const far of ["1e-2", "1e-3"] as FalseAcceptRate[]) {
  const t = thresholds[far];
  if (t === undefined) continue;
  console.log(`\nthreshold ${t} (1:1 FAR ${far}); margin: right member / wrong member / stranger accepted`);
  console.log("| margin | right (of %d) | wrong member | stranger accepted (of %d) |", genuineCount, genuineCount);
  console.log("|---|---|---|---|");
  for (const m of margins) {
    const accepted = trials.filter((x) => x.best >= t && x.best - x.second >= m);
    const right = accepted.filter((x) => x.right).length;
    const wrong = accepted.filter((x) => x.genuine && !x.right).length;
    const strangers = accepted.filter((x) => !x.genuine).length;
    console.log(`| ${m} | ${right} | ${wrong} | ${strangers} |`);
  }
}
const gaps = (xs: Trial[]) =>
  xs
    .map((x) => x.best - x.second)
    .sort((a, b) => a - b)
    .map((g) => g.toFixed(4));
const t3 = thresholds["1e-3"] ?? 0;
console.log(
  `\nmargins of right answers above the 1e-3 threshold (lowest 10): ${gaps(
    trials.filter((x) => x.right && x.best >= t3),
  )
    .slice(0, 10)
    .join(" ")}`,
);
console.log(
  `margins of strangers above the 1e-2 threshold: ${gaps(trials.filter((x) => !x.genuine && x.best >= (thresholds["1e-2"] ?? 0))).join(" ")}`,
);
