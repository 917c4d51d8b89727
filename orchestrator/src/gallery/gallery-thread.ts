import type { Worker } from "node:worker_threads";
import { tsWorker } from "../ts-worker.ts";
import type { GalleryPort, Match, Member, OpenSetState } from "./gallery.ts";
import type { OpenSetCalibration } from "./open-set.ts";
import type { GraphTuning, SpaceIndexOptions } from "./space-index.ts";

/** What the main thread mirrors of the worker's gallery, sent with every reply and when a tuning ends. */
export interface GalleryState {
  openSet: OpenSetState;
  size: { people: number; templates: number };
  graphTuning: GraphTuning | undefined;
  graphRepaired: number;
}

/** Index options that can cross to the worker (no functions: the thread's `warn` stands for SpaceIndexOptions.warn). */
export type ThreadIndexOptions = Omit<SpaceIndexOptions, "warn" | "tuning"> & {
  tuning?: Omit<NonNullable<SpaceIndexOptions["tuning"]>, "similarity"> & { similarity?: number };
};

export type GalleryRequest = { id: number } & (
  | {
      op: "build";
      space: string;
      threshold: number | OpenSetCalibration;
      indexOptions: ThreadIndexOptions;
      members: Member[];
      /** templates of each member, in order, in `vectors` */
      counts: number[];
      vectors: Float32Array;
    }
  | { op: "add"; member: Member; embeddings: Float32Array[] }
  | { op: "remove"; personId: string }
  | { op: "match"; probes: Float32Array; lengths: number[]; storeIds: string[]; now: number }
  | { op: "tuned" }
);

export type ThreadMessage =
  | { kind: "reply"; id: number; result?: unknown; error?: unknown; state?: GalleryState }
  | { kind: "state"; state: GalleryState }
  | { kind: "warn"; message: string };

export interface GalleryThreadOptions {
  indexOptions?: ThreadIndexOptions;
  /** the graph's tuning found no breadth reaching the target recall (SpaceIndexOptions.warn) */
  warn?: (message: string) => void;
  /** the worker died (out of memory, a crash in native code): every call from then on rejects */
  onFailure?: (error: Error) => void;
}

/**
 * A Gallery on a worker thread of its own. The graph search and the exact re-scoring of its candidates are the
 * largest share of ingest's work (bench:ingest's CPU budget: about 60 % of the orchestrator's thread at 100k
 * templates); on the worker they run beside the main thread's broker, crypto and database work, on the other core,
 * instead of in turn with it. Requests are applied in the order they are made, so an erasure that has returned is
 * in force for every later match. The getters mirror the worker's gallery as of the last reply (and of the end of
 * each background tuning of the graph's breadth).
 */
export class GalleryThread implements GalleryPort {
  private state: GalleryState;
  private readonly pending = new Map<number, { resolve(value: unknown): void; reject(error: unknown): void }>();
  private nextId = 0;
  /** set when the worker died (`failure`) or was closed: calls reject with it */
  private refusal: Error | undefined;
  private broken: Error | undefined;

  private constructor(
    readonly space: string,
    private readonly worker: Worker,
    state: GalleryState,
  ) {
    this.state = state;
  }

