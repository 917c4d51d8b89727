import { randomUUID } from "node:crypto";
import { decodeEmbedding, encodeEmbedding, type PrivacyMode } from "@glance/shared";
import { and, eq, gt, inArray, isNotNull, lte, sql } from "drizzle-orm";
import { type Db, listen } from "../db/client.ts";
import { stores, visitorKeys, visitors, visits } from "../db/schema.ts";
import { ExactIndex } from "../gallery/index-exact.ts";
import { type MasterKey, openTemplate, sealTemplate } from "../privacy/keyring.ts";

/**
 * Pseudonymous visitors: in a store whose privacy mode is "visitor", a face that matches no member is compared with
 * the store's recent visitor templates; a hit means a returning visitor, otherwise a new random visitor id and one
 * template sealed with that visitor's own data key (wrapped by the master key), expiring after the store's retention
 * period. Visitors are scoped to one store on purpose: a chain-wide pseudonym would let anyone with database access
 * follow a person from store to store, which no store needs for "first-time vs returning"; it also keeps each
 * scan small. Member data never meets visitor data: different tables, keys and ids, and erasure of a member does not
 * look here.
 *
 * The keyring's envelope is reused with a "visitor:" namespace in the additional data, so a visitor key or
 * template can never open as a person's (or another store's) and vice versa.
 */

export const DEFAULT_VISITOR_RETENTION_DAYS = 30;
const DAY_MS = 24 * 3600_000;
/** rows committed late (a long transaction) are still picked up by the next sync */
const SYNC_OVERLAP_MS = 60_000;
/** Channel of the visitor_keys delete trigger (migration 0013). */
export const VISITOR_DELETED = "glance_visitor_deleted";

const keyOwner = (visitorId: string) => `visitor:${visitorId}`;
/** AAD binds the template to its store and space as well as its visitor */
const templateRef = (v: { id: string; storeId: string; space: string }) => ({
  id: `${v.storeId}/${v.id}`,
  space: v.space,
});

export type VisitorStatus = "first-time" | "returning";

export interface StorePolicy {
  privacyMode: PrivacyMode;
  /** null: the orchestrator's default */
  visitorRetentionDays: number | null;
}

export interface VisitorEntry {
  id: string;
  embedding: Float32Array;
  firstSeenAt: number;
  expiresAt: number;
  /** visits recorded so far (this instance's view) */
  visits: number;
}

export interface VisitorSighting {
  storeId: string;
  probe: Float32Array;
  seenAt: Date;
  policy: StorePolicy;
}

export interface VisitorHit {
  visitorId: string;
  status: VisitorStatus;
  score: number;
  entry: VisitorEntry;
}

/**
 * One store's live visitor templates in one dense matrix searched in usearch's SIMD kernel (the same exact scores as
 * a dot product in JavaScript, a fraction of the time), keyed by small numbers that map back to the entries.
 */
class StoreVisitors {
  index: ExactIndex | undefined;
  readonly entries = new Map<number, VisitorEntry>();
  readonly keyOf = new Map<string, number>();
}

/**
 * The in-memory truth for the hot path: store policies and each store's live visitor templates. The database stays
 * the shared truth; this view is loaded at start and updated by this instance's writes, the store routes and the
 * retention job.
 */
export class Visitors {
  private readonly byStore = new Map<string, StoreVisitors>();
  private nextKey = 0;
  private readonly byId = new Map<string, { storeId: string; entry: VisitorEntry }>();
  private readonly policies = new Map<string, { policy: StorePolicy; loadedAt: number }>();
  private syncedTo = Date.now();
  /**
   * visitors another instance deleted, with when it was heard: a sync whose read overlapped the deletion must not
   * put them back (its rows may predate the delete); kept twice the sync overlap
   */
  private readonly shredded = new Map<string, number>();

  constructor(
    private readonly db: Db,
    private readonly masterKey: MasterKey,
    readonly space: string,
    /** cosine threshold of the embedder (the same one members are matched at) */
    readonly threshold: number,
    /** default retention for stores that set none */
    readonly defaultRetentionMs: number = DEFAULT_VISITOR_RETENTION_DAYS * DAY_MS,
    /** a store policy changed by another instance is picked up after this long */
    private readonly policyTtlMs = 30_000,
  ) {}

