import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
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
 * The private key never leaves the node. (Certificate issuance through the fleet CA extends this later.)
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
  const body = (await res.json().catch(() => ({}))) as { mqtt?: ClaimedNode["mqtt"]; code?: string; message?: string };
  if (!res.ok || !body.mqtt) {
    throw new GlanceError("CONFLICT", `Claiming node ${opts.nodeId} failed (${res.status} ${body.code ?? ""}): ${body.message ?? "no details"}.`);
  }
  return { nodeId: opts.nodeId, cameraId: opts.cameraId, storeId: opts.storeId, signingKey, mqtt: body.mqtt };
}
