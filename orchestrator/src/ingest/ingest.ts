import type { EventEmitter } from "node:events";
import { type ErrorCode, filterFor, isGlanceError } from "@glance/shared";
import type { Logger } from "pino";
import type { MessageSource } from "../broker/source.ts";
import {
  type AcceptedTemplate,
  admissionError,
  finishTemplate,
  type OpenTemplateDeps,
  type ReadTemplate,
  readTemplate,
  topicNodeId,
  unsealTemplate,
} from "./open-template.ts";
import { type KnownNode, ReplayGuard } from "./replay-window.ts";

export interface IngestMetrics {
  accepted: number;
  rejected: Partial<Record<ErrorCode, number>>;
  /** batches processed and the statements they cost (node lookups, replay compare-and-sets, lost compare-and-sets) */
  batches: number;
  statements: ReplayGuard["stats"];
  /**
   * accepted templates handed on for recognition: batches, templates, templates whose recognition failed (logged),
   * and batches that failed as a whole and were retried one template at a time
   */
  recognition: { batches: number; templates: number; failed: number; fallbacks: number };
}

/** A template of a batch whose recognition failed; the others of its batch were recognised. */
export interface BatchFailure {
  template: AcceptedTemplate;
  error: unknown;
}

export interface Rejection {
  code: ErrorCode;
  nodeId?: string;
}

export interface IngestOptions<P = unknown> {
  /** the embedded broker itself (`aedesSource`), or the orchestrator's client of an external one (`clientSource`) */
  source: MessageSource;
  deps: OpenTemplateDeps;
  events: EventEmitter;
  logger: Logger;
  /** subscription filter; default every node's template topic (external brokers: `sharedFilterFor("template")`) */
  filter?: string;
  /**
   * recognition of one accepted template, when there is no `onAcceptedBatch`; its failures are logged, never fatal
   */
  onAccepted?(template: AcceptedTemplate): Promise<void>;
  /**
   * recognition of accepted templates together, in arrival order, one batch at a time: resolves with the templates
   * whose recognition failed (the others' happened); a rejection means none of the batch was recognised, and each
   * of its templates is then retried as a batch of one. One of `onAccepted` and `onAcceptedBatch` is required.
   */
  onAcceptedBatch?(templates: readonly AcceptedTemplate[], prepared?: P): Promise<readonly BatchFailure[]>;
  /**
   * the first stage of `onAcceptedBatch`, which must record and emit nothing (the gallery search): a batch's runs
   * while the previous batch's `onAcceptedBatch` finishes, and its result is handed to the batch's own call. A
   * rejection fails the batch as a whole (retried one by one, without it).
   */
  prepareBatch?(templates: readonly AcceptedTemplate[]): Promise<P>;
  /** most messages checked together (one node lookup and one replay statement per batch); default 512 */
  maxBatch?: number;
  /** most accepted templates recognised together; default 1024 */
  maxRecognitionBatch?: number;
}

export interface Ingest {
  metrics: IngestMetrics;
  /** the replay window's node cache: drop a node from it when it is revoked here (the database decides anyway) */
  guard: ReplayGuard;
  /** resolves when everything received so far has been processed */
  idle(): Promise<void>;
  stop(): Promise<void>;
}

interface Received {
  topic: string;
  payload: Buffer;
}

/**
 * Subscribes to every node's template topic and checks messages in micro-batches: whatever arrived while the
 * previous batch was being checked (up to `maxBatch`) goes through the stages of open-template.ts together, with one
 * query for the batch's uncached nodes and one replay-window statement. Under light load a batch is the one message
 * that arrived, so batching adds no latency; under a burst it amortises the database round trips.
 *
 * Accepted templates queue for recognition in arrival order (so each node's stay in order) and go to
 * `onAcceptedBatch` together, whatever accumulated while the previous recognition batch ran, while the next
 * messages are already being checked. Three stages overlap: one batch finishes its recognition (main thread), the
 * next one's `prepareBatch` runs (the gallery search, on the gallery thread), and the one after it is checked; each
 * stage handles batches in arrival order. A bad message is counted, logged without its payload and emitted as
 * "rejection"; a failed recognition is counted and logged; neither ever stops the loop.
 */
