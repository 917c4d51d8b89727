import type { NodeStatus } from "@glance/shared";
import {
  bigint,
  boolean,
  customType,
  index,
  integer,
  jsonb,
  pgTable,
  primaryKey,
  real,
  text,
  timestamp,
  uniqueIndex,
} from "drizzle-orm/pg-core";

/**
 * The single source of table truth. Migrations in orchestrator/drizzle/ are generated from this file with
 * `npx drizzle-kit generate --config orchestrator/drizzle.config.ts`; never edit them by hand.
 *
 * Biometric rule: templates hold only the AES-256-GCM ciphertext of an int8-quantised embedding (shared
 * `encodeEmbedding`), sealed with the person's data key, and the sha256 of the photo it came from, never the photo.
 * The data key lives wrapped by the master key in `person_keys`; deleting that row crypto-shreds every copy.
 */

const bytea = customType<{ data: Uint8Array; driverData: Uint8Array }>({
  dataType: () => "bytea",
  // postgres-js hands back a Buffer, PGlite a Uint8Array: both are Uint8Array views.
  fromDriver: (value) => new Uint8Array(value.buffer, value.byteOffset, value.byteLength),
  toDriver: (value) => Buffer.from(value.buffer, value.byteOffset, value.byteLength),
});

const createdAt = () => timestamp("created_at", { withTimezone: true, mode: "date" }).notNull().defaultNow();

export const stores = pgTable("stores", {
  id: text("id").primaryKey(),
  name: text("name").notNull(),
  /**
   * What the store's cameras may do with a face (shared PrivacyMode): "visitor" recognises members and keeps
   * pseudonymous, expiring visitor templates (first-time vs returning); "members-only" recognises members and keeps
   * nothing of anyone else; "count-only" identifies nobody. Sent to the store's nodes in their desired state.
   */
  privacyMode: text("privacy_mode", { enum: ["count-only", "visitor", "members-only"] })
    .notNull()
    .default("visitor"),
  /** how long a pseudonymous visitor template of this store lives; null = the orchestrator's default (30 days) */
  visitorRetentionDays: integer("visitor_retention_days"),
  /**
   * Opt-in: the store's nodes estimate coarse attributes (age band, gender, emotion) of each track and attach them
   * to its anonymous track-ended event (DesiredState.attributes). Off, the nodes do not even load the model.
   */
  attributes: boolean("attributes").notNull().default(false),
  createdAt: createdAt(),
});

export const screens = pgTable(
  "screens",
  {
    id: text("id").primaryKey(),
    storeId: text("store_id")
      .notNull()
      .references(() => stores.id),
    name: text("name").notNull(),
    createdAt: createdAt(),
  },
  (t) => [index("screens_store_idx").on(t.storeId)],
);

export const nodes = pgTable("nodes", {
  id: text("id").primaryKey(),
  storeId: text("store_id")
    .notNull()
    .references(() => stores.id),
  cameraId: text("camera_id").notNull(),
  /** Ed25519, base64url raw: verifies every sealed template the node sends */
  signingPublicKey: text("signing_public_key").notNull(),
  /** sha256 of the node's MQTT secret (a 256-bit random value, so a fast hash is enough) */
  mqttPasswordHash: text("mqtt_password_hash").notNull(),
  /** highest template sequence number accepted; anything at or below it is a replay */
  lastSeq: bigint("last_seq", { mode: "number" }),
  /**
   * Anti-replay window below lastSeq (ingest/replay-window.ts): bit (seq mod 1024) set = seq accepted, for seqs in
   * (lastSeq - 1024, lastSeq]. NULL with a lastSeq (rows from before migration 0005) = everything up to lastSeq counts as seen.
   */
  replayWindow: bytea("replay_window"),
  desiredVersion: integer("desired_version").notNull().default(1),
  /** the node's own last retained status (reported state: online, agent version, models, privacy mode, stats) */
  reported: jsonb("reported").$type<NodeStatus>(),
  /** when the orchestrator last received a status from the node */
  lastSeenAt: timestamp("last_seen_at", { withTimezone: true, mode: "date" }),
  revokedAt: timestamp("revoked_at", { withTimezone: true, mode: "date" }),
  createdAt: createdAt(),
});

export const people = pgTable(
  "people",
  {
    id: text("id").primaryKey(),
    displayName: text("display_name").notNull(),
    /**
     * The caller's own key for this person (membership number, CRM id), so a bulk import run twice enrols
     * nobody twice. Optional: people enrolled at the counter have none.
     */
    externalKey: text("external_key"),
    createdAt: createdAt(),
  },
  (t) => [uniqueIndex("people_external_key_idx").on(t.externalKey)],
);

