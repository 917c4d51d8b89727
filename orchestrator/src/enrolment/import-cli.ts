import { readFile, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { isGlanceError } from "@glance/shared";
import { MultiBar, Presets } from "cli-progress";
import { type ImportResult, type PersonOutcome, runImport } from "./import.ts";
import { IMPORT_COLUMNS, type ImportPlan, planImport } from "./import-plan.ts";

/**
 * `npm run people:import -- --csv people.csv --photos <folder> [--api URL] [--token-file F] [--concurrency N]
 *  [--report F] [--dry-run] [--strict]`
 *
 * Exit 0: every row enrolled or already there; 1: some row invalid or some person not enrolled (see the report);
 * 2: nothing done (bad usage, unreadable CSV, orchestrator unreachable, token refused, or --strict with invalid rows).
 */
const usage = `usage: npm run people:import -- --csv people.csv --photos <folder> [options]
  --api URL           orchestrator (default http://127.0.0.1:\${GLANCE_HTTP_PORT:-8080})
  --token-file FILE   bearer token of an hq-admin or store-manager (default $GLANCE_TOKEN, else
                      \${GLANCE_DATA_DIR:-.glance}/orchestrator/admin-token)
  --concurrency N     enrolments in flight (default 2)
  --report FILE       JSON report (default <csv>.report.json)
  --dry-run           check the CSV and the photos, enrol nobody
  --strict            enrol nobody if any row is invalid
CSV columns: ${IMPORT_COLUMNS.join(",")}
  (photos: ";"-separated files or folders under --photos; empty = the folder named like person_key)`;

function fail(message: string): never {
  console.error(message);
  process.exit(2);
}

let args: ReturnType<typeof parseOptions>;
function parseOptions() {
  return parseArgs({
    options: {
      csv: { type: "string" },
      photos: { type: "string" },
      api: { type: "string" },
      "token-file": { type: "string" },
      concurrency: { type: "string" },
      report: { type: "string" },
      "dry-run": { type: "boolean" },
      strict: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  }).values;
}
try {
  args = parseOptions();
} catch (error) {
  fail(`${(error as Error).message}\n${usage}`);
}
if (args.help) {
  console.log(usage);
  process.exit(0);
}
if (!args.csv || !args.photos) fail(usage);
const concurrency = Number(args.concurrency ?? 2);
if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 16) fail("--concurrency must be 1 to 16");

// `npm run` starts us in the repository root; paths on the command line are meant from where the operator stands
const here = process.env.INIT_CWD ?? process.cwd();
const csvPath = resolve(here, args.csv);
const photosDir = resolve(here, args.photos);
const reportPath = resolve(here, args.report ?? `${csvPath.replace(/\.csv$/i, "")}.report.json`);
const startedAt = new Date();

let plan: ImportPlan;
try {
  plan = await planImport(await readFile(csvPath, "utf8"), photosDir);
} catch (error) {
  fail(isGlanceError(error) ? error.message : `Cannot read ${csvPath}: ${(error as Error).message}`);
}

for (const row of plan.invalid) {
  console.error(`line ${row.line}${row.personKey ? ` (${row.personKey})` : ""}: ${row.problems.join("; ")}`);
}
const photoCount = plan.people.reduce((n, p) => n + p.photos.length, 0);
console.log(
  `${plan.people.length} people with ${photoCount} photos to enrol, ${plan.invalid.length} invalid row(s)` +
    (plan.invalid.length > 0 && !args.strict ? " (skipped)" : ""),
);

async function writeReport(body: Record<string, unknown>) {
  // names and consent references of real people: readable by the operator only
  await writeFile(reportPath, `${JSON.stringify(body, null, 2)}\n`, { mode: 0o600 });
  console.log(`report: ${reportPath}`);
}
const reportHead = () => ({ csv: csvPath, photos: photosDir, startedAt, finishedAt: new Date() });

if (args["dry-run"] || (args.strict && plan.invalid.length > 0)) {
  await writeReport({ ...reportHead(), dryRun: !!args["dry-run"], invalid: plan.invalid, planned: plan.people });
  if (args.strict && plan.invalid.length > 0) fail("--strict: nobody enrolled; fix the rows above and run again.");
  process.exit(plan.invalid.length > 0 ? 1 : 0);
}

const api = {
  url: args.api ?? `http://127.0.0.1:${process.env.GLANCE_HTTP_PORT ?? 8080}`,
  token: await readToken(),
};
async function readToken(): Promise<string> {
  if (!args["token-file"] && process.env.GLANCE_TOKEN) return process.env.GLANCE_TOKEN;
  const file = args["token-file"]
    ? resolve(here, args["token-file"])
    : join(process.env.GLANCE_DATA_DIR ?? ".glance", "orchestrator", "admin-token");
  const token = await readFile(file, "utf8").catch(() =>
    fail(`Cannot read the token file ${file}; pass --token-file.`),
  );
  return token.trim();
}

const plural = (n: number, what: string) => `${n} ${what}${n === 1 ? "" : "s"}`;

/** What the operator needs per person: the outcome, and each photo that was refused or should be retaken. */
function describe(o: PersonOutcome): string[] {
  const head =
    o.status === "enrolled"
      ? `line ${o.line} ${o.personKey}: enrolled (${plural(o.templates ?? 0, "template")})`
      : `line ${o.line} ${o.personKey}: ${o.status}${o.code ? ` ${o.code}` : ""}: ${o.reason}`;
  const photos = o.photos
    .filter((p) => !p.accepted || (p.quality?.reasons.length ?? 0) > 0)
    .map((p) => `    ${p.photo}: ${p.accepted ? `accepted (${p.quality?.reasons.join(", ")})` : p.code}: ${p.message}`);
  return [head, ...photos];
}

const tty = process.stderr.isTTY;
const bars = tty
  ? new MultiBar(
      {
        format:
          "{bar} {value}/{total} people | {enrolled} enrolled {skipped} skipped {failed} failed | eta {eta_formatted}",
        barsize: 24,
        hideCursor: true,
        clearOnComplete: false,
        stream: process.stderr,
      },
      Presets.shades_classic,
    )
  : undefined;
const tally = { enrolled: 0, skipped: 0, failed: 0 };
const bar = bars?.create(plan.people.length, 0, tally);

// Ctrl-C once: finish the enrolments in flight and write the report (a re-run picks up the rest); twice: quit now
const stop = new AbortController();
process.on("SIGINT", () => {
  if (stop.signal.aborted) {
    bars?.stop();
    process.exit(130);
  }
  stop.abort();
  const note = "stopping after the enrolments in flight; Ctrl-C again to quit at once\n";
  if (bars) bars.log(note);
  else process.stdout.write(note);
});

let result: ImportResult;
try {
  result = await runImport(plan, {
    api,
    photosDir,
    concurrency,
    signal: stop.signal,
    onProgress: ({ done, total, outcome }) => {
      tally[outcome.status]++;
      const lines = describe(outcome);
      if (bars && bar) {
        // quiet for the people that went well; the bar carries the counts
        if (outcome.status !== "enrolled" || lines.length > 1) bars.log(`${lines.join("\n")}\n`);
        bar.update(done, tally);
      } else {
        console.log(`[${done}/${total}] ${lines.join("\n")}`);
      }
    },
  });
} catch (error) {
  bars?.stop();
  fail(`Nobody enrolled: ${(error as Error).message}`);
}
bars?.stop();

const c = result.counts;
console.log(
  `enrolled ${c.enrolled}, skipped ${c.skipped} (already enrolled), failed ${c.failed}, invalid rows ${c.invalid}; ` +
    `photos: ${c.photosAccepted} accepted (${c.photosWithWarnings} with a retake suggestion), ${c.photosRejected} refused` +
    (c.notAttempted > 0 ? `; stopped: ${c.notAttempted} not attempted, run again to continue` : ""),
);
await writeReport({ ...reportHead(), api: api.url, counts: c, invalid: result.invalid, people: result.people });
process.exit(c.failed > 0 || c.invalid > 0 || c.notAttempted > 0 ? 1 : 0);
