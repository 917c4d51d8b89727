import { ExactTop1, nextTurn, SLICE_MS } from "./exact-truth.ts";
import { AnnIndex, type AnnOptions } from "./index-ann.ts";
import { ExactIndex, type Neighbour } from "./index-exact.ts";
import { fillGaussian, prng } from "./synthetic.ts";

export interface PersonHit {
  personId: string;
  /** the person's best template */
  score: number;
}

export interface SpaceIndexOptions {
  /** above this many templates the index moves from exact search to ANN; default 20,000 (≈ 2–3 ms exact on 1 core) */
  annThreshold?: number;
  /** graph options; an explicit `expansionSearch` fixes the search breadth and turns the tuning below off */
  ann?: AnnOptions;
  /** how the graph's search breadth is chosen by measuring its recall (see `graphTuning`) */
  tuning?: GraphTuningOptions;
  /** told once when no breadth on the ladder reaches the target recall (the largest is used) */
  warn?: (message: string) => void;
}

export interface GraphTuningOptions {
  /** recall@1 (against exact search) the breadth must reach on the sampled probes; default 0.99 */
  recall?: number;
  /** probes drawn from the gallery; default 200 */
  probes?: number;
  /**
   * cosine between a probe and the template it is drawn from, or a function read at each tuning. The Gallery passes
   * its open-set threshold: the lowest score a genuine probe can have and still be accepted — probes below it are
   * "unknown" whichever person the graph finds, so the breadth must serve those at or above it, and the hardest of
   * them sit at it (and the threshold follows the gallery's size, as the tuning does). Without one: 0.6, what a
   * genuine probe scores against one template of its person in the synthetic generator (synthetic.ts: templates at
   * ≈ 0.78 from their identity, probes at ≈ 0.6 from each template).
   */
  similarity?: number | (() => number);
  /** breadths tried, smallest first; default 16, 24, 32, 48, … 512 (the largest is searched at until measured) */
  ladder?: readonly number[];
  /** seed of the probe sample; default 1 */
  seed?: number;
}

/** How the graph's search breadth was chosen, and what it measured. */
export interface GraphTuning {
  /** search breadth (HNSW ef) in force */
  ef: number;
  /**
   * "explicit": `ann.expansionSearch` (or GLANCE_ANN_EF) fixed it; "measured": the smallest on the ladder reaching
   * the target; "default": not measured yet (a new graph, its tuning `pending`): the ladder's largest
   */
  source: "explicit" | "measured" | "default";
  /** templates held when it was chosen (tuning runs again once the gallery has grown by half) */
  templates: number;
  /** a tuning is running (in the background): `ef` is the previous one's, or the default, until it ends */
  pending?: true;
  /** recall@1 measured at `ef` on the sampled probes (measured only) */
  recall?: number;
  /** the recall@1 asked for, and whether `ef` reached it (else the ladder's largest is in force) */
  target?: number;
  reached?: boolean;
  probes?: number;
  /** cosine of each probe to its template */
  similarity?: number;
  /** wall time of the whole tuning (probe drawing, exact ground truth, every breadth tried), yields included */
  ms?: number;
  /** recall@1 at each breadth tried */
  tried?: { ef: number; recall: number }[];
}

/**
 * Each rung half again the last (about): the search costs about in proportion to the breadth, so a ladder of
 * doublings could spend up to twice what the target needs. bench:ingest (100k × 128 isotropic, threshold 0.94):
 * recall@1 0.945 at 32 and 0.99 at 48, where the doubling ladder chose 64.
 */
const DEFAULT_LADDER = [16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512] as const;

/** The people found for one probe, each with their best template's exact score, best first. */
interface Candidates {
  people: PersonHit[];
  /** the lowest template score among the candidates: nobody further can score above it */
  lowest: number;
  exhausted: boolean;
}

