#!/usr/bin/env -S npx --no-install tsx
import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { GlanceError, generateSigningKeyPair, isGlanceError, type KeyPair } from "@glance/shared";
import { pino } from "pino";
import { z } from "zod";
import { startAgent } from "./agent.ts";

const USAGE = `glance-agent run --config <node.json>

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

const Pace = z.enum(["realtime", "every-frame"]);
const NodeConfig = z.object({
  nodeId: z.string().min(1),
  cameraId: z.string().min(1),
  mqtt: z.object({ url: z.string().min(1), username: z.string().min(1), password: z.string().optional() }),
  source: z.discriminatedUnion("kind", [
    z.object({
      kind: z.literal("replay"),
      path: z.string().min(1),
      loop: z.boolean().optional(),
      fps: z.number().positive().optional(),
      width: z.number().int().positive().optional(),
      pace: Pace.optional(),
    }),
    z.object({
      kind: z.literal("folder"),
      path: z.string().min(1),
      loop: z.boolean().optional(),
      fps: z.number().positive().optional(),
      pace: Pace.optional(),
    }),
    z.object({
      kind: z.literal("v4l2"),
      device: z.string().min(1),
      inputFormat: z.string().optional(),
      captureWidth: z.number().int().positive().optional(),
      captureHeight: z.number().int().positive().optional(),
      captureFps: z.number().positive().optional(),
      fps: z.number().positive().optional(),
      width: z.number().int().positive().optional(),
    }),
    z.object({
      kind: z.literal("rtsp"),
      url: z.string().min(1),
      fps: z.number().positive().optional(),
      width: z.number().int().positive().optional(),
    }),
    z.object({
      kind: z.literal("picamera"),
      width: z.number().int().positive().optional(),
      height: z.number().int().positive().optional(),
      fps: z.number().positive().optional(),
      command: z.array(z.string().min(1)).min(1).optional(),
    }),
  ]),
  dataDir: z.string().min(1),
  modelsDir: z.string().optional(),
  models: z.object({ detector: z.string().optional(), embedder: z.string().optional() }).optional(),
  queueMaxBytes: z.number().int().positive().optional(),
  heartbeatMs: z.number().int().positive().optional(),
  watchdog: z
    .object({
      stallMs: z.number().int().positive().optional(),
      cameraSilenceMs: z.number().int().positive().optional(),
      backoffMs: z.number().int().positive().optional(),
      backoffMaxMs: z.number().int().positive().optional(),
      maxRestarts: z.number().int().nonnegative().optional(),
    })
    .optional(),
  logLevel: z.enum(["trace", "debug", "info", "warn", "error", "fatal", "silent"]).default("info"),
});
type NodeConfig = z.infer<typeof NodeConfig>;

function readConfig(file: string): NodeConfig {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, "utf8"));
  } catch (cause) {
    throw new GlanceError("CONFIG_INVALID", `Cannot read ${file} as JSON: ${(cause as Error).message}`);
  }
  const parsed = NodeConfig.safeParse(json);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ");
    throw new GlanceError(
      "CONFIG_INVALID",
      `${file} is not a valid node config (${issues}). Run with --help for the format.`,
    );
  }
  const base = dirname(resolve(file));
  const c = parsed.data;
  return {
    ...c,
    dataDir: resolve(base, c.dataDir),
    modelsDir: c.modelsDir && resolve(base, c.modelsDir),
    source: "path" in c.source ? { ...c.source, path: resolve(base, c.source.path) } : c.source,
  };
}

/**
 * The node's Ed25519 identity, created on first run and readable only by its owner. Same file and format as
 * provisioning's loadOrCreateNodeKey, so a node claimed with keyDir = dataDir signs with the key it registered.
 */
function loadOrCreateKey(dataDir: string): { key: KeyPair; created: boolean } {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const file = join(dataDir, "node-signing-key.json");
  try {
    const key = JSON.parse(readFileSync(file, "utf8")) as Partial<KeyPair>;
    if (typeof key.publicKey !== "string" || typeof key.privateKey !== "string") {
      throw new GlanceError(
        "CONFIG_INVALID",
        `${file} is not a node key; restore it, or delete it and re-claim the node.`,
      );
    }
    if ((statSync(file).mode & 0o077) !== 0) chmodSync(file, 0o600);
    return { key: { publicKey: key.publicKey, privateKey: key.privateKey }, created: false };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
  const key = generateSigningKeyPair();
  writeFileSync(file, JSON.stringify(key), { mode: 0o600 });
  chmodSync(file, 0o600);
  return { key, created: true };
}

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
    options: { config: { type: "string", short: "c" }, help: { type: "boolean", short: "h" } },
  });
  if (values.help || positionals[0] !== "run" || !values.config) {
    process.stderr.write(`${USAGE}\n`);
    return values.help ? 0 : 2;
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
