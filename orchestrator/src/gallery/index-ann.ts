import { availableParallelism } from "node:os";
import usearch, { type BatchMatches, type Index as UsearchIndex } from "usearch";
import type { Neighbour, VectorIndex } from "./index-exact.ts";

export interface AnnOptions {
  /** graph degree (HNSW M); 16 measured to 100k (1M not measured: builds ran at a fraction of a core here) */
  connectivity?: number;
  /**
   * candidate list while inserting (efConstruction); default 64. bench:match 2026-11-25, 100k synthetic 512-d, i8:
   * efAdd 64 reaches recall@1 1.000 at ef 512 as efAdd 128 does, for ~0.6 instead of ~1.1 CPU-ms per insert
   * (50k build: 33 vs 56 CPU s), which halves a large gallery's start-up build
   */
  expansionAdd?: number;
  /**
   * candidate list while searching (ef); default 512. At 100k synthetic 512-d (efAdd 64): recall@1 0.846 at ef 64,
   * 0.961 at 128, 0.997 at 256, 1.000 at 512
   */
  expansionSearch?: number;
  /** threads for bulk inserts; default: every core */
  threads?: number;
  /**
   * how the graph stores vectors. "i8" (default): a quarter of f32's memory, and candidates are re-scored exactly
   * from the f32 store anyway. bench:match at 100k (top 16 re-scored): i8 ef 64 recall@1 0.914, f32 ef 64 0.887,
   * i8 ef 512 1.000: recall is set by the search breadth, not the quantization
   */
  quantization?: "i8" | "f16" | "f32";
}

/**
 * HNSW graph (usearch) over inner product of L2-normalised vectors, i.e. cosine. Chosen over hnswlib-node by
 * measurement (see orchestrator/README and `npm run bench:match`): it ships prebuilt binaries for linux/macOS, so
 * `npm install --ignore-scripts` works offline, builds in parallel, and its queries are faster at equal recall.
 * usearch reports a distance of 1 − dot for "ip"; scores are turned back into similarities here.
 */
export class AnnIndex implements VectorIndex {
  readonly kind = "ann";
  private readonly index: UsearchIndex;
  private readonly threads: number;
  private count = 0;
  private readonly scalarBytes: number;

  constructor(
    readonly dim: number,
    opts: AnnOptions = {},
  ) {
    this.index = new usearch.Index({
      dimensions: dim,
      metric: usearch.MetricKind.IP,
      quantization: { i8: usearch.ScalarKind.I8, f16: usearch.ScalarKind.F16, f32: usearch.ScalarKind.F32 }[
        opts.quantization ?? "i8"
      ],
      connectivity: opts.connectivity ?? 16,
      expansion_add: opts.expansionAdd ?? 64,
      expansion_search: opts.expansionSearch ?? 512,
      multi: false,
    });
    this.threads = opts.threads ?? availableParallelism();
    this.scalarBytes = { i8: 1, f16: 2, f32: 4 }[opts.quantization ?? "i8"];
  }

  get size(): number {
    return this.count;
  }

  add(key: number, vector: Float32Array): void {
    if (vector.length !== this.dim) throw new Error(`index holds ${this.dim}-d vectors, not ${vector.length}-d`);
    this.index.add(BigInt(key), vector, 1);
    this.count += 1;
  }

  addMany(keys: Uint32Array, vectors: Float32Array): void {
    if (vectors.length !== keys.length * this.dim) throw new Error("vectors must be keys.length × dim");
    if (keys.length === 0) return;
    const big = BigUint64Array.from(keys, (k) => BigInt(k));
    // in slices, so one call never holds the event loop for more than a moment per slice
    const slice = 8192;
    for (let at = 0; at < keys.length; at += slice) {
      const end = Math.min(keys.length, at + slice);
      this.index.add(big.subarray(at, end), vectors.subarray(at * this.dim, end * this.dim), this.threads);
    }
    this.count += keys.length;
  }

  remove(key: number): boolean {
    const removed = this.index.remove(BigInt(key)) as number;
    this.count -= removed;
    return removed > 0;
  }

  search(query: Float32Array, k: number): Neighbour[] {
    if (query.length !== this.dim || k <= 0 || this.count === 0) return [];
    const found = this.index.search(query, Math.min(k, this.count), 1);
    return this.toNeighbours(found.keys, found.distances, found.keys.length);
  }

  /**
   * Up to `k` neighbours for each of many queries (row-major `queries`), searched in parallel on `threads` cores
   * (default: every core). Each query's result is the one `search` gives: the threads only split the queries.
   */
  searchMany(queries: Float32Array, k: number, threads = this.threads): Neighbour[][] {
    if (queries.length % this.dim !== 0) throw new Error(`queries must be rows of ${this.dim}`);
    const n = queries.length / this.dim;
    if (n === 0) return [];
    if (k <= 0 || this.count === 0) return Array.from({ length: n }, () => []);
    const want = Math.min(k, this.count);
    const found = this.index.search(queries, want, threads);
    if (n === 1) return [this.toNeighbours(found.keys, found.distances, found.keys.length)];
    const batch = found as BatchMatches;
    return Array.from({ length: n }, (_, q) =>
      this.toNeighbours(
        batch.keys.subarray(q * want, (q + 1) * want),
        batch.distances.subarray(q * want, (q + 1) * want),
        Number(batch.counts[q]),
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
    this.index.save(path);
  }

  /** An index written by `save` with the same dimension and options. */
  static restore(path: string, dim: number, opts: AnnOptions = {}): AnnIndex {
    const ann = new AnnIndex(dim, opts);
    ann.index.load(path);
    ann.count = ann.index.size();
    return ann;
  }

  memoryBytes(): number {
    // vectors plus the level-0 graph (2·M neighbour slots of 4 bytes) and upper levels (≈ 1/M of that)
    const connectivity = this.index.connectivity();
    return this.count * (this.dim * this.scalarBytes + 2 * connectivity * 4 * 1.1 + 16);
  }
}
