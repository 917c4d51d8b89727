import type { BatchMatches } from "usearch";
import { usearch } from "./usearch.ts";

/** One search hit: a template key and its cosine similarity (vectors are L2-normalised, so a dot product). */
export interface Neighbour {
  key: number;
  score: number;
}

/**
 * A vector index over L2-normalised embeddings of one space. Keys are template numbers chosen by the caller; a
 * removed key is never returned again.
 */
export interface VectorIndex {
  readonly kind: "exact" | "ann";
  readonly dim: number;
  readonly size: number;
  add(key: number, vector: Float32Array): void;
  /** many rows at once (row-major `vectors`, keys.length × dim) */
  addMany(keys: Uint32Array, vectors: Float32Array): void;
  remove(key: number): boolean;
  /** up to `k` neighbours, best first */
  search(query: Float32Array, k: number): Neighbour[];
  /** every (key, vector) held, for moving to another index */
  entries(): Iterable<[number, Float32Array]>;
  /** bytes held for vectors and graph, as far as the index can tell */
  memoryBytes(): number;
}

/**
 * Told of a removal: `key` left `row`, and the template that was in row `from` (the last) now fills it (`from` ===
 * `row` when the removed one was the last).
 */
export type RemovalWatcher = (key: number, row: number, from: number) => void;

/**
 * Brute force over one row-major Float32Array (rows × dim), exact by definition. The scan runs in usearch's SIMD
 * kernel (`exactSearch`, one thread) and its top k are re-scored here, so scores are bit-for-bit those of `score`
 * whichever path found them. Measured on this 2-core VM at 10k templates: 0.69 ms per probe at 128-d vs 4.44 ms for
 * the same scan as a JavaScript loop, 5.0 vs 26.3 ms at 512-d.
 */
export class ExactIndex implements VectorIndex {
  readonly kind = "exact";
  private matrix: Float32Array;
  private keys: Uint32Array;
  /**
   * row of each key, -1 for none: a table indexed by key rather than a Map, because keys are handed out in sequence
   * (SpaceIndex, Visitors) and re-scoring a graph search's candidates looks up 64 of them per probe, each a random
   * access (a Map's hash table cost two or three; re-scoring 16 people × 4 templates went from about 90 to 63 µs per probe)
   */
  private rowOf = new Int32Array(64).fill(-1);
  private rows = 0;
  private readonly watchers = new Set<RemovalWatcher>();

  constructor(
    readonly dim: number,
    capacity = 64,
  ) {
    this.matrix = new Float32Array(capacity * dim);
    this.keys = new Uint32Array(capacity);
  }

  get size(): number {
    return this.rows;
  }

  private reserve(rows: number): void {
    if (rows <= this.keys.length) return;
    const capacity = Math.max(rows, this.keys.length * 2);
    const matrix = new Float32Array(capacity * this.dim);
    matrix.set(this.matrix.subarray(0, this.rows * this.dim));
    const keys = new Uint32Array(capacity);
    keys.set(this.keys.subarray(0, this.rows));
    this.matrix = matrix;
    this.keys = keys;
  }

  /** The row holding `key`, or -1. */
  private rowAt(key: number): number {
    // out of range, negative or fractional: undefined
    return this.rowOf[key] ?? -1;
  }

  add(key: number, vector: Float32Array): void {
    if (vector.length !== this.dim) throw new Error(`index holds ${this.dim}-d vectors, not ${vector.length}-d`);
    if (!Number.isInteger(key) || key < 0 || key >= 2 ** 31)
      throw new Error(`keys are integers from 0 to 2^31 - 1 (handed out in sequence), not ${key}`);
    if (this.rowAt(key) >= 0) throw new Error(`key ${key} is already in the index`);
    if (key >= this.rowOf.length) {
      const grown = new Int32Array(Math.max(key + 1, this.rowOf.length * 2)).fill(-1);
      grown.set(this.rowOf);
      this.rowOf = grown;
    }
    this.reserve(this.rows + 1);
    this.matrix.set(vector, this.rows * this.dim);
    this.keys[this.rows] = key;
    this.rowOf[key] = this.rows;
    this.rows += 1;
  }

  addMany(keys: Uint32Array, vectors: Float32Array): void {
    if (vectors.length !== keys.length * this.dim) throw new Error("vectors must be keys.length × dim");
    this.reserve(this.rows + keys.length);
    for (let i = 0; i < keys.length; i++)
      this.add(keys[i] as number, vectors.subarray(i * this.dim, (i + 1) * this.dim));
  }

  remove(key: number): boolean {
    const row = this.rowAt(key);
    if (row < 0) return false;
    this.rowOf[key] = -1;
    const last = this.rows - 1;
    // the last row fills the hole, so the matrix stays dense and removal costs one row copy
    if (row !== last) {
      this.matrix.copyWithin(row * this.dim, last * this.dim, (last + 1) * this.dim);
      const moved = this.keys[last] as number;
      this.keys[row] = moved;
      this.rowOf[moved] = row;
    }
    this.matrix.fill(0, last * this.dim, (last + 1) * this.dim);
    this.rows = last;
    for (const watcher of this.watchers) watcher(key, row, last);
    return true;
  }

