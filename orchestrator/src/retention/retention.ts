import { and, eq, isNull, like, lt, or } from "drizzle-orm";
import type { Logger } from "pino";
import { appendAudit } from "../audit/log.ts";
import type { Db } from "../db/client.ts";
import { plays, visitors, visits } from "../db/schema.ts";
import { shredVisitors } from "../visitors/visitors.ts";

export const DEFAULT_VISITOR_RETENTION_MS = 30 * 24 * 3600_000;
export const DEFAULT_RETENTION_INTERVAL_MS = 3600_000;

export interface RetentionResult {
  cutoff: Date;
  visitorVisits: number;
  visitorPlays: number;
  /** pseudonymous visitor templates (and their keys) past their expiry */
  visitorTemplates: number;
  /** their ids, for dropping them from the in-memory view; never logged or audited */
  expiredVisitorIds: string[];
}

/**
 * Pseudonymous visitor records (visits of non-members, the plays shown to them) older than the retention period are
 * deleted, and so is every visitor template past its expiry (set from the store's period when it was taken): the
 * data key first, then the template, so the ciphertext in any backup is unreadable. Members' records stay while
 * their consent does; erasure removes those.
 */
export async function runRetention(db: Db, opts: { visitorRetentionMs: number; now?: Date }): Promise<RetentionResult> {
  const now = opts.now ?? new Date();
  const cutoff = new Date(now.getTime() - opts.visitorRetentionMs);
  const result = await db.transaction(async (tx) => {
    const expired = (await tx.select({ id: visitors.id }).from(visitors).where(lt(visitors.expiresAt, now))).map(
      (r) => r.id,
    );
    await shredVisitors(tx, expired);
    const v = await tx
      .delete(visits)
      .where(and(eq(visits.kind, "unknown"), isNull(visits.personId), lt(visits.ts, cutoff)))
      .returning({ id: visits.id });
    const p = await tx
      .delete(plays)
      .where(
        and(
          or(like(plays.subject, "track:%"), like(plays.subject, "visitor:%")),
          isNull(plays.personId),
          lt(plays.sentAt, cutoff),
        ),
      )
      .returning({ id: plays.id });
    return {
      cutoff,
      visitorVisits: v.length,
      visitorPlays: p.length,
      visitorTemplates: expired.length,
      expiredVisitorIds: expired,
    };
  });
  if (result.visitorVisits + result.visitorPlays + result.visitorTemplates > 0) {
    await appendAudit(
      db,
      {
        actor: "system:retention",
        action: "retention.expire-visitors",
        details: {
          cutoff: cutoff.toISOString(),
          visitorVisits: result.visitorVisits,
          visitorPlays: result.visitorPlays,
          visitorTemplates: result.visitorTemplates,
        },
      },
      now,
    );
  }
  return result;
}

/** Runs retention once now (awaited, so a start never serves data past its period) and then every `intervalMs`. */
export async function startRetention(opts: {
  db: Db;
  logger: Logger;
  visitorRetentionMs: number;
  intervalMs: number;
  /** called with the ids of visitor templates just deleted (drop them from the in-memory view) */
  onVisitorsExpired?: (ids: string[]) => void;
}): Promise<() => void> {
  const once = async () => {
    try {
      const { expiredVisitorIds, ...r } = await runRetention(opts.db, { visitorRetentionMs: opts.visitorRetentionMs });
      if (expiredVisitorIds.length > 0) opts.onVisitorsExpired?.(expiredVisitorIds);
      if (r.visitorVisits + r.visitorPlays + r.visitorTemplates > 0) opts.logger.info(r, "visitor records expired");
    } catch (error) {
      opts.logger.error({ err: error }, "retention run failed; retrying at the next interval");
    }
  };
  await once();
  // a slow run (a large table) is never overlapped by the next tick
  let busy = false;
  const timer = setInterval(() => {
    if (busy) return;
    busy = true;
    void once().finally(() => {
      busy = false;
    });
  }, opts.intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
