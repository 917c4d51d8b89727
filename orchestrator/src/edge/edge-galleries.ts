import { createHash } from "node:crypto";
import type { PGlite } from "@electric-sql/pglite";
import {
  type Command,
  contract,
  decodeEmbedding,
  decodeMessage,
  type EdgeGalleryEntry,
  edgeGalleryBytes,
  encodeEmbedding,
  encodeMessage,
  filterFor,
  gallerySigningKeyPair,
  isGlanceError,
  type KeyPair,
  parseTopic,
  sealEdgeGallery,
  topicFor,
  verifySealingKey,
} from "@glance/shared";
import type { Aedes } from "aedes";
import { and, eq, gt, inArray, isNotNull, isNull, min, or } from "drizzle-orm";
import type { MqttClient } from "mqtt";
import type { Logger } from "pino";
import { matchesFilter } from "../broker/source.ts";
import { type Db, listen } from "../db/client.ts";
import { consents, nodes, personKeys, stores as storesTable, templates } from "../db/schema.ts";
import { type DataKey, type MasterKey, openTemplate } from "../privacy/keyring.ts";

export interface EdgeGalleryOptions {
  client: MqttClient;
  db: Db;
  masterKey: MasterKey;
  /** the orchestrator's X25519 sealing key: the gallery-signing key is derived from it (no second key file) */
  sealingKey: KeyPair;
  /** embedding space of the node embedder (the orchestrator's) */
  space: string;
  /** the member threshold now (the recognizer's) */
  threshold: () => number;
  logger: Logger;
  /**
   * the shared Postgres, when there is one: the change signal (migration 0010) is listened for on a connection of its
   * own, so a change made through any instance reaches this one. On PGlite the signal comes from the same database.
   */
  databaseUrl?: string | undefined;
  /**
   * how often the change signal and the next consent expiry are looked at; nothing is read from the database unless
   * one of them says so (or the fallback is due); default 10 s
   */
  pollMs?: number;
  /** members are re-read this often even without a signal (a notification lost while reconnecting); default 5 min */
  fallbackMs?: number;
  /**
   * publishes a retained QoS 1 gallery (or an empty payload: withdrawn); default through `client`. The embedded broker
   * takes it directly (`aedesPublisher`): a client connection is held to the broker's 64 KiB packet limit.
   */
  publish?: (topic: string, payload: Buffer) => Promise<void>;
  /** largest gallery message this path carries; default the contract's (4 MiB), an external broker's packet limit otherwise */
  maxBytes?: number;
}

export interface EdgeGalleries {
  /** the Ed25519 public key galleries are signed with: it goes in every node's desired state */
  signingPublicKey: string;
  /** (Re)publishes one node's gallery (or withdraws it when the node is not members-only); resolves once the broker has it. */
  publishNode(nodeId: string): Promise<void>;
  /** Rebuilds and republishes the galleries of every members-only node that holds a changed one. */
  refresh(): Promise<void>;
  /** what was last published per node (tests, API) */
  published(nodeId: string): { version: number; members: number; templates: number } | undefined;
  /**
   * `scans`: reads of a store's template ids (fingerprints); `checks`: timer ticks; `idle`: ticks that read nothing;
   * `signals`: change notifications received
   */
  readonly stats: { scans: number; checks: number; idle: number; signals: number };
  stop(): Promise<void>;
}

/** Channel of the statement triggers on templates, consents, person_keys and stores (migration 0010). */
export const EDGE_GALLERY_CHANGED = "glance_edge_gallery_changed";

interface StoreGallery {
  fingerprint: string;
  entries: EdgeGalleryEntry[];
  members: number;
  builtAt: number;
}

