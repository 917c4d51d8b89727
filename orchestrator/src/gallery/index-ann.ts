import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import type { BatchMatches, Index as UsearchIndex } from "usearch";
import type { Neighbour, VectorIndex } from "./index-exact.ts";
import { usearch } from "./usearch.ts";

export interface AnnOptions {
  /**
   * graph degree (HNSW M); default 16. With one node per person (SpaceIndex) a 1M-template gallery is a 250k-node
   * graph: built here in 486 s (≈ 515 nodes/s at load 6–10 on 2 cores); M 32 was not measured to the end
   */
  connectivity?: number;
  /**
   * candidate list while inserting (efConstruction); default 64. bench:match 2026-11-25, 100k synthetic 512-d, i8:
   * efAdd 64 reaches recall@1 1.000 at ef 512 as efAdd 128 does, for ~0.6 instead of ~1.1 CPU-ms per insert
   * (50k build: 33 vs 56 CPU s), which halves a large gallery's start-up build
   */
  expansionAdd?: number;
  /**
   * candidate list while searching (ef); default 128 for a projected graph, 256 for a whole one: the smallest
   * breadths at which bench:match held recall@1 ≥ 0.99 where it was measured (2026-11-25, one node per person,
   * 4 templates each, i8). Projected (LFW-spectrum identities, PCA 64): 1M × 512 0.997 at 1.51 ms p50 / 1.55 CPU-ms (1000 probes, load 1.75;
   * 0.432 ms / 0.457 CPU-ms with 8 people re-scored instead of 16, 2026-11-26),
   * 100k 1.000. Whole: 100k × 512 isotropic 0.997 (ef 128: 0.958), 100k × 128 isotropic 1.000 / LFW-spectrum 0.999;
   * 1M × 512 isotropic only 0.660 (0.846 at ef 512): not met there. It was 512 before. orchestrator/README "Scale".
   * Given here it is fixed; otherwise SpaceIndex measures the graph's recall and sets `ef` (see its graphTuning)
   */
  expansionSearch?: number;
  /** threads for bulk inserts and batch searches; default: every core */
  threads?: number;
  /**
   * how the graph stores vectors. "i8" (default): a quarter of f32's memory, and candidates are re-scored exactly
   * from the f32 store anyway. bench:match at 100k (top 16 re-scored): i8 ef 64 recall@1 0.914, f32 ef 64 0.887,
   * i8 ef 512 1.000: recall is set by the search breadth, not the quantization
   */
  quantization?: "i8" | "f16" | "f32";
  /**
   * dimensions of the graph's space: above it, vectors are projected onto the principal components of the first
   * batch inserted (PCA, as faiss's "PCA128,…" pre-transform) before they enter the graph — fewer bytes per visited
   * node, and the directions where identities differ kept. Candidates are re-scored from the full f32 store, so
   * only which candidates are found depends on it. Default: no projection.
   */
  projection?: number;
  /**
   * the projection is used only if its axes keep at least this share of the sample's variance; default 0.6. 64 axes
   * of 512-d people's means keep 0.68 with the LFW spectrum and 0.20 for isotropic identities (128 axes: 0.84, 0.37)
   */
  projectionMinVariance?: number;
}

/** Fewer rows than this many per output dimension and the first batch cannot teach a projection: none is used. */
const PROJECTION_ROWS_PER_DIM = 8;

/**
 * The top `r` principal directions (row-major r × dim) of up to 4096 rows (row-major, centred here), by subspace
 * iteration on their covariance.
 */
