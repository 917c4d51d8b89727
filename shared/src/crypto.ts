import {
  createCipheriv,
  createDecipheriv,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  hkdfSync,
  type KeyObject,
  randomBytes,
  sign,
  verify,
} from "node:crypto";
import type { EdgeGallery, EdgeGalleryHeader } from "./contract.ts";
import { GlanceError } from "./errors.ts";

/**
 * Crypto envelope for everything biometric that crosses the network.
 *
 * seal = ephemeral X25519 (to the orchestrator's static key) → HKDF-SHA256 → AES-256-GCM, with the header as AAD,
 * then an Ed25519 signature by the node over header ‖ epk ‖ iv ‖ ciphertext. The header binds node id, sequence
 * number, timestamp and embedding space, so a ciphertext cannot be replayed under another node, slot or space.
 * Keys travel as raw 32-byte values in base64url.
 */

const HKDF_INFO = Buffer.from("glance/v1/sealed-template");

export interface KeyPair {
  /** base64url raw 32-byte public key */
  publicKey: string;
  /** base64url raw 32-byte private key */
  privateKey: string;
}

function generate(type: "ed25519" | "x25519"): KeyPair {
  const { publicKey, privateKey } = generateKeyPairSync(type as "ed25519");
  const jwk = privateKey.export({ format: "jwk" });
  return { publicKey: publicKey.export({ format: "jwk" }).x as string, privateKey: jwk.d as string };
}

/** Ed25519 identity key of a node (or of the HQ model-signing authority). */
export const generateSigningKeyPair = (): KeyPair => generate("ed25519");
/** X25519 key the orchestrator receives sealed templates on. */
export const generateSealingKeyPair = (): KeyPair => generate("x25519");

function publicKeyObject(crv: "Ed25519" | "X25519", x: string): KeyObject {
  try {
    return createPublicKey({ key: { kty: "OKP", crv, x }, format: "jwk" });
  } catch (cause) {
    throw new GlanceError("PAYLOAD_INVALID", `Not a valid ${crv} public key.`, undefined, { cause });
  }
}

function privateKeyObject(crv: "Ed25519" | "X25519", pair: KeyPair): KeyObject {
  return cachedKey(`${crv}:${pair.publicKey}:${pair.privateKey}`, () =>
    createPrivateKey({ key: { kty: "OKP", crv, x: pair.publicKey, d: pair.privateKey }, format: "jwk" }),
  );
}

/**
 * Importing a long-lived key (the orchestrator's sealing key, a node's signing key) costs as much as an X25519
 * agreement; the ingest opens thousands of templates per key. Ephemeral keys are never cached.
 */
const keyObjects = new Map<string, KeyObject>();
const KEY_CACHE_MAX = 4096;
function cachedKey(id: string, make: () => KeyObject): KeyObject {
  let key = keyObjects.get(id);
  if (!key) {
    key = make();
    if (keyObjects.size >= KEY_CACHE_MAX) keyObjects.delete(keyObjects.keys().next().value as string);
    keyObjects.set(id, key);
  }
  return key;
}

export function signBytes(data: Uint8Array, key: KeyPair): string {
  return sign(null, data, privateKeyObject("Ed25519", key)).toString("base64url");
}

export function verifyBytes(data: Uint8Array, signature: string, publicKey: string): boolean {
  const sig = Buffer.from(signature, "base64url");
  if (sig.length !== 64) return false;
  try {
    return verify(null, data, cachedKey(`Ed25519:${publicKey}`, () => publicKeyObject("Ed25519", publicKey)), sig);
  } catch {
    return false;
  }
}

/** JSON with sorted keys and no whitespace: the byte form that signatures cover. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== "object") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
}

export interface SealedParts {
  epk: string;
  iv: string;
  ct: string;
  sig: string;
}

function deriveKey(shared: Buffer, epk: Buffer, recipient: Buffer): Buffer {
  return Buffer.from(hkdfSync("sha256", shared, Buffer.concat([epk, recipient]), HKDF_INFO, 32));
}

function signedBytes(aad: Buffer, epk: Buffer, iv: Buffer, ct: Buffer): Buffer {
  return Buffer.concat([aad, epk, iv, ct]);
}

/**
 * Encrypt `plaintext` to `recipientPublicKey` (X25519) and sign with the sender's Ed25519 key.
 * `header` is authenticated (AAD + signature) but not encrypted.
 */
export function seal(
  plaintext: Uint8Array,
  header: Record<string, unknown>,
  recipientPublicKey: string,
  senderSigningKey: KeyPair,
): SealedParts {
  const recipient = Buffer.from(recipientPublicKey, "base64url");
  const eph = generateKeyPairSync("x25519");
  const epk = Buffer.from(eph.publicKey.export({ format: "jwk" }).x as string, "base64url");
  const shared = diffieHellman({ privateKey: eph.privateKey, publicKey: publicKeyObject("X25519", recipientPublicKey) });
  const key = deriveKey(shared, epk, recipient);
  const iv = randomBytes(12);
  const aad = Buffer.from(canonicalJson(header));
  const cipher = createCipheriv("aes-256-gcm", key, iv);
  cipher.setAAD(aad);
  const ct = Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
  const sig = signBytes(signedBytes(aad, epk, iv, ct), senderSigningKey);
  return { epk: epk.toString("base64url"), iv: iv.toString("base64url"), ct: ct.toString("base64url"), sig };
}

