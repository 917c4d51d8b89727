import type { NodeStatus } from "@glance/shared";
import {
  bigint,
  boolean,
  customType,
  index,
  integer,
  jsonb,
  pgTable,
  real,
  text,
  timestamp,
  uniqueIndex,
} from "drizzle-orm/pg-core";

/**
 * The single source of table truth. Migrations in orchestrator/drizzle/ are generated from this file with
 * `npx drizzle-kit generate --config orchestrator/drizzle.config.ts`; never edit them by hand.
 *
 * Biometric rule: templates hold an int8-quantised embedding (shared `encodeEmbedding`) and the sha256 of the
 * photo it came from, never the photo.
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
  desiredVersion: integer("desired_version").notNull().default(1),
  /** the node's own last retained status (reported state: online, agent version, models, privacy mode, stats) */
  reported: jsonb("reported").$type<NodeStatus>(),
  /** when the orchestrator last received a status from the node */
  lastSeenAt: timestamp("last_seen_at", { withTimezone: true, mode: "date" }),
  revokedAt: timestamp("revoked_at", { withTimezone: true, mode: "date" }),
  createdAt: createdAt(),
});

export const people = pgTable("people", {
  id: text("id").primaryKey(),
  displayName: text("display_name").notNull(),
  createdAt: createdAt(),
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
    embedding: bytea("embedding").notNull(),
    quality: real("quality").notNull(),
    sourceSha256: text("source_sha256").notNull(),
    createdAt: createdAt(),
  },
  (t) => [index("templates_space_idx").on(t.space), index("templates_person_idx").on(t.personId)],
);

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
    ts: timestamp("ts", { withTimezone: true, mode: "date" }).notNull(),
    score: real("score").notNull(),
    kind: text("kind", { enum: ["member", "unknown"] }).notNull(),
  },
  (t) => [index("visits_store_ts_idx").on(t.storeId, t.ts), index("visits_person_ts_idx").on(t.personId, t.ts)],
);

export const promotions = pgTable("promotions", {
  id: text("id").primaryKey(),
  /** null: every store */
  storeId: text("store_id").references(() => stores.id),
  audience: text("audience", { enum: ["member", "unknown"] }).notNull(),
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
    createdAt: createdAt(),
  },
  (t) => [uniqueIndex("api_tokens_hash_idx").on(t.tokenHash)],
);

export type Role = (typeof apiTokens.$inferSelect)["role"];
export const roles = apiTokens.role.enumValues;
