import { randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { eq } from "drizzle-orm";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Database, openDatabase } from "../db/client.ts";
import { stores, visitors, visits } from "../db/schema.ts";
import { freshPostgres, requiredPostgresUrl, runPostgres } from "../testing/harness.ts";
import { VisitLog, type VisitRow } from "./visit-log.ts";

const logger = pino({ level: "silent" });
const WINDOW = 60_000;

function row(storeId: string, subject: string, ts: Date): VisitRow {
  return {
    id: randomUUID(),
    personId: null,
    storeId,
    cameraId: "entrance",
    nodeId: "node-1",
    trackId: "t1",
    ts,
    score: 0.2,
    kind: "unknown",
    subject,
  };
}

function suite(label: string, databaseUrl: () => string | undefined) {
  describe(`visits of a busy store (${label})`, () => {
    let database: Database;
    let dataDir: string;
    let drop: (() => Promise<void>) | undefined;
    const storeId = "soho";

    beforeAll(async () => {
      dataDir = await mkdtemp(join(tmpdir(), "glance-visit-log-"));
      const url = databaseUrl();
      const pg = url ? await freshPostgres(url) : undefined;
      drop = pg?.drop;
      database = await openDatabase({ dataDir, databaseUrl: pg?.url });
      await database.db.insert(stores).values({ id: storeId, name: "Soho" });
    });

    afterAll(async () => {
      await database?.close();
      await drop?.();
      await rm(dataDir, { recursive: true, force: true });
    });

    it("sixteen cameras' visits arriving together are written by one INSERT", async () => {
      const log = await VisitLog.load(database.db, WINDOW, logger);
      const now = new Date();
      const subjects = Array.from({ length: 16 }, (_, i) => `track:node-${i}/t1`);
      const fresh = await Promise.all(subjects.map((s) => log.isNewVisit(storeId, s, now, now.getTime())));
      expect(fresh.every(Boolean)).toBe(true);
      const inserted = await Promise.all(subjects.map((s) => log.record(row(storeId, s, now))));
      expect(inserted.every(Boolean)).toBe(true);
      expect(log.stats).toMatchObject({ inserts: 1, rows: 16, dbChecks: 0 });
      // the same faces again within the window: no new visit, no database read
      const again = await Promise.all(
        subjects.map((s) => log.isNewVisit(storeId, s, new Date(now.getTime() + 5_000), now.getTime() + 5_000)),
      );
      expect(again.some(Boolean)).toBe(false);
      expect(log.stats.dbChecks).toBe(0);
    });

    it("a visit another instance already wrote is not written twice, and a restart remembers recent visits", async () => {
      const now = new Date();
      const a = await VisitLog.load(database.db, WINDOW, logger);
      const b = await VisitLog.load(database.db, WINDOW, logger);
      const subject = `visitor:${randomUUID()}`;
      // both instances see the same visitor before either has written: each thinks it is a new visit
      expect(await a.isNewVisit(storeId, subject, now, now.getTime())).toBe(true);
      expect(await b.isNewVisit(storeId, subject, now, now.getTime())).toBe(true);
      expect(await a.record(row(storeId, subject, now))).toBe(true);
      expect(await b.record(row(storeId, subject, now))).toBe(false);
      const rows = await database.db.select().from(visits).where(eq(visits.subject, subject));
      expect(rows).toHaveLength(1);

      const restarted = await VisitLog.load(database.db, WINDOW, logger);
      expect(await restarted.isNewVisit(storeId, subject, new Date(now.getTime() + 1_000))).toBe(false);
      expect(restarted.stats.dbChecks).toBe(0);
    });

    it("a visit whose visitor was shredded a moment before its batch is still counted, without the visitor", async () => {
      const log = await VisitLog.load(database.db, WINDOW, logger);
      const now = new Date();
      const visitorId = randomUUID();
      await database.db.insert(visitors).values({
        id: visitorId,
        storeId,
        space: "s@1",
        ciphertext: new Uint8Array(32),
        iv: new Uint8Array(12),
        firstSeenAt: now,
        expiresAt: new Date(now.getTime() + 1000),
      });
      // retention (or a switch to members-only) deletes the visitor while its visit waits in the batch
      await database.db.delete(visitors).where(eq(visitors.id, visitorId));
      const [orphan, other] = await Promise.all([
        log.record({ ...row(storeId, `visitor:${visitorId}`, now), visitorId, visitor: "first-time" }),
        log.record(row(storeId, "track:node-1/t-other", now)),
      ]);
      expect([orphan, other]).toEqual([true, true]);
      const [written] = await database.db
        .select()
        .from(visits)
        .where(eq(visits.subject, `visitor:${visitorId}`));
      expect(written).toMatchObject({ visitorId: null, visitor: "first-time" });
    });

    it("a node's day-old backlog is checked against the database, not the in-memory view", async () => {
      const log = await VisitLog.load(database.db, WINDOW, logger);
      const dayAgo = new Date(Date.now() - 24 * 3600_000);
      const subject = "person:backlog";
      await database.db.insert(visits).values({ ...row(storeId, subject, dayAgo), dedupeWindow: log.bucket(dayAgo) });
      expect(await log.isNewVisit(storeId, subject, new Date(dayAgo.getTime() + 30_000))).toBe(false);
      expect(await log.isNewVisit(storeId, subject, new Date(dayAgo.getTime() + 2 * WINDOW))).toBe(true);
      expect(log.stats.dbChecks).toBe(2);
    });
  });
}

suite("PGlite", () => undefined);
describe.runIf(runPostgres)("on real Postgres", () => {
  suite("Postgres", requiredPostgresUrl);
});
