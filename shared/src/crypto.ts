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
 * Crypto envelopes for everything biometric that crosses the network. Keys travel as raw 32-byte values in base64url.
 *
 * v1 (`seal`/`open`; the edge gallery, orchestrator → node): ephemeral X25519 (to the recipient's static key) →
 * HKDF-SHA256 → AES-256-GCM, with the header as AAD, then an Ed25519 signature by the sender over
 * header ‖ epk ‖ iv ‖ ciphertext. The header binds node id, sequence number, timestamp and embedding space, so a
 * ciphertext cannot be replayed under another node, slot or space. Costs one key generation, two X25519 agreements,
 * one signature and one verification per message.
 *
 * v2 (`TemplateSealer`/`openSessionTemplate`; templates, node → orchestrator): what TLS and Noise do, an asymmetric
 * handshake once per session and AEAD per message, while every message stays self-contained (QoS 1 redelivery,
 * a disk backlog replayed after an outage and shared subscriptions spreading a node's messages over several
 * orchestrators need no ordering). A node session is an ephemeral X25519 key pair, kept in memory only and rotated
 * every hour, every 2^20 messages and on restart. Its statement, canonical JSON of
 * { use: "glance/v2/template-session", nodeId, kid, epk, notBefore, notAfter }, is signed by the node's Ed25519
 * identity key; the session key is K = HKDF-SHA256(X25519(eph, orchestrator), salt = epk ‖ orchestrator public key,
 * info = "glance/v2/template-session/" ‖ nodeId). Each message carries { epk, nb, na, sig } of its session (the
 * statement's nodeId and kid are the header's own, so a session cannot be moved under another node or key), a random
 * 96-bit IV and AES-256-GCM under K with the canonical header as AAD. Only the node and the orchestrator can derive K,
 * so the tag authenticates the message; the signature binds K to the node's registered key. The header's ts must lie
 * in [notBefore, notAfter]. The orchestrator keeps K in a `SessionKeyCache` after the first message of a session
 * opens, so it pays one verification and one agreement per session and one GCM decryption per message.
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
    return verify(
      null,
      data,
      cachedKey(`Ed25519:${publicKey}`, () => publicKeyObject("Ed25519", publicKey)),
      sig,
    );
  } catch {
    return false;
  }
}

/** JSON with sorted keys and no whitespace: the byte form that signatures cover. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== "object") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  // every template's AAD goes through here: a plain loop (the default sort is by UTF-16 code units, as `<` is)
  const record = value as Record<string, unknown>;
  let out = "";
  for (const k of Object.keys(record).sort()) {
    const v = record[k];
    if (v === undefined) continue;
    out += `${out ? "," : ""}${JSON.stringify(k)}:${canonicalJson(v)}`;
  }
  return `{${out}}`;
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

/** A fresh ephemeral X25519 key agreed with `recipientPublicKey`: its raw public key and the shared secret. */
function ephemeralAgreement(recipientPublicKey: string): { epk: Buffer; shared: Buffer } {
  const eph = generateKeyPairSync("x25519");
  const epk = Buffer.from(eph.publicKey.export({ format: "jwk" }).x as string, "base64url");
  const shared = diffieHellman({
    privateKey: eph.privateKey,
    publicKey: publicKeyObject("X25519", recipientPublicKey),
  });
  return { epk, shared };
}

/** AES-256-GCM under `key` with a random 96-bit IV: the IV and ciphertext ‖ tag. */
function gcmSeal(key: Buffer, plaintext: Uint8Array, aad: Buffer): { iv: Buffer; ct: Buffer } {
  const iv = randomBytes(12);
  const cipher = createCipheriv("aes-256-gcm", key, iv);
  cipher.setAAD(aad);
  return { iv, ct: Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]) };
}

/** Opens `gcmSeal`'s output (base64url IV and ciphertext ‖ tag); throws on bad lengths or a tag that fails. */
function gcmOpen(key: Buffer, ivB64: string, ctB64: string, aad: Buffer): Buffer {
  const iv = Buffer.from(ivB64, "base64url");
  const ctTag = Buffer.from(ctB64, "base64url");
  if (iv.length !== 12 || ctTag.length < 16) throw new Error("bad lengths");
  const decipher = createDecipheriv("aes-256-gcm", key, iv);
  decipher.setAAD(aad);
  decipher.setAuthTag(ctTag.subarray(ctTag.length - 16));
  return Buffer.concat([decipher.update(ctTag.subarray(0, ctTag.length - 16)), decipher.final()]);
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
  const { epk, shared } = ephemeralAgreement(recipientPublicKey);
  const key = deriveKey(shared, epk, Buffer.from(recipientPublicKey, "base64url"));
  const aad = Buffer.from(canonicalJson(header));
  const { iv, ct } = gcmSeal(key, plaintext, aad);
  const sig = signBytes(signedBytes(aad, epk, iv, ct), senderSigningKey);
  return { epk: epk.toString("base64url"), iv: iv.toString("base64url"), ct: ct.toString("base64url"), sig };
}