  /**
   * Starts the worker with a gallery built in bulk from `people` (as Gallery.build); resolves once it is built (the
   * graph's breadth may still be being measured: `graphTuned`). The templates are copied once into one buffer that
   * moves to the worker.
   */
  static async start(
    space: string,
    threshold: number | OpenSetCalibration,
    people: readonly { member: Member; embeddings: readonly Float32Array[] }[],
    opts: GalleryThreadOptions = {},
  ): Promise<GalleryThread> {
    const counts = people.map((p) => p.embeddings.length);
    const dim = people.find((p) => p.embeddings.length > 0)?.embeddings[0]?.length ?? 0;
    const vectors = new Float32Array(counts.reduce((a, b) => a + b, 0) * dim);
    let at = 0;
    for (const { embeddings } of people)
      for (const e of embeddings) {
        if (e.length !== dim) throw new Error(`space ${space} holds embeddings of different lengths`);
        vectors.set(e, at);
        at += dim;
      }
    const worker = tsWorker(new URL("./gallery-worker.ts", import.meta.url), { name: `gallery ${space}` });
    const empty: GalleryState = {
      openSet: undefined as unknown as OpenSetState,
      size: { people: 0, templates: 0 },
      graphTuning: undefined,
      graphRepaired: 0,
    };
    const thread = new GalleryThread(space, worker, empty);
    worker.on("message", (m: ThreadMessage) => thread.receive(m, opts.warn));
    const fail = (error: Error) => {
      if (thread.refusal) return;
      thread.refusal = error;
      thread.broken = error;
      for (const { reject } of thread.pending.values()) reject(error);
      thread.pending.clear();
      opts.onFailure?.(error);
    };
    worker.on("error", (error: Error) => fail(new Error(`gallery thread failed: ${error.message}`, { cause: error })));
    worker.on("exit", (code) => fail(new Error(`gallery thread exited (code ${code})`)));
    try {
      await thread.call(
        {
          op: "build",
          space,
          threshold,
          indexOptions: opts.indexOptions ?? {},
          members: people.map((p) => p.member),
          counts,
          vectors,
        },
        [vectors.buffer as ArrayBuffer],
      );
    } catch (error) {
      await worker.terminate();
      throw error;
    }
    return thread;
  }

  private receive(m: ThreadMessage, warn: ((message: string) => void) | undefined): void {
    if (m.kind === "warn") {
      warn?.(m.message);
      return;
    }
    this.state = m.state ?? this.state;
    if (m.kind !== "reply") return;
    const waiting = this.pending.get(m.id);
    this.pending.delete(m.id);
    if (!waiting) return;
    if ("error" in m) waiting.reject(m.error);
    else waiting.resolve(m.result);
  }

  private call<T>(req: DistributiveOmit<GalleryRequest, "id">, transfer: ArrayBuffer[] = []): Promise<T> {
    if (this.refusal) return Promise.reject(this.refusal);
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (value: unknown) => void, reject });
      this.worker.postMessage({ ...req, id }, transfer);
    });
  }

  /** why the worker died, if it did (not set by `close`) */
  get failure(): Error | undefined {
    return this.broken;
  }

  get openSet(): OpenSetState {
    return this.state.openSet;
  }

  get threshold(): number {
    return this.state.openSet.threshold;
  }

  get size(): { people: number; templates: number } {
    return this.state.size;
  }

  get graphTuning(): GraphTuning | undefined {
    return this.state.graphTuning;
  }

  get graphRepaired(): number {
    return this.state.graphRepaired;
  }

  graphTuned(): Promise<GraphTuning | undefined> {
    return this.call({ op: "tuned" });
  }

  add(member: Member, embeddings: Float32Array[]): Promise<void> {
    return this.call({ op: "add", member, embeddings });
  }

  remove(personId: string): Promise<void> {
    return this.call({ op: "remove", personId });
  }

  matchMany(probes: readonly { probe: Float32Array; storeId: string }[], now = new Date()): Promise<Match[]> {
    const lengths = probes.map((p) => p.probe.length);
    const flat = new Float32Array(lengths.reduce((a, b) => a + b, 0));
    let at = 0;
    for (const { probe } of probes) {
      flat.set(probe, at);
      at += probe.length;
    }
    return this.call(
      { op: "match", probes: flat, lengths, storeIds: probes.map((p) => p.storeId), now: now.getTime() },
      [flat.buffer as ArrayBuffer],
    );
  }

  /**
   * Busy and idle time of the worker's event loop since it started (monotonic: a rate over any interval is the
   * change in `activeMs` over the change in both). Near 1 over a burst, the gallery is what bounds ingest.
   */
  utilization(): { activeMs: number; idleMs: number } {
    const { active, idle } = this.worker.performance.eventLoopUtilization();
    return { activeMs: active, idleMs: idle };
  }

  /** Stops the worker; calls still waiting reject. */
  async close(): Promise<void> {
    this.refusal ??= new Error("the gallery thread is closed");
    for (const { reject } of this.pending.values()) reject(this.refusal);
    this.pending.clear();
    await this.worker.terminate();
  }
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
