#!/usr/bin/env -S npx --no-install tsx
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { DEFAULT_EMBEDDER } from "@glance/models";
import { GlanceError, isGlanceError } from "@glance/shared";
import { pino } from "pino";
import { startAgent } from "./agent.ts";
import { loadOrCreateKey, readConfig } from "./config.ts";
import { doctor, formatChecks } from "./doctor.ts";
import { benchStages, formatStageBench } from "./stage-bench.ts";

const DEMO_VIDEO = new URL("../../demo/people/video/hamilton-clip.mp4", import.meta.url).pathname;

const USAGE = `glance-agent run --config <node.json>       run the node
glance-agent doctor --config <node.json>    check key, disk, clock, models, camera, broker; exit 1 on a failure
glance-agent bench [--width 640] [--frames 150] [--video file] [--embedder name]... [--json]
                                            per-stage latency on this CPU (fp32 and int8 embedders if installed)

Runs one camera node. The config file (JSON):
  nodeId, cameraId          ids this node was claimed with
  mqtt: { url, username, password }   broker credentials from the claim (password may come from GLANCE_MQTT_PASSWORD)
  source: one of
    { kind: "picamera", width?, height?, fps? }            Raspberry Pi camera through rpicam-vid (MJPEG)
    { kind: "v4l2", device: "/dev/video0", inputFormat?, captureWidth?, captureHeight?, captureFps?, fps?, width? }
    { kind: "rtsp", url: "rtsp://user:pass@cam/stream", fps?, width? }
    { kind: "replay", path, loop?, fps?, width?, pace? }   a video file
    { kind: "folder", path, loop?, fps?, pace? }           a folder of images
  dataDir                   node state: identity key, sequence numbers, outgoing queue (created 0700)
  modelsDir?, models?       face models (default: the models package's dist; models: { detector?, embedder? })
  queueMaxBytes?            outgoing queue bound on disk (default 268435456 = 256 MiB); oldest dropped beyond
  heartbeatMs?              status heartbeat period (default 30000)
  watchdog?                 { stallMs?, cameraSilenceMs?, backoffMs?, backoffMaxMs?, maxRestarts? }
  logLevel?                 pino level (default info)
Relative paths are resolved against the config file's folder.`;

async function run(configFile: string): Promise<number> {
  const config = readConfig(configFile);
  const log = pino({ name: "glance-agent", level: config.logLevel });
  const { key, created } = loadOrCreateKey(config.dataDir);
  // the public key is what HQ registers for this node; stdout so an installer can capture it
  process.stdout.write(`node ${config.nodeId} public signing key: ${key.publicKey}${created ? " (new)" : ""}\n`);

  const password = config.mqtt.password ?? process.env.GLANCE_MQTT_PASSWORD;
  if (!password)
    throw new GlanceError(
      "CONFIG_INVALID",
      "No MQTT password: set mqtt.password in the config or GLANCE_MQTT_PASSWORD.",
    );
  const agent = await startAgent({
    nodeId: config.nodeId,
    cameraId: config.cameraId,
    mqtt: { url: config.mqtt.url, username: config.mqtt.username, password },
    signingKey: key,
    source: config.source,
    dataDir: config.dataDir,
    modelsDir: config.modelsDir,
    models: config.models,
    queueMaxBytes: config.queueMaxBytes,
    heartbeatMs: config.heartbeatMs,
    watchdog: config.watchdog,
    logger: log,
  });

  const exitCode = await new Promise<number>((done) => {
    process.once("SIGINT", () => done(0));
    process.once("SIGTERM", () => done(0));
    agent.events.once("source-ended", () => done(0));
    // a dead camera exits non-zero so the supervisor (systemd, docker) restarts the node
    agent.events.once("error", () => done(1));
  });
  await agent.stop();
  return exitCode;
}

async function main(argv: string[]): Promise<number> {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      config: { type: "string", short: "c" },
      help: { type: "boolean", short: "h" },
      json: { type: "boolean" },
      width: { type: "string", default: "640" },
      frames: { type: "string", default: "150" },
      video: { type: "string", default: DEMO_VIDEO },
      embedder: { type: "string", multiple: true },
      "models-dir": { type: "string" },
    },
  });
  const command = positionals[0];
  if (values.help || !command || !["run", "doctor", "bench"].includes(command)) {
    process.stderr.write(`${USAGE}\n`);
    return values.help ? 0 : 2;
  }
  if (command === "bench") {
    // the embedder nodes run (GLANCE_EMBEDDER, as the models package reads it) and its int8 build
    const embedder = process.env.GLANCE_EMBEDDER?.trim() || DEFAULT_EMBEDDER;
    const result = await benchStages({
      video: resolve(values.video),
      width: Number(values.width),
      frames: Number(values.frames),
      modelsDir: values["models-dir"],
      embedders: values.embedder ?? [embedder, `${embedder}-int8`],
    });
    process.stdout.write(`${values.json ? JSON.stringify(result, null, 2) : formatStageBench(result)}\n`);
    return 0;
  }
  if (!values.config) {
    process.stderr.write(`${USAGE}\n`);
    return 2;
  }
  if (command === "doctor") {
    const config = readConfig(values.config);
    const checks = await doctor(config, config.mqtt.password ?? process.env.GLANCE_MQTT_PASSWORD);
    process.stdout.write(`${values.json ? JSON.stringify(checks, null, 2) : formatChecks(checks)}\n`);
    return checks.every((c) => c.ok) ? 0 : 1;
  }
  return run(values.config);
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    const message = isGlanceError(err) ? `${err.code}: ${err.message}` : (err as Error).stack;
    process.stderr.write(`glance-agent: ${message}\n`);
    process.exit(1);
  },
);