  /** Opens every live visitor template of this space (expired ones are left to retention). */
  static async load(
    db: Db,
    masterKey: MasterKey,
    space: string,
    threshold: number,
    defaultRetentionMs?: number,
    now = new Date(),
  ): Promise<Visitors> {
    const v = new Visitors(db, masterKey, space, threshold, defaultRetentionMs);
    for (const s of await db.select().from(stores)) v.setPolicy(s.id, s);
    const rows = await db
      .select({ visitor: visitors, key: visitorKeys })
      .from(visitors)
      .innerJoin(visitorKeys, eq(visitorKeys.visitorId, visitors.id))
      .where(and(eq(visitors.space, space), gt(visitors.expiresAt, now)));
    const counts = new Map<string, number>();
    if (rows.length > 0) {
      for (const c of await db
        .select({ visitorId: visits.visitorId, n: sql<number>`count(*)::int` })
        .from(visits)
        .where(isNotNull(visits.visitorId))
        .groupBy(visits.visitorId)) {
        if (c.visitorId) counts.set(c.visitorId, Number(c.n));
      }
    }
    for (const { visitor: row, key } of rows) v.put(row.storeId, v.open(row, key, counts.get(row.id) ?? 0));
    v.syncedTo = now.getTime();
    return v;
  }

  get size(): number {
    return this.byId.size;
  }

  setPolicy(storeId: string, policy: StorePolicy): void {
    const p = { privacyMode: policy.privacyMode, visitorRetentionDays: policy.visitorRetentionDays };
    this.policies.set(storeId, { policy: p, loadedAt: Date.now() });
    if (p.privacyMode !== "visitor") this.dropStore(storeId);
    // a changed period applies to the templates already held, as `setStoreRetention` does in the database
    else
      for (const e of this.byStore.get(storeId)?.entries.values() ?? [])
        e.expiresAt = e.firstSeenAt + this.retentionMs(p);
  }

  /**
   * Picks up visitors other instances sharing the database created since the last call (so a visitor first seen
   * through another instance is "returning" here too). Deletions need no sync: expiry is checked on every match and
   * a store leaving visitor mode is seen when its policy is re-read.
   */
  async sync(now = new Date()): Promise<number> {
    const since = new Date(this.syncedTo - SYNC_OVERLAP_MS);
    this.syncedTo = now.getTime();
    const rows = await this.db
      .select({ visitor: visitors, key: visitorKeys })
      .from(visitors)
      .innerJoin(visitorKeys, eq(visitorKeys.visitorId, visitors.id))
      .where(and(eq(visitors.space, this.space), gt(visitors.createdAt, since), gt(visitors.expiresAt, now)));
    for (const [id, at] of this.shredded) if (at < now.getTime() - 2 * SYNC_OVERLAP_MS) this.shredded.delete(id);
    let added = 0;
    for (const { visitor: row, key } of rows) {
      const policy = this.policies.get(row.storeId)?.policy;
      if (this.byId.has(row.id) || this.shredded.has(row.id) || (policy && policy.privacyMode !== "visitor")) continue;
      this.put(row.storeId, this.open(row, key, 1));
      added++;
    }
    return added;
  }

  /** Runs `sync` every `intervalMs` (never overlapping); returns the stop function. */
  startSync(intervalMs: number, onError: (error: unknown) => void): () => void {
    let busy = false;
    const timer = setInterval(() => {
      if (busy) return;
      busy = true;
      this.sync()
        .catch(onError)
        .finally(() => {
          busy = false;
        });
    }, intervalMs);
    timer.unref();
    return () => clearInterval(timer);
  }

