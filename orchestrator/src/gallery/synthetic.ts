/**
 * Synthetic face-embedding galleries for tests and benches, where nearest neighbours mean something: each identity
 * is a random direction on the unit sphere, its templates and later probes are noisy samples around it. With the
 * default spread a template sits at cosine ≈ 0.78 from its identity and a probe at ≈ 0.6 from each template of the
 * same person, while two different people are ≈ 0 ± 1/√dim apart: roughly the shape of ArcFace-style embeddings.
 * Deterministic for a seed.
 */
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

/** mulberry32: small, fast and good enough for synthetic data */
function prng(seed: number): () => number {
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
function fillGaussian(out: Float32Array, random: () => number): void {
  for (let i = 0; i < out.length; i += 2) {
    const u = 1 - random();
    const r = Math.sqrt(-2 * Math.log(u));
    const theta = 2 * Math.PI * random();
    out[i] = r * Math.cos(theta);
    if (i + 1 < out.length) out[i + 1] = r * Math.sin(theta);
  }
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
}): SyntheticGallery {
  const dim = opts.dim ?? 512;
  const spread = opts.spread ?? 0.8;
  const random = prng(opts.seed ?? 1);
  const perDim = spread / Math.sqrt(dim);
  const centres = new Float32Array(opts.people * dim);
  fillGaussian(centres, random);
  for (let p = 0; p < opts.people; p++) normalise(centres.subarray(p * dim, (p + 1) * dim));

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
