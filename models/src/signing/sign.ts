import { randomBytes } from "node:crypto";
import { readdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { canonicalJson, GlanceError, ModelManifest, signBytes, verifyBytes } from "@glance/shared";
import { sha256Of } from "../build.ts";
import { type ModelSigningKey, signerLabel } from "./keys.ts";
import type { ModelTrust } from "./trust.ts";

/**
 * The bytes a model signature covers: the canonical JSON of the manifest as the schema reads it, without its
 * `signature`. The manifest holds the sha256 of the model file, so the signature covers the weights too.
 */
export function signedBytes(manifest: ModelManifest): Buffer {
  const { signature: _, ...rest } = ModelManifest.parse(manifest);
  return Buffer.from(canonicalJson(rest));
}

export function signManifest(manifest: ModelManifest, key: ModelSigningKey): ModelManifest {
  const value = signBytes(signedBytes(manifest), key);
  return { ...ModelManifest.parse(manifest), signature: { alg: "ed25519", keyId: key.keyId, value } };
}

/**
 * Throws MODEL_SIGNATURE_INVALID unless a key of `trust` signed exactly this manifest; returns the key id.
 * `label` names the model in messages (name@version and where it lies).
 */
export function verifyManifest(manifest: ModelManifest, trust: ModelTrust, label: string): string {
  const sig = manifest.signature;
  const details = { model: label, trust: trust.source, trusted: trust.keys.map((k) => k.keyId) };
  if (!sig) {
    throw new GlanceError(
      "MODEL_SIGNATURE_INVALID",
      `${label} is not signed, and models are only loaded with a signature from a trusted key (${trust.source}). ` +
        "In development run `npm run models:build` (it signs with this checkout's key); for a fleet, sign it at HQ with `npm run models:sign -- <model dir>`.",
      details,
    );
  }
  const key = trust.keys.find((k) => k.keyId === sig.keyId);
  if (!key) {
    throw new GlanceError(
      "MODEL_SIGNATURE_INVALID",
      `${label} is ${signerLabel(sig.keyId)} by key ${sig.keyId}, which is not trusted here (${trust.source}: ${details.trusted.join(", ") || "no keys"}). ` +
        (signerLabel(sig.keyId) === "dev-signed"
          ? "A development signature is only good on the machine that made it: re-sign the model with an HQ key (`npm run models:sign`)."
          : "Add that key's model-signing.pub.json to GLANCE_MODEL_TRUST if it is an HQ key you trust, or get the model signed with one."),
      { ...details, keyId: sig.keyId },
    );
  }
  if (!verifyBytes(signedBytes(manifest), sig.value, key.publicKey)) {
    throw new GlanceError(
      "MODEL_SIGNATURE_INVALID",
      `${label}: the signature by ${sig.keyId} does not match the manifest, so it was changed after signing. Do not use it: restore the model from its source (\`npm run models:build -- --force\`, or a fresh copy from HQ) and sign it again.`,
      { ...details, keyId: sig.keyId },
    );
  }
  return sig.keyId;
}

/**
 * Signs `<dir>/manifest.json` in place, after checking that the model file is the one the manifest names (a
 * signature must never vouch for a file nobody checked). Writes atomically; Ed25519 is deterministic, so two
 * processes signing the same manifest with the same key write the same bytes.
 */
export async function signModelDir(dir: string, key: ModelSigningKey): Promise<ModelManifest> {
  const path = join(dir, "manifest.json");
  let manifest: ModelManifest;
  try {
    manifest = ModelManifest.parse(JSON.parse(await readFile(path, "utf8")));
  } catch (cause) {
    throw new GlanceError(
      "MODEL_NOT_FOUND",
      `No valid manifest.json in ${dir}: give a model dir such as models/dist/fr-feature/0.0.1.`,
      { dir },
      { cause },
    );
  }
  const actual = await sha256Of(join(dir, manifest.file)).catch(() => "missing");
  if (actual !== manifest.sha256) {
    throw new GlanceError(
      "MODEL_CORRUPT",
      `${join(dir, manifest.file)} does not match the sha256 in its manifest; refusing to sign it. Rebuild it (\`npm run models:build -- --force\`) and sign again.`,
      { dir, expected: manifest.sha256, actual },
    );
  }
  const signed = signManifest(manifest, key);
  const tmp = `${path}.${process.pid}-${randomBytes(4).toString("hex")}.tmp`;
  await writeFile(tmp, `${JSON.stringify(signed, null, 2)}\n`);
  await rename(tmp, path);
  return signed;
}

/** Every `<dist>/<name>/<version>` that has a manifest.json. */
export async function modelDirs(distDir: string): Promise<string[]> {
  const dirs: string[] = [];
  const visible = async (d: string) =>
    (await readdir(d, { withFileTypes: true }).catch(() => [])).filter(
      (e) => e.isDirectory() && !e.name.startsWith("."),
    );
  for (const name of await visible(distDir)) {
    for (const version of await visible(join(distDir, name.name))) {
      const dir = join(distDir, name.name, version.name);
      if ((await readdir(dir)).includes("manifest.json")) dirs.push(dir);
    }
  }
  return dirs.sort();
}