/**
 * The person keys of erased people, as keyed hashes (HMAC under a key derived from the master key, never the key
 * itself), so re-running an old import cannot quietly enrol someone who asked to be forgotten: that key enrols
 * again only with a consent given after the erasure.
 */
export const erasedKeys = pgTable("erased_keys", {
  keyTag: text("key_tag").primaryKey(),
  erasedAt: timestamp("erased_at", { withTimezone: true, mode: "date" }).notNull(),
});

export const consents = pgTable(
  "consents",
  {
    id: text("id").primaryKey(),
    personId: text("person_id")
      .notNull()
      .references(() => people.id, { onDelete: "cascade" }),
    /** what the person agreed to, e.g. "recognition-promotions" */
    purpose: text("purpose").notNull(),
    /** "all-stores" or a store id */
    scope: text("scope").notNull(),
    /** how consent was collected: "demo", "store-counter", "app", ... */
    source: text("source").notNull(),
    /** pointer to the signed form / app record; never the document itself */
    evidenceRef: text("evidence_ref"),
    grantedAt: timestamp("granted_at", { withTimezone: true, mode: "date" }).notNull(),
    expiresAt: timestamp("expires_at", { withTimezone: true, mode: "date" }),
    withdrawnAt: timestamp("withdrawn_at", { withTimezone: true, mode: "date" }),
  },
  (t) => [index("consents_person_idx").on(t.personId)],
);

export const templates = pgTable(
  "templates",
  {
    id: text("id").primaryKey(),
    personId: text("person_id")
      .notNull()
      .references(() => people.id, { onDelete: "cascade" }),
    /** embedding space id (embedder name@version); templates compare only within one space */
    space: text("space").notNull(),
    /** AES-256-GCM(person data key) of the encoded embedding, tag appended; AAD binds template id, person, space */
    ciphertext: bytea("ciphertext"),
    iv: bytea("iv"),
    /** data key version of person_keys that sealed it */
    keyVersion: integer("key_version"),
    /**
     * Legacy plaintext (before encryption at rest). Only databases from before migration 0002 hold values here;
     * the orchestrator seals them and empties this column at start (privacy/legacy.ts).
     */
    legacyEmbedding: bytea("embedding"),
    quality: real("quality").notNull(),
    sourceSha256: text("source_sha256").notNull(),
    createdAt: createdAt(),
  },
  (t) => [index("templates_space_idx").on(t.space), index("templates_person_idx").on(t.personId)],
);

/**
 * One data key per person (AES-256-GCM), wrapped by the master key. Erasure deletes this row: every template
 * ciphertext of the person (in the database and in any backup) becomes unreadable.
 */
export const personKeys = pgTable("person_keys", {
  personId: text("person_id")
    .primaryKey()
    .references(() => people.id, { onDelete: "cascade" }),
  version: integer("version").notNull().default(1),
  /** AES-256-GCM(master key) of the 32-byte data key, tag appended; AAD binds the person id */
  wrappedKey: bytea("wrapped_key").notNull(),
  iv: bytea("iv").notNull(),
  /** sha256 fingerprint (16 hex) of the master key that wrapped it, so a wrong master key is refused by name */
  masterKeyId: text("master_key_id").notNull(),
  createdAt: createdAt(),
});

/**
 * Append-only, hash-chained audit trail: hash = sha256(canonical JSON of every other column incl. prevHash), so
 * editing or deleting a row breaks the chain at that row (audit/log.ts verifyAudit).
 */
export const auditLog = pgTable("audit_log", {
  seq: bigint("seq", { mode: "number" }).primaryKey(),
  at: timestamp("at", { withTimezone: true, mode: "date" }).notNull(),
  /** "token:<id>/<role>", "system:<job>" */
  actor: text("actor").notNull(),
  /** "person.enrol", "person.erase", "person.export", "people.read", "admin POST /api/tokens", ... */
  action: text("action").notNull(),
  /** what it is about, e.g. "person:<id>" */
  subject: text("subject"),
  details: jsonb("details").$type<Record<string, unknown>>().notNull(),
  prevHash: text("prev_hash").notNull(),
  hash: text("hash").notNull(),
});