export interface SearchOptions {
  /** how many distinct people to return; default 2 (best and runner-up, for a margin) */
  people?: number;
  /** people who may be returned here (consent covers this store); others are skipped */
  accept?: (personId: string) => boolean;
  /**
   * similarity below which nobody interests the caller (the open-set threshold): when every candidate so far was
   * refused by `accept`, the search widens only while candidates can still reach it
   */
  floor?: number;
}

/**
 * Templates of one embedding space, searched by person. Every template lives in a flat f32 store (exact brute force
 * for small galleries); once the gallery outgrows `annThreshold` an HNSW graph (usearch) is built beside it with one
 * node per person — the normalised mean of their templates — and proposes candidate people, whose templates are
 * then all scored exactly from the store. So scores, and with them the calibrated open-set thresholds, are the same
 * whichever path answered. A person's score is their best template. Removing a person removes their templates from
 * the store and their node from the graph, so they are never returned again.
 *
 * Why a node per person rather than per template (bench:match, 2026-11-25, 100k templates = 25k people × 4,
 * 512-d, i8 graph, one core): the graph is a quarter of the size, so it builds 4–6× faster (the 1M gallery becomes
 * buildable on two cores at all), and a mean of 4 templates sits nearer the identity than any one of them, so the
 * walk towards it is steadier: isotropic data, recall@1 0.973 at ef 128 / 0.999 at ef 256 per person vs 0.966 /
 * 1.000 per template at ≈ 1.5× the latency; identity centres with the LFW spectrum (synthetic.ts), 0.999 at
 * ef 32 in 0.36 ms per person vs 0.997 in 0.57 ms per template.
 */
export class SpaceIndex {
  private store: ExactIndex | undefined;
  private graph: AnnIndex | undefined;
  private readonly owner = new Map<number, string>();
  private readonly keysOf = new Map<string, number[]>();
  private nextKey = 0;
  /** graph node of each person while the graph exists; a person's node gets a fresh key whenever their mean moves */
  private readonly nodeOf = new Map<string, number>();
  /** graph node → its person and their template keys (the same array as keysOf's: re-scoring reads it per candidate) */
  private readonly personAt = new Map<number, { personId: string; keys: number[] }>();
  private nextNode = 0;
  private readonly annThreshold: number;
  private tuning: GraphTuning | undefined;
  /** the breadth fixed by the options the graph was built or opened with, if any */
  private fixedEf: number | undefined;
  private warned = false;
  /** the tunings running in the background (one at a time), until none is left to run */
  private tuner: Promise<void> | undefined;
  /** another tuning was asked for while one ran */
  private retune = false;
  /** the running tuning's exact truth and the person each of its probes was drawn from (see `remove`) */
  private measuring: { truth: ExactTop1; drawnFrom: readonly string[] } | undefined;

  constructor(private readonly opts: SpaceIndexOptions = {}) {
    this.annThreshold = opts.annThreshold ?? 20_000;
  }

  get kind(): "exact" | "ann" | "empty" {
    return this.graph ? "ann" : this.store ? "exact" : "empty";
  }

  get dim(): number {
    return this.store?.dim ?? 0;
  }

  get templates(): number {
    return this.owner.size;
  }

  get people(): number {
    return this.keysOf.size;
  }

  memoryBytes(): number {
    return (this.store?.memoryBytes() ?? 0) + (this.graph?.memoryBytes() ?? 0);
  }

  private allot(personId: string, count: number): Uint32Array {
    const keys = new Uint32Array(count);
    const list = this.keysOf.get(personId) ?? [];
    for (let i = 0; i < count; i++) {
      const key = this.nextKey++;
      keys[i] = key;
      list.push(key);
      this.owner.set(key, personId);
    }
    if (count > 0) this.keysOf.set(personId, list);
    return keys;
  }

  /** Adds templates of a person (more may follow later). */
  add(personId: string, embeddings: readonly Float32Array[]): void {
    if (embeddings.length === 0) return;
    const dim = (embeddings[0] as Float32Array).length;
    const vectors = new Float32Array(embeddings.length * dim);
    embeddings.forEach((e, i) => {
      if (e.length !== dim) throw new Error(`this space holds ${dim}-d embeddings, not ${e.length}-d`);
      vectors.set(e, i * dim);
    });
    this.addMany([personId], [embeddings.length], vectors);
  }