/** Checks the sender's signature only (cheap, and done before any decryption). */
export function verifySealed(parts: SealedParts, header: Record<string, unknown>, senderPublicKey: string): boolean {
  const aad = Buffer.from(canonicalJson(header));
  return verifyBytes(
    signedBytes(aad, Buffer.from(parts.epk, "base64url"), Buffer.from(parts.iv, "base64url"), Buffer.from(parts.ct, "base64url")),
    parts.sig,
    senderPublicKey,
  );
}

/**
 * Verify the signature and decrypt. Throws GlanceError SIGNATURE_INVALID or DECRYPT_FAILED; never returns
 * unauthenticated bytes.
 */
export function open(
  parts: SealedParts,
  header: Record<string, unknown>,
  recipientKey: KeyPair,
  senderPublicKey: string,
): Buffer {
  if (!verifySealed(parts, header, senderPublicKey)) {
    throw new GlanceError("SIGNATURE_INVALID", "Sealed message signature does not verify against the sender's registered key.");
  }
  return decrypt(parts, header, recipientKey);
}

/** Decrypt without checking the sender (the signature is checked by `open`). */
export function decrypt(parts: SealedParts, header: Record<string, unknown>, recipientKey: KeyPair): Buffer {
  try {
    const epk = Buffer.from(parts.epk, "base64url");
    const iv = Buffer.from(parts.iv, "base64url");
    const ctTag = Buffer.from(parts.ct, "base64url");
    if (iv.length !== 12 || ctTag.length < 16 || epk.length !== 32) throw new Error("bad lengths");
    const shared = diffieHellman({
      privateKey: privateKeyObject("X25519", recipientKey),
      publicKey: publicKeyObject("X25519", parts.epk),
    });
    const key = deriveKey(shared, epk, Buffer.from(recipientKey.publicKey, "base64url"));
    const decipher = createDecipheriv("aes-256-gcm", key, iv);
    decipher.setAAD(Buffer.from(canonicalJson(header)));
    decipher.setAuthTag(ctTag.subarray(ctTag.length - 16));
    return Buffer.concat([decipher.update(ctTag.subarray(0, ctTag.length - 16)), decipher.final()]);
  } catch (cause) {
    throw new GlanceError("DECRYPT_FAILED", "Sealed message could not be decrypted: wrong key or tampered ciphertext.", undefined, {
      cause,
    });
  }
}

/**
 * Compact embedding codec: L2-normalised vector quantised to int8 with one scale, so a 512-d template is
 * 519 bytes before encryption (cosine error < 1e-3), which keeps a sealed message well under 1.2 KB.
 */
export function encodeEmbedding(v: Float32Array): Uint8Array {
  if (v.length > 0xffff) throw new GlanceError("PAYLOAD_INVALID", "Embedding too long.");
  let norm = 0;
  for (const x of v) norm += x * x;
  norm = Math.sqrt(norm) || 1;
  let maxAbs = 0;
  for (const x of v) maxAbs = Math.max(maxAbs, Math.abs(x / norm));
  const scale = maxAbs / 127 || 1;
  const out = Buffer.alloc(7 + v.length);
  out.writeUInt8(1, 0);
  out.writeUInt16LE(v.length, 1);
  out.writeFloatLE(scale, 3);
  for (let i = 0; i < v.length; i++) out.writeInt8(Math.round((v[i] as number) / norm / scale), 7 + i);
  return out;
}

export function decodeEmbedding(bytes: Uint8Array): Float32Array {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (b.length < 7 || b.readUInt8(0) !== 1) throw new GlanceError("PAYLOAD_INVALID", "Unknown embedding encoding.");
  const dim = b.readUInt16LE(1);
  if (b.length !== 7 + dim) throw new GlanceError("PAYLOAD_INVALID", "Embedding length does not match its header.");
  const scale = b.readFloatLE(3);
  const v = new Float32Array(dim);
  let norm = 0;
  for (let i = 0; i < dim; i++) {
    const x = b.readInt8(7 + i) * scale;
    v[i] = x;
    norm += x * x;
  }
  norm = Math.sqrt(norm) || 1;
  for (let i = 0; i < dim; i++) v[i] = (v[i] as number) / norm;
  return v;
}

// --- derived keys and the members-only edge gallery -------------------------------------------------------------

/** PKCS#8 DER prefixes for a raw 32-byte Ed25519 / X25519 private key (RFC 8410). */
const PKCS8_PREFIX = {
  ed25519: Buffer.from("302e020100300506032b657004220420", "hex"),
  x25519: Buffer.from("302e020100300506032b656e04220420", "hex"),
} as const;

function pairFromSeed(type: "ed25519" | "x25519", seed: Buffer): KeyPair {
  const key = createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX[type], seed]), format: "der", type: "pkcs8" });
  const jwk = key.export({ format: "jwk" });
  return { publicKey: createPublicKey(key).export({ format: "jwk" }).x as string, privateKey: jwk.d as string };
}