  /**
   * Follows deletions made through any instance sharing the Postgres at `databaseUrl`: each deleted visitor key is
   * announced (migration 0013) and the template dropped here at once, so a visitor shredded elsewhere (an erasure's
   * look-alikes, a store leaving visitor mode) is not matched here until a restart. On every (re)subscription the
   * view is reconciled with the database instead, since what was announced while the connection was down was
   * missed. Returns the stop function.
   */
  follow(databaseUrl: string, onError: (error: unknown) => void): Promise<() => Promise<void>> {
    return listen(
      databaseUrl,
      VISITOR_DELETED,
      (id) => {
        this.shredded.set(id, Date.now());
        this.forget([id]);
      },
      () => {
        this.reconcile().catch(onError);
      },
    );
  }

  /** Forgets the visitors held here whose row is gone from the database; returns how many. */
  async reconcile(): Promise<number> {
    const held = [...this.byId.keys()];
    const live = new Set<string>();
    for (let i = 0; i < held.length; i += 5000) {
      const rows = await this.db
        .select({ id: visitors.id })
        .from(visitors)
        .where(inArray(visitors.id, held.slice(i, i + 5000)));
      for (const r of rows) live.add(r.id);
    }
    const gone = held.filter((id) => !live.has(id));
    this.forget(gone);
    return gone.length;
  }

  private open(row: typeof visitors.$inferSelect, key: typeof visitorKeys.$inferSelect, visits: number): VisitorEntry {
    const dataKey = this.masterKey.unwrap({ ...key, personId: keyOwner(row.id), version: 1 });
    const encoded = openTemplate(dataKey, { ...templateRef(row), ciphertext: row.ciphertext, iv: row.iv });
    return {
      id: row.id,
      embedding: decodeEmbedding(encoded),
      firstSeenAt: row.firstSeenAt.getTime(),
      expiresAt: row.expiresAt.getTime(),
      visits,
    };
  }

  /** The store's privacy policy; read from the database when unknown (a store created since) or stale. */
  async policy(storeId: string): Promise<StorePolicy> {
    const cached = this.policies.get(storeId);
    if (cached && Date.now() - cached.loadedAt < this.policyTtlMs) return cached.policy;
    const [row] = await this.db
      .select({ privacyMode: stores.privacyMode, visitorRetentionDays: stores.visitorRetentionDays })
      .from(stores)
      .where(eq(stores.id, storeId));
    // a template from a store that does not exist (yet) identifies nobody
    const policy: StorePolicy = row ?? { privacyMode: "count-only", visitorRetentionDays: null };
    this.setPolicy(storeId, policy);
    return policy;
  }

  retentionMs(policy: StorePolicy): number {
    return policy.visitorRetentionDays === null ? this.defaultRetentionMs : policy.visitorRetentionDays * DAY_MS;
  }

  /** Best live visitor of the store at or above the threshold; expired entries never match, even before retention. */
  match(storeId: string, probe: Float32Array, now = Date.now()): { entry: VisitorEntry; score: number } | undefined {
    const store = this.byStore.get(storeId);
    const index = store?.index;
    if (!store || !index || index.dim !== probe.length || index.size === 0) return undefined;
    // nearest first: the first live one decides; expired ones (not yet removed by retention) are skipped, widening
    // the search while every candidate so far had expired and the rest could still reach the threshold
    let k = Math.min(index.size, 8);
    for (;;) {
      const hits = index.search(probe, k);
      for (const { key, score } of hits) {
        if (score < this.threshold) return undefined;
        const entry = store.entries.get(key);
        if (entry && entry.expiresAt > now) return { entry, score };
      }
      if (hits.length < k || k >= index.size) return undefined;
      k = Math.min(index.size, k * 4);
    }
  }

  /**
   * Returning visitor or a new one: the new visitor's data key and sealed template are written before the id is
   * used anywhere, so a crash leaves no visit pointing at a template that does not exist.
   */
  async recognise(
    storeId: string,
    probe: Float32Array,
    seenAt: Date,
    policy: StorePolicy,
    now = new Date(),
  ): Promise<VisitorHit> {
    return (await this.recogniseMany([{ storeId, probe, seenAt, policy }], now))[0] as VisitorHit;
  }