  /**
   * Bulk load: `counts[i]` templates of `personIds[i]`, their rows consecutive in `vectors` (row-major). Used when
   * the gallery is rebuilt from the database and by the benches.
   */
  addMany(personIds: readonly string[], counts: readonly number[], vectors: Float32Array): void {
    const total = counts.reduce((a, b) => a + b, 0);
    if (total === 0) return;
    if (vectors.length % total !== 0) throw new Error("vectors must hold sum(counts) rows of equal length");
    const dim = vectors.length / total;
    if (this.store && this.store.dim !== dim)
      throw new Error(`this space holds ${this.store.dim}-d embeddings, not ${dim}-d`);
    const keys = new Uint32Array(total);
    let at = 0;
    personIds.forEach((personId, i) => {
      keys.set(this.allot(personId, counts[i] ?? 0), at);
      at += counts[i] ?? 0;
    });
    this.store ??= new ExactIndex(dim, total);
    this.store.addMany(keys, vectors);
    if (this.graph) {
      this.placeNodes(this.graph, personIds);
      // while a tuning runs, it checks the growth itself when it ends
      if (!this.tuner && this.store.size >= 1.5 * (this.tuning?.templates ?? 0)) void this.tuneGraph();
    }
    // outgrown brute force: build the graph once from everyone held; later additions move their person's node
    else if (this.store.size > this.annThreshold) this.buildGraph();
  }

  /**
   * Builds the graph now from everyone held (addMany does so once the gallery outgrows `annThreshold`), in tenths
   * so `onProgress(people placed, people)` can show a long build's rate.
   */
  buildGraph(onProgress?: (done: number, total: number) => void): void {
    if (!this.store) return;
    const graph = new AnnIndex(this.store.dim, this.annOptions());
    // nodes numbered 0… in enrolment order, which is what loadGraph relies on
    this.nodeOf.clear();
    this.personAt.clear();
    this.nextNode = 0;
    const everyone = [...this.keysOf.keys()];
    if (this.annOptions().projection) {
      // the projection is learnt from people spread over the whole gallery, not from the first tenth
      const every = Math.max(1, Math.floor(everyone.length / 4096));
      const sample = everyone.filter((_, i) => i % every === 0);
      const dim = this.store.dim;
      const means = new Float32Array(sample.length * dim);
      sample.forEach((personId, i) => {
        this.meanOf(personId, means.subarray(i * dim, (i + 1) * dim));
      });
      graph.learnProjection(means);
    }
    const step = Math.max(1, Math.ceil(everyone.length / 10));
    for (let at = 0; at < everyone.length; at += step) {
      // on every core; the nodes a parallel insert strands are found once, below
      this.placeNodes(graph, everyone.slice(at, at + step), { parallel: true, check: false });
      onProgress?.(Math.min(everyone.length, at + step), everyone.length);
    }
    const mean = new Float32Array(this.store.dim);
    graph.repair(Uint32Array.from(this.personAt.keys()), (node) => {
      this.meanOf((this.personAt.get(node) as { personId: string }).personId, mean);
      return mean;
    });
    this.useGraph(graph, this.opts.ann?.expansionSearch);
  }

  /**
   * Graph options: a 512-d (or wider) space is projected onto its 64 principal axes when they keep ≥ 60 % of the
   * variance of the people's means (AnnOptions.projection). bench:match, 1M templates (250k people) 512-d with the
   * LFW spectrum: PCA 64 ef 128 recall@1 0.997 at 1.51 ms p50 / 1.55 CPU-ms (1000 probes, load 1.75), PCA 128 ef 256 1.000 at
   * 2.00 / 2.32 (load 3.5), whole 512-d ef 256 0.994 at 4.85 / 4.86 (load 5.5); the 64 axes kept 0.68 of the variance
   * there and 0.20 for isotropic identities, which therefore stay whole.
   */
  private annOptions(ann: AnnOptions = this.opts.ann ?? {}): AnnOptions {
    const dim = this.store?.dim ?? 0;
    return { ...(dim >= 512 ? { projection: 64 } : {}), ...ann };
  }