/**
 * Members-only edge galleries: for each members-only node, the consented members of its store (consent scope the
 * store or all stores, live, unexpired), their templates in the node's embedding space (opened with their data keys,
 * int8 as on the wire), person ids only, sealed to the node's attested X25519 key and signed by the orchestrator, on
 * the node's retained `gallery` topic. Republished when a node reports a new key, when a store's members change,
 * before every erase-member command and with every desired state (`publishNode`, so at start too). A node leaving
 * members-only gets its gallery withdrawn.
 *
 * Changes are not polled for: the database announces every statement that touches templates, consents, person keys
 * or stores (migration 0010: NOTIFY after commit, to every instance on the same database), and the next consent
 * expiry is known in advance. Every `pollMs` a tick looks at those two in memory; only then are the stores'
 * fingerprints of ids re-read (nothing is decrypted unless they differ). A full re-read every `fallbackMs` bounds
 * what a lost notification can delay, and a (re)established listener counts as a change.
 */
export async function startEdgeGalleries(opts: EdgeGalleryOptions): Promise<EdgeGalleries> {
  const log = opts.logger;
  const maxBytes = Math.min(opts.maxBytes ?? contract.gallery.maxBytes, contract.gallery.maxBytes);
  const publishRetained =
    opts.publish ??
    (async (topic: string, payload: Buffer) => {
      await opts.client.publishAsync(topic, payload, { qos: contract.gallery.qos, retain: true });
    });
  const signer = gallerySigningKeyPair(opts.sealingKey);
  /** attested node sealing keys, checked against the identity key registered for the node */
  const nodeKeys = new Map<string, string>();
  const stores = new Map<string, StoreGallery>();
  const sent = new Map<
    string,
    { version: number; members: number; templates: number; fingerprint: string; key: string }
  >();
  const withdrawn = new Set<string>();
  const stats = { scans: 0, checks: 0, idle: 0, signals: 0 };
  let lastVersion = 0;
  const queues = new Map<string, Promise<void>>();

  const serial = (nodeId: string, work: () => Promise<void>): Promise<void> => {
    const next = (queues.get(nodeId) ?? Promise.resolve()).then(work);
    const settled = next.catch(() => {});
    queues.set(nodeId, settled);
    void settled.then(() => {
      if (queues.get(nodeId) === settled) queues.delete(nodeId);
    });
    return next;
  };

  const liveConsent = (storeId: string, now: Date) =>
    and(
      isNull(consents.withdrawnAt),
      or(isNull(consents.expiresAt), gt(consents.expiresAt, now)),
      or(eq(consents.scope, storeId), eq(consents.scope, "all-stores")),
    );

  /**
   * When each covered member's consent for the store ends (epoch ms), absent for one that does not end: the latest
   * end of their live consents covering it, none if any of them is open-ended. The node drops them then by its clock.
   */
  const consentEnds = async (storeId: string, now: Date): Promise<Map<string, number | undefined>> => {
    const ends = new Map<string, number | undefined>();
    const rows = await opts.db
      .select({ personId: consents.personId, expiresAt: consents.expiresAt })
      .from(consents)
      .where(liveConsent(storeId, now));
    for (const { personId, expiresAt } of rows) {
      const end = expiresAt?.getTime();
      const held = ends.has(personId) ? ends.get(personId) : 0;
      ends.set(personId, end === undefined || held === undefined ? undefined : Math.max(held, end));
    }
    return ends;
  };

  /**
   * ids and consent ends only: no template is decrypted unless they changed. The ends come back too, for the build
   * that follows a changed fingerprint.
   */
  const fingerprintOf = async (
    storeId: string,
    now: Date,
  ): Promise<{ fingerprint: string; ends: Map<string, number | undefined> }> => {
    stats.scans++;
    const covered = opts.db.select({ personId: consents.personId }).from(consents).where(liveConsent(storeId, now));
    const rows = await opts.db
      .select({ id: templates.id, personId: templates.personId })
      .from(templates)
      .innerJoin(personKeys, eq(personKeys.personId, templates.personId))
      .where(
        and(eq(templates.space, opts.space), isNotNull(templates.ciphertext), inArray(templates.personId, covered)),
      );
    const ends = await consentEnds(storeId, now);
    const ids = rows.map((r) => `${r.personId}/${r.id}/${ends.get(r.personId) ?? ""}`).sort();
    const fingerprint = createHash("sha256")
      .update(`${opts.threshold()}\n${ids.join("\n")}`)
      .digest("hex");
    return { fingerprint, ends };
  };

  /** `fresh`: re-read now (erasure); otherwise a check made within the last second serves every node of the store */
  const buildStore = async (storeId: string, fresh: boolean): Promise<StoreGallery> => {
    const now = new Date();
    const recent = stores.get(storeId);
    if (!fresh && recent && now.getTime() - recent.builtAt < 1000) return recent;
    const { fingerprint, ends } = await fingerprintOf(storeId, now);
    const cached = stores.get(storeId);
    if (cached?.fingerprint === fingerprint) {
      // still what the database holds as of `now`: a node compares this with the time of any erasure it was sent
      cached.builtAt = now.getTime();
      return cached;
    }
    const covered = opts.db.select({ personId: consents.personId }).from(consents).where(liveConsent(storeId, now));
    const rows = await opts.db
      .select({ template: templates, key: personKeys })
      .from(templates)
      .innerJoin(personKeys, eq(personKeys.personId, templates.personId))
      .where(
        and(eq(templates.space, opts.space), isNotNull(templates.ciphertext), inArray(templates.personId, covered)),
      );
    const keys = new Map<string, DataKey>();
    const byPerson = new Map<string, Float32Array[]>();
    for (const { template: t, key: k } of rows) {
      if (!t.ciphertext || !t.iv) continue;
      let key = keys.get(t.personId);
      if (!key) {
        key = opts.masterKey.unwrap(k);
        keys.set(t.personId, key);
      }
      const list = byPerson.get(t.personId) ?? [];
      list.push(decodeEmbedding(openTemplate(key, { ...t, ciphertext: t.ciphertext, iv: t.iv })));
      byPerson.set(t.personId, list);
    }
    for (const key of keys.values()) key.key.fill(0);
    const people = [...byPerson].sort(([a], [b]) => (a < b ? -1 : 1));
    const entry = (personId: string, v: Float32Array): EdgeGalleryEntry => {
      const until = ends.get(personId);
      return until === undefined
        ? { personId, embedding: encodeEmbedding(v) }
        : { personId, embedding: encodeEmbedding(v), until };
    };
    let entries: EdgeGalleryEntry[] = people.flatMap(([personId, list]) => list.map((v) => entry(personId, v)));
    // one message per node: when every template does not fit, one centroid per member does (see README for sizes)
    if (estimateBytes(entries) > maxBytes) {
      entries = people.map(([personId, list]) => entry(personId, centroid(list)));
      log.warn(
        { storeId, members: people.length },
        "edge gallery too large with every template: one centroid per member",
      );
    }
    for (const [, list] of people) for (const v of list) v.fill(0);
    const built = { fingerprint, entries, members: people.length, builtAt: now.getTime() };
    stores.set(storeId, built);
    return built;
  };

  const publishNodeNow = async (nodeId: string, fresh: boolean): Promise<void> => {
    const [node] = await opts.db
      .select({ storeId: nodes.storeId, revokedAt: nodes.revokedAt, privacyMode: storesTable.privacyMode })
      .from(nodes)
      .innerJoin(storesTable, eq(storesTable.id, nodes.storeId))
      .where(eq(nodes.id, nodeId));
    const mode = node && !node.revokedAt ? node.privacyMode : undefined;
    const topic = topicFor("gallery", nodeId);
    if (mode !== "members-only" || !node) {
      // withdraw: a node outside members-only holds no gallery
      if (sent.has(nodeId) || !withdrawn.has(nodeId)) {
        await publishRetained(topic, Buffer.alloc(0));
        sent.delete(nodeId);
        withdrawn.add(nodeId);
      }
      return;
    }
    const key = nodeKeys.get(nodeId);
    if (!key) {
      log.info({ nodeId }, "members-only node has not reported its sealing key yet: gallery sent when it does");
      return;
    }
    const store = await buildStore(node.storeId, fresh);
    const previous = sent.get(nodeId);
    if (previous && previous.fingerprint === store.fingerprint && previous.key === key) return;
    const version = Math.max(Date.now(), lastVersion + 1);
    lastVersion = version;
    const message = sealEdgeGallery(
      {
        v: 1,
        nodeId,
        storeId: node.storeId,
        version,
        // when the members were read, not when sealed: a node drops anyone it was told to erase after that
        ts: store.builtAt,
        space: opts.space,
        threshold: Math.round(opts.threshold() * 1e6) / 1e6,
        recipient: key,
      },
      store.entries,
      signer,
    );
    const bytes = estimateBytes(store.entries) <= maxBytes ? encodeMessage("gallery", message) : undefined;
    if (!bytes || bytes.length > maxBytes) {
      log.error(
        { nodeId, bytes: bytes?.length, limit: maxBytes, members: store.members },
        "edge gallery exceeds the packet limit even with one template per member: not sent (the node keeps its previous one)",
      );
      return;
    }
    await publishRetained(topic, bytes);
    withdrawn.delete(nodeId);
    sent.set(nodeId, {
      version,
      members: store.members,
      templates: store.entries.length,
      fingerprint: store.fingerprint,
      key,
    });
    log.info(
      { nodeId, storeId: node.storeId, version, members: store.members, bytes: bytes.length },
      "edge gallery published",
    );
  };
  const publishNode = (nodeId: string, fresh = true) => serial(nodeId, () => publishNodeNow(nodeId, fresh));

  /** a node's attested sealing key, from its status or last will */
  const learnKey = async (nodeId: string, sealing: { publicKey: string; sig: string }): Promise<boolean> => {
    if (nodeKeys.get(nodeId) === sealing.publicKey) return false;
    const [node] = await opts.db
      .select({ key: nodes.signingPublicKey })
      .from(nodes)
      .where(and(eq(nodes.id, nodeId), isNull(nodes.revokedAt)));
    if (!node || !verifySealingKey(nodeId, sealing.publicKey, sealing.sig, node.key)) {
      log.warn({ nodeId }, "node sealing key ignored: not signed by the node's registered identity key");
      return false;
    }
    nodeKeys.set(nodeId, sealing.publicKey);
    return true;
  };

  const all = async () =>
    opts.db.select({ id: nodes.id, reported: nodes.reported }).from(nodes).where(isNull(nodes.revokedAt));
  for (const n of await all()) if (n.reported?.sealingKey) await learnKey(n.id, n.reported.sealingKey);

  const statusFilter = filterFor("status");
  const onMessage = (topic: string, payload: Buffer) => {
    if (!matchesFilter(statusFilter, topic) || payload.length === 0) return;
    let status: ReturnType<typeof decodeMessage<"status">>;
    try {
      status = decodeMessage("status", topic, payload);
    } catch (error) {
      log.debug(
        { code: isGlanceError(error) ? error.code : "INTERNAL", nodeId: parseTopic(topic)?.nodeId },
        "status ignored",
      );
      return;
    }
    const key = status.sealingKey;
    if (!key) return;
    void learnKey(status.nodeId, key)
      .then((changed) => (changed ? publishNode(status.nodeId) : undefined))
      .catch((error: unknown) => log.error({ err: error, nodeId: status.nodeId }, "edge gallery not published"));
  };
  opts.client.on("message", onMessage);
  await opts.client.subscribeAsync(statusFilter, { qos: 1 });

  const refresh = async () => {
    for (const n of await all()) {
      try {
        await publishNode(n.id, false);
      } catch (error) {
        log.error({ err: error, nodeId: n.id }, "edge gallery not published");
      }
    }
  };

  let changed = false;
  const signal = () => {
    stats.signals++;
    changed = true;
  };
  const listener = await listenForChanges(opts.db, opts.databaseUrl, signal, log);
  const fallbackMs = opts.fallbackMs ?? 300_000;
  let lastFull = Date.now();
  let lastThreshold = opts.threshold();
  /** the soonest expiry of a live consent: its member leaves the galleries then, with no statement to announce it */
  const nextExpiry = async (now: Date): Promise<number> => {
    const [row] = await opts.db
      .select({ at: min(consents.expiresAt) })
      .from(consents)
      .where(and(isNull(consents.withdrawnAt), gt(consents.expiresAt, now)));
    return row?.at ? new Date(row.at).getTime() : Number.POSITIVE_INFINITY;
  };
  let expiresAt = await nextExpiry(new Date());

  const check = async () => {
    stats.checks++;
    const now = Date.now();
    const threshold = opts.threshold();
    if (!changed && now < expiresAt && now - lastFull < fallbackMs && threshold === lastThreshold) {
      stats.idle++;
      return;
    }
    changed = false;
    lastFull = now;
    lastThreshold = threshold;
    // a store read within the last second would otherwise serve the nodes without looking at the change
    for (const store of stores.values()) store.builtAt = 0;
    expiresAt = await nextExpiry(new Date(now));
    await refresh();
  };
  let checking = false;
  const timer = setInterval(() => {
    if (checking) return;
    checking = true;
    void check()
      .catch((error: unknown) => log.error({ err: error }, "edge galleries not checked"))
      .finally(() => {
        checking = false;
      });
  }, opts.pollMs ?? 10_000);
  timer.unref();

  return {
    signingPublicKey: signer.publicKey,
    publishNode,
    refresh,
    published(nodeId) {
      const s = sent.get(nodeId);
      return s && { version: s.version, members: s.members, templates: s.templates };
    },
    stats,
    async stop() {
      clearInterval(timer);
      opts.client.off("message", onMessage);
      await listener.stop();
    },
  };
}