export function principalAxes(rows: Float32Array, dim: number, r: number): { axes: Float32Array; captured: number } {
  const n = rows.length / dim;
  const step = Math.max(1, Math.floor(n / 4096));
  const picked: number[] = [];
  for (let i = 0; i < n; i += step) picked.push(i);
  const mean = new Float64Array(dim);
  for (const i of picked) for (let d = 0; d < dim; d++) mean[d] = (mean[d] as number) + (rows[i * dim + d] as number);
  for (let d = 0; d < dim; d++) mean[d] = (mean[d] as number) / picked.length;
  const cov = new Float64Array(dim * dim);
  const x = new Float64Array(dim);
  for (const i of picked) {
    for (let d = 0; d < dim; d++) x[d] = (rows[i * dim + d] as number) - (mean[d] as number);
    for (let a = 0; a < dim; a++) {
      const xa = x[a] as number;
      if (xa === 0) continue;
      const base = a * dim;
      for (let b = a; b < dim; b++) cov[base + b] = (cov[base + b] as number) + xa * (x[b] as number);
    }
  }
  for (let a = 0; a < dim; a++) for (let b = 0; b < a; b++) cov[a * dim + b] = cov[b * dim + a] as number;
  // subspace iteration: Q ← orth(C·Q), from a fixed pseudo-random start so builds are reproducible
  let q = new Float64Array(r * dim);
  let seed = 0x9e3779b9;
  for (let i = 0; i < q.length; i++) {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
    q[i] = seed / 4294967296 - 0.5;
  }
  const orthonormalise = (m: Float64Array) => {
    for (let i = 0; i < r; i++) {
      const vi = m.subarray(i * dim, (i + 1) * dim);
      for (let j = 0; j < i; j++) {
        const vj = m.subarray(j * dim, (j + 1) * dim);
        let dot = 0;
        for (let d = 0; d < dim; d++) dot += (vi[d] as number) * (vj[d] as number);
        for (let d = 0; d < dim; d++) vi[d] = (vi[d] as number) - dot * (vj[d] as number);
      }
      let norm = 0;
      for (let d = 0; d < dim; d++) norm += (vi[d] as number) ** 2;
      const s = norm > 0 ? 1 / Math.sqrt(norm) : 0;
      for (let d = 0; d < dim; d++) vi[d] = (vi[d] as number) * s;
    }
  };
  orthonormalise(q);
  for (let iter = 0; iter < 12; iter++) {
    const next = new Float64Array(r * dim);
    for (let i = 0; i < r; i++) {
      const vi = q.subarray(i * dim, (i + 1) * dim);
      const out = next.subarray(i * dim, (i + 1) * dim);
      for (let a = 0; a < dim; a++) {
        const base = a * dim;
        let sum = 0;
        for (let b = 0; b < dim; b++) sum += (cov[base + b] as number) * (vi[b] as number);
        out[a] = sum;
      }
    }
    orthonormalise(next);
    q = next;
  }
  // share of the sample's variance the axes keep: Σ qᵢᵀCqᵢ / trace C
  let kept = 0;
  let trace = 0;
  for (let a = 0; a < dim; a++) trace += cov[a * dim + a] as number;
  for (let i = 0; i < r; i++) {
    const vi = q.subarray(i * dim, (i + 1) * dim);
    for (let a = 0; a < dim; a++) {
      let sum = 0;
      for (let b = 0; b < dim; b++) sum += (cov[a * dim + b] as number) * (vi[b] as number);
      kept += (vi[a] as number) * sum;
    }
  }
  return { axes: Float32Array.from(q), captured: trace > 0 ? kept / trace : 0 };
}

/**
 * HNSW graph (usearch) over inner product of L2-normalised vectors, i.e. cosine. Chosen over hnswlib-node by
 * measurement (see orchestrator/README and `npm run bench:match`): it ships prebuilt binaries for linux/macOS, so
 * `npm install --ignore-scripts` works offline, builds and searches batches on every core, and its queries are faster at equal recall.
 * usearch reports a distance of 1 − dot for "ip"; scores are turned back into similarities here.
 */
export class AnnIndex implements VectorIndex {
  readonly kind = "ann";
  private built: UsearchIndex | undefined;
  private readonly threads: number;
  private count = 0;
  private readonly scalarBytes: number;
  /** r × dim principal axes the vectors are projected onto, once learnt */
  private axes: Float32Array | undefined;
  private learnt: boolean;
  /** share of the variance the learnt axes keep (whether or not they were used) */
  captured: number | undefined;
  private readonly graphDim: number;