/** Checks the sender's signature only (cheap, and done before any decryption). */
export function verifySealed(parts: SealedParts, header: Record<string, unknown>, senderPublicKey: string): boolean {
  const aad = Buffer.from(canonicalJson(header));
  return verifyBytes(
    signedBytes(
      aad,
      Buffer.from(parts.epk, "base64url"),
      Buffer.from(parts.iv, "base64url"),
      Buffer.from(parts.ct, "base64url"),
    ),
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
    throw new GlanceError(
      "SIGNATURE_INVALID",
      "Sealed message signature does not verify against the sender's registered key.",
    );
  }
  return decrypt(parts, header, recipientKey);
}

/** Decrypt without checking the sender (the signature is checked by `open`). */
export function decrypt(parts: SealedParts, header: Record<string, unknown>, recipientKey: KeyPair): Buffer {
  try {
    const epk = Buffer.from(parts.epk, "base64url");
    if (epk.length !== 32) throw new Error("bad epk length");
    const shared = diffieHellman({
      privateKey: privateKeyObject("X25519", recipientKey),
      publicKey: publicKeyObject("X25519", parts.epk),
    });
    const key = deriveKey(shared, epk, Buffer.from(recipientKey.publicKey, "base64url"));
    return gcmOpen(key, parts.iv, parts.ct, Buffer.from(canonicalJson(header)));
  } catch (cause) {
    throw new GlanceError(
      "DECRYPT_FAILED",
      "Sealed message could not be decrypted: wrong key or tampered ciphertext.",
      undefined,
      {
        cause,
      },
    );
  }
}

// --- v2: session-keyed template envelope (see the top of this file) ---------------------------------------------

const SESSION_USE = "glance/v2/template-session";
/** A node starts a new session at least this often, and after SESSION_MAX_MESSAGES messages. */
export const SESSION_LIFETIME_MS = 60 * 60 * 1000;
export const SESSION_MAX_MESSAGES = 2 ** 20;
/** The longest session window an orchestrator accepts (notAfter − notBefore). */
export const SESSION_MAX_SPAN_MS = 24 * 60 * 60 * 1000;
/**
 * Slack between the two clocks a cached session key spans: it is kept for what remained of its session, by the
 * node's clock, when first opened, plus this.
 */
export const SESSION_CLOCK_SKEW_MS = 5 * 60 * 1000;

/**
 * What a template carries of its session: ephemeral public key, validity window (epoch ms) and the node's
 * signature over the session statement. The statement's nodeId and kid are the template header's own.
 */
export interface SessionProof {
  epk: string;
  nb: number;
  na: number;
  sig: string;
}

export interface SessionSealedParts {
  session: SessionProof;
  iv: string;
  ct: string;
}

/** The header fields the session envelope relies on; the whole header is the AAD. */
export interface SessionHeader {
  nodeId: string;
  kid: string;
  ts: number;
  [field: string]: unknown;
}

function sessionStatement(nodeId: string, kid: string, s: Omit<SessionProof, "sig">): string {
  return canonicalJson({ use: SESSION_USE, nodeId, kid, epk: s.epk, notBefore: s.nb, notAfter: s.na });
}

function sessionKey(shared: Buffer, epk: Buffer, recipient: Buffer, nodeId: string): Buffer {
  // the node id in info gives every node its own K even if a statement's epk were copied under another node
  return Buffer.from(hkdfSync("sha256", shared, Buffer.concat([epk, recipient]), `${SESSION_USE}/${nodeId}`, 32));
}

interface LiveSession {
  kid: string;
  recipientPublicKey: string;
  startedAt: number;
  proof: SessionProof;
  key: Buffer;
  used: number;
}

export interface TemplateSealerOptions {
  nodeId: string;
  signingKey: KeyPair;
  /** default SESSION_LIFETIME_MS */
  lifetimeMs?: number;
  /** default SESSION_MAX_MESSAGES */
  maxMessages?: number;
  now?: () => number;
}

