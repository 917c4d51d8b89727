/**
 * Synthetic face-embedding galleries for tests and benches, where nearest neighbours mean something: each identity
 * is a direction on the unit sphere, its templates and later probes are noisy samples around it. With the default
 * spread a template sits at cosine ≈ 0.78 from its identity and a probe at ≈ 0.6 from each template of the same
 * person. Deterministic for a seed.
 *
 * `centres: "isotropic"` (default): identities are uniform random directions, so two people are ≈ 0 ± 1/√dim apart —
 * every dimension equally used, the worst case for a graph index (between identities the landscape is flat noise).
 *
 * `centres: "lfw-spectrum"`: identity centres are drawn with the covariance spectrum measured on real faces, so they
 * crowd into fewer effective dimensions as real identities do. Measured 2026-11-25 by
 * models/src/bench/measure-embedding-spectrum.ts on the LFW aligned-pairs photos (70 people × 2, production
 * detect → align → embed) with dlib-resnet-int8 (128-d): the centred identity means have a participation ratio
 * (Σλ)²/Σλ² of 15.7 (isotropic Gaussian samples of the same count and dimension: 44.6, so 70 people cannot show
 * more than that; the first 10 components hold 64 % of the variance, 20 hold 82 %); raw cosines sit in a cone
 * (mean embedding length 0.93: impostors 0.855 ± 0.033, genuine 0.953 ± 0.018, against 0 ± 0.088 for random
 * directions). The cone is left out here — a common offset shifts every score of a probe alike and changes no
 * ranking — and the spectrum (`LFW_CENTRE_SPECTRUM`, 69 non-zero eigenvalues of 128) is stretched to `dim` (at 512-d
 * each eigenvalue covers 4 dimensions: participation ratio ≈ 63 of 512, the same share of the space). Template and
 * probe noise stay isotropic, which keeps the flat-noise part of the problem: conservative for a graph index.
 */
export type SyntheticCentres = "isotropic" | "lfw-spectrum";

export interface SyntheticGallery {
  dim: number;
  personIds: string[];
  /** templates per person, aligned with personIds */
  counts: number[];
  /** every template, row-major, person by person */
  vectors: Float32Array;
  /** `n` fresh probes of enrolled identities (not copies of templates), drawn at random */
  queries(n: number): { personId: string; vector: Float32Array }[];
}

/** mulberry32: small, fast and good enough for synthetic data (and for the graph tuning's probe sample) */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Fills `out` with standard normal samples (Box–Muller, two per draw). */
export function fillGaussian(out: Float32Array | Float64Array, random: () => number): void {
  for (let i = 0; i < out.length; i += 2) {
    const u = 1 - random();
    const r = Math.sqrt(-2 * Math.log(u));
    const theta = 2 * Math.PI * random();
    out[i] = r * Math.cos(theta);
    if (i + 1 < out.length) out[i + 1] = r * Math.sin(theta);
  }
}

/**
 * Normalised eigenvalues (largest first) of the covariance of identity centres measured on LFW with dlib-resnet-int8
 * (128-d, 70 people; see above): the remaining 59 are zero for want of more people.
 */
export const LFW_CENTRE_SPECTRUM: readonly number[] = [
  0.1672, 0.1162, 0.07361, 0.05718, 0.04681, 0.04389, 0.03546, 0.03337, 0.03235, 0.02895, 0.02624, 0.02428, 0.02222,
  0.02127, 0.01811, 0.01738, 0.01657, 0.01507, 0.01417, 0.01351, 0.01233, 0.01176, 0.01117, 0.0102, 0.009802, 0.009399,
  0.008772, 0.008211, 0.007461, 0.007112, 0.006538, 0.006132, 0.005544, 0.005293, 0.00508, 0.004784, 0.004381, 0.004191,
  0.003426, 0.003342, 0.002985, 0.002858, 0.002787, 0.002686, 0.002442, 0.002154, 0.001706, 0.001498, 0.001381,
  0.001331, 0.001197, 0.001134, 0.0009616, 0.0008702, 0.0007918, 0.0007291, 0.0006494, 0.0005483, 0.0004911, 0.0004237,
  0.0003734, 0.0003111, 0.0002545, 0.00021, 0.0001451, 0.0001094, 7.679e-5, 5.804e-5, 4.887e-5,
];
const LFW_SPECTRUM_DIM = 128;

/** Per-dimension standard deviations for centres with the LFW spectrum stretched to `dim`. */
function spectrumScale(dim: number): Float32Array {
  return Float32Array.from({ length: dim }, (_, j) =>
    Math.sqrt(LFW_CENTRE_SPECTRUM[Math.floor((j * LFW_SPECTRUM_DIM) / dim)] ?? 0),
  );
}

function normalise(v: Float32Array): Float32Array {
  let n = 0;
  for (let i = 0; i < v.length; i++) n += (v[i] as number) ** 2;
  const s = 1 / Math.sqrt(n);
  for (let i = 0; i < v.length; i++) v[i] = (v[i] as number) * s;
  return v;
}

export function syntheticGallery(opts: {
  people: number;
  templatesPerPerson: number;
  dim?: number;
  seed?: number;
  /** norm of the noise around an identity (relative to the unit identity vector); default 0.8 */
  spread?: number;
  /** how identity centres are drawn (see above); default "isotropic" */
  centres?: SyntheticCentres;
}): SyntheticGallery {
  const dim = opts.dim ?? 512;
  const spread = opts.spread ?? 0.8;
  const random = prng(opts.seed ?? 1);
  const perDim = spread / Math.sqrt(dim);
  const centres = new Float32Array(opts.people * dim);
  fillGaussian(centres, random);
  const scale = opts.centres === "lfw-spectrum" ? spectrumScale(dim) : undefined;
  for (let p = 0; p < opts.people; p++) {
    const centre = centres.subarray(p * dim, (p + 1) * dim);
    if (scale) for (let i = 0; i < dim; i++) centre[i] = (centre[i] as number) * (scale[i] as number);
    normalise(centre);
  }

  const noise = new Float32Array(dim);
  const sample = (p: number, out: Float32Array) => {
    fillGaussian(noise, random);
    const base = p * dim;
    for (let i = 0; i < dim; i++) out[i] = (centres[base + i] as number) + perDim * (noise[i] as number);
    return normalise(out);
  };

  const t = opts.templatesPerPerson;
  const vectors = new Float32Array(opts.people * t * dim);
  for (let row = 0; row < opts.people * t; row++)
    sample(Math.floor(row / t), vectors.subarray(row * dim, (row + 1) * dim));
  const personIds = Array.from({ length: opts.people }, (_, p) => `person-${p}`);
  return {
    dim,
    personIds,
    counts: personIds.map(() => t),
    vectors,
    queries(n) {
      return Array.from({ length: n }, () => {
        const p = Math.floor(random() * opts.people);
        return { personId: personIds[p] as string, vector: sample(p, new Float32Array(dim)) };
      });
    },
  };
}