  constructor(
    readonly dim: number,
    private readonly opts: AnnOptions = {},
  ) {
    this.graphDim = opts.projection && opts.projection < dim ? opts.projection : dim;
    // without a projection to learn, the graph's space is known now
    this.learnt = this.graphDim === dim;
    this.threads = opts.threads ?? availableParallelism();
    this.scalarBytes = { i8: 1, f16: 2, f32: 4 }[opts.quantization ?? "i8"];
  }

  /** the usearch graph, made once the graph's space is decided */
  private get index(): UsearchIndex {
    if (!this.learnt) throw new Error("the graph's projection is learnt from its first insert");
    this.built ??= new usearch.Index({
      dimensions: this.axes ? this.graphDim : this.dim,
      metric: usearch.MetricKind.IP,
      quantization: { i8: usearch.ScalarKind.I8, f16: usearch.ScalarKind.F16, f32: usearch.ScalarKind.F32 }[
        this.opts.quantization ?? "i8"
      ],
      connectivity: this.opts.connectivity ?? 16,
      expansion_add: this.opts.expansionAdd ?? 64,
      // the breadth is applied per search instead (see `ef`): usearch walks max(expansion_search, wanted)
      // candidates and keeps the best `wanted`, so asking for `ef` results and keeping `k` is a search at breadth ef
      expansion_search: 1,
      multi: false,
    });
    return this.built;
  }

  get size(): number {
    return this.count;
  }

  private breadth: number | undefined;

  /**
   * Search breadth (HNSW ef): `expansionSearch`, else 128 for a projected graph and 256 for a whole one, until set.
   * Changing it costs nothing: usearch fixes its own breadth when an index is made (index_dense_config_t, and the JS
   * binding exposes no change_expansion_search), so the graph is made with breadth 1 and each search asks usearch
   * for max(k, ef) results — usearch searches at breadth max(expansion_search, wanted) — of which the best k are kept.
   */
  get ef(): number {
    return this.breadth ?? this.opts.expansionSearch ?? (this.axes ? 128 : 256);
  }

  set ef(value: number) {
    if (!Number.isInteger(value) || value < 1)
      throw new Error(`search breadth must be a positive integer, not ${value}`);
    this.breadth = value;
  }

  /** Rows as the graph holds them: projected onto the learnt axes, or as they are. */
  private toGraph(rows: Float32Array): Float32Array {
    const axes = this.axes;
    if (!axes) return rows;
    const { dim } = this;
    const graphDim = axes.length / dim;
    const n = rows.length / dim;
    const out = new Float32Array(n * graphDim);
    for (let i = 0; i < n; i++) {
      const base = i * dim;
      for (let j = 0; j < graphDim; j++) {
        const axis = j * dim;
        let sum = 0;
        for (let d = 0; d < dim; d++) sum += (rows[base + d] as number) * (axes[axis + d] as number);
        out[i * graphDim + j] = sum;
      }
    }
    return out;
  }

  /**
   * Decides the graph's space, once, before anything is inserted: a projection learnt from these rows (a sample of
   * what the graph will hold) when there are at least 8 per projected dimension, else none. The first insert calls
   * it with its own rows if nobody did.
   */
  learnProjection(rows: Float32Array): void {
    if (this.learnt) return;
    this.learnt = true;
    if (this.graphDim < this.dim && rows.length / this.dim >= PROJECTION_ROWS_PER_DIM * this.graphDim) {
      const { axes, captured } = principalAxes(rows, this.dim, this.graphDim);
      this.captured = captured;
      // a space without a few dominant directions (isotropic noise) would lose its neighbours: keep it whole
      if (captured >= (this.opts.projectionMinVariance ?? 0.6)) this.axes = axes;
    }
  }

  /** whether vectors are projected before they enter the graph */
  get projected(): boolean {
    return this.axes !== undefined;
  }

