/**
 * `npx tsx models/src/bench/measure-embedding-spectrum.ts [--embedder dlib-resnet-int8]` — how far real face
 * embeddings are from the isotropic synthetic galleries the matching bench uses (orchestrator/src/gallery/synthetic.ts).
 * Embeds the LFW aligned-pairs photos (../shared/datasets, 70 people × 2) through the production pipeline
 * (detect → align → embed, as calibration does) and prints: genuine and impostor cosine (mean, std) against the
 * 0 ± 1/√dim of random directions, the length of the mean embedding, and the PCA spectrum of the identity centres
 * (each person's mean photo, centred on the mean of all): its participation ratio (Σλ)²/Σλ² — the effective
 * dimension — next to the same statistic for isotropic Gaussian samples of the same count and dimension, since 70
 * samples cannot show more than 69 dimensions. Writes bench-results/embedding-spectrum-<embedder>.json.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { lfwEmbeddings } from "../calibrate.ts";
import { DEFAULT_EMBEDDER, FacePipeline } from "../inference/pipeline.ts";

const { values: args } = parseArgs({ options: { embedder: { type: "string", default: DEFAULT_EMBEDDER } } });
const repoRoot = resolve(fileURLToPath(import.meta.url), "../../../..");

const dot = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i] as number) * (b[i] as number);
  return s;
};
const meanStd = (xs: readonly number[]) => {
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const std = Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / (xs.length - 1));
  return { mean: Number(mean.toFixed(4)), std: Number(std.toFixed(4)), n: xs.length };
};

/** Eigenvalues of a symmetric matrix (cyclic Jacobi), largest first. */
function eigenvalues(a: Float64Array, n: number): number[] {
  const m = Float64Array.from(a);
  for (let sweep = 0; sweep < 100; sweep++) {
    let off = 0;
    for (let p = 0; p < n; p++) for (let q = p + 1; q < n; q++) off += (m[p * n + q] as number) ** 2;
    if (off < 1e-22) break;
    for (let p = 0; p < n; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = m[p * n + q] as number;
        if (Math.abs(apq) < 1e-30) continue;
        const theta = ((m[q * n + q] as number) - (m[p * n + p] as number)) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let k = 0; k < n; k++) {
          const akp = m[k * n + p] as number;
          const akq = m[k * n + q] as number;
          m[k * n + p] = c * akp - s * akq;
          m[k * n + q] = s * akp + c * akq;
        }
        for (let k = 0; k < n; k++) {
          const apk = m[p * n + k] as number;
          const aqk = m[q * n + k] as number;
          m[p * n + k] = c * apk - s * aqk;
          m[q * n + k] = s * apk + c * aqk;
        }
      }
    }
  }
  return Array.from({ length: n }, (_, i) => m[i * n + i] as number).sort((x, y) => y - x);
}

/** Covariance spectrum of rows (centred on their mean) and its participation ratio. */
function spectrum(rows: readonly Float32Array[]): { eigen: number[]; participationRatio: number } {
  const d = (rows[0] as Float32Array).length;
  const mean = new Float64Array(d);
  for (const r of rows) for (let i = 0; i < d; i++) mean[i] = (mean[i] as number) + (r[i] as number) / rows.length;
  const cov = new Float64Array(d * d);
  for (const r of rows) {
    for (let i = 0; i < d; i++) {
      const ci = (r[i] as number) - (mean[i] as number);
      for (let j = i; j < d; j++)
        cov[i * d + j] = (cov[i * d + j] as number) + ci * ((r[j] as number) - (mean[j] as number));
    }
  }
  for (let i = 0; i < d; i++)
    for (let j = i; j < d; j++) {
      const v = (cov[i * d + j] as number) / (rows.length - 1);
      cov[i * d + j] = v;
      cov[j * d + i] = v;
    }
  const eigen = eigenvalues(cov, d).map((x) => Math.max(0, x));
  const sum = eigen.reduce((a, b) => a + b, 0);
  const sq = eigen.reduce((a, b) => a + b * b, 0);
  return { eigen, participationRatio: (sum * sum) / sq };
}