  /** people the graph's parallel inserts left unreachable and placed again (see AnnIndex.repair) */
  get graphRepaired(): number {
    return this.graph?.repaired ?? 0;
  }

  /** whether the graph's space is projected, and the share of variance its axes keep (known after a build) */
  graphProjection(): { projected: boolean; captured?: number } | undefined {
    if (!this.graph) return undefined;
    const captured = this.graph.captured;
    return { projected: this.graph.projected, ...(captured !== undefined ? { captured } : {}) };
  }

  /** Writes the graph (usearch format), so a large gallery need not be rebuilt; false when there is none. */
  saveGraph(path: string): boolean {
    this.graph?.save(path);
    return this.graph !== undefined;
  }

  /**
   * Opens a graph written by `saveGraph` right after `buildGraph`, for the same templates loaded in the same order
   * (node n is the n-th person enrolled), with these options (an explicit `expansionSearch` fixes the search
   * breadth, else it is measured as after a build). Throws when the file does not have one node per person held.
   */
  loadGraph(path: string, ann: AnnOptions = this.opts.ann ?? {}): void {
    if (!this.store) throw new Error("load the templates before their graph");
    const graph = AnnIndex.restore(path, this.store.dim, this.annOptions(ann));
    if (graph.size !== this.keysOf.size)
      throw new Error(`${path} holds ${graph.size} nodes for ${this.keysOf.size} people: rebuild it`);
    this.nodeOf.clear();
    this.personAt.clear();
    let node = 0;
    for (const personId of this.keysOf.keys()) {
      this.nodeOf.set(personId, node);
      this.personAt.set(node, { personId, keys: this.keysOf.get(personId) ?? [] });
      node++;
    }
    this.nextNode = node;
    this.useGraph(graph, ann.expansionSearch);
  }

  /**
   * Puts a new graph in service: at the explicit breadth, or at the ladder's largest while its breadth is measured
   * in the background (a search is never narrower than the tuning may choose; `tuned()` waits for it).
   */
  private useGraph(graph: AnnIndex, ef: number | undefined): void {
    this.graph = graph;
    this.fixedEf = ef;
    if (ef === undefined) {
      graph.ef = Math.max(...(this.opts.tuning?.ladder ?? DEFAULT_LADDER));
      this.tuning = { ef: graph.ef, source: "default", templates: this.store?.size ?? 0 };
    }
    void this.tuneGraph();
  }

  /** How the graph's search breadth was chosen (undefined while there is no graph); `pending` while it is measured. */
  get graphTuning(): GraphTuning | undefined {
    if (!this.graph || !this.tuning) return undefined;
    return this.tuner ? { ...this.tuning, pending: true } : this.tuning;
  }

  /**
   * Settles once no tuning is running or due, with the breadth then in force: start-up waits for it, so the breadth
   * it logs and reports is a measured one.
   */
  async tuned(): Promise<GraphTuning | undefined> {
    while (this.tuner) await this.tuner;
    return this.graphTuning;
  }