export async function startIngest<P>(opts: IngestOptions<P>): Promise<Ingest> {
  const log = opts.logger;
  const guard = new ReplayGuard(opts.deps.db);
  const metrics: IngestMetrics = {
    accepted: 0,
    rejected: {},
    batches: 0,
    statements: guard.stats,
    recognition: { batches: 0, templates: 0, failed: 0, fallbacks: 0 },
  };
  const maxBatch = opts.maxBatch ?? 512;
  const maxRecognitionBatch = opts.maxRecognitionBatch ?? 1024;
  const inbox: Received[] = [];
  /** accepted, waiting for recognition, in arrival order */
  const ready: AcceptedTemplate[] = [];
  let checking: Promise<void> | undefined;
  let recognising: Promise<void> | undefined;

  const reject = (code: ErrorCode, nodeId: string | undefined, message: string) => {
    metrics.rejected[code] = (metrics.rejected[code] ?? 0) + 1;
    log.warn({ code, nodeId }, `template rejected: ${message}`);
    const event: Rejection = nodeId === undefined ? { code } : { code, nodeId };
    opts.events.emit("rejection", event);
  };
  const rejectError = (error: unknown, nodeId: string | undefined) => {
    if (isGlanceError(error)) reject(error.code, nodeId, error.message);
    else {
      log.error({ err: error, nodeId }, "template check failed unexpectedly");
      reject("INTERNAL", nodeId, "unexpected error");
    }
  };

  const failed = (template: AcceptedTemplate, error: unknown) => {
    metrics.recognition.failed++;
    log.error({ err: error, nodeId: template.node.id }, "recognition failed for an accepted template");
  };
  const { onAccepted, onAcceptedBatch } = opts;
  if (!onAccepted && !onAcceptedBatch) throw new Error("startIngest needs onAccepted or onAcceptedBatch");
  const one = async (template: AcceptedTemplate) => {
    try {
      if (onAccepted) await onAccepted(template);
      else
        for (const f of await (onAcceptedBatch as NonNullable<typeof onAcceptedBatch>)([template]))
          failed(f.template, f.error);
    } catch (error) {
      failed(template, error);
    }
  };
  /** a batch taken from `ready`, its preparation under way */
  interface Taken {
    batch: AcceptedTemplate[];
    prepared: Promise<P> | undefined;
  }
  const recogniseBatch = async ({ batch, prepared }: Taken) => {
    metrics.recognition.batches++;
    metrics.recognition.templates += batch.length;
    if (!onAcceptedBatch) {
      for (const t of batch) await one(t);
      return;
    }
    let failures: readonly BatchFailure[];
    try {
      failures = await onAcceptedBatch(batch, prepared && (await prepared));
    } catch (error) {
      // nothing of the batch was recognised: one by one, so that one bad template costs only itself
      metrics.recognition.fallbacks++;
      log.warn(
        { err: error, templates: batch.length },
        "recognition batch failed; recognising its templates one by one",
      );
      for (const t of batch) await one(t);
      return;
    }
    for (const f of failures) failed(f.template, f.error);
  };
  /** drain's wait for room in `ready`: woken each time recognition takes a batch from it, and when it stops */
  let room: (() => void) | undefined;
  const makeRoom = () => {
    room?.();
    room = undefined;
  };
  const take = (): Taken => {
    const batch = ready.splice(0, maxRecognitionBatch);
    makeRoom();
    const { prepareBatch } = opts;
    const prepared = onAcceptedBatch && prepareBatch ? Promise.resolve().then(() => prepareBatch(batch)) : undefined;
    // a failed preparation is the batch's failure, handled when the batch's turn comes
    prepared?.catch(() => {});
    return { batch, prepared };
  };
  const recognitionLoop = async () => {
    let next: Taken | undefined;
    while (next || ready.length > 0) {
      const current = next ?? take();
      next = undefined;
      // once this batch's preparation (its gallery search) is done, the next batch's starts, to run while this one
      // finishes; whatever arrives meanwhile joins the batch after it
      await current.prepared?.catch(() => {});
      if (ready.length > 0) next = take();
      await recogniseBatch(current);
    }
  };
  const scheduleRecognition = () => {
    if (recognising || ready.length === 0) return;
    recognising = recognitionLoop()
      .catch((error: unknown) => log.error({ err: error }, "recognition loop failed unexpectedly"))
      .finally(() => {
        recognising = undefined;
        makeRoom();
        scheduleRecognition();
      });
  };

  const checkBatch = async (batch: Received[]) => {
    metrics.batches++;
    const read: { t: ReadTemplate; nodeId: string | undefined }[] = [];
    for (const { topic, payload } of batch) {
      const nodeId = topicNodeId(topic);
      try {
        read.push({ t: readTemplate(topic, payload), nodeId });
      } catch (error) {
        rejectError(error, nodeId);
      }
    }
    if (read.length === 0) return;

    let known: Map<string, KnownNode>;
    try {
      known = await guard.nodes(read.map((r) => r.t.header.nodeId));
    } catch (error) {
      for (const r of read) rejectError(error, r.nodeId);
      return;
    }
    const unsealed: { t: ReadTemplate; nodeId: string | undefined; plaintext: Buffer; node: KnownNode }[] = [];
    for (const r of read) {
      const node = known.get(r.t.header.nodeId);
      try {
        unsealed.push({ ...r, plaintext: unsealTemplate(opts.deps, r.t, node), node: node as KnownNode });
      } catch (error) {
        rejectError(error, r.nodeId);
      }
    }
    if (unsealed.length === 0) return;

    let admissions: Awaited<ReturnType<ReplayGuard["admit"]>>;
    try {
      admissions = await guard.admit(unsealed.map((u) => ({ nodeId: u.node.id, seq: u.t.header.seq })));
    } catch (error) {
      for (const u of unsealed) rejectError(error, u.nodeId);
      return;
    }
    for (const error of guard.takeFailures()) log.error({ err: error }, "replay window update failed");
    for (const [i, u] of unsealed.entries()) {
      const admission = admissions[i] ?? "unknown";
      try {
        if (admission !== "accepted") throw admissionError(admission, u.t.header);
        const accepted = finishTemplate(opts.deps, u.t.header, u.plaintext, u.node);
        metrics.accepted += 1;
        ready.push(accepted);
      } catch (error) {
        rejectError(error, u.nodeId);
      }
    }
    scheduleRecognition();
  };

  const drain = async () => {
    // let everything already read from the socket arrive before the first batch is cut
    await new Promise<void>((resolve) => setImmediate(resolve));
    while (inbox.length > 0) {
      // checking runs ahead of recognition by one recognition batch: while one is being recognised, the next one is
      // checked; beyond that, messages wait in the inbox
      while (recognising && ready.length >= maxRecognitionBatch)
        await new Promise<void>((resolve) => {
          room = resolve;
        });
      const batch = inbox.splice(0, maxBatch);
      try {
        await checkBatch(batch);
      } catch (error) {
        log.error({ err: error }, "template batch failed unexpectedly");
      }
    }
  };
  const schedule = () => {
    if (checking) return;
    checking = drain().finally(() => {
      checking = undefined;
      if (inbox.length > 0) schedule();
    });
  };

  const unsubscribe = await opts.source.subscribe(opts.filter ?? filterFor("template"), (topic, payload) => {
    inbox.push({ topic, payload });
    schedule();
  });
  log.info("ingest subscribed to node templates");

  const idle = async () => {
    while (checking || recognising) {
      if (checking) await checking;
      if (recognising) await recognising;
    }
  };

  return {
    metrics,
    guard,
    idle,
    async stop() {
      await unsubscribe();
      await idle();
    },
  };
}
