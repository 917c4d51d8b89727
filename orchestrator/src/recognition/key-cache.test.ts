import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { eq } from "drizzle-orm";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { openDatabase } from "../db/client.ts";
import { people, personKeys } from "../db/schema.ts";
import { freshPostgres, requiredPostgresUrl, runPostgres } from "../testing/harness.ts";
import { PersonKeyCache } from "./key-cache.ts";

// only a shared Postgres announces deletions to other instances (PGlite is one process's own)
describe.runIf(runPostgres)("person key cache on real Postgres", () => {
  it("a key deleted through another connection is dropped from the cache at once, not after its TTL", async () => {
    const dataDir = await mkdtemp(join(tmpdir(), "glance-key-cache-"));
    const pg = await freshPostgres(requiredPostgresUrl());
    const database = await openDatabase({ dataDir, databaseUrl: pg.url });
    // another instance: its own connections to the same database
    const other = await openDatabase({ dataDir, databaseUrl: pg.url });
    const { cache, stop } = await PersonKeyCache.start({
      db: database.db,
      logger: pino({ level: "silent" }),
      databaseUrl: pg.url,
      ttlMs: 10 * 60_000,
    });
    try {
      const key = { wrappedKey: Buffer.alloc(48), iv: Buffer.alloc(12), masterKeyId: "test" };
      await database.db.insert(people).values([
        { id: "ada", displayName: "Ada" },
        { id: "bo", displayName: "Bo" },
      ]);
      await database.db.insert(personKeys).values([
        { personId: "ada", ...key },
        { personId: "bo", ...key },
      ]);
      expect([...(await cache.existing(["ada", "bo"]))].sort()).toEqual(["ada", "bo"]);
      // both are cached now: a second ask makes no query
      expect([...(await cache.existing(["ada", "bo"]))].sort()).toEqual(["ada", "bo"]);
      expect(cache.stats).toMatchObject({ lookups: 2, hits: 2 });

      // crypto-shredded through the other instance
      await other.db.delete(personKeys).where(eq(personKeys.personId, "ada"));
      await expect.poll(() => cache.stats.invalidations, { timeout: 5_000 }).toBe(1);
      expect([...(await cache.existing(["ada", "bo"]))]).toEqual(["bo"]);
    } finally {
      await stop();
      await other.close();
      await database.close();
      await pg.drop();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