/** Isotropic control: the same statistic for `n` standard Gaussian rows of `d` (seeded, Box–Muller). */
function isotropicControl(n: number, d: number): number {
  let s = 12345;
  const rnd = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s + 0.5) / 4294967296;
  };
  const rows = Array.from({ length: n }, () =>
    Float32Array.from({ length: d }, () => Math.sqrt(-2 * Math.log(rnd())) * Math.cos(2 * Math.PI * rnd())),
  );
  return spectrum(rows).participationRatio;
}

const pipeline = await FacePipeline.load({ embedder: args.embedder, threads: 2 });
const { embeddings, people, undetected } = await lfwEmbeddings(pipeline);
const first = embeddings[0];
if (!first) throw new Error("no LFW photo was embedded: is ../shared/datasets/lfw-aligned-pairs there?");
const dim = first.e.length;
const unit = embeddings.map(({ person, e }) => {
  const n = Math.sqrt(dot(e, e));
  return { person, e: Float32Array.from(e, (x) => x / n) };
});
const genuine: number[] = [];
const impostor: number[] = [];
for (let a = 0; a < unit.length; a++)
  for (let b = a + 1; b < unit.length; b++) {
    const x = unit[a] as (typeof unit)[number];
    const y = unit[b] as (typeof unit)[number];
    (x.person === y.person ? genuine : impostor).push(dot(x.e, y.e));
  }
const meanAll = new Float32Array(dim);
for (const { e } of unit)
  for (let i = 0; i < dim; i++) meanAll[i] = (meanAll[i] as number) + (e[i] as number) / unit.length;
const centres = Array.from({ length: people }, (_, p) => {
  const mine = unit.filter((u) => u.person === p);
  const c = new Float32Array(dim);
  for (const { e } of mine) for (let i = 0; i < dim; i++) c[i] = (c[i] as number) + (e[i] as number) / mine.length;
  return c;
});
const centreSpectrum = spectrum(centres);
const photoSpectrum = spectrum(unit.map((u) => u.e));
const total = centreSpectrum.eigen.reduce((a, b) => a + b, 0);
const result = {
  embedder: `${pipeline.embedder.name}@${pipeline.embedder.version}`,
  photos: unit.length,
  people,
  undetected,
  dim,
  randomDirectionStd: Number((1 / Math.sqrt(dim)).toFixed(4)),
  genuine: meanStd(genuine),
  impostor: meanStd(impostor),
  meanEmbeddingNorm: Number(Math.sqrt(dot(meanAll, meanAll)).toFixed(4)),
  centres: {
    participationRatio: Number(centreSpectrum.participationRatio.toFixed(1)),
    isotropicControl: Number(isotropicControl(people, dim).toFixed(1)),
    /** share of the variance in the first 1, 5, 10, 20, 40 components */
    cumulative: [1, 5, 10, 20, 40].map((k) =>
      Number((centreSpectrum.eigen.slice(0, k).reduce((a, b) => a + b, 0) / total).toFixed(3)),
    ),
    eigen: centreSpectrum.eigen.map((x) => Number((x / total).toPrecision(4))),
  },
  photos_: {
    participationRatio: Number(photoSpectrum.participationRatio.toFixed(1)),
    isotropicControl: Number(isotropicControl(unit.length, dim).toFixed(1)),
  },
};
const { eigen, ...shown } = result.centres;
console.log(JSON.stringify({ ...result, centres: { ...shown, eigenTop10: eigen.slice(0, 10) } }, null, 1));
mkdirSync(join(repoRoot, "bench-results"), { recursive: true });
const file = join(repoRoot, "bench-results", `embedding-spectrum-${args.embedder}.json`);
writeFileSync(file, JSON.stringify(result, null, 1));
console.log(`written ${file}`);
