import { readFile, rename, writeFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { openDatabase } from "../db/client.ts";
import { AuditAnchor, verifyAudit } from "./log.ts";

/**
 * `npm run audit:verify -- --data-dir .glance/orchestrator` (PGlite) or with DATABASE_URL / --database-url (Postgres).
 * `--anchor-file <path>` (kept away from the database, e.g. on the auditor's machine): the head verified last time must
 * still be in the chain unchanged, which is what catches newest entries deleted; a run that passes moves it to the
 * new head. Exit 0: the chain holds; exit 1: the first broken link is printed; exit 2: bad usage or anchor file.
 */
const { values } = parseArgs({
  options: {
    "data-dir": { type: "string" },
    "database-url": { type: "string" },
    "anchor-file": { type: "string" },
    json: { type: "boolean" },
  },
});
// an explicit --data-dir means PGlite even when DATABASE_URL is set in the environment
const databaseUrl = values["database-url"] ?? (values["data-dir"] ? undefined : process.env.DATABASE_URL);
const dataDir = values["data-dir"] ?? process.env.GLANCE_DATA_DIR;
if (!databaseUrl && !dataDir) {
  console.error(
    "usage: npm run audit:verify -- --data-dir <orchestrator dataDir> | --database-url postgres://… [--anchor-file <path>]",
  );
  process.exit(2);
}

const anchorFile = values["anchor-file"];
let anchor: AuditAnchor | undefined;
if (anchorFile) {
  const text = await readFile(anchorFile, "utf8").catch((e: NodeJS.ErrnoException) => {
    if (e.code === "ENOENT") return undefined;
    throw e;
  });
  if (text !== undefined) {
    const parsed = AuditAnchor.safeParse(
      (() => {
        try {
          return JSON.parse(text);
        } catch {
          return undefined;
        }
      })(),
    );
    if (!parsed.success) {
      console.error(`${anchorFile} is not an audit anchor ({"seq":…,"hash":…}); restore it from your copy.`);
      process.exit(2);
    }
    anchor = parsed.data;
  }
}

const database = await openDatabase({ dataDir: dataDir ?? ".", databaseUrl });
try {
  const verdict = await verifyAudit(database.db, { anchor });
  if (values.json) console.log(JSON.stringify(verdict));
  else if (verdict.ok) console.log(`audit chain intact: ${verdict.rows} entries, head ${verdict.head}`);
  else
    console.error(
      `audit chain BROKEN at entry ${verdict.brokenAt}: ${verdict.reason} (${verdict.rows} entries verified before it)`,
    );
  if (verdict.ok && anchorFile && verdict.rows > 0) {
    // written aside and renamed: a crash never leaves half an anchor
    const next = { seq: verdict.rows, hash: verdict.head, verifiedAt: new Date().toISOString() };
    await writeFile(`${anchorFile}.tmp`, `${JSON.stringify(next)}\n`, { mode: 0o600 });
    await rename(`${anchorFile}.tmp`, anchorFile);
  }
  process.exitCode = verdict.ok ? 0 : 1;
} finally {
  await database.close();
}
