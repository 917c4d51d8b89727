import { and, eq, isNull, like, lt } from "drizzle-orm";
import type { Logger } from "pino";
import { appendAudit } from "../audit/log.ts";
import type { Db } from "../db/client.ts";
import { plays, visits } from "../db/schema.ts";

export const DEFAULT_VISITOR_RETENTION_MS = 30 * 24 * 3600_000;
export const DEFAULT_RETENTION_INTERVAL_MS = 3600_000;

export interface RetentionResult {
  cutoff: Date;
  visitorVisits: number;
  visitorPlays: number;
}

/**
 * Pseudonymous visitor records (visits of unknown visitors, keyed only by a node track, and the plays shown to them)
 * older than the retention period are deleted. Members' records stay while their consent does; erasure removes those.
 */
export async function runRetention(db: Db, opts: { visitorRetentionMs: number; now?: Date }): Promise<RetentionResult> {
  const now = opts.now ?? new Date();
  const cutoff = new Date(now.getTime() - opts.visitorRetentionMs);
  const result = await db.transaction(async (tx) => {
    const v = await tx
      .delete(visits)
      .where(and(eq(visits.kind, "unknown"), isNull(visits.personId), lt(visits.ts, cutoff)))
      .returning({ id: visits.id });
    const p = await tx
      .delete(plays)
      .where(and(like(plays.subject, "track:%"), isNull(plays.personId), lt(plays.sentAt, cutoff)))
      .returning({ id: plays.id });
    return { cutoff, visitorVisits: v.length, visitorPlays: p.length };
  });
  if (result.visitorVisits + result.visitorPlays > 0) {
    await appendAudit(
      db,
      {
        actor: "system:retention",
        action: "retention.expire-visitors",
        details: {
          cutoff: cutoff.toISOString(),
          visitorVisits: result.visitorVisits,
          visitorPlays: result.visitorPlays,
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
}): Promise<() => void> {
  const once = async () => {
    try {
      const r = await runRetention(opts.db, { visitorRetentionMs: opts.visitorRetentionMs });
      if (r.visitorVisits + r.visitorPlays > 0) opts.logger.info(r, "visitor records expired");
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
