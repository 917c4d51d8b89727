import { and, eq, gt, isNotNull, lt } from "drizzle-orm";
import type { Logger } from "pino";
import type { Db } from "../db/client.ts";
import { visits } from "../db/schema.ts";

export type VisitRow = typeof visits.$inferInsert & { subject: string; ts: Date };

/**
 * One visit per subject ("person:<id>", "visitor:<id>", "track:<node>/<track>") per store within the dedupe window,
 * decided without a database round trip: an in-memory view of the recent visits (loaded at start from the database,
 * which stays the shared truth) answers for faces seen within the horizon; only a backlog older than that asks the
 * database. New visits are written in batches (every recognition waiting at the same moment shares one INSERT) and
 * idempotently: the unique (store, subject, window bucket) index makes a second instance's insert of the same visit a
 * no-op. Across instances the guarantee is one visit per subject per window bucket; a pair of sightings that
 * straddles a bucket boundary on two different instances may count twice (within one instance the sliding window
 * still holds).
 */
export class VisitLog {
  /** `${storeId} ${subject}` → visit times (ms) within the horizon */
  private readonly recent = new Map<string, number[]>();
  private pending: { row: VisitRow; done: (inserted: boolean) => void; fail: (e: unknown) => void }[] = [];
  private flushing: Promise<void> | undefined;
  private scheduled = false;
  private lastPrune = 0;
  /** INSERT statements and rows written, for the bench and the tests */
  readonly stats = { inserts: 0, rows: 0, conflicts: 0, dbChecks: 0 };

  private constructor(
    private readonly db: Db,
    readonly windowMs: number,
    private readonly logger: Logger,
    /** how far back the in-memory view reaches */
    private readonly horizonMs = 2 * windowMs,
  ) {}

  static async load(db: Db, windowMs: number, logger: Logger, now = Date.now()): Promise<VisitLog> {
    const log = new VisitLog(db, windowMs, logger);
    const since = new Date(now - log.horizonMs - windowMs);
    const rows = await db
      .select({ storeId: visits.storeId, subject: visits.subject, ts: visits.ts })
      .from(visits)
      .where(and(gt(visits.ts, since), isNotNull(visits.subject)));
    for (const r of rows) if (r.subject) log.remember(r.storeId, r.subject, r.ts.getTime());
    return log;
  }

  bucket(ts: Date): number {
    return Math.floor(ts.getTime() / this.windowMs);
  }

  /**
   * Whether a face of `subject` seen at `seenAt` starts a new visit; when it does, it is remembered at once (a second
   * camera's template a moment later dedupes against it before the batch is written).
   */
  async isNewVisit(storeId: string, subject: string, seenAt: Date, now = Date.now()): Promise<boolean> {
    const t = seenAt.getTime();
    const key = `${storeId} ${subject}`;
    const times = this.recent.get(key);
    if (times?.some((v) => Math.abs(v - t) < this.windowMs)) return false;
    if (t < now - this.horizonMs + this.windowMs) {
      // a backlog older than the in-memory view: the database decides
      this.stats.dbChecks++;
      const found = await this.db
        .select({ id: visits.id })
        .from(visits)
        .where(
          and(
            eq(visits.storeId, storeId),
            eq(visits.subject, subject),
            gt(visits.ts, new Date(t - this.windowMs)),
            lt(visits.ts, new Date(t + this.windowMs)),
          ),
        )
        .limit(1);
      if (found.length > 0) return false;
    }
    this.remember(storeId, subject, t);
    this.prune(now);
    return true;
  }

  /** Queues the visit; resolves once its batch is written: true if this row was inserted, false if already there. */
  record(row: VisitRow): Promise<boolean> {
    return new Promise((done, fail) => {
      this.pending.push({ row: { ...row, dedupeWindow: this.bucket(row.ts) }, done, fail });
      this.schedule();
    });
  }

  /** Waits for every queued visit to be written. */
  async drain(): Promise<void> {
    while (this.pending.length > 0 || this.flushing) {
      if (this.flushing) await this.flushing;
      else await this.flush();
    }
  }

  private schedule() {
    if (this.scheduled || this.flushing) return;
    this.scheduled = true;
    // the rest of this turn's recognitions join the batch
    setImmediate(() => {
      this.scheduled = false;
      void this.flush();
    });
  }

  private async flush(): Promise<void> {
    if (this.flushing || this.pending.length === 0) return;
    const batch = this.pending;
    this.pending = [];
    this.flushing = (async () => {
      try {
        const inserted = await this.db
          .insert(visits)
          .values(batch.map((b) => b.row))
          .onConflictDoNothing({ target: [visits.storeId, visits.subject, visits.dedupeWindow] })
          .returning({ id: visits.id });
        this.stats.inserts++;
        this.stats.rows += inserted.length;
        const ids = new Set(inserted.map((r) => r.id));
        for (const b of batch) {
          const ok = ids.has(b.row.id);
          if (!ok) this.stats.conflicts++;
          b.done(ok);
        }
      } catch (error) {
        // one bad row (e.g. its visitor shredded a moment ago by retention or a privacy-mode change) must not lose
        // the others: write them one by one, a vanished visitor's visit without its id
        this.logger.warn({ err: error, rows: batch.length }, "visit batch refused; writing its rows one by one");
        for (const b of batch) {
          try {
            b.done(await this.insertOne(b.row));
          } catch (first) {
            try {
              if (!b.row.visitorId) throw first;
              b.done(await this.insertOne({ ...b.row, visitorId: null }));
            } catch (e) {
              this.logger.error({ err: e }, "visit not written");
              b.fail(e);
            }
          }
        }
      }
    })();
    try {
      await this.flushing;
    } finally {
      this.flushing = undefined;
      // visits queued while this batch was written go out together as the next one
      if (this.pending.length > 0) this.schedule();
    }
  }

  private async insertOne(row: VisitRow): Promise<boolean> {
    const inserted = await this.db
      .insert(visits)
      .values(row)
      .onConflictDoNothing({ target: [visits.storeId, visits.subject, visits.dedupeWindow] })
      .returning({ id: visits.id });
    this.stats.inserts++;
    this.stats.rows += inserted.length;
    if (inserted.length === 0) this.stats.conflicts++;
    return inserted.length > 0;
  }

  private remember(storeId: string, subject: string, t: number) {
    const key = `${storeId} ${subject}`;
    const times = this.recent.get(key);
    if (times) times.push(t);
    else this.recent.set(key, [t]);
  }

  private prune(now: number) {
    if (now - this.lastPrune < this.windowMs / 4) return;
    this.lastPrune = now;
    const oldest = now - this.horizonMs;
    for (const [key, times] of this.recent) {
      const kept = times.filter((t) => t >= oldest);
      if (kept.length === 0) this.recent.delete(key);
      else if (kept.length !== times.length) this.recent.set(key, kept);
    }
  }
}
