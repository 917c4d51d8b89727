import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { GlanceError, generateSigningKeyPair, type KeyPair } from "@glance/shared";
import { z } from "zod";

const Pace = z.enum(["realtime", "every-frame"]);
export const NodeConfig = z.object({
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
export type NodeConfig = z.infer<typeof NodeConfig>;

export function readConfig(file: string): NodeConfig {
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
export function loadOrCreateKey(dataDir: string): { key: KeyPair; created: boolean } {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const file = keyFile(dataDir);
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

export function keyFile(dataDir: string): string {
  return join(dataDir, "node-signing-key.json");
}
