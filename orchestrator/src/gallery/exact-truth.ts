import { availableParallelism } from "node:os";
import type { InferenceSession, Tensor } from "onnxruntime-node";
import type { ExactIndex } from "./index-exact.ts";

/** Rows of the store a block starts with; later blocks are sized from how long the last one held the event loop. */
const FIRST_BLOCK = 2048;
const MIN_BLOCK = 256;
const MAX_BLOCK = 65_536;
/**
 * Multiply-adds of the first block computed in JavaScript (rows × probes × dim), about 4 ms here once compiled:
 * JavaScript is tens of times slower than onnxruntime (131,072 × 512 rows against 200 probes on this 2-core VM,
 * load 1.6 to 2.6: 29.9 to 31.8 s on one core, event loop held 50 to 59 ms at most, against 0.40 s warm, or 0.99 s
 * cold, on two), so its first block is sized by work, not by rows.
 */
const JS_FIRST_WORK = 1 << 21;
/** how long one block may hold the event loop, aimed at */
export const SLICE_MS = 20;

/** Lets the event loop turn (timers, I/O) before going on. */
export const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

/** What ExactTop1 asks of an onnxruntime session built by `top1Session`. */
export type Top1Session = Pick<InferenceSession, "run">;

/**
 * Best row of each probe in a block of rows: Gemm(probes, rowsᵀ) → ArgMax over the rows, in onnxruntime (the
 * orchestrator loads it anyway, for the face models). A matrix product reads each stored row once for every probe
 * together, where usearch's exactSearch scans the whole store once per probe: measured on this 2-core VM,
 * 131,072 × 512 rows against 200 probes in 0.56 s (blocks of 4,096 rows, 2 threads, longest block 23 ms) against
 * 2.5 s for exactSearch in blocks of 1,024 (2 threads, longest 24 ms). onnxruntime-node's `run` is NOT off the
 * event loop: it runs synchronously inside a setImmediate callback, so the blocks must stay short.
 */
let top1: Promise<InferenceSession> | undefined;

/** The shared Gemm+ArgMax session (built once; a failed build is tried again next time). */
export function top1Session(): Promise<Top1Session> {
  top1 ??= (async () => {
    const ort = await import("onnxruntime-node");
    const { onnx } = (await import("onnx-proto")).default;
    const { FLOAT, INT64 } = onnx.TensorProto.DataType;
    const { INT } = onnx.AttributeProto.AttributeType;
    const tensor = (name: string, elemType: number, dims: string[]) => ({
      name,
      type: { tensorType: { elemType, shape: { dim: dims.map((dimParam) => ({ dimParam })) } } },
    });
    const model = onnx.ModelProto.encode({
      irVersion: 8,
      opsetImport: [{ domain: "", version: 13 }],
      graph: {
        name: "top1",
        input: [tensor("probes", FLOAT, ["n", "d"]), tensor("rows", FLOAT, ["r", "d"])],
        output: [tensor("best", INT64, ["n"])],
        node: [
          {
            opType: "Gemm",
            input: ["probes", "rows"],
            output: ["scores"],
            attribute: [{ name: "transB", type: INT, i: 1 }],
          },
          {
            opType: "ArgMax",
            input: ["scores"],
            output: ["best"],
            attribute: [
              { name: "axis", type: INT, i: 1 },
              { name: "keepdims", type: INT, i: 0 },
            ],
          },
        ],
      },
    }).finish();
    return ort.InferenceSession.create(model, {
      intraOpNumThreads: availableParallelism(),
      // idle pool threads would otherwise spin on the cores that ingest and the graph need
      extra: { session: { intra_op: { allow_spinning: "0" } } },
    });
  })();
  top1.catch(() => {
    top1 = undefined;
  });
  return top1;
}

/**
 * The exact nearest template (top-1 by inner product over every row of an ExactIndex) of each of a few probes,
 * computed in blocks of rows, each a short synchronous slice, so the scan of a large store (2 GiB at 1M × 512) never
 * holds the event loop for long. Removals from the store during the scan are followed (it watches the store until
 * `close`): a probe whose best template was removed has no truth any more (`known` false), a template moved by a
 * removal into the part already scanned is scored at once, and a block read while the store changed is read again.
 * Templates added after the scan began are not part of it. Nothing of the store is copied.
 */
export class ExactTop1 {
  /** key of each probe's best template so far, -1 for none */
  readonly best: Float64Array;
  /** its exact score (ExactIndex.score, as search re-scores) */
  private readonly score: Float64Array;
  /** 1: the probe's truth is unknown (its best template, or the person it was drawn from, was erased) */
  private readonly unknown: Uint8Array;
  private readonly n: number;
  private readonly dim: number;
  /** rows [0, scanned) have been compared with every probe */
  private scanned = 0;
  /** the store's rows when the scan began */
  private readonly end: number;
  /** removals seen, to tell whether a block was read while the store changed */
  private changes = 0;
  private readonly unwatch: () => void;

  constructor(
    private readonly store: ExactIndex,
    /** row-major probes; zeroed in place by `forget` */
    private readonly probes: Float32Array,
    private readonly opts: ExactTop1Options = {},
  ) {
    this.dim = store.dim;
    this.n = probes.length / this.dim;
    this.best = new Float64Array(this.n).fill(-1);
    this.score = new Float64Array(this.n).fill(Number.NEGATIVE_INFINITY);
    this.unknown = new Uint8Array(this.n);
    this.end = store.size;
    this.unwatch = store.watch((key, row, from) => this.removed(key, row, from));
  }

