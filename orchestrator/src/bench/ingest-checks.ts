/**
 * `npx tsx orchestrator/src/bench/ingest-checks.ts` — the ingest stage alone: simulated nodes (the bench:ingest
 * publisher worker) publish sealed templates through the embedded aedes broker to `startIngest`, whose onAccepted
 * only counts. No gallery, no recognizer: this is the ceiling the template checks (contract, node, signature,
 * decryption, replay window) put on throughput, and their CPU budget per template.
 *
 *   --nodes 16 --burst 1000        simulated nodes, templates per node published as fast as possible
 *   --max-batch 512                the ingest's micro-batch bound (1 = one template per batch)
 *   --database-url postgres://…    a real Postgres (a throwaway database on it) instead of PGlite
 */
import { EventEmitter } from "node:events";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { Session } from "node:inspector/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { generateSealingKeyPair, generateSigningKeyPair } from "@glance/shared";
import { and, eq, isNull } from "drizzle-orm";
import mqtt from "mqtt";
import { pino } from "pino";
import { hashSecret, newSecret, secretMatches } from "../auth/secrets.ts";
import { ORCHESTRATOR_USERNAME, startBroker } from "../broker/broker.ts";
import { clientSource } from "../broker/source.ts";
import { openDatabase } from "../db/client.ts";
import { nodes, stores } from "../db/schema.ts";
import { startIngest } from "../ingest/ingest.ts";
import { freshPostgres } from "../testing/harness.ts";
import { tsWorker } from "../ts-worker.ts";
import type { PublisherData } from "./ingest-publisher.ts";
import { INGEST_STAGES, stageSplit, summariseProfile } from "./profile.ts";
import { machine, repoRoot, table, writeResults } from "./stats.ts";

