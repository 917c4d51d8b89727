import { createHash } from "node:crypto";
import { asc, desc, eq, gt, sql } from "drizzle-orm";
import { z } from "zod";
import type { Db } from "../db/client.ts";
import { auditLog } from "../db/schema.ts";

/**
 * Append-only, hash-chained audit log. Each row's hash is sha256 over the canonical JSON (keys sorted, no spaces) of
 * {seq, at, actor, action, subject, details, prevHash}; prevHash is the previous row's hash (GENESIS for the first).
 * Editing a row breaks its own hash; deleting one breaks the next row's link (and leaves a gap in seq). Deleting the
 * newest rows leaves a shorter chain that still links, so the database alone cannot show it: an auditor keeps the
 * head a verification reported (`AuditAnchor`, outside this database) and verifies later runs against it.
 */

export const GENESIS = "0".repeat(64);
/** advisory lock key: appends from every orchestrator instance on one Postgres are serialised through it */
const AUDIT_LOCK = 0x6a_75_64_69;

export interface AuditEntry {
  actor: string;
  action: string;
  subject?: string | null;
  details?: Record<string, unknown>;
}

type Row = typeof auditLog.$inferSelect;

/** JSON with object keys sorted at every level: the same value always gives the same bytes. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== "object") return JSON.stringify(value) ?? "null";
  if (value instanceof Date) return JSON.stringify(value.toISOString());
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
}

export function hashRow(r: Omit<Row, "hash">): string {
  const body = canonicalJson({
    seq: r.seq,
    at: r.at.toISOString(),
    actor: r.actor,
    action: r.action,
    subject: r.subject,
    details: r.details,
    prevHash: r.prevHash,
  });
  return createHash("sha256").update(body).digest("hex");
}

// PGlite is one connection: its transactions already run one at a time; this queue keeps one process's appends in
// order without holding a transaction open while waiting
const queues = new WeakMap<Db, Promise<unknown>>();

/** Appends one entry; resolves with its seq and hash once committed. */
export function appendAudit(db: Db, entry: AuditEntry, now = new Date()): Promise<{ seq: number; hash: string }> {
  const run = async () =>
    db.transaction(async (tx) => {
      await tx.execute(sql`select pg_advisory_xact_lock(${AUDIT_LOCK})`);
      const [last] = await tx
        .select({ seq: auditLog.seq, hash: auditLog.hash })
        .from(auditLog)
        .orderBy(desc(auditLog.seq))
        .limit(1);
      // round-trip exactly what the database will hand back: timestamptz keeps milliseconds from a JS Date
      const row = {
        seq: (last?.seq ?? 0) + 1,
        at: new Date(now.getTime()),
        actor: entry.actor,
        action: entry.action,
        subject: entry.subject ?? null,
        // jsonb drops undefined and normalises; store what the hash saw
        details: JSON.parse(JSON.stringify(entry.details ?? {})) as Record<string, unknown>,
        prevHash: last?.hash ?? GENESIS,
      };
      const hash = hashRow(row);
      await tx.insert(auditLog).values({ ...row, hash });
      return { seq: row.seq, hash };
    });
  const previous = queues.get(db) ?? Promise.resolve();
  const next = previous.then(run, run);
  queues.set(
    db,
    next.catch(() => {}),
  );
  return next;
}

export type AuditVerdict =
  | { ok: true; rows: number; head: string }
  | { ok: false; rows: number; brokenAt: number; reason: string };

/** A head seen by an earlier verification (its `rows` and `head`): the chain must still hold that entry unchanged. */
export const AuditAnchor = z.object({
  seq: z.number().int().positive(),
  hash: z.string().regex(/^[0-9a-f]{64}$/, "a sha256 head in hex"),
});
export type AuditAnchor = z.infer<typeof AuditAnchor>;

/**
 * Walks the chain in seq order; reports the first row whose hash, link or sequence does not hold. With `anchor`, the
 * entry at anchor.seq must also be there with anchor.hash: a chain cut short (or cut and appended to again) below a
 * head the auditor kept fails at the first entry missing or changed since.
 */
export async function verifyAudit(
  db: Db,
  opts: { anchor?: AuditAnchor | undefined; batch?: number } = {},
): Promise<AuditVerdict> {
  const { anchor, batch = 5000 } = opts;
  const verdict = await walkChain(db, batch, anchor);
  if (!verdict.ok || !anchor || verdict.rows >= anchor.seq) return verdict;
  return {
    ok: false,
    rows: verdict.rows,
    brokenAt: verdict.rows + 1,
    reason: `the log ends at entry ${verdict.rows} but entry ${anchor.seq} was verified before (head ${anchor.hash}): entries were removed from its end`,
  };
}

async function walkChain(db: Db, batch: number, anchor: AuditAnchor | undefined): Promise<AuditVerdict> {
  let prevHash = GENESIS;
  let expectedSeq = 1;
  let rows = 0;
  for (;;) {
    const page = await db
      .select()
      .from(auditLog)
      .where(gt(auditLog.seq, expectedSeq - 1))
      .orderBy(asc(auditLog.seq))
      .limit(batch);
    for (const r of page) {
      if (r.seq !== expectedSeq) {
        return { ok: false, rows, brokenAt: expectedSeq, reason: `row ${expectedSeq} is missing (next is ${r.seq})` };
      }
      if (r.prevHash !== prevHash) {
        return { ok: false, rows, brokenAt: r.seq, reason: `row ${r.seq} does not link to row ${r.seq - 1}` };
      }
      if (hashRow(r) !== r.hash) {
        return { ok: false, rows, brokenAt: r.seq, reason: `row ${r.seq} was altered (hash mismatch)` };
      }
      if (anchor && r.seq === anchor.seq && r.hash !== anchor.hash) {
        // rewritten with every hash recomputed (or cut short and appended to again): links alone cannot show it
        return {
          ok: false,
          rows,
          brokenAt: r.seq,
          reason: `row ${r.seq} is not the entry verified before (head ${anchor.hash}): the log was rewritten at or before it`,
        };
      }
      prevHash = r.hash;
      expectedSeq++;
      rows++;
    }
    if (page.length < batch) return { ok: true, rows, head: prevHash };
  }
}

/** Entries about one subject (e.g. "person:<id>"), oldest first: for data-subject exports. */
export async function auditEntriesFor(db: Db, subject: string): Promise<Row[]> {
  return db.select().from(auditLog).where(eq(auditLog.subject, subject)).orderBy(asc(auditLog.seq));
}
