import { chmodSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { GlanceError, generateSigningKeyPair, type KeyPair } from "@glance/shared";
import { z } from "zod";
import { type CertificateFacts, inspectCertificate, tlsKeyPem } from "./certificate.ts";

const Pace = z.enum(["realtime", "every-frame"]);
export const NodeConfig = z.object({
  nodeId: z.string().min(1),
  cameraId: z.string().min(1),
  mqtt: z
    .object({
      url: z.string().min(1),
      /** default: the node id (on a TLS broker the certificate names the node; a user name must agree with it) */
      username: z.string().min(1).optional(),
      password: z.string().optional(),
      /** fleet CA file (PEM) the broker's certificate must chain to: `fleet-ca.pem` from the claim */
      ca: z.string().min(1).optional(),
      /** this node's client certificate (PEM): `node-cert.pem` from the claim; its key is the node's signing key */
      cert: z.string().min(1).optional(),
    })
    .refine((m) => !m.ca === !m.cert, "mqtt.ca and mqtt.cert go together (mutual TLS): set both or neither"),
  /** orchestrator HTTP base URL, for certificate renewal (`glance-agent renew`, and automatically while running) */
  apiUrl: z.url().optional(),
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
    mqtt: {
      ...c.mqtt,
      ...(c.mqtt.ca ? { ca: resolve(base, c.mqtt.ca) } : {}),
      ...(c.mqtt.cert ? { cert: resolve(base, c.mqtt.cert) } : {}),
    },
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

export interface MqttTls {
  ca: string;
  cert: string;
  /** the node's signing key as PKCS#8 PEM */
  key: string;
  facts: CertificateFacts;
}

function readPem(file: string, field: string, next: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new GlanceError("CONFIG_INVALID", `${field}: ${file} does not exist. ${next}`);
    if (code === "EACCES") {
      throw new GlanceError(
        "CONFIG_INVALID",
        `${field}: ${file} cannot be read by this user; run the agent as the node's user or chown the file to it.`,
      );
    }
    throw new GlanceError("CONFIG_INVALID", `${field}: ${file} cannot be read (${(e as Error).message}).`);
  }
}

/**
 * The node's mutual-TLS material from its config (`mqtt.ca`, `mqtt.cert`) and its identity key, checked before any
 * connection so that a technician reads what is wrong instead of a TLS alert: undefined when the config has none.
 * Refuses a certificate that is not of this CA, not for this node or its key, expired or not yet valid.
 */
export function loadMqttTls(config: NodeConfig, key: KeyPair, now = new Date()): MqttTls | undefined {
  const { ca: caFile, cert: certFile } = config.mqtt;
  if (!caFile || !certFile) return undefined;
  if (!config.mqtt.url.startsWith("mqtts://")) {
    throw new GlanceError(
      "CONFIG_INVALID",
      `mqtt.url ${config.mqtt.url} is not mqtts:// but mqtt.cert is set: use the mqtts:// URL from the node's claim.`,
    );
  }
  const ca = readPem(
    caFile,
    "mqtt.ca",
    "Copy fleet-ca.pem from the node's claim (provisioning writes it beside the key).",
  );
  const cert = readPem(
    certFile,
    "mqtt.cert",
    "Copy node-cert.pem from the node's claim, or run `glance-agent renew --config <node.json>`.",
  );
  const facts = inspectCertificate(cert, ca, config.nodeId, key, now);
  if (facts.problems.length > 0) {
    const expired = facts.problems.some((p) => p.startsWith("it expired"));
    throw new GlanceError(
      "CONFIG_INVALID",
      `mqtt.cert ${certFile} cannot be used: ${facts.problems.join("; ")}. ${
        expired
          ? "Renew it: glance-agent renew --config <node.json> (needs apiUrl), or claim the node again."
          : `It must be the certificate issued to ${config.nodeId} for the key in ${keyFile(config.dataDir)}, by the CA in ${caFile}: claim the node with keyDir = dataDir, or renew.`
      }`,
    );
  }
  return { ca, cert, key: tlsKeyPem(key), facts };
}

/** Writes a renewed certificate over `mqtt.cert` atomically: a crash mid-write never leaves a node without one. */
export function writeCertificate(file: string, pem: string): void {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, pem, { mode: 0o600 });
  renameSync(tmp, file);
}