  /**
   * Tells `watcher` of every removal from now on, until the returned function is called: a scan that spans several
   * event-loop turns (the graph tuning's exact truth, exact-truth.ts) needs to know which rows moved under it.
   */
  watch(watcher: RemovalWatcher): () => void {
    this.watchers.add(watcher);
    return () => {
      this.watchers.delete(watcher);
    };
  }

  /** The key stored at `row` (0 ≤ row < size). */
  keyAt(row: number): number | undefined {
    return row < this.rows ? this.keys[row] : undefined;
  }

  /**
   * Rows [from, to) as a view into the store (row-major): valid only until the store next changes, so read it in
   * the same synchronous slice (a removal moves a row, an insert may move the whole matrix).
   */
  view(from: number, to: number): Float32Array {
    return this.matrix.subarray(from * this.dim, Math.min(to, this.rows) * this.dim);
  }

  /** The stored vector of a key (a view into the store: copy it to keep it), or undefined. */
  vector(key: number): Float32Array | undefined {
    const row = this.rowAt(key);
    return row < 0 ? undefined : this.matrix.subarray(row * this.dim, (row + 1) * this.dim);
  }

  /** The exact similarity of one stored vector to `query`; undefined for a key not (or no longer) held. */
  score(key: number, query: Float32Array): number | undefined {
    const row = this.rowAt(key);
    if (row < 0) return undefined;
    const { matrix, dim } = this;
    const base = row * dim;
    // eight running sums: V8 does not vectorise, but independent additions overlap in the pipeline (about twice as
    // fast as one sum at 128-d); the order is fixed, so a score is the same whichever path asks for it
    let s0 = 0;
    let s1 = 0;
    let s2 = 0;
    let s3 = 0;
    let s4 = 0;
    let s5 = 0;
    let s6 = 0;
    let s7 = 0;
    let i = 0;
    for (; i + 8 <= dim; i += 8) {
      const b = base + i;
      s0 += (query[i] as number) * (matrix[b] as number);
      s1 += (query[i + 1] as number) * (matrix[b + 1] as number);
      s2 += (query[i + 2] as number) * (matrix[b + 2] as number);
      s3 += (query[i + 3] as number) * (matrix[b + 3] as number);
      s4 += (query[i + 4] as number) * (matrix[b + 4] as number);
      s5 += (query[i + 5] as number) * (matrix[b + 5] as number);
      s6 += (query[i + 6] as number) * (matrix[b + 6] as number);
      s7 += (query[i + 7] as number) * (matrix[b + 7] as number);
    }
    for (; i < dim; i++) s0 += (query[i] as number) * (matrix[base + i] as number);
    return s0 + s1 + (s2 + s3) + (s4 + s5 + (s6 + s7));
  }

  search(query: Float32Array, k: number): Neighbour[] {
    const { dim, rows } = this;
    if (query.length !== dim || k <= 0 || rows === 0) return [];
    const found = usearch.exactSearch(
      this.matrix.subarray(0, rows * dim),
      query,
      dim,
      Math.min(k, rows),
      usearch.MetricKind.IP,
      1,
    );
    // one query in, one Matches out: its keys are our row numbers
    const hits = Array.from(found.keys, (row) => {
      const key = this.keys[Number(row)] as number;
      return { key, score: this.score(key, query) as number };
    });
    return hits.sort((a, b) => b.score - a.score);
  }

  /**
   * `search` for many queries (row-major) in one SIMD scan on `threads` cores (0: every core); each query's hits
   * are re-scored here exactly as `search` re-scores them.
   */
  searchMany(queries: Float32Array, k: number, threads = 0): Neighbour[][] {
    const { dim, rows } = this;
    if (queries.length % dim !== 0) throw new Error(`queries must be rows of ${dim}`);
    const n = queries.length / dim;
    if (n === 0) return [];
    if (k <= 0 || rows === 0) return Array.from({ length: n }, () => []);
    const want = Math.min(k, rows);
    const found = usearch.exactSearch(
      this.matrix.subarray(0, rows * dim),
      queries,
      dim,
      want,
      usearch.MetricKind.IP,
      threads,
    );
    const keysOf = (q: number): ArrayLike<bigint> =>
      n === 1
        ? found.keys
        : (found as BatchMatches).keys.subarray(q * want, q * want + Number((found as BatchMatches).counts[q]));
    return Array.from({ length: n }, (_, q) => {
      const query = queries.subarray(q * dim, (q + 1) * dim);
      const hits = Array.from(keysOf(q), (row) => {
        const key = this.keys[Number(row)] as number;
        return { key, score: this.score(key, query) as number };
      });
      return hits.sort((a, b) => b.score - a.score);
    });
  }

  *entries(): Iterable<[number, Float32Array]> {
    for (let row = 0; row < this.rows; row++)
      yield [this.keys[row] as number, this.matrix.subarray(row * this.dim, (row + 1) * this.dim)];
  }

  memoryBytes(): number {
    return this.matrix.byteLength + this.keys.byteLength + this.rowOf.byteLength;
  }
}