const { values: args } = parseArgs({
  options: {
    nodes: { type: "string", default: "16" },
    burst: { type: "string", default: "1000" },
    "max-batch": { type: "string", default: "512" },
    "database-url": { type: "string" },
  },
});
const nodeCount = Number(args.nodes);
const burst = Number(args.burst);
const maxBatch = Number(args["max-batch"]);
const space = "bench-space@1";
const dim = 128;
const log = (msg: string) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${msg}`);

const dataDir = await mkdtemp(join(tmpdir(), "glance-bench-checks-"));
const pg = args["database-url"] ? await freshPostgres(args["database-url"]) : undefined;
const database = await openDatabase({ dataDir, databaseUrl: pg?.url });
const { db } = database;
const logger = pino({ level: "warn" });
const cleanups: (() => Promise<unknown>)[] = [];
try {
  await db.insert(stores).values({ id: "bench-store", name: "bench" });
  const simulated = Array.from({ length: nodeCount }, (_, n) => ({
    nodeId: `bench-node-${n}`,
    cameraId: "cam-1",
    signingKey: generateSigningKeyPair(),
    password: newSecret(),
  }));
  await db.insert(nodes).values(
    simulated.map((s) => ({
      id: s.nodeId,
      storeId: "bench-store",
      cameraId: s.cameraId,
      signingPublicKey: s.signingKey.publicKey,
      mqttPasswordHash: hashSecret(s.password),
    })),
  );

  const orchestratorSecret = newSecret();
  const broker = await startBroker({
    host: "127.0.0.1",
    port: 0,
    orchestratorSecret,
    logger,
    async verifyNode(nodeId, password) {
      const [node] = await db
        .select({ hash: nodes.mqttPasswordHash })
        .from(nodes)
        .where(and(eq(nodes.id, nodeId), isNull(nodes.revokedAt)));
      return !!node && secretMatches(password, node.hash);
    },
  });
  cleanups.push(() => broker.close());
  const client = await mqtt.connectAsync(broker.url, {
    username: ORCHESTRATOR_USERNAME,
    password: orchestratorSecret,
    protocolVersion: 4,
  });
  cleanups.push(() => client.endAsync());

  const sealing = { kid: "sk-bench", ...generateSealingKeyPair() };
  const events = new EventEmitter();
  let done = 0;
  let onProgress = () => {};
  events.on("rejection", () => {
    done++;
    onProgress();
  });
  const ingest = await startIngest({
    source: clientSource(client),
    deps: { db, sealingKey: sealing, space },
    events,
    logger,
    maxBatch,
    async onAccepted() {
      done++;
      onProgress();
    },
  });
  cleanups.push(() => ingest.stop());

  const probes = Array.from({ length: 256 }, () => {
    const v = Float32Array.from({ length: dim }, () => Math.random() - 0.5);
    const norm = Math.hypot(...v);
    return v.map((x) => x / norm);
  });
  const worker = tsWorker(new URL("./ingest-publisher.ts", import.meta.url), {
    workerData: {
      nodes: simulated.map((s) => ({
        nodeId: s.nodeId,
        cameraId: s.cameraId,
        signingKey: s.signingKey,
        mqtt: { url: broker.url, username: s.nodeId, password: s.password },
      })),
      recipient: { kid: sealing.kid, publicKey: sealing.publicKey },
      space,
      probes,
      published: new SharedArrayBuffer(nodeCount * burst * 8),
    } satisfies PublisherData,
  });
  cleanups.push(() => worker.terminate());
  const next = (kind: string) =>
    new Promise<void>((resolve, reject) => {
      const on = (m: { kind: string }) => {
        if (m.kind !== kind) return;
        worker.off("message", on);
        resolve();
      };
      worker.on("message", on);
      worker.once("error", reject);
    });
  await next("ready");
  log(`publisher connected; burst: ${nodeCount} nodes × ${burst} templates, max batch ${maxBatch}`);

  const total = nodeCount * burst;
  const finished = new Promise<void>((resolve) => {
    onProgress = () => {
      if (done >= total) resolve();
    };
  });
  const sealed = next("sealed");
  worker.postMessage({ kind: "burst", perNode: burst, offset: 0 });
  await sealed;
  const session = new Session();
  session.connect();
  await session.post("Profiler.enable");
  await session.post("Profiler.start");
  const cpu0 = process.cpuUsage();
  const start = performance.now();
  await finished;
  const seconds = (performance.now() - start) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const { profile } = await session.post("Profiler.stop");
  session.disconnect();
  const profileFile = join(
    repoRoot,
    "bench-results",
    `ingest-checks-${new Date().toISOString().replaceAll(":", "-")}.cpuprofile`,
  );
  await mkdir(join(repoRoot, "bench-results"), { recursive: true });
  await writeFile(profileFile, JSON.stringify(profile));

  const stages = stageSplit(profile, INGEST_STAGES);
  const profiled = stages.reduce((a, s) => a + s.ms, 0) || 1;
  const budget = table(
    ["ms / template", "%", "stage (orchestrator thread)"],
    stages.map((s) => [(s.ms / total).toFixed(3), ((100 * s.ms) / profiled).toFixed(1), s.label]),
  );
  const hot = table(
    ["self ms", "%", "function", "where"],
    summariseProfile(profile, 12).functions.map((f) => [f.selfMs.toFixed(0), f.share.toFixed(1), f.name, f.where]),
  );
  const m = ingest.metrics as typeof ingest.metrics & Partial<{ batches: number; statements: unknown }>;
  const rate = total / seconds;
  const cores = (cpu.user + cpu.system) / 1e6 / seconds;
  console.log(
    `\ningest checks on ${JSON.stringify(machine())}; ${pg ? "Postgres" : "PGlite"}; ${nodeCount} nodes × ${burst}, max batch ${maxBatch}`,
  );
  console.log(
    `${total} templates in ${seconds.toFixed(2)} s = ${rate.toFixed(0)} templates/s; process CPU ${cores.toFixed(2)} cores (${((cores * 1000) / rate).toFixed(3)} ms CPU per template, publisher worker included)`,
  );
  console.log(
    `accepted ${m.accepted}, rejected ${JSON.stringify(m.rejected)}, batches ${m.batches ?? "n/a"}, statements ${JSON.stringify(m.statements ?? "n/a")}`,
  );
  console.log(`\n${budget}\n\n${hot}\n`);
  const file = await writeResults("ingest-checks", {
    machine: machine(),
    database: pg ? "postgres" : "pglite",
    nodes: nodeCount,
    burst,
    maxBatch,
    seconds,
    rate,
    processCpuCores: cores,
    metrics: m,
    stages,
    tables: { budget, hot },
    profileFile,
  });
  console.log(`results: ${file}\nprofile: ${profileFile}`);
  worker.postMessage({ kind: "close" });
  await next("closed");
} finally {
  for (const c of cleanups.reverse()) await c().catch(() => {});
  await database.close();
  await pg?.drop();
  await rm(dataDir, { recursive: true, force: true });
}