  /**
   * Chooses the graph's search breadth by measuring it (buildGraph, loadGraph and addMany call it: when the graph is
   * made and whenever the gallery has grown by half since). Probes come from the gallery itself: a sampled
   * person's template turned, in a random direction orthogonal to it, to cosine `similarity` with it. The truth
   * for each is the exact top-1 person over every template in the f32 store (not assumed to be the sampled
   * person); the graph's answer is the one `search` gives (8 nodes, re-scored exactly). The smallest breadth on
   * the ladder whose recall@1 reaches the target is kept; if none does, the largest, with one warning. The same
   * probes for the same seed, so the same graph gets the same breadth. An explicit breadth is kept as it is (at once).
   *
   * The measurement runs in the background, in slices of about SLICE_MS with the event loop turning between them
   * (the exact truth alone is a scan of the whole store: 32.5 s in one piece at 1M × 512 before), one tuning at a
   * time: asked for while one runs, another follows it, and after each the gallery is tuned again if it has grown by
   * half meanwhile. Searches meanwhile use the breadth in force. Resolves when the tunings are done.
   */
  tuneGraph(): Promise<GraphTuning | undefined> {
    const graph = this.graph;
    const store = this.store;
    if (!graph || !store) return Promise.resolve(undefined);
    if (this.fixedEf !== undefined) {
      graph.ef = this.fixedEf;
      this.tuning = { ef: this.fixedEf, source: "explicit", templates: store.size };
      return this.tuned();
    }
    this.retune = true;
    this.tuner ??= this.runTunings();
    return this.tuned();
  }

  private async runTunings(): Promise<void> {
    try {
      while (this.retune) {
        this.retune = false;
        // a turn first: the caller (a bulk load, an enrolment) finishes what it is doing
        await nextTurn();
        try {
          await this.measure();
        } catch (error) {
          this.opts.warn?.(
            `gallery graph: measuring the search breadth failed (${(error as Error).message}); it stays ${this.graph?.ef}`,
          );
        }
        const held = this.store?.size ?? 0;
        if (this.graph && this.fixedEf === undefined && held >= 1.5 * (this.tuning?.templates ?? 0)) this.retune = true;
      }
    } finally {
      this.tuner = undefined;
    }
  }

