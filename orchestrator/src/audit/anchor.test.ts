import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { gt } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Database, openDatabase } from "../db/client.ts";
import { auditLog } from "../db/schema.ts";
import { databaseBackends, freshPostgres } from "../testing/harness.ts";
import { appendAudit, verifyAudit } from "./log.ts";

const exec = promisify(execFile);

async function appendMany(database: Database, n: number, actor = "test") {
  for (let i = 0; i < n; i++) await appendAudit(database.db, { actor, action: "test.entry", details: { i } });
}

for (const backend of databaseBackends) {
  describe(`audit chain anchors on ${backend.name}`, () => {
    let dataDir: string;
    let pg: { url: string; drop(): Promise<void> } | undefined;
    let database: Database;

    beforeAll(async () => {
      dataDir = await mkdtemp(join(tmpdir(), "glance-audit-anchor-"));
      const url = backend.url();
      pg = url ? await freshPostgres(url) : undefined;
      database = await openDatabase({ dataDir, databaseUrl: pg?.url });
    });

    afterAll(async () => {
      await database?.close();
      await pg?.drop();
      await rm(dataDir, { recursive: true, force: true });
    });

    it("removing the newest entries is caught against the head an auditor kept, though the shorter chain links", async () => {
      await appendMany(database, 6);
      const seen = await verifyAudit(database.db);
      expect(seen).toMatchObject({ ok: true, rows: 6 });
      if (!seen.ok) throw new Error("chain broken");
      const anchor = { seq: seen.rows, hash: seen.head };
      await appendMany(database, 2);
      expect(await verifyAudit(database.db, { anchor })).toMatchObject({ ok: true, rows: 8 });

      // an insider deletes the last three entries: every remaining link holds
      await database.db.delete(auditLog).where(gt(auditLog.seq, 5));
      expect(await verifyAudit(database.db)).toMatchObject({ ok: true, rows: 5 });
      expect(await verifyAudit(database.db, { anchor })).toMatchObject({ ok: false, brokenAt: 6 });

      // …and re-appends to hide it: entry 6 exists again but is not the one the auditor saw
      await appendMany(database, 3, "insider");
      expect(await verifyAudit(database.db, { anchor })).toMatchObject({ ok: false, brokenAt: 6 });
    });

    it("`audit:verify --anchor-file` keeps the head it verified and fails the next run after a truncation", async () => {
      const file = join(dataDir, "audit-head.json");
      const target = pg ? ["--database-url", pg.url] : ["--data-dir", dataDir];
      const run = async () => {
        // PGlite is one process's: the CLI opens it only while the test has it closed
        if (!pg) await database.close();
        try {
          return await exec("npx", ["tsx", "src/audit/verify-cli.ts", ...target, "--anchor-file", file], {
            cwd: join(import.meta.dirname, "..", ".."),
          }).then(
            (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
            (e: { code: number; stdout: string; stderr: string }) => e,
          );
        } finally {
          if (!pg) database = await openDatabase({ dataDir });
        }
      };
      // the first test left a broken-at-6 history only against its own anchor: start from a clean chain
      await database.db.delete(auditLog);
      await appendMany(database, 4);
      const first = await run();
      expect(first.code).toBe(0);
      expect(JSON.parse(await readFile(file, "utf8"))).toMatchObject({ seq: 4 });
      await appendMany(database, 2);
      expect((await run()).code).toBe(0);
      expect(JSON.parse(await readFile(file, "utf8"))).toMatchObject({ seq: 6 });

      await database.db.delete(auditLog).where(gt(auditLog.seq, 4));
      const after = await run();
      expect(after.code).toBe(1);
      expect(after.stderr).toMatch(/BROKEN at entry 5/);
      // the anchor is not moved back by a failed run
      expect(JSON.parse(await readFile(file, "utf8"))).toMatchObject({ seq: 6 });
      await writeFile(file, "not json");
      expect((await run()).code).toBe(2);
    }, 120_000);
  });
}

// only where a Postgres server is there: two instances cannot share a PGlite
const server = databaseBackends.find((b) => b.name === "Postgres");
if (server)
  describe("audit appends from two instances on one Postgres", () => {
    it("interleave into one unbroken chain", async () => {
      const pg = await freshPostgres(server.url() as string);
      const dataDir = await mkdtemp(join(tmpdir(), "glance-audit-two-"));
      const a = await openDatabase({ dataDir, databaseUrl: pg.url });
      const b = await openDatabase({ dataDir, databaseUrl: pg.url });
      try {
        await Promise.all([
          ...Array.from({ length: 40 }, (_, i) => appendAudit(a.db, { actor: "a", action: "x", details: { i } })),
          ...Array.from({ length: 40 }, (_, i) => appendAudit(b.db, { actor: "b", action: "x", details: { i } })),
        ]);
        expect(await verifyAudit(a.db)).toMatchObject({ ok: true, rows: 80 });
      } finally {
        await a.close();
        await b.close();
        await pg.drop();
        await rm(dataDir, { recursive: true, force: true });
      }
    }, 60_000);
  });