/** Edge erasure: one `erase-member` command per node in the person's consent scope, until the node acks it. */
export const edgeErasures = pgTable(
  "edge_erasures",
  {
    /** the command id sent to the node */
    id: text("id").primaryKey(),
    /** no foreign key: the person is gone by the time the ack arrives */
    personId: text("person_id").notNull(),
    nodeId: text("node_id").notNull(),
    sentAt: timestamp("sent_at", { withTimezone: true, mode: "date" }).notNull(),
    ackedAt: timestamp("acked_at", { withTimezone: true, mode: "date" }),
    ok: boolean("ok"),
    error: text("error"),
  },
  (t) => [index("edge_erasures_person_idx").on(t.personId)],
);

/**
 * Pseudonymous visitors (stores in "visitor" privacy mode): a random id, never linked to a member, and one template
 * sealed with the visitor's own data key (`visitor_keys`). Scoped to one store, so a visitor id cannot follow anyone
 * across the chain. Retention deletes the key and the row when `expiresAt` passes (a fixed period from the first
 * sighting, never extended by returning), member erasure never touches them.
 */
export const visitors = pgTable(
  "visitors",
  {
    id: text("id").primaryKey(),
    storeId: text("store_id")
      .notNull()
      .references(() => stores.id, { onDelete: "cascade" }),
    /** embedding space id; a visitor template compares only within one space */
    space: text("space").notNull(),
    /** AES-256-GCM(visitor data key) of the encoded embedding, tag appended; AAD binds visitor id, store, space */
    ciphertext: bytea("ciphertext").notNull(),
    iv: bytea("iv").notNull(),
    firstSeenAt: timestamp("first_seen_at", { withTimezone: true, mode: "date" }).notNull(),
    expiresAt: timestamp("expires_at", { withTimezone: true, mode: "date" }).notNull(),
    createdAt: createdAt(),
  },
  (t) => [index("visitors_store_idx").on(t.storeId), index("visitors_expires_idx").on(t.expiresAt)],
);

/** One data key per pseudonymous visitor, wrapped by the master key; deleting it crypto-shreds the template. */
export const visitorKeys = pgTable("visitor_keys", {
  visitorId: text("visitor_id")
    .primaryKey()
    .references(() => visitors.id, { onDelete: "cascade" }),
  wrappedKey: bytea("wrapped_key").notNull(),
  iv: bytea("iv").notNull(),
  masterKeyId: text("master_key_id").notNull(),
  createdAt: createdAt(),
});

export const visits = pgTable(
  "visits",
  {
    id: text("id").primaryKey(),
    personId: text("person_id").references(() => people.id, { onDelete: "set null" }),
    storeId: text("store_id")
      .notNull()
      .references(() => stores.id),
    cameraId: text("camera_id").notNull(),
    nodeId: text("node_id").notNull(),
    /** the node's track of the face: what "not this person" feedback suppresses (null before migration 0003) */
    trackId: text("track_id"),
    ts: timestamp("ts", { withTimezone: true, mode: "date" }).notNull(),
    score: real("score").notNull(),
    kind: text("kind", { enum: ["member", "unknown"] }).notNull(),
    /** the pseudonymous visitor (stores in "visitor" mode); emptied when the visitor expires */
    visitorId: text("visitor_id").references(() => visitors.id, { onDelete: "set null" }),
    /** for a pseudonymous visitor: their first visit to the store or a later one */
    visitor: text("visitor", { enum: ["first-time", "returning"] }),
    /** whom the visit dedupes on: "person:<id>", "visitor:<id>" or "track:<node>/<track>" */
    subject: text("subject"),
    /**
     * floor(ts / dedupe window): at most one visit per subject, store and window, enforced by the database so
     * orchestrator instances sharing it insert idempotently (null for rows from before migration 0006)
     */
    dedupeWindow: bigint("dedupe_window", { mode: "number" }),
  },
  (t) => [
    index("visits_store_ts_idx").on(t.storeId, t.ts),
    index("visits_person_ts_idx").on(t.personId, t.ts),
    index("visits_visitor_idx").on(t.visitorId),
    uniqueIndex("visits_dedupe_idx").on(t.storeId, t.subject, t.dedupeWindow),
  ],
);

/**
 * Staff feedback "not this person" on a member visit: the pairing of that person with that node track is suppressed
 * from then on (recognition/suppressions.ts). Deleted with the person on erasure.
 */
