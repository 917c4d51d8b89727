import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { GlanceError } from "@glance/shared";
import {
  DEV_KEY_FILE,
  DEV_TRUST_FILE,
  HQ_TRUST_FILE,
  KEYS_DIR,
  parseTrust,
  readTrustFile,
  type TrustedKey,
  trustedKey,
} from "./keys.ts";

/** The keys a process accepts model manifests from, and where that set came from (for messages and logs). */
export interface ModelTrust {
  keys: TrustedKey[];
  source: string;
}

/**
 * Which model-signing keys to trust, first match wins:
 * 1. `trustedKeys` passed in code;
 * 2. GLANCE_MODEL_TRUST: the path of a trust file, or inline JSON (one key or a list);
 * 3. under NODE_ENV=production nothing else: an unconfigured production process refuses to start;
 * 4. otherwise this checkout's keys in .glance/keys: the development key that `models:build` signs with, and the
 *    HQ key if `models:keygen` was run here. That is the zero-config developer path.
 * A trust set always exists, so a model is never loaded without a signature check.
 */
export async function resolveTrust(
  trustedKeys?: readonly TrustedKey[],
  keysDir: string = KEYS_DIR,
): Promise<ModelTrust> {
  if (trustedKeys) {
    return { keys: trustedKeys.map((k) => trustedKey(k, "trustedKeys")), source: "the trustedKeys option" };
  }
  const env = process.env.GLANCE_MODEL_TRUST?.trim();
  if (env) {
    if (env.startsWith("[") || env.startsWith("{")) {
      let raw: unknown;
      try {
        raw = JSON.parse(env);
      } catch (cause) {
        throw new GlanceError(
          "CONFIG_INVALID",
          "GLANCE_MODEL_TRUST is neither a file path nor valid JSON.",
          undefined,
          { cause },
        );
      }
      return { keys: parseTrust(raw, "GLANCE_MODEL_TRUST"), source: "GLANCE_MODEL_TRUST (inline)" };
    }
    return { keys: await readTrustFile(env), source: `GLANCE_MODEL_TRUST=${env}` };
  }
  if (process.env.NODE_ENV === "production") {
    throw new GlanceError(
      "CONFIG_INVALID",
      "NODE_ENV=production and GLANCE_MODEL_TRUST is not set: point it at the HQ model-signing trust file (model-signing.pub.json from `npm run models:keygen`). Development keys are never trusted implicitly in production.",
    );
  }
  const keys: TrustedKey[] = [];
  for (const file of [DEV_TRUST_FILE, HQ_TRUST_FILE]) {
    const found = await readTrustFile(join(keysDir, file)).catch(() => undefined);
    if (found) keys.push(...found);
  }
  if (!keys.some((k) => k.keyId.startsWith("dev-"))) {
    // the dev trust file is written right after the key; between the two, read the key file's public half
    const devKey = await readFile(join(keysDir, DEV_KEY_FILE), "utf8").then(
      (t) => trustedKey(JSON.parse(t), DEV_KEY_FILE),
      () => undefined,
    );
    if (devKey) keys.push(devKey);
  }
  return { keys, source: `this checkout's keys in ${keysDir} (development)` };
}