/**
 * Listens on `EDGE_GALLERY_CHANGED`: on a connection of its own to the shared Postgres, or on PGlite itself. Each
 * (re)subscription counts as a change: whatever was announced while it was down is re-read.
 */
async function listenForChanges(
  db: Db,
  databaseUrl: string | undefined,
  onChange: () => void,
  log: Logger,
): Promise<{ stop(): Promise<void> }> {
  if (databaseUrl) return { stop: await listen(databaseUrl, EDGE_GALLERY_CHANGED, onChange, onChange) };
  const pglite = (db as unknown as { $client?: Partial<PGlite> }).$client;
  if (typeof pglite?.listen !== "function") {
    log.warn("no change notifications from this database: edge galleries follow the fallback re-read only");
    return { stop: async () => {} };
  }
  const unlisten = await pglite.listen(EDGE_GALLERY_CHANGED, onChange);
  return {
    async stop() {
      await unlisten().catch(() => {}); // PGlite may be closed already
    },
  };
}

function estimateBytes(entries: readonly EdgeGalleryEntry[]): number {
  // base64url of the sealed plaintext plus the header
  return Math.ceil(((edgeGalleryBytes(entries) + 16) * 4) / 3) + 700;
}

function centroid(list: readonly Float32Array[]): Float32Array {
  const dim = list[0]?.length ?? 0;
  const out = new Float32Array(dim);
  for (const v of list) for (let i = 0; i < dim; i++) out[i] = (out[i] as number) + (v[i] as number);
  const n = Math.hypot(...out) || 1;
  for (let i = 0; i < dim; i++) out[i] = (out[i] as number) / n;
  return out;
}

/**
 * Wraps a command sender so that an erase-member command goes out only after the node's new gallery (without the
 * person: their key and templates are already gone from the database) has been published. If that publish fails the
 * command still goes: the node removes the person from what it holds either way.
 */
export function edgeFirst(
  edge: Pick<EdgeGalleries, "publishNode">,
  send: (nodeId: string, command: Command) => Promise<void>,
  log: Logger,
): (nodeId: string, command: Command) => Promise<void> {
  return async (nodeId, command) => {
    if (command.kind === "erase-member") {
      await edge
        .publishNode(nodeId)
        .catch((error: unknown) =>
          log.error({ err: error, nodeId }, "edge gallery not republished before erase-member"),
        );
    }
    await send(nodeId, command);
  };
}

/** Publishes retained QoS 1 messages straight into the embedded broker (no client connection, no packet limit). */
export function aedesPublisher(aedes: Aedes): (topic: string, payload: Buffer) => Promise<void> {
  return (topic, payload) =>
    new Promise((resolve, reject) => {
      aedes.publish({ cmd: "publish", topic, payload, qos: contract.gallery.qos, retain: true, dup: false }, (err) =>
        err ? reject(err) : resolve(),
      );
    });
}
