import { createCipheriv, createDecipheriv, createHash, createHmac, hkdfSync, randomBytes } from "node:crypto";
import { chmod, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { GlanceError } from "@glance/shared";

/**
 * Envelope encryption for templates at rest. A master key (32 bytes, from GLANCE_MASTER_KEY or `<dataDir>/master-key`,
 * 0600) wraps one random data key per person; the data key seals that person's templates. Both layers are
 * AES-256-GCM with a fresh 96-bit IV and additional data binding the ciphertext to its row, so a ciphertext moved to
 * another person or template does not open. Destroying the wrapped key (erasure) makes every copy of the person's
 * templates, including those in backups, unreadable.
 */

const IV_BYTES = 12;
const TAG_BYTES = 16;
const KEY_BYTES = 32;
export const MASTER_KEY_FILE = "master-key";

export interface Sealed {
  ciphertext: Uint8Array;
  iv: Uint8Array;
}

function seal(key: Uint8Array, plaintext: Uint8Array, aad: string): Sealed {
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv("aes-256-gcm", key, iv);
  cipher.setAAD(Buffer.from(aad));
  const body = Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
  return { ciphertext: new Uint8Array(body), iv: new Uint8Array(iv) };
}

function open(key: Uint8Array, sealed: Sealed, aad: string): Uint8Array {
  if (sealed.ciphertext.length < TAG_BYTES) throw new Error("ciphertext shorter than its tag");
  const body = sealed.ciphertext.subarray(0, sealed.ciphertext.length - TAG_BYTES);
  const tag = sealed.ciphertext.subarray(sealed.ciphertext.length - TAG_BYTES);
  const decipher = createDecipheriv("aes-256-gcm", key, sealed.iv);
  decipher.setAAD(Buffer.from(aad));
  decipher.setAuthTag(tag);
  return new Uint8Array(Buffer.concat([decipher.update(body), decipher.final()]));
}

const personKeyAad = (personId: string) => `glance/person-key/v1/${personId}`;
const templateAad = (t: { id: string; personId: string; space: string }) =>
  `glance/template/v1/${t.personId}/${t.space}/${t.id}`;

/** A person's unwrapped data key; lives only in memory, only as long as an operation needs it. */
export interface DataKey {
  personId: string;
  version: number;
  key: Uint8Array;
}

export class MasterKey {
  /** sha256 fingerprint (16 hex): recorded beside each wrapped key so a wrong master key is refused by name */
  readonly id: string;

  constructor(private readonly key: Uint8Array) {
    if (key.length !== KEY_BYTES) throw new Error(`master key must be ${KEY_BYTES} bytes, not ${key.length}`);
    this.id = createHash("sha256").update(key).digest("hex").slice(0, 16);
  }

  /**
   * A keyed hash of a caller's person key (HMAC-SHA256 under a key derived from the master key): equal keys give
   * equal tags, and a tag cannot be turned back into the key, nor tested against guesses, without the master key.
   */
  keyTag(personKey: string): string {
    const tagKey = Buffer.from(hkdfSync("sha256", this.key, new Uint8Array(0), "glance/erased-key/v1", KEY_BYTES));
    return createHmac("sha256", tagKey).update(personKey, "utf8").digest("hex");
  }

  /** A fresh data key for a person and its wrapped form (what the database keeps). */
  newDataKey(personId: string): { dataKey: DataKey; wrapped: Sealed & { masterKeyId: string; version: number } } {
    const key = new Uint8Array(randomBytes(KEY_BYTES));
    const wrapped = seal(this.key, key, personKeyAad(personId));
    return { dataKey: { personId, version: 1, key }, wrapped: { ...wrapped, masterKeyId: this.id, version: 1 } };
  }

  unwrap(row: {
    personId: string;
    version: number;
    wrappedKey: Uint8Array;
    iv: Uint8Array;
    masterKeyId: string;
  }): DataKey {
    if (row.masterKeyId !== this.id) {
      throw new GlanceError(
        "CONFIG_INVALID",
        `Person ${row.personId}'s data key was wrapped by master key ${row.masterKeyId}, but this orchestrator holds ${this.id}: restore the original master key (GLANCE_MASTER_KEY or <dataDir>/${MASTER_KEY_FILE}).`,
      );
    }
    const key = open(this.key, { ciphertext: row.wrappedKey, iv: row.iv }, personKeyAad(row.personId));
    return { personId: row.personId, version: row.version, key };
  }
}

/** Seals one encoded template (shared `encodeEmbedding`) with its person's data key. */
export function sealTemplate(dataKey: DataKey, t: { id: string; space: string }, encoded: Uint8Array) {
  const sealed = seal(dataKey.key, encoded, templateAad({ ...t, personId: dataKey.personId }));
  return { ...sealed, keyVersion: dataKey.version };
}

export function openTemplate(
  dataKey: DataKey,
  t: { id: string; space: string; ciphertext: Uint8Array; iv: Uint8Array },
) {
  return open(dataKey.key, t, templateAad({ ...t, personId: dataKey.personId }));
}

function parseKey(text: string, from: string): Uint8Array {
  const trimmed = text.trim();
  const bytes = /^[0-9a-f]{64}$/i.test(trimmed) ? Buffer.from(trimmed, "hex") : Buffer.from(trimmed, "base64url");
  if (bytes.length !== KEY_BYTES) {
    throw new GlanceError(
      "CONFIG_INVALID",
      `${from} must hold a ${KEY_BYTES}-byte key as 64 hex characters or base64/base64url; it holds ${bytes.length} bytes.`,
    );
  }
  return new Uint8Array(bytes);
}

/**
 * GLANCE_MASTER_KEY (hex or base64) wins; otherwise `<dataDir>/master-key`, created 0600 on first start. A key file
 * readable by group or others is refused: it unlocks every template.
 */
export async function loadOrCreateMasterKey(
  dataDir: string,
  env: string | undefined = process.env.GLANCE_MASTER_KEY,
): Promise<{ masterKey: MasterKey; source: "env" | "file" | "created" }> {
  if (env) return { masterKey: new MasterKey(parseKey(env, "GLANCE_MASTER_KEY")), source: "env" };
  const path = join(dataDir, MASTER_KEY_FILE);
  try {
    const mode = (await stat(path)).mode & 0o777;
    if ((mode & 0o077) !== 0) {
      throw new GlanceError(
        "CONFIG_INVALID",
        `${path} is readable by others (mode ${mode.toString(8)}); run chmod 600 on it, it unlocks every template.`,
      );
    }
    return { masterKey: new MasterKey(parseKey(await readFile(path, "utf8"), path)), source: "file" };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
  const key = randomBytes(KEY_BYTES);
  await writeFile(path, `${key.toString("hex")}\n`, { mode: 0o600, flag: "wx" });
  await chmod(path, 0o600);
  return { masterKey: new MasterKey(new Uint8Array(key)), source: "created" };
}
