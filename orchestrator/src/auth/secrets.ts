import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { chmod, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { generateSealingKeyPair, type KeyPair } from "@glance/shared";
import { z } from "zod";

/** A 256-bit random secret, base64url: API tokens and node MQTT passwords. */
export function newSecret(prefix = ""): string {
  return prefix + randomBytes(32).toString("base64url");
}

/** Secrets are high-entropy random values, so sha256 is enough (no password stretching needed). */
export function hashSecret(secret: string): string {
  return createHash("sha256").update(secret).digest("hex");
}

export function secretMatches(secret: string, hash: string): boolean {
  const a = Buffer.from(hashSecret(secret), "hex");
  const b = Buffer.from(hash, "hex");
  return a.length === b.length && timingSafeEqual(a, b);
}

export const SealingKey = z.object({ kid: z.string(), publicKey: z.string(), privateKey: z.string() });
export type SealingKey = z.infer<typeof SealingKey> & KeyPair;

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
}

async function writePrivate(path: string, content: string): Promise<void> {
  await writeFile(path, content, { mode: 0o600, flag: "wx" });
  await chmod(path, 0o600);
}

/**
 * The X25519 key nodes seal templates to. Created once per data directory; the kid is derived from the public key
 * so that nodes and orchestrator agree on it without coordination.
 */
export async function loadOrCreateSealingKey(dataDir: string): Promise<SealingKey> {
  const path = join(dataDir, "sealing-key.json");
  const existing = await readIfExists(path);
  if (existing !== undefined) return SealingKey.parse(JSON.parse(existing));
  const pair = generateSealingKeyPair();
  const kid = `sk-${createHash("sha256").update(pair.publicKey).digest("hex").slice(0, 16)}`;
  const key = { kid, ...pair };
  await writePrivate(path, `${JSON.stringify(key)}\n`);
  return key;
}

/** Plaintext admin token kept next to the data (mode 0600) so the operator can read it after the first start. */
export async function readAdminTokenFile(dataDir: string): Promise<string | undefined> {
  return (await readIfExists(join(dataDir, "admin-token")))?.trim();
}

export async function writeAdminTokenFile(dataDir: string, token: string): Promise<void> {
  await writePrivate(join(dataDir, "admin-token"), `${token}\n`);
}
