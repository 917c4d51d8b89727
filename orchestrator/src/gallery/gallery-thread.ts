import type { Worker } from "node:worker_threads";
import { tsWorker } from "../ts-worker.ts";
import { type GalleryPort, type Match, type Member, type OpenSetState, packTemplates } from "./gallery.ts";
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

type People = readonly { member: Member; embeddings: readonly Float32Array[] }[];

export interface GalleryThreadOptions {
  indexOptions?: ThreadIndexOptions;
  /** the graph's tuning found no breadth reaching the target recall (SpaceIndexOptions.warn) */
  warn?: (message: string) => void;
  /**
   * The people to build a new worker's gallery from, read afresh (from the database) when a worker dies: out of
   * memory, a crash in native code. Given, a new worker takes the dead one's place, and calls made meanwhile wait
   * for it; calls that were waiting on the dead one fail. Without it, or when a worker dies within a minute of the
   * last restart, the death is final.
   */
  reload?: () => Promise<People>;
  /** a worker died and a new one, rebuilt from `reload`, took its place */
  onRestart?: (error: Error) => void;
  /** a worker died for good: every call from then on rejects */
  onFailure?: (error: Error) => void;
}

/** a worker that dies this soon after the last restart is not replaced again */
const RESTART_WINDOW_MS = 60_000;

/**
 * A Gallery on a worker thread of its own. The graph search and the exact re-scoring of its candidates are the
 * largest share of ingest's work (bench:ingest's CPU budget: about 60 % of the orchestrator's thread at 100k
 * templates); on the worker they run beside the main thread's broker, crypto and database work, on the other core,
 * instead of in turn with it. Requests are applied in the order they are made, so an erasure that has returned is
 * in force for every later match. The getters mirror the worker's gallery as of the last reply (and of the end of
 * each background tuning of the graph's breadth).
 */
export class GalleryThread implements GalleryPort {
  private state: GalleryState = {
    openSet: undefined as unknown as OpenSetState,
    size: { people: 0, templates: 0 },
    graphTuning: undefined,
    graphRepaired: 0,
  };
  private worker: Worker | undefined;
  private readonly pending = new Map<number, { resolve(value: unknown): void; reject(error: unknown): void }>();
  private nextId = 0;
  /** set when the worker died for good (`failure`) or the thread was closed: calls reject with it */
  private refusal: Error | undefined;
  private broken: Error | undefined;
  /** a new worker being built after the last one died: calls wait for it */
  private restarting: Promise<void> | undefined;
  private restartedAt = Number.NEGATIVE_INFINITY;
  /** the first worker was built: only then is a dead one replaced (a failed start is the caller's to report) */
  private started = false;

  private constructor(
    readonly space: string,
    private readonly rule: number | OpenSetCalibration,
    private readonly opts: GalleryThreadOptions,
  ) {}

  /**
   * Starts the worker with a gallery built in bulk from `people` (as Gallery.build); resolves once it is built (the
   * graph's breadth may still be being measured: `graphTuned`). The templates are copied once into one buffer that
   * moves to the worker.
   */
  static async start(
    space: string,
    threshold: number | OpenSetCalibration,
    people: People,
    opts: GalleryThreadOptions = {},
  ): Promise<GalleryThread> {
    const thread = new GalleryThread(space, threshold, opts);
    await thread.launch(people);
    thread.started = true;
    return thread;
  }

  /** A new worker, its gallery built from `people`; rejects (the worker stopped) if the build fails. */
  private async launch(people: People): Promise<void> {
    const { counts, vectors } = packTemplates(this.space, people);
    const worker = tsWorker(new URL("./gallery-worker.ts", import.meta.url), { name: `gallery ${this.space}` });
    this.worker = worker;
    worker.on("message", (m: ThreadMessage) => this.receive(m));
    worker.on("error", (error: Error) =>
      this.died(worker, new Error(`gallery thread failed: ${error.message}`, { cause: error })),
    );
    worker.on("exit", (code) => this.died(worker, new Error(`gallery thread exited (code ${code})`)));
    try {
      await this.send(
        {
          op: "build",
          space: this.space,
          threshold: this.rule,
          indexOptions: this.opts.indexOptions ?? {},
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
  }

  /** A worker stopped: what waited on it fails; a new one takes over if it may, else the thread is failed for good. */
  private died(worker: Worker, error: Error): void {
    if (worker !== this.worker || this.refusal) return;
    this.worker = undefined;
    for (const { reject } of this.pending.values()) reject(error);
    this.pending.clear();
    const { reload } = this.opts;
    if (!reload || !this.started || Date.now() - this.restartedAt < RESTART_WINDOW_MS) {
      this.fail(error);
      return;
    }
    this.restartedAt = Date.now();
    // an enrolment whose `add` waits for the new worker may already be in what `reload` read: that person then holds
    // the same template twice, which changes no score
    this.restarting = (async () => {
      try {
        await this.launch(await reload());
        this.opts.onRestart?.(error);
      } catch (cause) {
        this.fail(new Error(`gallery thread could not be rebuilt after: ${error.message}`, { cause }));
      } finally {
        this.restarting = undefined;
      }
    })();
  }

  private fail(error: Error): void {
    if (this.refusal) return;
    this.refusal = error;
    this.broken = error;
    this.opts.onFailure?.(error);
  }

  private receive(m: ThreadMessage): void {
    if (m.kind === "warn") {
      this.opts.warn?.(m.message);
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

  /** A request, after the worker that replaces a dead one when one is being built (in the order they were made). */
  private call<T>(req: DistributiveOmit<GalleryRequest, "id">, transfer: ArrayBuffer[] = []): Promise<T> {
    if (this.refusal) return Promise.reject(this.refusal);
    if (this.restarting) return this.restarting.then(() => this.call<T>(req, transfer));
    return this.send(req, transfer);
  }

  private send<T>(req: DistributiveOmit<GalleryRequest, "id">, transfer: ArrayBuffer[]): Promise<T> {
    const worker = this.worker;
    if (!worker) return Promise.reject(this.refusal ?? new Error("the gallery thread has no worker"));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (value: unknown) => void, reject });
      worker.postMessage({ ...req, id }, transfer);
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
   * Busy and idle time of the worker's event loop since it started: monotonic (a rate over an interval is the change
   * in `activeMs` over the change in both) until a dead worker is replaced, when it counts from zero again. Near 1
   * over a burst, the gallery is what bounds ingest.
   */
  utilization(): { activeMs: number; idleMs: number } {
    const loop = this.worker?.performance.eventLoopUtilization();
    return { activeMs: loop?.active ?? 0, idleMs: loop?.idle ?? 0 };
  }

  /** Stops the worker; calls still waiting reject. */
  async close(): Promise<void> {
    this.refusal ??= new Error("the gallery thread is closed");
    for (const { reject } of this.pending.values()) reject(this.refusal);
    this.pending.clear();
    await this.restarting?.catch(() => {});
    const worker = this.worker;
    this.worker = undefined;
    await worker?.terminate();
  }
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