/**
 * A key pair of `type` derived (HKDF-SHA256 over the private key, the public key as salt) from an existing key pair,
 * so a node needs no second secret file: its X25519 key for receiving sealed data is a function of its identity key,
 * and the orchestrator's Ed25519 gallery-signing key a function of its sealing key. `info` separates the uses.
 */
export function deriveKeyPair(from: KeyPair, type: "ed25519" | "x25519", info: string): KeyPair {
  const seed = Buffer.from(
    hkdfSync("sha256", Buffer.from(from.privateKey, "base64url"), Buffer.from(from.publicKey, "base64url"), info, 32),
  );
  try {
    return pairFromSeed(type, seed);
  } finally {
    seed.fill(0);
  }
}

/** The X25519 key a node receives its edge gallery on, derived from its Ed25519 identity key. */
export const nodeSealingKeyPair = (signingKey: KeyPair): KeyPair =>
  deriveKeyPair(signingKey, "x25519", "glance/v1/node-sealing-key");

/** The Ed25519 key an orchestrator signs edge galleries with, derived from its X25519 sealing key. */
export const gallerySigningKeyPair = (sealingKey: KeyPair): KeyPair =>
  deriveKeyPair(sealingKey, "ed25519", "glance/v1/gallery-signing-key");

function sealingKeyStatement(nodeId: string, sealingPublicKey: string): Buffer {
  return Buffer.from(`glance/v1/node-sealing-key\n${nodeId}\n${sealingPublicKey}`);
}

/** The node's signature over its sealing public key: the orchestrator checks it against the registered identity key. */
export function attestSealingKey(nodeId: string, sealingPublicKey: string, signingKey: KeyPair): string {
  return signBytes(sealingKeyStatement(nodeId, sealingPublicKey), signingKey);
}

export function verifySealingKey(nodeId: string, sealingPublicKey: string, sig: string, signingPublicKey: string): boolean {
  return verifyBytes(sealingKeyStatement(nodeId, sealingPublicKey), sig, signingPublicKey);
}

export interface EdgeGalleryEntry {
  personId: string;
  /** `encodeEmbedding` bytes */
  embedding: Uint8Array;
}

/**
 * Plaintext of an edge gallery: version byte, u32 count, then per member a u8-length person id (utf8) and a
 * u16-length `encodeEmbedding` template. Person ids only: no names, no consent details.
 */
export function encodeEdgeGallery(entries: readonly EdgeGalleryEntry[]): Buffer {
  const ids = entries.map((e) => Buffer.from(e.personId, "utf8"));
  const size = 5 + entries.reduce((n, e, i) => n + 3 + (ids[i] as Buffer).length + e.embedding.length, 0);
  const out = Buffer.alloc(size);
  out.writeUInt8(1, 0);
  out.writeUInt32LE(entries.length, 1);
  let at = 5;
  entries.forEach((e, i) => {
    const id = ids[i] as Buffer;
    if (id.length > 255 || e.embedding.length > 0xffff) throw new GlanceError("PAYLOAD_INVALID", "Edge gallery entry too long.");
    out.writeUInt8(id.length, at);
    id.copy(out, at + 1);
    at += 1 + id.length;
    out.writeUInt16LE(e.embedding.length, at);
    out.set(e.embedding, at + 2);
    at += 2 + e.embedding.length;
  });
  return out;
}

export function decodeEdgeGallery(bytes: Uint8Array): EdgeGalleryEntry[] {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const bad = () => new GlanceError("PAYLOAD_INVALID", "Edge gallery plaintext is malformed.");
  if (b.length < 5 || b.readUInt8(0) !== 1) throw bad();
  const count = b.readUInt32LE(1);
  const out: EdgeGalleryEntry[] = [];
  let at = 5;
  for (let i = 0; i < count; i++) {
    if (at + 1 > b.length) throw bad();
    const idLen = b.readUInt8(at);
    if (at + 3 + idLen > b.length) throw bad();
    const personId = b.subarray(at + 1, at + 1 + idLen).toString("utf8");
    at += 1 + idLen;
    const len = b.readUInt16LE(at);
    if (at + 2 + len > b.length) throw bad();
    out.push({ personId, embedding: b.subarray(at + 2, at + 2 + len) });
    at += 2 + len;
  }
  if (at !== b.length) throw bad();
  return out;
}

/**
 * An edge gallery message: the entries sealed to the node's key (`header.recipient`) with the header as AAD, signed
 * by the orchestrator's gallery-signing key. The plaintext is wiped once sealed.
 */
export function sealEdgeGallery(
  header: Omit<EdgeGalleryHeader, "members">,
  entries: readonly EdgeGalleryEntry[],
  signingKey: KeyPair,
): EdgeGallery {
  const full: EdgeGalleryHeader = { ...header, members: entries.length };
  const plaintext = encodeEdgeGallery(entries);
  try {
    return { ...full, ...seal(plaintext, full, full.recipient, signingKey) };
  } finally {
    plaintext.fill(0);
  }
}
