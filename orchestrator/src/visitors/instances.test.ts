import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Database, openDatabase } from "../db/client.ts";
import { stores } from "../db/schema.ts";
import { MasterKey } from "../privacy/keyring.ts";
import { runRetention } from "../retention/retention.ts";
import { freshPostgres, randomEmbedding, requiredPostgresUrl, runPostgres } from "../testing/harness.ts";
import { shredVisitors, Visitors } from "./visitors.ts";

const SPACE = "test-space@1";
const THRESHOLD = 0.6;
const DAY = 24 * 3600_000;

function suite(label: string, databaseUrl: () => string | undefined) {
  describe(`orchestrator instances sharing one database (${label})`, () => {
    let database: Database;
    let dataDir: string;
    let drop: (() => Promise<void>) | undefined;
    let url: string | undefined;
    const masterKey = new MasterKey(new Uint8Array(randomBytes(32)));

    beforeAll(async () => {
      dataDir = await mkdtemp(join(tmpdir(), "glance-visitors-"));
      const server = databaseUrl();
      const pg = server ? await freshPostgres(server) : undefined;
      drop = pg?.drop;
      url = pg?.url;
      database = await openDatabase({ dataDir, databaseUrl: pg?.url });
      await database.db.insert(stores).values([
        { id: "soho", name: "Soho" },
        { id: "camden", name: "Camden" },
      ]);
    });

    afterAll(async () => {
      await database?.close();
      await drop?.();
      await rm(dataDir, { recursive: true, force: true });
    });

    it("a visitor first seen through one instance is returning through the other, and only in that store", async () => {
      const a = await Visitors.load(database.db, masterKey, SPACE, THRESHOLD);
      const b = await Visitors.load(database.db, masterKey, SPACE, THRESHOLD);
      const face = randomEmbedding(128);
      const policy = await a.policy("soho");
      expect(policy).toEqual({ privacyMode: "visitor", visitorRetentionDays: null });
      const first = await a.recognise("soho", face, new Date(), policy);
      expect(first.status).toBe("first-time");

      expect(b.match("soho", face)).toBeUndefined();
      expect(await b.sync()).toBe(1);
      expect(b.match("soho", face)?.entry.id).toBe(first.visitorId);
      // the same face in another store of the chain is a stranger there: visitors do not follow people across stores
      expect(b.match("camden", face)).toBeUndefined();
      expect((await b.recognise("camden", face, new Date(), await b.policy("camden"))).status).toBe("first-time");

      // a fresh instance opens the sealed templates with the master key
      const c = await Visitors.load(database.db, masterKey, SPACE, THRESHOLD);
      expect(c.size).toBe(2);
      expect(c.match("soho", face)?.entry.id).toBe(first.visitorId);

      // and cannot without it
      await expect(
        Visitors.load(database.db, new MasterKey(new Uint8Array(randomBytes(32))), SPACE, THRESHOLD),
      ).rejects.toThrow(/master key/);

      // retention past the period: rows and keys go, and the instance told drops them from memory
      const expired = await runRetention(database.db, {
        visitorRetentionMs: 30 * DAY,
        now: new Date(Date.now() + 31 * DAY),
      });
      expect(expired.visitorTemplates).toBe(2);
      b.forget(expired.expiredVisitorIds);
      expect(b.size).toBe(0);
      expect((await Visitors.load(database.db, masterKey, SPACE, THRESHOLD)).size).toBe(0);
    });

    // only a shared Postgres announces deletions to other instances (PGlite is one process's own)
    if (label === "Postgres")
      it("a visitor shredded through one instance is dropped by the others: at once when heard, on resubscribing when missed", async () => {
        const a = await Visitors.load(database.db, masterKey, SPACE, THRESHOLD);
        const following = await Visitors.load(database.db, masterKey, SPACE, THRESHOLD);
        const deaf = await Visitors.load(database.db, masterKey, SPACE, THRESHOLD);
        const [one, two] = [randomEmbedding(128), randomEmbedding(128)];
        const policy = await a.policy("soho");
        const first = await a.recognise("soho", one, new Date(), policy);
        const second = await a.recognise("soho", two, new Date(), policy);
        for (const b of [following, deaf]) {
          expect(await b.sync()).toBe(2);
          expect(b.match("soho", one)?.entry.id).toBe(first.visitorId);
        }
        const stopFollowing = await following.follow(url as string, (error) => {
          throw error;
        });
        try {
          // as an erasure through `a` shreds a look-alike: key and row, in one transaction
          await database.db.transaction((tx) => shredVisitors(tx, [first.visitorId]));
          a.forget([first.visitorId]);
          const until = Date.now() + 5_000;
          while (following.match("soho", one) && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
          expect(following.match("soho", one)).toBeUndefined();
          expect(following.match("soho", two)?.entry.id).toBe(second.visitorId);
          // a sync whose window still covers the visitor's creation does not bring it back
          await following.sync();
          expect(following.match("soho", one)).toBeUndefined();
          // an instance that was not listening still matches it, until it (re)subscribes and reconciles
          expect(deaf.match("soho", one)?.entry.id).toBe(first.visitorId);
          expect(await deaf.reconcile()).toBe(1);
          expect(deaf.match("soho", one)).toBeUndefined();
          expect(deaf.match("soho", two)?.entry.id).toBe(second.visitorId);
        } finally {
          await stopFollowing();
        }
      });
  });
}

suite("PGlite", () => undefined);
describe.runIf(runPostgres)("on real Postgres", () => {
  suite("Postgres", requiredPostgresUrl);
});
