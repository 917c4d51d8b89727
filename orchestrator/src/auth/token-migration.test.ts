import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { sql } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { openDatabase } from "../db/client.ts";
import { apiTokens } from "../db/schema.ts";
import { freshPostgres, requiredPostgresUrl, runPostgres } from "../testing/harness.ts";
import { BOOTSTRAP_LABEL } from "./token-lifetime.ts";

const DAY_MS = 24 * 3600_000;
const migration = join(import.meta.dirname, "..", "..", "drizzle", "0014_hq-admin-token-expiry.sql");

function suite(label: string, serverUrl: () => string | undefined) {
  it(`migration 0014 bounds hq-admin tokens issued without an expiry, not the bootstrap one (${label})`, async () => {
    const dataDir = await mkdtemp(join(tmpdir(), "glance-token-migration-"));
    const server = serverUrl();
    const pg = server ? await freshPostgres(server) : undefined;
    const database = await openDatabase({ dataDir, databaseUrl: pg?.url });
    try {
      const { db } = database;
      const revokedAt = new Date(Date.now() - DAY_MS);
      const later = new Date(Date.now() + 3 * DAY_MS);
      // rows as a database from before migration 0011 left them
      await db.insert(apiTokens).values([
        { id: "boot", tokenHash: "h1", role: "hq-admin", label: BOOTSTRAP_LABEL },
        { id: "crm", tokenHash: "h2", role: "hq-admin", label: "crm sync" },
        { id: "gone", tokenHash: "h3", role: "hq-admin", label: "leaver", revokedAt },
        { id: "dated", tokenHash: "h4", role: "hq-admin", label: "dated", expiresAt: later },
        { id: "tech", tokenHash: "h5", role: "technician", label: "laptop", expiresAt: later },
      ]);
      await db.execute(sql.raw(await readFile(migration, "utf8")));
      const rows = new Map(
        (await db.select().from(apiTokens)).map((r) => [r.id, { expiresAt: r.expiresAt, revokedAt: r.revokedAt }]),
      );
      const crm = rows.get("crm")?.expiresAt?.getTime() ?? 0;
      expect(Math.abs(crm - (Date.now() + 30 * DAY_MS))).toBeLessThan(60_000);
      expect(rows.get("boot")).toEqual({ expiresAt: null, revokedAt: null });
      expect(rows.get("gone")?.expiresAt).toBeNull();
      expect(rows.get("dated")?.expiresAt).toEqual(later);
      expect(rows.get("tech")?.expiresAt).toEqual(later);
    } finally {
      await database.close();
      await pg?.drop();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
}

describe("API token migrations", () => {
  suite("PGlite", () => undefined);
  if (runPostgres) suite("Postgres", requiredPostgresUrl);
});