  /** whether probe `i` still has a truth (the scan finished, nothing it depends on was erased) */
  known(i: number): boolean {
    return this.unknown[i] === 0 && this.best[i] !== -1;
  }

  /** Drops probe `i` and zeroes it (its source was erased: no trace of them is kept while the tuning goes on). */
  forget(i: number): void {
    this.unknown[i] = 1;
    this.probes.fill(0, i * this.dim, (i + 1) * this.dim);
  }

  /** Stops following the store's removals. */
  close(): void {
    this.unwatch();
  }

  private removed(key: number, row: number, from: number): void {
    this.changes++;
    for (let i = 0; i < this.n; i++) if (this.best[i] === key) this.unknown[i] = 1;
    // a template not scanned yet moved into the part already scanned: it would be missed
    if (from !== row && row < this.scanned && from >= this.scanned) this.consider(row);
  }

  /** Scores the template in `row` against every probe still known. */
  private consider(row: number): void {
    const key = this.store.keyAt(row);
    if (key === undefined) return;
    for (let i = 0; i < this.n; i++) if (this.unknown[i] === 0) this.offer(i, key);
  }

  /** Keeps template `key` as probe `i`'s best if it scores higher (exactly, as search re-scores) than the best so far. */
  private offer(i: number, key: number): void {
    const score = this.store.score(key, this.probes.subarray(i * this.dim, (i + 1) * this.dim)) as number;
    if (score > (this.score[i] as number)) {
      this.score[i] = score;
      this.best[i] = key;
    }
  }

  /**
   * Scans the store in blocks, yielding between them; stops early (false) when `go` turns false. Blocks are sized
   * to hold the event loop about SLICE_MS each, unless `rows` fixes them. Where onnxruntime cannot be loaded, its
   * session cannot be built or a block fails to run, the rest is scanned in JavaScript (same answer, one warning).
   */
  async scan(opts: { go?: () => boolean; rows?: number } = {}): Promise<boolean> {
    const go = opts.go ?? (() => true);
    let onnx = await this.onnx();
    const first = () =>
      opts.rows ?? (onnx ? FIRST_BLOCK : Math.max(1, Math.floor(JS_FIRST_WORK / (this.n * this.dim))));
    let block = first();
    while (this.scanned < Math.min(this.end, this.store.size)) {
      if (!go()) return false;
      const from = this.scanned;
      const to = Math.min(this.end, this.store.size, from + block);
      const started = performance.now();
      if (onnx) {
        const changes = this.changes;
        let found: BigInt64Array;
        try {
          const rows = new onnx.ort.Tensor("float32", this.store.view(from, to), [to - from, this.dim]);
          found = ((await onnx.session.run({ probes: onnx.probes, rows })).best as { data: BigInt64Array }).data;
        } catch (error) {
          this.fallBack(error);
          onnx = undefined;
          block = first();
          continue;
        }
        // onnxruntime ran the block a turn later: if a removal moved rows meanwhile, its rows are not these
        if (this.changes === changes) {
          for (let i = 0; i < this.n; i++)
            if (this.unknown[i] === 0) this.offer(i, this.store.keyAt(from + Number(found[i])) as number);
          this.scanned = to;
        }
      } else {
        // every row against every probe, exactly as search re-scores (store.score measured as fast here as a
        // dedicated loop over the block), in row order: ties go to the first row, as ArgMax gives them
        for (let row = from; row < to; row++) this.consider(row);
        this.scanned = to;
      }
      // from the block's start to its result: an upper bound on how long it held the event loop
      const ms = performance.now() - started;
      if (opts.rows === undefined)
        block = Math.round(
          Math.min(MAX_BLOCK, 2 * block, Math.max(onnx ? MIN_BLOCK : 1, (block * SLICE_MS) / Math.max(1, ms))),
        );
      // onnxruntime's run yields by itself; a block computed here must let the event loop turn
      if (!onnx) await nextTurn();
    }
    return true;
  }

  /** The onnxruntime session and the probes as its input, or undefined (warned) where onnxruntime cannot be used. */
  private async onnx(): Promise<
    { ort: typeof import("onnxruntime-node"); session: Top1Session; probes: Tensor } | undefined
  > {
    try {
      const ort = await import("onnxruntime-node");
      const session = await (this.opts.session ?? top1Session)();
      return { ort, session, probes: new ort.Tensor("float32", this.probes, [this.n, this.dim]) };
    } catch (error) {
      this.fallBack(error);
      return undefined;
    }
  }

  private fallBack(error: unknown): void {
    this.opts.warn?.(
      `gallery graph: onnxruntime failed (${(error as Error).message}); its exact truth is computed in JavaScript, ` +
        "tens of times slower (in short slices all the same)",
    );
  }
}

export interface ExactTop1Options {
  /** told once a scan when onnxruntime cannot be used, and why */
  warn?: ((message: string) => void) | undefined;
  /** builds the onnxruntime session (default `top1Session`); tests make it fail to take the JavaScript path */
  session?: () => Promise<Top1Session>;
}