  /**
   * `recognise` for a batch of sightings, in order: each is matched against its store's visitors and the new visitors
   * of the batch before it (two sightings of one new face are one visitor); the batch's new visitors are written in
   * one transaction before any of them is returned, so a crash (or a refused write, which rejects the whole call and
   * adds nothing here) leaves no visit pointing at a template that does not exist.
   */
  async recogniseMany(sightings: readonly VisitorSighting[], now = new Date()): Promise<VisitorHit[]> {
    const fresh: {
      storeId: string;
      entry: VisitorEntry;
      row: typeof visitors.$inferInsert;
      key: typeof visitorKeys.$inferInsert;
    }[] = [];
    const freshIn = new Map<string, VisitorEntry[]>();
    const hits = sightings.map(({ storeId, probe, seenAt, policy }): VisitorHit => {
      let best = this.match(storeId, probe, now.getTime());
      // the batch's new visitors are not in the index yet; there are few, so a plain scan
      for (const entry of freshIn.get(storeId) ?? []) {
        if (entry.embedding.length !== probe.length) continue;
        let dot = 0;
        for (let i = 0; i < probe.length; i++) dot += (probe[i] as number) * (entry.embedding[i] as number);
        if (dot >= this.threshold && dot > (best?.score ?? -Infinity)) best = { entry, score: dot };
      }
      if (best) return { visitorId: best.entry.id, status: "returning", score: best.score, entry: best.entry };
      const id = randomUUID();
      const encoded = encodeEmbedding(probe);
      const { dataKey, wrapped } = this.masterKey.newDataKey(keyOwner(id));
      const sealed = sealTemplate(dataKey, templateRef({ id, storeId, space: this.space }), encoded);
      // the period runs from the first sighting and is never extended by a return: a template is kept at most that long
      const expiresAt = new Date(seenAt.getTime() + this.retentionMs(policy));
      const entry: VisitorEntry = {
        id,
        embedding: decodeEmbedding(encoded),
        firstSeenAt: seenAt.getTime(),
        expiresAt: expiresAt.getTime(),
        visits: 0,
      };
      fresh.push({
        storeId,
        entry,
        row: {
          id,
          storeId,
          space: this.space,
          ciphertext: sealed.ciphertext,
          iv: sealed.iv,
          firstSeenAt: seenAt,
          expiresAt,
        },
        key: { visitorId: id, wrappedKey: wrapped.ciphertext, iv: wrapped.iv, masterKeyId: wrapped.masterKeyId },
      });
      const list = freshIn.get(storeId) ?? [];
      list.push(entry);
      freshIn.set(storeId, list);
      return { visitorId: id, status: "first-time", score: 0, entry };
    });
    if (fresh.length > 0) {
      await this.db.transaction(async (tx) => {
        // a few hundred rows per statement stays far below Postgres's 65,535 bind parameters
        for (let i = 0; i < fresh.length; i += 500) {
          const chunk = fresh.slice(i, i + 500);
          await tx.insert(visitors).values(chunk.map((f) => f.row));
          await tx.insert(visitorKeys).values(chunk.map((f) => f.key));
        }
      });
      for (const f of fresh) this.put(f.storeId, f.entry);
    }
    return hits;
  }

  /**
   * Every visitor, in any store and expired or not, whose template matches one of `probes` at the threshold: the
   * pseudonymous templates a person left before they enrolled, which an erasure of that person shreds too.
   */
  lookalikes(probes: readonly Float32Array[]): string[] {
    const found = new Set<string>();
    for (const store of this.byStore.values()) {
      const index = store.index;
      if (!index || index.size === 0) continue;
      for (const probe of probes) {
        if (probe.length !== index.dim) continue;
        // nearest first: widen while every hit so far is at or above the threshold
        for (let k = Math.min(index.size, 8); ; k = Math.min(index.size, k * 4)) {
          const hits = index.search(probe, k);
          for (const { key, score } of hits) {
            const entry = store.entries.get(key);
            if (score >= this.threshold && entry) found.add(entry.id);
          }
          if (hits.length < k || k >= index.size || (hits.at(-1)?.score ?? 0) < this.threshold) break;
        }
      }
    }
    return [...found];
  }

