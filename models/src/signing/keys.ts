import { createHash, randomBytes } from "node:crypto";
import { chmod, link, mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { GlanceError, generateSigningKeyPair, type KeyPair } from "@glance/shared";

/**
 * Model-signing keys. Two kinds, told apart by their key id so that a manifest says on its face who signed it:
 * - HQ keys (`models:keygen`): key id = first 16 hex of sha256(public key). The only keys a production node trusts.
 * - the development key of one checkout (made by the first `models:build`): key id `dev-` + the same 16 hex.
 *   It exists so that `npm install && npm start` and the tests verify signatures without any setup.
 */

/** `.glance/keys` at the repository root: git-ignored, never shipped. */
export const KEYS_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "../../../.glance/keys");
export const HQ_KEY_FILE = "model-signing.key.json";
export const HQ_TRUST_FILE = "model-signing.pub.json";
export const DEV_KEY_FILE = "dev-model-signing.key.json";
export const DEV_TRUST_FILE = "dev-model-signing.pub.json";

export type KeyPurpose = "hq" | "development";

/** A public key a node or orchestrator accepts model manifests from. */
export interface TrustedKey {
  keyId: string;
  publicKey: string;
}

/** The private key file (mode 0600). */
export interface ModelSigningKey extends TrustedKey, KeyPair {
  purpose: KeyPurpose;
  createdAt: string;
}

export function keyIdOf(publicKey: string, purpose: KeyPurpose): string {
  const hex = createHash("sha256").update(Buffer.from(publicKey, "base64url")).digest("hex").slice(0, 16);
  return purpose === "development" ? `dev-${hex}` : hex;
}

export function purposeOf(keyId: string): KeyPurpose {
  return keyId.startsWith("dev-") ? "development" : "hq";
}

/** "dev-signed" or "HQ-signed", from the key id (which a trusted key's public key pins, see trustedKey()). */
export function signerLabel(keyId: string): "dev-signed" | "HQ-signed" {
  return purposeOf(keyId) === "development" ? "dev-signed" : "HQ-signed";
}

const isB64Key = (v: unknown): v is string => typeof v === "string" && Buffer.from(v, "base64url").length === 32;

/** Validates one trust entry: a 32-byte Ed25519 public key whose key id is derived from it. */
export function trustedKey(value: unknown, where: string): TrustedKey {
  const v = value as Partial<TrustedKey> | null;
  if (!v || typeof v !== "object" || typeof v.keyId !== "string" || !isB64Key(v.publicKey)) {
    throw new GlanceError(
      "CONFIG_INVALID",
      `${where}: a trusted model-signing key is {"keyId", "publicKey"} with a base64url Ed25519 public key; copy it from the model-signing.pub.json that \`npm run models:keygen\` wrote.`,
    );
  }
  if (v.keyId !== keyIdOf(v.publicKey, purposeOf(v.keyId))) {
    throw new GlanceError(
      "CONFIG_INVALID",
      `${where}: key id ${v.keyId} does not belong to its public key (expected ${keyIdOf(v.publicKey, purposeOf(v.keyId))}); the trust entry was mistyped or edited, copy it again from model-signing.pub.json.`,
    );
  }
  return { keyId: v.keyId, publicKey: v.publicKey };
}

function newKey(purpose: KeyPurpose): ModelSigningKey {
  const pair = generateSigningKeyPair();
  return { purpose, keyId: keyIdOf(pair.publicKey, purpose), ...pair, createdAt: new Date().toISOString() };
}

const publicPart = (k: TrustedKey): TrustedKey => ({ keyId: k.keyId, publicKey: k.publicKey });

async function writeAtomic(path: string, text: string, mode: number): Promise<void> {
  const tmp = `${path}.${process.pid}-${randomBytes(4).toString("hex")}.tmp`;
  await writeFile(tmp, text, { mode });
  await rename(tmp, path);
}

