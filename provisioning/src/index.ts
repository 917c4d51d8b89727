import { createPrivateKey } from "node:crypto";
import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { join, posix } from "node:path";
import { GlanceError, generateSigningKeyPair, type KeyPair } from "@glance/shared";

export interface ClaimOptions {
  /** orchestrator base URL, e.g. https://hq.example.com */
  apiUrl: string;
  /** technician or hq-admin API token */
  token: string;
  nodeId: string;
  storeId: string;
  cameraId: string;
  /** where the node's identity key lives; created with mode 0600 if absent */
  keyDir?: string;
}

export interface ClaimedNode {
  nodeId: string;
  cameraId: string;
  storeId: string;
  signingKey: KeyPair;
  mqtt: { url: string; username: string; password: string };
  /**
   * Mutual-TLS material for the broker: the fleet CA, the node's certificate (issued for its own signing key) and
   * that key as PKCS#8 PEM. With `keyDir` they are also written there as fleet-ca.pem, node-cert.pem and
   * node-tls-key.pem (0600).
   */
  tls: { ca: string; cert: string; key: string; serial: string; notAfter: string };
}

/** Load the node's Ed25519 identity from keyDir, or create it (private key readable only by its owner). */
export async function loadOrCreateNodeKey(keyDir: string): Promise<KeyPair> {
  const file = join(keyDir, "node-signing-key.json");
  try {
    return JSON.parse(await readFile(file, "utf8")) as KeyPair;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
  await mkdir(keyDir, { recursive: true, mode: 0o700 });
  const key = generateSigningKeyPair();
  await writeFile(file, JSON.stringify(key), { mode: 0o600 });
  await chmod(file, 0o600);
  return key;
}

/**
 * Claim a node: register its public signing key with the orchestrator and receive its MQTT credentials.
 * The private key never leaves the node; the orchestrator's fleet CA certifies its public half for mutual TLS.
 */
export async function claimNode(opts: ClaimOptions): Promise<ClaimedNode> {
  const signingKey = opts.keyDir ? await loadOrCreateNodeKey(opts.keyDir) : generateSigningKeyPair();
  const res = await fetch(new URL("/api/nodes", opts.apiUrl), {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${opts.token}` },
    body: JSON.stringify({
      nodeId: opts.nodeId,
      storeId: opts.storeId,
      cameraId: opts.cameraId,
      signingPublicKey: signingKey.publicKey,
    }),
  });
  const body = (await res.json().catch(() => ({}))) as {
    mqtt?: ClaimedNode["mqtt"];
    tls?: { ca: string; cert: string; serial: string; notAfter: string };
    code?: string;
    message?: string;
  };
  if (!res.ok || !body.mqtt || !body.tls) {
    throw new GlanceError(
      "CONFLICT",
      `Claiming node ${opts.nodeId} failed (${res.status} ${body.code ?? ""}): ${body.message ?? "no details"}.`,
    );
  }
  const tls = { ...body.tls, key: tlsKeyPem(signingKey) };
  if (opts.keyDir) {
    for (const [name, text] of [
      ["fleet-ca.pem", tls.ca],
      ["node-cert.pem", tls.cert],
      ["node-tls-key.pem", tls.key],
    ] as const) {
      const file = join(opts.keyDir, name);
      await writeFile(file, text, { mode: 0o600 });
      await chmod(file, 0o600);
    }
  }
  return { nodeId: opts.nodeId, cameraId: opts.cameraId, storeId: opts.storeId, signingKey, mqtt: body.mqtt, tls };
}

/** The node's Ed25519 signing key as PKCS#8 PEM: its certificate is for this key, so it is also its TLS key. */
export function tlsKeyPem(pair: KeyPair): string {
  return createPrivateKey({ key: { kty: "OKP", crv: "Ed25519", x: pair.publicKey, d: pair.privateKey }, format: "jwk" })
    .export({ format: "pem", type: "pkcs8" })
    .toString();
}

export interface NodeConfigOptions {
  /** the orchestrator's URL, kept as the node's `apiUrl` for certificate renewal */
  apiUrl: string;
  /** the node's dataDir as written in the config (relative to the config file's folder); the claim's keyDir */
  dataDir: string;
  /** the node's camera, as in the node-agent config (`{ kind: "v4l2", device: "/dev/video0" }`, ...) */
  source: Record<string, unknown>;
}

/**
 * The node-agent config (node.json) of a node claimed with `keyDir` = its dataDir: mutual TLS to the broker with the
 * claim's fleet-ca.pem and node-cert.pem, the node's identity key as the TLS key, no password, and `apiUrl` so the
 * agent renews its certificate by itself. `glance-agent run --config node.json` then starts it.
 */
export function nodeConfigFor(node: ClaimedNode, opts: NodeConfigOptions): Record<string, unknown> {
  return {
    nodeId: node.nodeId,
    cameraId: node.cameraId,
    mqtt: {
      url: node.mqtt.url,
      ca: posix.join(opts.dataDir, "fleet-ca.pem"),
      cert: posix.join(opts.dataDir, "node-cert.pem"),
    },
    apiUrl: opts.apiUrl,
    source: opts.source,
    dataDir: opts.dataDir,
  };
}

/** Writes `nodeConfigFor` to `file` (0600: it names the node's files and HQ's URL). */
export async function writeNodeConfig(file: string, node: ClaimedNode, opts: NodeConfigOptions): Promise<void> {
  await writeFile(file, `${JSON.stringify(nodeConfigFor(node, opts), null, 2)}\n`, { mode: 0o600 });
}