/**
 * The node's side of the v2 envelope: seals templates under a session it starts and rotates itself (every
 * `lifetimeMs`, every `maxMessages`, when the recipient key changes, when a template's ts falls outside the window).
 * The session's private key is dropped as soon as K is derived; K lives only in this object's memory, so a restart
 * starts a new session.
 */
export class TemplateSealer {
  #session: LiveSession | undefined;
  /** sessions started so far */
  sessions = 0;

  constructor(private readonly o: TemplateSealerOptions) {}

  seal(plaintext: Uint8Array, header: SessionHeader, recipientPublicKey: string): SessionSealedParts {
    if (header.nodeId !== this.o.nodeId) {
      throw new GlanceError("PAYLOAD_INVALID", `This sealer belongs to node ${this.o.nodeId}, not ${header.nodeId}.`);
    }
    const s = this.#current(header, recipientPublicKey);
    s.used++;
    const { iv, ct } = gcmSeal(s.key, plaintext, Buffer.from(canonicalJson(header)));
    return { session: s.proof, iv: iv.toString("base64url"), ct: ct.toString("base64url") };
  }

  /** Forgets the session key (shutdown, or to force a new session). */
  end(): void {
    this.#session?.key.fill(0);
    this.#session = undefined;
  }

  #current(header: SessionHeader, recipientPublicKey: string): LiveSession {
    const now = this.o.now?.() ?? Date.now();
    const lifetime = Math.min(this.o.lifetimeMs ?? SESSION_LIFETIME_MS, SESSION_MAX_SPAN_MS);
    const s = this.#session;
    if (
      s &&
      s.kid === header.kid &&
      s.recipientPublicKey === recipientPublicKey &&
      s.used < (this.o.maxMessages ?? SESSION_MAX_MESSAGES) &&
      now >= s.startedAt &&
      now - s.startedAt < lifetime &&
      header.ts >= s.proof.nb &&
      header.ts <= s.proof.na
    )
      return s;
    this.end();
    // the window covers both the clock and the frame's own time (a frame is stamped before it is sealed); a ts
    // far from the clock (a replayed recording) gets a window of its own
    let nb = Math.min(now, header.ts);
    let na = Math.max(now, header.ts) + lifetime;
    if (na - nb > SESSION_MAX_SPAN_MS) {
      nb = header.ts;
      na = header.ts + lifetime;
    }
    const { epk, shared } = ephemeralAgreement(recipientPublicKey);
    const key = sessionKey(shared, epk, Buffer.from(recipientPublicKey, "base64url"), header.nodeId);
    shared.fill(0);
    const unsigned = { epk: epk.toString("base64url"), nb, na };
    const sig = signBytes(Buffer.from(sessionStatement(header.nodeId, header.kid, unsigned)), this.o.signingKey);
    this.sessions++;
    this.#session = { kid: header.kid, recipientPublicKey, startedAt: now, proof: { ...unsigned, sig }, key, used: 0 };
    return this.#session;
  }
}

interface CachedSession {
  key: Buffer;
  /** orchestrator clock */
  expiresAt: number;
  nodeId: string;
  /** the node key the statement was verified with: a re-keyed node's old sessions no longer match */
  signer: string;
}

/**
 * The orchestrator's session keys, derived once per session (signature verification + X25519 + HKDF) and kept,
 * least recently used first out, for what remained of the session when it was first opened (notAfter − the
 * template's ts, both by the node's clock, so a node whose clock is off by hours is cached all the same) plus
 * SESSION_CLOCK_SKEW_MS, by the orchestrator's clock; a key is never kept past its session's span. Keyed by the
 * statement and its signature, so a forged signature never finds a cached key. Drop a node's sessions when it is
 * revoked (`forgetNode`).
 */
export class SessionKeyCache {
  readonly stats = { hits: 0, misses: 0 };
  readonly #entries = new Map<string, CachedSession>();
  /** per node, its cached session ids, oldest first */
  readonly #byNode = new Map<string, Set<string>>();

  /**
   * `max` sessions in all, at most `perNode` of one node (a node has one live session, a few while it rotates or
   * delivers a backlog): a node that starts a session per message evicts only its own.
   */
  constructor(
    readonly max = 4096,
    private readonly now: () => number = Date.now,
    readonly perNode = 4,
  ) {}