  /** Drops visitors from the in-memory view (retention expired them, or the store left "visitor" mode). */
  forget(ids: Iterable<string>): void {
    for (const id of ids) {
      const found = this.byId.get(id);
      if (!found) continue;
      this.byId.delete(id);
      const store = this.byStore.get(found.storeId);
      const key = store?.keyOf.get(id);
      if (!store || key === undefined) continue;
      store.keyOf.delete(id);
      store.entries.delete(key);
      store.index?.remove(key);
    }
  }

  private dropStore(storeId: string): void {
    const store = this.byStore.get(storeId);
    if (!store) return;
    for (const e of store.entries.values()) this.byId.delete(e.id);
    this.byStore.delete(storeId);
  }

  private put(storeId: string, entry: VisitorEntry): void {
    // a sync that ran while this instance's own insert committed may have put it already: the newer entry wins
    if (this.byId.has(entry.id)) this.forget([entry.id]);
    let store = this.byStore.get(storeId);
    if (!store) {
      store = new StoreVisitors();
      this.byStore.set(storeId, store);
    }
    store.index ??= new ExactIndex(entry.embedding.length);
    // a template of another length (never in one space) is kept out of the index rather than break it
    if (entry.embedding.length !== store.index.dim) return;
    const key = this.nextKey++;
    store.index.add(key, entry.embedding);
    store.entries.set(key, entry);
    store.keyOf.set(entry.id, key);
    this.byId.set(entry.id, { storeId, entry });
  }
}

/**
 * Crypto-shreds visitor templates inside the caller's transaction: each data key first, then the template, so the
 * ciphertext in any backup is unreadable. Visits keep their first-time/returning label; their visitor id is emptied
 * by the foreign key.
 */
export async function shredVisitors(tx: Pick<Db, "delete">, ids: readonly string[]): Promise<void> {
  if (ids.length === 0) return;
  await tx.delete(visitorKeys).where(inArray(visitorKeys.visitorId, [...ids]));
  await tx.delete(visitors).where(inArray(visitors.id, [...ids]));
}

/**
 * Deletes a store's visitor templates and keys (its privacy mode no longer allows them). Visits keep their
 * first-time/returning label; their visitor id is emptied by the foreign key.
 */
export async function shredStoreVisitors(db: Db, storeId: string): Promise<number> {
  return db.transaction(async (tx) => {
    const ids = (await tx.select({ id: visitors.id }).from(visitors).where(eq(visitors.storeId, storeId))).map(
      (r) => r.id,
    );
    await shredVisitors(tx, ids);
    return ids.length;
  });
}

/** A store's new retention period applies to the visitor templates it already holds (shortening it shortens theirs). */
export async function setStoreRetention(db: Db, storeId: string, retentionMs: number): Promise<void> {
  await db
    .update(visitors)
    .set({ expiresAt: sql`${visitors.firstSeenAt} + ${`${retentionMs} milliseconds`}::interval` })
    .where(eq(visitors.storeId, storeId));
}

export interface VisitorDay {
  /** UTC day, YYYY-MM-DD */
  day: string;
  firstTime: number;
  returning: number;
}

/** Visits of pseudonymous visitors per UTC day, first-time vs returning: counts only, never ids or templates. */
export async function visitorCounts(db: Db, storeId: string, since: Date, until: Date): Promise<VisitorDay[]> {
  const day = sql<string>`to_char(${visits.ts} at time zone 'UTC', 'YYYY-MM-DD')`;
  const rows = await db
    .select({
      day,
      firstTime: sql<number>`count(*) filter (where ${visits.visitor} = 'first-time')::int`,
      returning: sql<number>`count(*) filter (where ${visits.visitor} = 'returning')::int`,
    })
    .from(visits)
    .where(and(eq(visits.storeId, storeId), isNotNull(visits.visitor), gt(visits.ts, since), lte(visits.ts, until)))
    .groupBy(day)
    .orderBy(day);
  return rows.map((r) => ({ day: r.day, firstTime: Number(r.firstTime), returning: Number(r.returning) }));
}
