import { randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import { createRequire } from "node:module";
import { join } from "node:path";
import { type DetectedFace, FacePipeline } from "@glance/models";
import { type DesiredState, GlanceError, isGlanceError, type KeyPair } from "@glance/shared";
import { type Logger, pino } from "pino";
import { NodeLink } from "./link.ts";
import { bestShot, type ShotSettings } from "./pipeline/best-shot.ts";
import { detect } from "./pipeline/detect.ts";
import { embed } from "./pipeline/embed.ts";
import { newCounters, StageTimer } from "./pipeline/metrics.ts";
import { publish } from "./pipeline/publish.ts";
import { sealTemplates } from "./pipeline/seal.ts";
import { IouTracker, track } from "./pipeline/track.ts";
import { SequenceStore } from "./sequence.ts";
import { openSource, type SourceSpec } from "./sources/index.ts";

export interface AgentOptions {
  nodeId: string;
  cameraId: string;
  mqtt: { url: string; username: string; password: string };
  /** Ed25519 node identity: signs every template */
  signingKey: KeyPair;
  source: SourceSpec;
  modelsDir?: string;
  /** where the node keeps state that must survive restarts (sequence numbers); default ./.glance-agent/<nodeId> */
  dataDir?: string;
  logger?: Logger;
}

export interface AgentStats {
  frames: number;
  dropped: number;
  faces: number;
  templates: number;
  tracks: number;
  stageMs: Record<string, { p50: number; p95: number }>;
  /** faces not sent, by reason */
  skipped: Record<string, number>;
}

export interface Agent {
  /** "template" {trackId, seq, quality, bytes}, "desired" DesiredState | undefined, "source-ended", "error" GlanceError */
  events: EventEmitter;
  stats(): AgentStats;
  stop(): Promise<void>;
}

/** Below this best-shot quality a face is not worth a template (the embedder's accuracy falls off). */
const MIN_QUALITY = 0.3;
const DEFAULT_INTERVAL_MS = 5000;
const DEFAULT_MIN_FACE_PX = 40;
/** a face entering the frame is rarely its best: watch a new track this long before its first template */
const SETTLE_MS = 1000;
const AGENT_VERSION = (createRequire(import.meta.url)("../package.json") as { version: string }).version;

/**
 * Starts a node: loads and warms the face models, opens the camera, connects to the broker and runs
 * frames → detect → track → best shot → embed → seal → publish until stopped or the source ends.
 * Nothing biometric leaves before the orchestrator's desired state (with its sealing key) has arrived.
 */
export async function startAgent(opts: AgentOptions): Promise<Agent> {
  const log = (opts.logger ?? pino({ name: "glance-agent" })).child({ nodeId: opts.nodeId, cameraId: opts.cameraId });
  const sequence = SequenceStore.open(opts.dataDir ?? join(process.cwd(), ".glance-agent", opts.nodeId));
  checkBrokerUrl(opts.mqtt.url);
  const engine = await FacePipeline.load({ modelsDir: opts.modelsDir });
  const source = await openSource(opts.source, log).catch(async (err: unknown) => {
    await engine.close();
    throw err;
  });

  const events = new EventEmitter();
  const timer = new StageTimer();
  const counters = newCounters();
  const stats = (): AgentStats => ({
    frames: counters.frames,
    dropped: source.dropped,
    faces: counters.faces,
    templates: counters.templates,
    tracks: counters.tracks,
    stageMs: timer.summary(),
    skipped: { ...counters.skipped },
  });

  const link = new NodeLink(
    {
      nodeId: opts.nodeId,
      mqtt: opts.mqtt,
      status: () => {
        const { stageMs: _s, skipped: _k, ...totals } = stats();
        return {
          agentVersion: AGENT_VERSION,
          models: { embedding: engine.space },
          privacyMode: link.desired?.privacyMode,
          stats: totals,
        };
      },
    },
    log.child({ component: "link" }),
  );
  link.on("desired", (d: DesiredState | undefined) => events.emit("desired", d));

  // "members-only" behaves like "visitor" until the edge gallery exists (see README)
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

  const tracker = new IouTracker<DetectedFace>({ idPrefix: `${randomBytes(3).toString("hex")}-` });
  const detected = detect(source, engine, timer, counters);
  const tracked = track(detected, tracker, counters);
  const shots = bestShot(tracked, engine, settings, timer, counters);
  const embedded = embed(shots, engine, timer);
  const sealed = sealTemplates(
    embedded,
    {
      nodeId: opts.nodeId,
      cameraId: opts.cameraId,
      space: engine.space,
      signingKey: opts.signingKey,
      sequence,
      recipient: () => templatesOn()?.sealingKey,
    },
    timer,
  );

  let stopping = false;
  let stopped: Promise<void> | undefined;
  const pipelineLog = log.child({ component: "pipeline" });
  const running = publish(sealed, {
    link,
    nodeId: opts.nodeId,
    cameraId: opts.cameraId,
    counters,
    timer,
    events,
    log: pipelineLog,
  }).then(
    () => {
      if (stopping) return;
      pipelineLog.info(stats(), "source ended");
      events.emit("source-ended");
    },
    (err: unknown) => {
      const code = isGlanceError(err) ? err.code : "INTERNAL";
      pipelineLog.error({ code, err: (err as Error).message }, "pipeline stopped");
      link
        .send("event", {
          nodeId: opts.nodeId,
          ts: Date.now(),
          kind: "camera-down",
          cameraId: opts.cameraId,
          detail: code,
        })
        .catch(() => {});
      if (events.listenerCount("error") > 0) events.emit("error", err);
    },
  );
  log.info({ source: opts.source.kind, space: engine.space, nextSeq: sequence.peek() }, "agent started");

  return {
    events,
    stats,
    stop() {
      stopped ??= (async () => {
        stopping = true;
        await source.close();
        await running;
        await link.close();
        await engine.close();
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