  /** One tuning (see `tuneGraph`); gives up, changing nothing, if the graph is replaced meanwhile. */
  private async measure(): Promise<void> {
    const graph = this.graph;
    const store = this.store;
    if (!graph || !store || this.fixedEf !== undefined) return;
    const started = performance.now();
    const opts = this.opts.tuning ?? {};
    const target = opts.recall ?? 0.99;
    const wanted = typeof opts.similarity === "function" ? opts.similarity() : (opts.similarity ?? 0.6);
    // a probe needs some turn away from its template and some likeness to it
    const similarity = Math.min(0.99, Math.max(0.05, wanted));
    const ladder = opts.ladder ?? DEFAULT_LADDER;
    if (ladder.length === 0) throw new Error("the breadth ladder is empty");
    const random = prng(opts.seed ?? 1);
    const people = [...this.keysOf.keys()];
    const n = Math.max(1, opts.probes ?? 200);
    const dim = store.dim;
    const templates = store.size;
    const probes = new Float32Array(n * dim);
    const drawnFrom: string[] = [];
    const turn = Math.sqrt(Math.max(0, 1 - similarity * similarity));
    const dir = new Float64Array(dim);
    for (let i = 0; i < n; i++) {
      const personId = people[Math.floor(random() * people.length)] as string;
      drawnFrom.push(personId);
      const keys = this.keysOf.get(personId) as number[];
      const t = store.vector(keys[Math.floor(random() * keys.length)] as number) as Float32Array;
      let tt = 0;
      for (let d = 0; d < dim; d++) tt += (t[d] as number) ** 2;
      const tn = tt > 0 ? 1 / Math.sqrt(tt) : 0;
      // a Gaussian direction, less its component along the template, normalised
      fillGaussian(dir, random);
      let along = 0;
      for (let d = 0; d < dim; d++) along += (dir[d] as number) * (t[d] as number) * tn;
      let norm = 0;
      for (let d = 0; d < dim; d++) {
        dir[d] = (dir[d] as number) - along * (t[d] as number) * tn;
        norm += (dir[d] as number) ** 2;
      }
      const dn = norm > 0 ? 1 / Math.sqrt(norm) : 0;
      for (let d = 0; d < dim; d++)
        probes[i * dim + d] = similarity * (t[d] as number) * tn + turn * (dir[d] as number) * dn;
    }
    const truth = new ExactTop1(store, probes, { warn: this.opts.warn });
    this.measuring = { truth, drawnFrom };
    const current = () => this.graph === graph;
    const tried: { ef: number; recall: number; probes: number }[] = [];
    try {
      if (!(await truth.scan({ go: current }))) return;
      // the breadth `search` asks for one person
      const k = this.firstBreadth(1);
      let slice = 8;
      let previous = ladder[0] as number;
      for (const ef of ladder) {
        // a wider breadth costs about as much more per probe
        slice = Math.max(1, Math.floor((slice * previous) / ef));
        previous = ef;
        let right = 0;
        let counted = 0;
        for (let at = 0; at < n; ) {
          await nextTurn();
          if (!current()) return;
          const t0 = performance.now();
          const end = Math.min(n, at + slice);
          // probes whose truth still stands (an erasure may have dropped some)
          const some: number[] = [];
          for (let i = at; i < end; i++) if (truth.known(i)) some.push(i);
          const flat = new Float32Array(some.length * dim);
          some.forEach((i, j) => {
            flat.set(probes.subarray(i * dim, (i + 1) * dim), j * dim);
          });
          graph.searchMany(flat, k, undefined, ef).forEach((nodes, j) => {
            const i = some[j] as number;
            const best = this.rescore(nodes, probes.subarray(i * dim, (i + 1) * dim)).people[0];
            if (best && best.personId === this.owner.get(truth.best[i] as number)) right++;
          });
          counted += some.length;
          at = end;
          const ms = performance.now() - t0;
          slice = Math.max(1, Math.min(n, 2 * slice, Math.round((slice * SLICE_MS) / Math.max(0.5, ms))));
        }
        // everyone the probes depended on was erased meanwhile: nothing measured, the breadth in force stays
        if (counted === 0) return;
        tried.push({ ef, recall: right / counted, probes: counted });
        if (right / counted >= target) break;
      }
    } finally {
      truth.close();
      this.measuring = undefined;
    }
    const chosen = tried[tried.length - 1] as { ef: number; recall: number; probes: number };
    const reached = chosen.recall >= target;
    graph.ef = chosen.ef;
    this.tuning = {
      ef: chosen.ef,
      source: "measured",
      templates,
      recall: chosen.recall,
      target,
      reached,
      probes: chosen.probes,
      similarity,
      ms: performance.now() - started,
      tried: tried.map(({ ef, recall }) => ({ ef, recall })),
    };
    if (!reached && !this.warned) {
      this.warned = true;
      this.opts.warn?.(
        `gallery graph: recall@1 ${chosen.recall.toFixed(3)} at the widest breadth tried (ef ${chosen.ef}) is below the target ${target}`,
      );
    }
  }

  /** (Re)places the graph nodes of these people at the normalised mean of their templates, in one insert. */
  private placeNodes(
    graph: AnnIndex,
    personIds: readonly string[],
    opts?: { parallel?: boolean; check?: boolean },
  ): void {
    const store = this.store as ExactIndex;
    const dim = store.dim;
    const unique = [...new Set(personIds)];
    const nodes = new Uint32Array(unique.length);
    const means = new Float32Array(unique.length * dim);
    unique.forEach((personId, i) => {
      this.meanOf(personId, means.subarray(i * dim, (i + 1) * dim));
      this.dropNode(graph, personId);
      const node = this.nextNode++;
      nodes[i] = node;
      this.nodeOf.set(personId, node);
      this.personAt.set(node, { personId, keys: this.keysOf.get(personId) ?? [] });
    });
    graph.addMany(nodes, means, opts);
  }