/** Creates `file` only if it does not exist yet (link is atomic), so two processes never make two keys. */
async function createExclusive(path: string, text: string): Promise<boolean> {
  const tmp = `${path}.${process.pid}-${randomBytes(4).toString("hex")}.tmp`;
  await writeFile(tmp, text, { mode: 0o600 });
  try {
    await link(tmp, path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw e;
  } finally {
    await rm(tmp, { force: true });
  }
}

export async function readSigningKey(file: string): Promise<ModelSigningKey> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(file, "utf8"));
  } catch (cause) {
    const missing = (cause as NodeJS.ErrnoException).code === "ENOENT";
    throw new GlanceError(
      "CONFIG_INVALID",
      missing
        ? `No model-signing key at ${file}: create one with \`npm run models:keygen\` (HQ) or pass --key <file>.`
        : `${file} is not a model-signing key file (JSON from \`npm run models:keygen\`).`,
      { file },
      { cause },
    );
  }
  const k = raw as Partial<ModelSigningKey>;
  const pub = trustedKey(raw, file);
  if (!isB64Key(k.privateKey)) {
    throw new GlanceError(
      "CONFIG_INVALID",
      `${file} has no private key; sign with the .key.json file, not the .pub.json trust file.`,
    );
  }
  return { ...pub, privateKey: k.privateKey, purpose: purposeOf(pub.keyId), createdAt: String(k.createdAt ?? "") };
}

export async function readTrustFile(file: string): Promise<TrustedKey[]> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(file, "utf8"));
  } catch (cause) {
    throw new GlanceError(
      "CONFIG_INVALID",
      `Cannot read the model trust file ${file}: point GLANCE_MODEL_TRUST at a model-signing.pub.json (or a JSON list of them).`,
      { file },
      { cause },
    );
  }
  return parseTrust(raw, file);
}

export function parseTrust(raw: unknown, where: string): TrustedKey[] {
  return (Array.isArray(raw) ? raw : [raw]).map((entry) => trustedKey(entry, where));
}

/**
 * `models:keygen`: a new HQ key pair. The private key file is written 0600 and never overwritten (losing an HQ key
 * means re-signing every model and re-configuring every node); the trust file beside it is what nodes get.
 */
export async function generateHqKey(
  outDir: string = KEYS_DIR,
): Promise<{ key: TrustedKey; keyFile: string; trustFile: string }> {
  await mkdir(outDir, { recursive: true, mode: 0o700 });
  const key = newKey("hq");
  const keyFile = join(outDir, HQ_KEY_FILE);
  const trustFile = join(outDir, HQ_TRUST_FILE);
  if (!(await createExclusive(keyFile, `${JSON.stringify(key, null, 2)}\n`))) {
    throw new GlanceError(
      "CONFLICT",
      `${keyFile} already exists; a new key would orphan every model signed with it. Move it away first if you really mean to replace it, or use --out <dir>.`,
      { keyFile },
    );
  }
  await chmod(keyFile, 0o600);
  await writeAtomic(trustFile, `${JSON.stringify(publicPart(key), null, 2)}\n`, 0o644);
  return { key: publicPart(key), keyFile, trustFile };
}

/** The development key of this checkout, created on first use (by `models:build`). */
export async function devSigningKey(dir: string = KEYS_DIR): Promise<ModelSigningKey> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const keyFile = join(dir, DEV_KEY_FILE);
  await createExclusive(keyFile, `${JSON.stringify(newKey("development"), null, 2)}\n`);
  const key = await readSigningKey(keyFile);
  if (key.purpose !== "development") {
    throw new GlanceError(
      "CONFIG_INVALID",
      `${keyFile} holds a non-development key; delete it and run \`npm run models:build\`.`,
    );
  }
  // deterministic content, so concurrent builds writing it at once agree
  await writeAtomic(join(dir, DEV_TRUST_FILE), `${JSON.stringify(publicPart(key), null, 2)}\n`, 0o644);
  return key;
}
