import { parseArgs } from "node:util";
import { openDatabase } from "../db/client.ts";
import { verifyAudit } from "./log.ts";

/**
 * `npm run audit:verify -- --data-dir .glance/orchestrator` (PGlite) or with DATABASE_URL / --database-url (Postgres).
 * Exit 0: the chain holds; exit 1: the first broken link is printed; exit 2: bad usage.
 */
const { values } = parseArgs({
  options: { "data-dir": { type: "string" }, "database-url": { type: "string" }, json: { type: "boolean" } },
});
// an explicit --data-dir means PGlite even when DATABASE_URL is set in the environment
const databaseUrl = values["database-url"] ?? (values["data-dir"] ? undefined : process.env.DATABASE_URL);
const dataDir = values["data-dir"] ?? process.env.GLANCE_DATA_DIR;
if (!databaseUrl && !dataDir) {
  console.error("usage: npm run audit:verify -- --data-dir <orchestrator dataDir> | --database-url postgres://…");
  process.exit(2);
}
const database = await openDatabase({ dataDir: dataDir ?? ".", databaseUrl });
try {
  const verdict = await verifyAudit(database.db);
  if (values.json) console.log(JSON.stringify(verdict));
  else if (verdict.ok) console.log(`audit chain intact: ${verdict.rows} entries, head ${verdict.head}`);
  else
    console.error(
      `audit chain BROKEN at entry ${verdict.brokenAt}: ${verdict.reason} (${verdict.rows} entries verified before it)`,
    );
  process.exitCode = verdict.ok ? 0 : 1;
} finally {
  await database.close();
}
