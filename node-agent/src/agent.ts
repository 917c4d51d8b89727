import { randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import { createRequire } from "node:module";
import { join } from "node:path";
import { type DetectedFace, FacePipeline } from "@glance/models";
import {
  attestSealingKey,
  type DesiredState,
  type EdgeGallery as EdgeGalleryMessage,
  GlanceError,
  isGlanceError,
  type KeyPair,
  type NodeEvent,
  nodeSealingKeyPair,
  type SealedTemplate,
  TemplateSealer,
} from "@glance/shared";
import { type Logger, pino } from "pino";
import { EdgeGallery } from "./gallery/edge-gallery.ts";
import { type LinkOptions, NodeLink } from "./link.ts";
import { TrackAttributes, trackAttributes } from "./pipeline/attributes.ts";
import { bestShot, type ShotSettings } from "./pipeline/best-shot.ts";
import { detect } from "./pipeline/detect.ts";
import { embed } from "./pipeline/embed.ts";
import { memberGate } from "./pipeline/member-gate.ts";
import { newCounters, StageTimer } from "./pipeline/metrics.ts";
import { publish } from "./pipeline/publish.ts";
import { sealTemplates } from "./pipeline/seal.ts";
import { IouTracker, track } from "./pipeline/track.ts";
import type { AgentEngine } from "./pipeline/types.ts";
import { Outbox, type OutboxStats } from "./queue/outbox.ts";
import { SequenceStore } from "./sequence.ts";
import { type Frame, type FrameSource, openSource, type SourceSpec } from "./sources/index.ts";
import { cpuTemperatureC, modelLabel, Rates } from "./telemetry.ts";

export interface AgentOptions {
  nodeId: string;
  cameraId: string;
  mqtt: LinkOptions["mqtt"];
  /** Ed25519 node identity: signs every template */
  signingKey: KeyPair;
  source: SourceSpec;
  modelsDir?: string;
  /** face model manifests (name or name@version); default the models package's defaults */
  models?: { detector?: string; embedder?: string };
  /** an engine already loaded (by `FacePipeline.load`); the agent closes it on stop. Default: load one. */
  engine?: AgentEngine;
  /** where the node keeps state that must survive restarts (sequence numbers, outgoing queue); default ./.glance-agent/<nodeId> */
  dataDir?: string;
  /** most bytes the outgoing queue keeps on disk while the broker is unreachable (default 256 MiB) */
  queueMaxBytes?: number;
  /** heartbeat: the retained status is republished this often (default 30 s) */
  heartbeatMs?: number;
  watchdog?: WatchdogOptions;
  logger?: Logger;
}

export interface WatchdogOptions {
  /** a stage call running longer than this is stalled: the pipeline is restarted (default 30 s) */
  stallMs?: number;
  /** no frame for this long while the pipeline waits for one: the camera is reconnected (default 15 s) */
  cameraSilenceMs?: number;
  /** camera reconnect backoff: first wait, doubling up to the cap (defaults 1 s, 60 s) */
  backoffMs?: number;
  backoffMaxMs?: number;
  /** more restarts than this within 10 minutes and the agent gives up (error, exit 1 for the supervisor) */
  maxRestarts?: number;
}

export interface AgentStats {
  frames: number;
  dropped: number;
  faces: number;
  templates: number;
  tracks: number;
  /** members-only: faces matched to the edge gallery (non-members are in skipped["non-member"]) */
  members: number;
  /** the edge gallery held in memory (members-only) */
  gallery: { version: number | undefined; members: number; refused?: string };
  stageMs: Record<string, { p50: number; p95: number }>;
  /** faces not sent, by reason */
  skipped: Record<string, number>;
  queue: OutboxStats;
  /** pipeline restarts by the watchdog, camera reconnects */
  restarts: number;
  reconnects: number;
}

export interface Agent {
  /**
   * "template" {trackId, seq, quality, bytes} once the broker has it, "desired" DesiredState | undefined,
   * "gallery" {version, members} when an edge gallery is applied, "gallery-refused" {code, message} when one is not,
   * "erased" {personId, held} when an erase-member command was carried out (before its ack),
   * "camera-down" {detail}, "camera-up", "stage-restarted" {stage, ms}, "source-ended", "error" GlanceError
   */
  events: EventEmitter;
  stats(): AgentStats;
  /** the status `stats` record the heartbeat sends (numbers only) */
  telemetry(): Record<string, number>;
  stop(): Promise<void>;
}

/** Below this best-shot quality a face is not worth a template (the embedder's accuracy falls off). */
const MIN_QUALITY = 0.3;
const DEFAULT_INTERVAL_MS = 5000;
const DEFAULT_MIN_FACE_PX = 40;
/** a face entering the frame is rarely its best: watch a new track this long before its first template */
const SETTLE_MS = 1000;
const RESTART_WINDOW_MS = 10 * 60_000;
const STOP_DRAIN_MS = 5000;
const AGENT_VERSION = (createRequire(import.meta.url)("../package.json") as { version: string }).version;

type RunEnd = { kind: "ended" } | { kind: "failed"; error: unknown } | { kind: "stalled"; stage: string; ms: number };

/**
 * Starts a node: loads and warms the face models, opens the camera, connects to the broker and runs
 * frames → detect → track → best shot → embed → member gate → seal → queue → publish until stopped or the source
 * ends. Nothing biometric leaves before the orchestrator's desired state (with its sealing key) has arrived; in
 * members-only mode nothing leaves for a face the edge gallery does not hold (only anonymous counts).
 *
 * A supervisor keeps it running: a stage call that hangs restarts the pipeline ("stage-restarted"), a camera that
 * fails or falls silent after it once worked is reopened with capped exponential backoff ("camera-down" /
 * "camera-up"). A camera that never gave a frame, or too many restarts, ends the agent with "error" so the
 * process supervisor (systemd) restarts it: the agent never stops silently.
 */
export async function startAgent(opts: AgentOptions): Promise<Agent> {
  const log = (opts.logger ?? pino({ name: "glance-agent" })).child({ nodeId: opts.nodeId, cameraId: opts.cameraId });
  const dataDir = opts.dataDir ?? join(process.cwd(), ".glance-agent", opts.nodeId);
  const sequence = SequenceStore.open(dataDir);
  // template sessions: the ephemeral key lives in this process's memory only, so a restart starts a new session
  const sealer = new TemplateSealer({ nodeId: opts.nodeId, signingKey: opts.signingKey });
  checkBrokerUrl(opts.mqtt.url);
  const wd = {
    stallMs: opts.watchdog?.stallMs ?? 30_000,
    cameraSilenceMs: opts.watchdog?.cameraSilenceMs ?? 15_000,
    backoffMs: opts.watchdog?.backoffMs ?? 1000,
    backoffMaxMs: opts.watchdog?.backoffMaxMs ?? 60_000,
    maxRestarts: opts.watchdog?.maxRestarts ?? 20,
  };
  const engine: AgentEngine = opts.engine ?? (await FacePipeline.load({ modelsDir: opts.modelsDir, ...opts.models }));
  let source = await openSource(opts.source, log).catch(async (err: unknown) => {
    await engine.close();
    throw err;
  });

  const startedAt = Date.now();
  const events = new EventEmitter();
  // members-only: the edge gallery lives in memory only, sealed to a key derived from the identity key
  const sealingKey = nodeSealingKeyPair(opts.signingKey);
  const gallery = new EdgeGallery(opts.nodeId, sealingKey);
  const galleryLog = log.child({ component: "gallery" });
  const timer = new StageTimer();
  const counters = newCounters();
  const rates = new Rates(startedAt);
  let droppedBefore = 0;
  let restarts = 0;
  let reconnects = 0;
  let outbox: Outbox | undefined;
  const stats = (): AgentStats => ({
    frames: counters.frames,
    dropped: droppedBefore + source.dropped,
    faces: counters.faces,
    templates: counters.templates,
    tracks: counters.tracks,
    members: counters.members,
    gallery: gallery.info(),
    stageMs: timer.summary(),
    skipped: { ...counters.skipped },
    queue: outbox?.stats() ?? { depth: 0, bytes: 0, dropped: 0, torn: 0, failed: 0 },
    restarts,
    reconnects,
  });
  const telemetry = (): Record<string, number> => {
    const s = stats();
    const out: Record<string, number> = {
      uptimeS: Math.round((Date.now() - startedAt) / 1000),
      frames: s.frames,
      dropped: s.dropped,
      faces: s.faces,
      templates: s.templates,
      tracks: s.tracks,
      members: s.members,
      ...rates.sample(s.frames, s.tracks),
      queueDepth: s.queue.depth,
      queueBytes: s.queue.bytes,
      queueDropped: s.queue.dropped,
      queueTorn: s.queue.torn,
      queueFailed: s.queue.failed,
      stageRestarts: s.restarts,
      cameraReconnects: s.reconnects,
    };
    for (const [stage, { p50, p95 }] of Object.entries(s.stageMs)) {
      out[`${stage}P50Ms`] = p50;
      out[`${stage}P95Ms`] = p95;
    }
    for (const [reason, n] of Object.entries(s.skipped)) out[`reject:${reason}`] = n;
    const temperature = cpuTemperatureC();
    if (temperature !== undefined) out.cpuTempC = temperature;
    return out;
  };

  // optional coarse attributes on track-ended events: the model is loaded only while the store's desired state opts in
  const attributes = new TrackAttributes({
    enabled: () => link.desired?.attributes === true,
    landmarkNames: (engine.detector.decoding.landmarkNames as string[] | undefined) ?? [],
    modelsDir: opts.modelsDir,
    minFaceSizePx: () => link.desired?.minFaceSizePx ?? DEFAULT_MIN_FACE_PX,
    timer,
    log: log.child({ component: "attributes" }),
  });
  const link = new NodeLink(
    {
      nodeId: opts.nodeId,
      mqtt: opts.mqtt,
      statusEveryMs: opts.heartbeatMs,
      sealingKey: {
        publicKey: sealingKey.publicKey,
        sig: attestSealingKey(opts.nodeId, sealingKey.publicKey, opts.signingKey),
      },
      eraseMember: (personId, ts) => {
        const held = gallery.erase(personId, ts);
        events.emit("erased", { personId, held });
        return held;
      },
      status: () => ({
        agentVersion: AGENT_VERSION,
        models: {
          embedding: engine.space,
          detector: modelLabel(engine.detector),
          embedder: modelLabel(engine.embedder),
          ...(attributes.model ? { attributes: attributes.model } : {}),
        },
        privacyMode: link.desired?.privacyMode,
        stats: telemetry(),
        edgeGallery: gallery.info(),
      }),
    },
    log.child({ component: "link" }),
  );
  // a gallery that arrives before the desired state naming its signer waits for it (both are retained)
  let pendingGallery: EdgeGalleryMessage | undefined;
  const applyGallery = (message: EdgeGalleryMessage) => {
    try {
      const info = gallery.accept(message, { desired: link.desired, space: engine.space });
      pendingGallery = undefined;
      galleryLog.info({ version: info.version, members: info.members }, "edge gallery applied");
      events.emit("gallery", { version: info.version, members: info.members });
    } catch (error) {
      const code = isGlanceError(error) ? error.code : "INTERNAL";
      pendingGallery = code === "KEY_UNKNOWN" && !link.desired?.gallerySigningKey ? message : undefined;
      galleryLog.error(
        { code, err: (error as Error).message, held: gallery.info().version },
        "edge gallery refused; keeping the one held",
      );
      events.emit("gallery-refused", { code, message: (error as Error).message });
    }
    link.publishStatus();
  };
  link.on("gallery", (message) => {
    if (message) return applyGallery(message);
    gallery.clear();
    galleryLog.info("edge gallery withdrawn by the orchestrator: nothing held");
    link.publishStatus();
  });
  link.on("desired", (d: DesiredState | undefined) => {
    events.emit("desired", d);
    if (d && pendingGallery) applyGallery(pendingGallery);
  });
  outbox = new Outbox(join(dataDir, "queue"), link, log.child({ component: "outbox" }), {
    maxBytes: opts.queueMaxBytes,
  });
  outbox.on("delivered", ({ name, payload }) => {
    if (name !== "template") return;
    const { trackId, seq, quality } = JSON.parse(payload.toString("utf8")) as SealedTemplate;
    counters.templates++;
    events.emit("template", { trackId, seq, quality, bytes: payload.length });
  });
  const sendEvent = (kind: NodeEvent["kind"], detail?: string) =>
    link.send("event", { nodeId: opts.nodeId, ts: Date.now(), kind, cameraId: opts.cameraId, detail }).catch(() => {});

  // members-only: embeddings are made as in visitor mode, then the member gate lets only members through
  const templatesOn = (): DesiredState | undefined => {
    const d = link.desired;
    return d && d.privacyMode !== "count-only" ? d : undefined;
  };
  const settings = (): ShotSettings => ({
    templates: !!templatesOn(),
    intervalMs: link.desired?.templateIntervalMs ?? DEFAULT_INTERVAL_MS,
    minFaceSizePx: link.desired?.minFaceSizePx ?? DEFAULT_MIN_FACE_PX,
    minQuality: MIN_QUALITY,
    settleMs: SETTLE_MS,
  });

  let stopping = false;
  let wakeStop: (() => void) | undefined;
  const stopSignal = new Promise<void>((r) => {
    wakeStop = r;
  });
  const pipelineLog = log.child({ component: "pipeline" });

  /** One run of the pipeline over one open source, until it ends, fails or stalls. */
  const runOnce = (current: FrameSource, generation: number): Promise<RunEnd> => {
    let lastFrameAt = performance.now();
    let frameSeen = false;
    async function* watched(): AsyncGenerator<Frame> {
      for await (const frame of current) {
        lastFrameAt = performance.now();
        if (!frameSeen) {
          frameSeen = true;
          everHadFrame = true;
          if (cameraDown) {
            cameraDown = false;
            pipelineLog.info("camera back");
            events.emit("camera-up");
            sendEvent("camera-up");
          }
        }
        yield frame;
      }
    }
    const tracker = new IouTracker<DetectedFace>({ idPrefix: `${randomBytes(3).toString("hex")}-` });
    const detected = detect(watched(), engine, timer, counters);
    const tracked = trackAttributes(track(detected, tracker, counters), attributes);
    const shots = bestShot(tracked, engine, settings, timer, counters);
    const embedded = embed(shots, engine, timer);
    const gated = memberGate(embedded, { mode: () => link.desired?.privacyMode, gallery, counters }, timer);
    const sealed = sealTemplates(
      gated,
      {
        nodeId: opts.nodeId,
        cameraId: opts.cameraId,
        space: engine.space,
        sealer,
        sequence,
        recipient: () => templatesOn()?.sealingKey,
      },
      timer,
    );
    // an abandoned (stalled) run may still finish a call later: what it makes then is not sent
    const guarded: Pick<Outbox, "enqueue"> = {
      enqueue: (name, payload) =>
        generation === currentGeneration ? (outbox as Outbox).enqueue(name, payload) : Promise.resolve(),
    };
    const finished = publish(sealed, {
      outbox: attributes.outbox(guarded),
      nodeId: opts.nodeId,
      cameraId: opts.cameraId,
      timer,
      log: pipelineLog,
    }).then(
      (): RunEnd => ({ kind: "ended" }),
      (error: unknown): RunEnd => ({ kind: "failed", error }),
    );
    const watchdog = new Promise<RunEnd>((resolve) => {
      const tick = setInterval(
        () => {
          const busy = timer.busiest();
          if (busy && busy.ms > wd.stallMs) {
            resolve({ kind: "stalled", stage: busy.stage, ms: Math.round(busy.ms) });
          } else if (!busy && performance.now() - lastFrameAt > wd.cameraSilenceMs) {
            resolve({
              kind: "failed",
              error: new GlanceError("CAMERA_UNAVAILABLE", `No frame from the camera for ${wd.cameraSilenceMs} ms.`),
            });
          }
        },
        Math.min(1000, wd.stallMs / 4, wd.cameraSilenceMs / 4),
      );
      tick.unref();
      void finished.finally(() => clearInterval(tick));
      void stopSignal.then(() => clearInterval(tick));
    });
    currentFinished = finished;
    return Promise.race([finished, watchdog, stopSignal.then((): RunEnd => ({ kind: "ended" }))]);
  };

  let currentGeneration = 0;
  let currentFinished: Promise<unknown> = Promise.resolve();
  let everHadFrame = false;
  let cameraDown = false;
  const recent: number[] = [];
  const giveUp = (error: unknown) => {
    const code = isGlanceError(error) ? error.code : "INTERNAL";
    pipelineLog.error({ code, err: (error as Error).message }, "pipeline stopped");
    sendEvent("camera-down", code);
    if (events.listenerCount("error") > 0) events.emit("error", error);
  };

  const supervise = async (): Promise<void> => {
    let backoff = wd.backoffMs;
    for (;;) {
      const end = await runOnce(source, currentGeneration);
      if (stopping) return;
      if (end.kind === "ended") {
        pipelineLog.info(stats(), "source ended");
        events.emit("source-ended");
        return;
      }
      currentGeneration++;
      timer.clearActive();
      droppedBefore += source.dropped;
      await source.close().catch(() => {});
      if (end.kind === "failed" && !everHadFrame) return giveUp(end.error);
      const now = Date.now();
      recent.push(now);
      while ((recent[0] ?? now) < now - RESTART_WINDOW_MS) recent.shift();
      if (recent.length > wd.maxRestarts) {
        return giveUp(
          new GlanceError(
            "CAMERA_UNAVAILABLE",
            `${recent.length} pipeline restarts in 10 minutes; giving up so the service manager restarts the agent.`,
          ),
        );
      }
      if (end.kind === "stalled") {
        restarts++;
        pipelineLog.error({ stage: end.stage, ms: end.ms }, "stage stalled: pipeline restarted");
        events.emit("stage-restarted", { stage: end.stage, ms: end.ms });
        sendEvent("stage-restarted", `${end.stage} made no progress for ${end.ms} ms`);
      } else {
        const code = isGlanceError(end.error) ? end.error.code : "INTERNAL";
        const detail = `${code}: ${(end.error as Error).message}`.slice(0, 256);
        if (!cameraDown) {
          cameraDown = true;
          pipelineLog.warn({ err: (end.error as Error).message }, "camera down; reconnecting");
          events.emit("camera-down", { detail });
          sendEvent("camera-down", detail);
        }
      }
      // reopen: at once after a stall, with capped exponential backoff while the camera stays away
      for (let attempt = 0; ; attempt++) {
        if (cameraDown || attempt > 0) {
          await Promise.race([new Promise((r) => setTimeout(r, backoff).unref()), stopSignal]);
          backoff = Math.min(backoff * 2, wd.backoffMaxMs);
        }
        if (stopping) return;
        try {
          source = await openSource(opts.source, log);
          reconnects += cameraDown ? 1 : 0;
          break;
        } catch (err) {
          pipelineLog.warn({ err: (err as Error).message, retryInMs: backoff }, "camera still unavailable");
        }
      }
      if (!cameraDown) backoff = wd.backoffMs;
    }
  };
  const running = supervise().catch((err: unknown) => giveUp(err));
  log.info({ source: opts.source.kind, space: engine.space, nextSeq: sequence.peek() }, "agent started");

  let stopped: Promise<void> | undefined;
  return {
    events,
    stats,
    telemetry,
    stop() {
      stopped ??= (async () => {
        stopping = true;
        wakeStop?.();
        await source.close();
        await running;
        // the pipeline ends every open track when its source closes: let those events reach the queue
        await Promise.race([currentFinished, new Promise((r) => setTimeout(r, STOP_DRAIN_MS).unref())]);
        await outbox.close();
        await link.close();
        await engine.close();
        await attributes.close();
        sealer.end();
        log.info(stats(), "agent stopped");
      })();
      return stopped;
    },
  };
}

function checkBrokerUrl(url: string): void {
  let protocol: string | undefined;
  try {
    protocol = new URL(url).protocol;
  } catch {
    protocol = undefined;
  }
  if (!protocol || !["mqtt:", "mqtts:", "ws:", "wss:"].includes(protocol)) {
    throw new GlanceError(
      "CONFIG_INVALID",
      `Broker URL ${JSON.stringify(url)} is not mqtt(s):// or ws(s)://; use the URL from the node's claim.`,
    );
  }
}