  get size(): number {
    return this.#entries.size;
  }

  get(id: string, signer: string): Buffer | undefined {
    const e = this.#entries.get(id);
    if (!e) return undefined;
    if (e.signer !== signer || e.expiresAt < this.now()) {
      this.#drop(id, e);
      return undefined;
    }
    // most recently used last
    this.#entries.delete(id);
    this.#entries.set(id, e);
    return e.key;
  }

  /**
   * Keeps `entry` for `ttlMs` from now (orchestrator clock): the caller passes notAfter − the template's ts, the
   * session's remaining time by the node's clock whatever the offset between the clocks, + SESSION_CLOCK_SKEW_MS.
   * Says whether it was kept.
   */
  set(id: string, { ttlMs, ...kept }: Omit<CachedSession, "expiresAt"> & { ttlMs: number }): boolean {
    const entry: CachedSession = { ...kept, expiresAt: this.now() + ttlMs };
    if (ttlMs < 0 || this.#entries.has(id)) return false;
    let own = this.#byNode.get(entry.nodeId);
    if (own && own.size >= this.perNode) {
      const oldest = own.values().next().value as string;
      this.#drop(oldest, this.#entries.get(oldest) as CachedSession);
    } else if (this.#entries.size >= this.max) {
      const [oldest, e] = this.#entries.entries().next().value as [string, CachedSession];
      this.#drop(oldest, e);
    }
    own = this.#byNode.get(entry.nodeId) ?? new Set<string>();
    this.#byNode.set(entry.nodeId, own);
    own.add(id);
    this.#entries.set(id, entry);
    return true;
  }

  /** Sessions of `nodeId` held now. */
  sessionsOf(nodeId: string): number {
    return this.#byNode.get(nodeId)?.size ?? 0;
  }

  forgetNode(nodeId: string): void {
    for (const id of this.#byNode.get(nodeId) ?? []) this.#drop(id, this.#entries.get(id) as CachedSession);
  }

  #drop(id: string, e: CachedSession): void {
    e.key.fill(0);
    this.#entries.delete(id);
    const own = this.#byNode.get(e.nodeId);
    own?.delete(id);
    if (own?.size === 0) this.#byNode.delete(e.nodeId);
  }
}

const decryptFailed = (cause: unknown) =>
  new GlanceError(
    "DECRYPT_FAILED",
    "Sealed template could not be decrypted: wrong key or tampered message.",
    undefined,
    {
      cause,
    },
  );

/**
 * Opens a v2 template: the header's ts lies in its session's window, the session statement is signed by
 * `senderPublicKey` (skipped when `cache` holds its key), and AES-GCM under the session key authenticates header and
 * ciphertext. Throws GlanceError SIGNATURE_INVALID or DECRYPT_FAILED; never returns unauthenticated bytes.
 */
export function openSessionTemplate(
  parts: SessionSealedParts,
  header: SessionHeader,
  recipientKey: KeyPair,
  senderPublicKey: string,
  cache?: SessionKeyCache,
): Buffer {
  const { session } = parts;
  const span = session.na - session.nb;
  if (!(span > 0 && span <= SESSION_MAX_SPAN_MS)) {
    throw new GlanceError(
      "SIGNATURE_INVALID",
      `Session window of ${span} ms is not in (0, ${SESSION_MAX_SPAN_MS}] ms.`,
    );
  }
  if (header.ts < session.nb || header.ts > session.na) {
    throw new GlanceError(
      "SIGNATURE_INVALID",
      `Template time ${header.ts} is outside its session's window [${session.nb}, ${session.na}]: check the node's clock.`,
    );
  }
  // the cache id names the whole statement and its signature without building the statement: sig and epk are
  // fixed-length, the window integers and the node id contain no "|", the kid is the rest
  const id = `${session.sig}${session.epk}${session.nb}|${session.na}|${header.nodeId}|${header.kid}`;
  let key = cache?.get(id, senderPublicKey);
  const fresh = !key;
  if (cache) cache.stats[fresh ? "misses" : "hits"]++;
  if (!key) {
    const statement = sessionStatement(header.nodeId, header.kid, session);
    if (!verifyBytes(Buffer.from(statement), session.sig, senderPublicKey)) {
      throw new GlanceError(
        "SIGNATURE_INVALID",
        "Template session signature does not verify against the node's registered key.",
      );
    }
    try {
      const epk = Buffer.from(session.epk, "base64url");
      if (epk.length !== 32) throw new Error("bad epk length");
      const shared = diffieHellman({
        privateKey: privateKeyObject("X25519", recipientKey),
        publicKey: publicKeyObject("X25519", session.epk),
      });
      key = sessionKey(shared, epk, Buffer.from(recipientKey.publicKey, "base64url"), header.nodeId);
      shared.fill(0);
    } catch (cause) {
      throw decryptFailed(cause);
    }
  }
  let plaintext: Buffer;
  try {
    plaintext = gcmOpen(key, parts.iv, parts.ct, Buffer.from(canonicalJson(header)));
  } catch (cause) {
    if (fresh) key.fill(0);
    throw decryptFailed(cause);
  }
  if (fresh) {
    const kept = cache?.set(id, {
      key,
      nodeId: header.nodeId,
      signer: senderPublicKey,
      // header.ts ≤ na (checked above): the session's remaining time, by the node's clock
      ttlMs: session.na - header.ts + SESSION_CLOCK_SKEW_MS,
    });
    // not kept (already held): this copy is dropped
    if (!kept) key.fill(0);
  }
  return plaintext;
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

export function verifySealingKey(
  nodeId: string,
  sealingPublicKey: string,
  sig: string,
  signingPublicKey: string,
): boolean {
  return verifyBytes(sealingKeyStatement(nodeId, sealingPublicKey), sig, signingPublicKey);
}

export interface EdgeGalleryEntry {
  personId: string;
  /** `encodeEmbedding` bytes */
  embedding: Uint8Array;
  /** epoch ms at which the member's consent for this store ends (the node drops them then); absent: until withdrawn */
  until?: number;
}

/** Version 1 while no consent ends, so agents from before version 2 keep taking such galleries. */
function edgeGalleryVersion(entries: readonly EdgeGalleryEntry[]): 1 | 2 {
  return entries.some((e) => e.until !== undefined) ? 2 : 1;
}

/** Bytes of `encodeEdgeGallery(entries)`, without encoding them. */
export function edgeGalleryBytes(entries: readonly EdgeGalleryEntry[]): number {
  const extra = edgeGalleryVersion(entries) === 2 ? 8 : 0;
  return 5 + entries.reduce((n, e) => n + 3 + Buffer.byteLength(e.personId, "utf8") + e.embedding.length + extra, 0);
}

/**
 * Plaintext of an edge gallery: version byte, u32 count, then per member a u8-length person id (utf8) and a
 * u16-length `encodeEmbedding` template; version 2 (written only when some consent has an end) adds to each entry
 * an f64 `until` (epoch ms, 0 for none). Person ids and consent ends only: no names, no other consent details.
 */
export function encodeEdgeGallery(entries: readonly EdgeGalleryEntry[]): Buffer {
  const ids = entries.map((e) => Buffer.from(e.personId, "utf8"));
  const version = edgeGalleryVersion(entries);
  const out = Buffer.alloc(edgeGalleryBytes(entries));
  out.writeUInt8(version, 0);
  out.writeUInt32LE(entries.length, 1);
  let at = 5;
  entries.forEach((e, i) => {
    const id = ids[i] as Buffer;
    if (id.length > 255 || e.embedding.length > 0xffff)
      throw new GlanceError("PAYLOAD_INVALID", "Edge gallery entry too long.");
    out.writeUInt8(id.length, at);
    id.copy(out, at + 1);
    at += 1 + id.length;
    out.writeUInt16LE(e.embedding.length, at);
    out.set(e.embedding, at + 2);
    at += 2 + e.embedding.length;
    if (version === 2) {
      out.writeDoubleLE(e.until ?? 0, at);
      at += 8;
    }
  });
  return out;
}

export function decodeEdgeGallery(bytes: Uint8Array): EdgeGalleryEntry[] {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const bad = () => new GlanceError("PAYLOAD_INVALID", "Edge gallery plaintext is malformed.");
  const version = b.length < 5 ? 0 : b.readUInt8(0);
  if (version !== 1 && version !== 2) throw bad();
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
    const embedding = b.subarray(at + 2, at + 2 + len);
    at += 2 + len;
    if (version === 1) {
      out.push({ personId, embedding });
      continue;
    }
    if (at + 8 > b.length) throw bad();
    const until = b.readDoubleLE(at);
    at += 8;
    if (!(Number.isFinite(until) && until >= 0)) throw bad();
    out.push(until > 0 ? { personId, embedding, until } : { personId, embedding });
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