export const matchFeedback = pgTable(
  "match_feedback",
  {
    id: text("id").primaryKey(),
    /** no foreign key: retention may delete the visit, the feedback still holds */
    visitId: text("visit_id").notNull(),
    personId: text("person_id")
      .notNull()
      .references(() => people.id, { onDelete: "cascade" }),
    storeId: text("store_id").notNull(),
    nodeId: text("node_id").notNull(),
    trackId: text("track_id").notNull(),
    /** "token:<id>/<role>" of the staff member */
    actor: text("actor").notNull(),
    note: text("note"),
    createdAt: createdAt(),
  },
  (t) => [index("match_feedback_person_idx").on(t.personId)],
);

export const promotions = pgTable("promotions", {
  id: text("id").primaryKey(),
  /** null: every store */
  storeId: text("store_id").references(() => stores.id),
  /** "unknown" reaches every non-member; "first-time" / "returning" only pseudonymous visitors of that kind */
  audience: text("audience", { enum: ["member", "unknown", "first-time", "returning"] }).notNull(),
  title: text("title").notNull(),
  /** placeholders: {firstName}, {displayName} */
  messageTemplate: text("message_template").notNull(),
  durationMs: integer("duration_ms").notNull(),
  cooldownMs: integer("cooldown_ms").notNull(),
  active: boolean("active").notNull().default(true),
  createdAt: createdAt(),
});

/** Proof of play: one row per screen a promotion was sent to; playedAt is set when the screen reports it. */
export const plays = pgTable(
  "plays",
  {
    id: text("id").primaryKey(),
    promotionId: text("promotion_id")
      .notNull()
      .references(() => promotions.id),
    screenId: text("screen_id")
      .notNull()
      .references(() => screens.id),
    storeId: text("store_id")
      .notNull()
      .references(() => stores.id),
    personId: text("person_id").references(() => people.id, { onDelete: "set null" }),
    /** who the cooldown applies to: "person:<id>" or "track:<nodeId>/<trackId>" for unknown visitors */
    subject: text("subject").notNull(),
    sentAt: timestamp("sent_at", { withTimezone: true, mode: "date" }).notNull(),
    playedAt: timestamp("played_at", { withTimezone: true, mode: "date" }),
    playedMs: integer("played_ms"),
  },
  (t) => [index("plays_cooldown_idx").on(t.promotionId, t.subject, t.sentAt)],
);

export const apiTokens = pgTable(
  "api_tokens",
  {
    id: text("id").primaryKey(),
    /** sha256 of the bearer token; the token itself is shown once and never stored */
    tokenHash: text("token_hash").notNull(),
    role: text("role", { enum: ["hq-admin", "store-manager", "technician", "signage-screen", "auditor"] }).notNull(),
    storeId: text("store_id").references(() => stores.id),
    screenId: text("screen_id").references(() => screens.id),
    label: text("label").notNull(),
    revokedAt: timestamp("revoked_at", { withTimezone: true, mode: "date" }),
    /** refused from this instant on, like a revoked token; null never expires (only the bootstrap admin token) */
    expiresAt: timestamp("expires_at", { withTimezone: true, mode: "date" }),
    createdAt: createdAt(),
  },
  (t) => [uniqueIndex("api_tokens_hash_idx").on(t.tokenHash)],
);

export type Role = (typeof apiTokens.$inferSelect)["role"];
export const roles = apiTokens.role.enumValues;

/**
 * Footfall: anonymous track-ended events of a store's cameras, counted per camera and hour. No track id, no
 * identity, no template: a person walking past is one track, its dwell time, and (stores that opted in) a coarse
 * attribute row each in footfall_attributes.
 */
export const footfall = pgTable(
  "footfall",
  {
    storeId: text("store_id").notNull(),
    cameraId: text("camera_id").notNull(),
    /** start of the hour (UTC) the track ended in, by the node's clock */
    hour: timestamp("hour", { withTimezone: true, mode: "date" }).notNull(),
    tracks: integer("tracks").notNull(),
    dwellMs: bigint("dwell_ms", { mode: "number" }).notNull(),
  },
  (t) => [primaryKey({ columns: [t.storeId, t.cameraId, t.hour] })],
);

/** Coarse attribute counts of a store's tracks per hour: attribute "ageBand" | "gender" | "emotion" and its value. */
export const footfallAttributes = pgTable(
  "footfall_attributes",
  {
    storeId: text("store_id").notNull(),
    hour: timestamp("hour", { withTimezone: true, mode: "date" }).notNull(),
    attribute: text("attribute", { enum: ["ageBand", "gender", "emotion"] }).notNull(),
    value: text("value").notNull(),
    tracks: integer("tracks").notNull(),
  },
  (t) => [primaryKey({ columns: [t.storeId, t.hour, t.attribute, t.value] })],
);