  add(key: number, vector: Float32Array): void {
    if (vector.length !== this.dim) throw new Error(`index holds ${this.dim}-d vectors, not ${vector.length}-d`);
    this.learnProjection(vector);
    this.insert(BigUint64Array.of(BigInt(key)), this.toGraph(vector));
    this.count += 1;
  }

  /**
   * Inserts many rows. A bulk insert (`parallel`; by default when there are at least as many rows as the graph
   * holds: the build at start-up, or a doubling) runs on every core and is then checked for stranded nodes (see
   * `repair`) unless `check` is false (the caller then repairs once after several bulk inserts); a smaller one runs
   * on one thread (see `insert`), where usearch strands none (100k × 128 inserted one at a time: all reached).
   */
  addMany(keys: Uint32Array, vectors: Float32Array, opts: { parallel?: boolean; check?: boolean } = {}): void {
    const { dim } = this;
    if (vectors.length !== keys.length * dim) throw new Error("vectors must be keys.length × dim");
    if (keys.length === 0) return;
    this.learnProjection(vectors);
    const parallel = opts.parallel ?? keys.length >= this.count;
    const big = BigUint64Array.from(keys, (k) => BigInt(k));
    // projected in slices, so the projected copy never holds more than a slice
    const slice = 8192;
    for (let at = 0; at < keys.length; at += slice) {
      const end = Math.min(keys.length, at + slice);
      const rows = this.toGraph(vectors.subarray(at * dim, end * dim));
      if (parallel) this.index.add(big.subarray(at, end), rows, this.threads);
      else this.insert(big.subarray(at, end), rows);
    }
    this.count += keys.length;
    if (parallel && opts.check !== false) {
      const row = new Map<number, number>();
      this.repair(keys, (key) => {
        if (row.size === 0)
          keys.forEach((k, i) => {
            row.set(k, i);
          });
        const i = row.get(key) as number;
        return vectors.subarray(i * dim, (i + 1) * dim);
      });
    }
  }

  /** nodes found stranded by a parallel insert and inserted again, since this index was made */
  repaired = 0;

  /**
   * usearch's parallel insert strands a few nodes that no search reaches whatever its breadth
   * (unum-cloud/USearch#735, fix pending in #772): measured here, 1 to 4 of 2,000 and 9 of 100,000, each a person
   * who would never be recognised. A search asking for every node walks all the graph reaches (0.4–0.6 s at 100k,
   * against 18 s for the parallel build and 38 s for a one-thread one), so the stranded ones among `keys` are found,
   * removed and inserted again on one thread, each from `vectorOf(key)` (the vector as given to `addMany`).
   * Returns how many were stranded.
   */
  repair(keys: Uint32Array, vectorOf: (key: number) => Float32Array): number {
    const index = this.index;
    const { dim } = this;
    if (keys.length === 0 || this.count === 0) return 0;
    const probe = this.toGraph(vectorOf(keys[0] as number).slice());
    let total = 0;
    // a re-insert on one thread is not stranded; the rounds only bound the work should usearch ever differ
    for (let round = 0; round < 3; round++) {
      const reached = new Set<bigint>(index.search(probe, index.size(), 1).keys);
      const stranded = keys.filter((key) => !reached.has(BigInt(key)));
      if (stranded.length === 0) break;
      const again = new Float32Array(stranded.length * dim);
      stranded.forEach((key, i) => {
        again.set(vectorOf(key), i * dim);
      });
      const big = BigUint64Array.from(stranded, (k) => BigInt(k));
      for (const key of big) index.remove(key);
      this.insert(big, this.toGraph(again));
      total += stranded.length;
    }
    this.repaired += total;
    return total;
  }