  /** Writes the normalised mean of a person's templates into `out` (zeros first). */
  private meanOf(personId: string, out: Float32Array): void {
    const store = this.store as ExactIndex;
    const dim = out.length;
    out.fill(0);
    for (const key of this.keysOf.get(personId) ?? []) {
      const v = store.vector(key) as Float32Array;
      for (let d = 0; d < dim; d++) out[d] = (out[d] as number) + (v[d] as number);
    }
    let norm = 0;
    for (let d = 0; d < dim; d++) norm += (out[d] as number) ** 2;
    const scale = norm > 0 ? 1 / Math.sqrt(norm) : 0;
    for (let d = 0; d < dim; d++) out[d] = (out[d] as number) * scale;
  }

  private dropNode(graph: AnnIndex | undefined, personId: string): void {
    const node = this.nodeOf.get(personId);
    if (node === undefined) return;
    graph?.remove(node);
    this.nodeOf.delete(personId);
    this.personAt.delete(node);
  }

  /** Removes every template of a person; returns how many were removed. */
  remove(personId: string): number {
    const keys = this.keysOf.get(personId);
    if (!keys) return 0;
    // a running tuning keeps nothing drawn from them (its truth follows the store's removals itself)
    this.measuring?.drawnFrom.forEach((from, i) => {
      if (from === personId) this.measuring?.truth.forget(i);
    });
    for (const key of keys) {
      this.store?.remove(key);
      this.owner.delete(key);
    }
    this.dropNode(this.graph, personId);
    this.keysOf.delete(personId);
    return keys.length;
  }

  /**
   * The candidate people (graph nodes), each scored exactly from the store by their best template, best first.
   * One entry per person and one sort of those few (profiled in bench:ingest: sorting every template's hit, then
   * grouping them by person, was a quarter of the orchestrator thread).
   */
  private rescore(nodes: readonly Neighbour[], probe: Float32Array): Omit<Candidates, "exhausted"> {
    const store = this.store as ExactIndex;
    const people: PersonHit[] = [];
    let lowest = Number.POSITIVE_INFINITY;
    for (const { key: node } of nodes) {
      const held = this.personAt.get(node);
      if (held === undefined) continue;
      const { personId, keys } = held;
      let best = Number.NEGATIVE_INFINITY;
      for (const key of keys) {
        const score = store.score(key, probe);
        if (score === undefined) continue;
        if (score > best) best = score;
        if (score < lowest) lowest = score;
      }
      if (best > Number.NEGATIVE_INFINITY) people.push({ personId, score: best });
    }
    people.sort((a, b) => b.score - a.score);
    return { people, lowest: people.length > 0 ? lowest : Number.NEGATIVE_INFINITY };
  }

  /** Template hits (best first) as people, each at their first (best) hit. */
  private byPerson(hits: readonly Neighbour[]): Omit<Candidates, "exhausted"> {
    const people: PersonHit[] = [];
    const seen = new Set<string>();
    for (const { key, score } of hits) {
      const personId = this.owner.get(key);
      if (personId === undefined || seen.has(personId)) continue;
      seen.add(personId);
      people.push({ personId, score });
    }
    return { people, lowest: hits.at(-1)?.score ?? Number.NEGATIVE_INFINITY };
  }

  /**
   * The people nearest to the probe, best first, with exact scores: the owners of the `k` nearest templates in the
   * store, or the `k` people whose graph nodes are nearest. `exhausted` when nobody further could be found.
   */
  private neighbours(probe: Float32Array, k: number): Candidates {
    const store = this.store as ExactIndex;
    if (!this.graph) {
      const hits = store.search(probe, k);
      return { ...this.byPerson(hits), exhausted: hits.length < k || k >= store.size };
    }
    const nodes = this.graph.search(probe, k);
    return { ...this.rescore(nodes, probe), exhausted: nodes.length < k || k >= this.graph.size };
  }