  /**
   * Inserts rows already in the graph's space, one at a time, so none is stranded (see `repair`). A search may still
   * use every core: usearch sizes its per-thread search contexts when an insert grows the index, so each growth is
   * made by a one-row insert that names `threads` (one row, so nothing runs concurrently), and the rest go in on one
   * thread.
   */
  private insert(keys: BigUint64Array, rows: Float32Array): void {
    const index = this.index;
    const width = rows.length / keys.length;
    let at = 0;
    while (at < keys.length) {
      // usearch grows (and re-sizes its thread contexts) when size + rows ≥ capacity
      const room = index.capacity() - index.size() - 1;
      const end = room > 0 ? Math.min(keys.length, at + room) : at + 1;
      index.add(keys.subarray(at, end), rows.subarray(at * width, end * width), room > 0 ? 1 : this.threads);
      at = end;
    }
  }

  remove(key: number): boolean {
    if (this.count === 0) return false;
    const removed = this.index.remove(BigInt(key)) as number;
    this.count -= removed;
    return removed > 0;
  }

  /** Up to `k` neighbours, searched at breadth `ef` (default: the index's `ef`). */
  search(query: Float32Array, k: number, ef = this.ef): Neighbour[] {
    if (query.length !== this.dim || k <= 0 || this.count === 0) return [];
    const found = this.index.search(this.toGraph(query), Math.min(Math.max(k, ef), this.count), 1);
    return this.toNeighbours(found.keys, found.distances, Math.min(k, found.keys.length));
  }

  /**
   * Up to `k` neighbours for each of many queries (row-major `queries`), searched in parallel on `threads` cores
   * (default: every core). Each query's result is the one `search` gives: the threads only split the queries.
   */
  searchMany(queries: Float32Array, k: number, threads = this.threads, ef = this.ef): Neighbour[][] {
    if (queries.length % this.dim !== 0) throw new Error(`queries must be rows of ${this.dim}`);
    const n = queries.length / this.dim;
    if (n === 0) return [];
    if (k <= 0 || this.count === 0) return Array.from({ length: n }, () => []);
    const want = Math.min(Math.max(k, ef), this.count);
    const found = this.index.search(this.toGraph(queries), want, threads);
    if (n === 1) return [this.toNeighbours(found.keys, found.distances, Math.min(k, found.keys.length))];
    const batch = found as BatchMatches;
    return Array.from({ length: n }, (_, q) =>
      this.toNeighbours(
        batch.keys.subarray(q * want, (q + 1) * want),
        batch.distances.subarray(q * want, (q + 1) * want),
        Math.min(k, Number(batch.counts[q])),
      ),
    );
  }

  private toNeighbours(keys: BigUint64Array, distances: Float32Array, count: number): Neighbour[] {
    const out: Neighbour[] = [];
    for (let i = 0; i < count; i++) out.push({ key: Number(keys[i]), score: 1 - (distances[i] as number) });
    return out;
  }

  entries(): Iterable<[number, Float32Array]> {
    throw new Error("an ANN index is built from the gallery, never copied out of");
  }

  /** Writes the graph and vectors to one file (usearch format), so a large gallery need not be rebuilt. */
  save(path: string): void {
    this.learnProjection(new Float32Array(0));
    this.index.save(path);
    if (this.axes) writeFileSync(`${path}.axes`, this.axes);
  }

  /** An index written by `save` with the same dimension and options. */
  static restore(path: string, dim: number, opts: AnnOptions = {}): AnnIndex {
    const ann = new AnnIndex(dim, opts);
    if (ann.graphDim < dim && existsSync(`${path}.axes`)) {
      const bytes = readFileSync(`${path}.axes`);
      ann.axes = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4).slice();
      if (ann.axes.length !== ann.graphDim * dim) throw new Error(`${path}.axes is not ${ann.graphDim} × ${dim}`);
    }
    ann.learnt = true;
    ann.index.load(path);
    ann.count = ann.index.size();
    return ann;
  }

  memoryBytes(): number {
    // vectors plus the level-0 graph (2·M neighbour slots of 4 bytes) and upper levels (≈ 1/M of that)
    const connectivity = this.opts.connectivity ?? 16;
    return (
      this.count * ((this.axes ? this.graphDim : this.dim) * this.scalarBytes + 2 * connectivity * 4 * 1.1 + 16) +
      (this.axes?.byteLength ?? 0)
    );
  }
}