  /** `neighbours` for many probes at once: one batched scan or graph search on every core. */
  private neighboursMany(probes: readonly Float32Array[], k: number): Candidates[] {
    const dim = this.dim;
    const flat = new Float32Array(probes.length * dim);
    probes.forEach((p, i) => {
      flat.set(p, i * dim);
    });
    const store = this.store as ExactIndex;
    const graph = this.graph;
    if (!graph)
      return store
        .searchMany(flat, k)
        .map((hits) => ({ ...this.byPerson(hits), exhausted: hits.length < k || k >= store.size }));
    return graph.searchMany(flat, k).map((nodes, i) => ({
      ...this.rescore(nodes, probes[i] as Float32Array),
      exhausted: nodes.length < k || k >= graph.size,
    }));
  }

  /**
   * The best `want` accepted people among one probe's candidates, or undefined when the search must widen: too few
   * were accepted while more templates exist and the candidates could still reach the floor.
   */
  private pick({ people, lowest, exhausted }: Candidates, want: number, opts: SearchOptions): PersonHit[] | undefined {
    const accept = opts.accept ?? (() => true);
    const found: PersonHit[] = [];
    for (const hit of people) {
      if (found.length === want) break;
      if (accept(hit.personId)) found.push(hit);
    }
    if (found.length >= want || exhausted || lowest < (opts.floor ?? Number.NEGATIVE_INFINITY)) return found;
    return undefined;
  }

  /** The best `people` distinct people for a probe, best first, each with their best template's score. */
  search(probe: Float32Array, opts: SearchOptions = {}): PersonHit[] {
    const size = this.store?.size ?? 0;
    const want = opts.people ?? 2;
    if (size === 0 || probe.length !== this.dim) return [];
    return this.widen(probe, opts, this.firstBreadth(want));
  }

  /**
   * Neighbours asked for first: templates of the store (a person holds a few, so enough to see `want` people), or
   * people from the graph, each re-scored by all their templates. Re-scoring was a third of the gallery thread's time
   * (its CPU profile in bench:ingest, isotropic 100k × 128), so 8 people are re-scored, not 16. Measured on 3,000
   * fresh probes of 25k people × 4 (isotropic and LFW-spectrum, ef 24–48, a threshold half of them pass): the same
   * decision (person, or unknown) as with 16 for every probe, recall@1 equal (isotropic) or 1–2 probes lower
   * (LFW-spectrum), at 28–36 % less wall time per probe. A runner-up outside the 8 can only widen a margin. The graph
   * tuning measures recall with the same 8, so where they cost recall it widens the search instead.
   */
  private firstBreadth(want: number): number {
    const size = this.store?.size ?? 0;
    return Math.min(size, this.graph ? Math.max(8, want * 4) : Math.max(16, want * 8));
  }

  /** `search` from `k` neighbours on, widening while consent filtered people out and candidates could still count */
  private widen(probe: Float32Array, opts: SearchOptions, k: number): PersonHit[] {
    const size = this.store?.size ?? 0;
    const want = opts.people ?? 2;
    for (; ; k = Math.min(size, k * 4)) {
      const found = this.pick(this.neighbours(probe, k), want, opts);
      if (found) return found;
    }
  }

  /**
   * `search` for each of many probes (a micro-batch of incoming templates): the first, usual breadth is searched
   * for all of them at once on every core (usearch's batch search over the graph, or one batched SIMD scan below
   * the ANN threshold); the few probes that must widen (consent filtered their people out) go on one by one, from
   * the next breadth. The answer for each probe is the one `search` gives.
   */
  searchMany(probes: readonly Float32Array[], opts: SearchOptions = {}): PersonHit[][] {
    const size = this.store?.size ?? 0;
    const want = opts.people ?? 2;
    const out: PersonHit[][] = probes.map(() => []);
    const usable = probes.flatMap((p, i) => (size > 0 && p.length === this.dim ? [i] : []));
    if (usable.length === 0) return out;
    const k = this.firstBreadth(want);
    const hits = this.neighboursMany(
      usable.map((i) => probes[i] as Float32Array),
      k,
    );
    usable.forEach((i, j) => {
      out[i] =
        this.pick(hits[j] as Candidates, want, opts) ??
        this.widen(probes[i] as Float32Array, opts, Math.min(size, k * 4));
    });
    return out;
  }
}
