/**
 * `npm run bench:ingest` — end-to-end template ingest at chain scale: simulated nodes (real MQTT clients in a worker
 * thread, bench/ingest-publisher.ts) publish through the embedded broker to a real orchestrator (PGlite in a temp
 * dir, or Postgres) whose gallery holds 100k synthetic templates. Templates are sealed as node-agent seals them: the
 * v2 session envelope (shared/src/crypto.ts `TemplateSealer`: one signed ephemeral X25519 session per simulated node,
 * then AES-256-GCM per template), sealed before each phase starts so the orchestrator's core is what is measured.
 * Not a test: prints a table, writes JSON and a CPU profile of the orchestrator's thread during the burst to
 * bench-results/. The header names the gallery graph's search breadth and the recall@1 it measured (/api/health).
 *
 *   --people 25000 --per-person 4   gallery size (templates = people × per-person)
 *   --data isotropic|lfw-spectrum   identity centres of the synthetic gallery (gallery/synthetic.ts); default isotropic
 *   --nodes 16                      simulated nodes (each its own MQTT connection)
 *   --burst 1000                    templates per node published as fast as possible (throughput)
 *   --rate 200 --paced 100          steady phase: overall templates/s, templates per node (latency)
 *   --database-url postgres://…     a real Postgres (a throwaway database is created on it) instead of PGlite
 *
 * Latency is publish → "recognition" event; templates of one node are processed in order, so the i-th recognition
 * of a node answers its i-th publish.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { Session } from "node:inspector/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Worker } from "node:worker_threads";
import { FacePipeline } from "@glance/models";
import { pino } from "pino";
import { openDatabase } from "../db/client.ts";
import type { GraphTuning } from "../gallery/space-index.ts";
import type { SyntheticCentres } from "../gallery/synthetic.ts";
import { type Orchestrator, type Recognition, type Rejection, startOrchestrator } from "../index.ts";
import type { IngestMetrics } from "../ingest/ingest.ts";
import { loadOrCreateMasterKey } from "../privacy/keyring.ts";
import { createStore, freshPostgres, type Harness, registerNode } from "../testing/harness.ts";
import { bulkLoadGallery } from "./bulk-load.ts";
import type { PhaseRequest, PublisherData } from "./ingest-publisher.ts";
import { INGEST_STAGES, stageSplit, summariseProfile } from "./profile.ts";
import { machine, percentile, repoRoot, table, writeResults } from "./stats.ts";

const { values: args } = parseArgs({
  options: {
    people: { type: "string", default: "25000" },
    "per-person": { type: "string", default: "4" },
    nodes: { type: "string", default: "16" },
    burst: { type: "string", default: "1000" },
    rate: { type: "string", default: "200" },
    paced: { type: "string", default: "100" },
    "database-url": { type: "string" },
    data: { type: "string", default: "isotropic" },
  },
});
if (args.data !== "isotropic" && args.data !== "lfw-spectrum")
  throw new Error(`--data must be isotropic or lfw-spectrum, not ${args.data}`);
const centres: SyntheticCentres = args.data;
const peopleCount = Number(args.people);
const perPerson = Number(args["per-person"]);
const nodeCount = Number(args.nodes);
const burst = Number(args.burst);
const paced = Number(args.paced);
const rate = Number(args.rate);
const now = () => performance.timeOrigin + performance.now();
const log = (msg: string) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${msg}`);

const dataDir = await mkdtemp(join(tmpdir(), "glance-bench-ingest-"));
const pg = args["database-url"] ? await freshPostgres(args["database-url"]) : undefined;
const databaseUrl = pg?.url;
let orch: Orchestrator | undefined;
let worker: Worker | undefined;
try {
  const faces = await FacePipeline.load();
  const space = faces.space;
  const dim = faces.embedder.embedding?.dim ?? 512;
  const threshold = faces.threshold("1e-3");

  let t = performance.now();
  const database = await openDatabase({ dataDir, databaseUrl });
  // the orchestrator finds the same key file in dataDir when it starts
  const { masterKey } = await loadOrCreateMasterKey(dataDir, undefined);
  // members' probes must clear the embedder's calibrated threshold as real ones do: probe–template cosine
  // 1/(1 + spread²) set a little above it
  const spread = Math.sqrt(1 / Math.min(0.99, threshold + 0.03) - 1);
  const gallery = await bulkLoadGallery(database.db, masterKey, {
    spread,
    space,
    people: peopleCount,
    templatesPerPerson: perPerson,
    dim,
    centres,
  });
  await database.close();
  const bulkSeconds = (performance.now() - t) / 1000;
  log(`bulk-loaded ${peopleCount * perPerson} templates (${dim}-d, space ${space}) in ${bulkSeconds.toFixed(1)} s`);

  t = performance.now();
  orch = await startOrchestrator({
    dataDir,
    ...(databaseUrl ? { databaseUrl } : {}),
    logger: pino({ level: "warn" }),
    mqttPort: 0,
    httpPort: 0,
  });
  const startSeconds = (performance.now() - t) / 1000;
  log(`orchestrator started (gallery loaded from the database) in ${startSeconds.toFixed(1)} s`);
  const o = orch;
  const h = {
    orch: o,
    dataDir,
    api(path: string, init: RequestInit & { json?: unknown } = {}) {
      const { json, ...rest } = init;
      const headers = new Headers(rest.headers);
      headers.set("authorization", `Bearer ${o.adminToken}`);
      if (json !== undefined) headers.set("content-type", "application/json");
      return fetch(new URL(path, o.httpUrl), {
        ...rest,
        headers,
        ...(json !== undefined ? { body: JSON.stringify(json) } : {}),
      });
    },
  } as unknown as Harness;
  const health = (await (await h.api("/api/health")).json()) as {
    graph: (Partial<GraphTuning> & { ef: number; source: string }) | null;
  };
  const graph = health.graph;
  const graphLine = graph
    ? `graph ef ${graph.ef} (${graph.source}${graph.recall !== undefined ? `, recall@1 ${graph.recall.toFixed(3)} on ${graph.probes} probes${graph.reached ? "" : " BELOW target"}, tuned in ${graph.ms} ms` : ""})`
    : "exact search (no graph)";
  log(graphLine);
  const storeId = await createStore(h);
  const nodes = [];
  for (let n = 0; n < nodeCount; n++) nodes.push(await registerNode(h, storeId, `bench-node-${n}`));

  // probes: 80 % fresh samples of enrolled members, 20 % strangers (from a gallery nobody enrolled)
  const members = gallery.queries(1600).map((q) => q.vector);
  const strangers = (await import("../gallery/synthetic.ts"))
    .syntheticGallery({ people: 400, templatesPerPerson: 1, dim, seed: 999 })
    .queries(400)
    .map((q) => q.vector);
  const probes = [...members, ...strangers].sort(() => Math.random() - 0.5);

  const total = nodeCount * (burst + paced);
  const published = new SharedArrayBuffer(total * 8);
  const publishedAt = new Float64Array(published);
  const recognisedAt = new Float64Array(total);
  const seen = new Map<string, number>();
  const nodeIndex = new Map(nodes.map((n, i) => [n.nodeId, i]));
  let phase = { offset: 0, perNode: 0 };
  let recognised = 0;
  let members$ = 0;
  let rejected = 0;
  let onProgress = () => {};
  o.events.on("recognition", (r: Recognition) => {
    const n = nodeIndex.get(r.nodeId) as number;
    const i = seen.get(r.nodeId) ?? 0;
    seen.set(r.nodeId, i + 1);
    recognisedAt[phase.offset + n * phase.perNode + i] = now();
    recognised++;
    if (r.visitor === "member") members$++;
    onProgress();
  });
  o.events.on("rejection", (_r: Rejection) => {
    rejected++;
    onProgress();
  });

  // a worker does not inherit tsx's loader: register it there before importing the TypeScript entry
  const entry = new URL("./ingest-publisher.ts", import.meta.url).href;
  const tsxApi = import.meta.resolve("tsx/esm/api");
  const boot = `import(${JSON.stringify(tsxApi)}).then((m) => { m.register(); return import(${JSON.stringify(entry)}); }).catch((e) => { console.error("publisher failed", e); process.exit(1); })`;
  worker = new Worker(boot, {
    eval: true,
    workerData: {
      nodes: nodes.map((n) => ({ nodeId: n.nodeId, cameraId: n.cameraId, mqtt: n.mqtt, signingKey: n.signingKey })),
      recipient: o.sealingKey,
      space,
      probes,
      published,
    } satisfies PublisherData,
  });
  const w = worker;
  const next = (kind: string) =>
    new Promise<void>((resolve, reject) => {
      const on = (m: { kind: string }) => {
        if (m.kind !== kind) return;
        w.off("message", on);
        resolve();
      };
      w.on("message", on);
      w.once("error", reject);
      w.once("exit", (code) => reject(new Error(`publisher worker exited (${code}) before "${kind}"`)));
    });
  log("nodes registered; starting the publisher worker");
  await next("ready");
  log("publisher connected");

  const runPhase = async (req: PhaseRequest, profile: boolean) => {
    phase = { offset: req.offset, perNode: req.perNode };
    seen.clear();
    const target = recognised + rejected + req.perNode * nodeCount;
    const done = new Promise<void>((resolve) => {
      onProgress = () => {
        if (recognised + rejected >= target) resolve();
      };
    });
    const sealed = next("sealed");
    w.postMessage(req);
    await sealed;
    const session = profile ? new Session() : undefined;
    if (session) {
      session.connect();
      await session.post("Profiler.enable");
      await session.post("Profiler.start");
    }
    const cpu0 = process.cpuUsage();
    const start = now();
    await done;
    const seconds = (now() - start) / 1000;
    const cpu = process.cpuUsage(cpu0);
    let profileFile: string | undefined;
    let hot: ReturnType<typeof summariseProfile> | undefined;
    let stages: ReturnType<typeof stageSplit> | undefined;
    if (session) {
      const { profile: p } = await session.post("Profiler.stop");
      session.disconnect();
      profileFile = join(
        repoRoot,
        "bench-results",
        `ingest-${new Date().toISOString().replaceAll(":", "-")}.cpuprofile`,
      );
      await writeFile(profileFile, JSON.stringify(p));
      hot = summariseProfile(p);
      stages = stageSplit(p, INGEST_STAGES);
    }
    const lat: number[] = [];
    for (let j = req.offset; j < req.offset + req.perNode * nodeCount; j++)
      if (recognisedAt[j] && publishedAt[j]) lat.push((recognisedAt[j] as number) - (publishedAt[j] as number));
    lat.sort((a, b) => a - b);
    return {
      templates: req.perNode * nodeCount,
      seconds,
      rate: (req.perNode * nodeCount) / seconds,
      p50: percentile(lat, 0.5),
      p99: percentile(lat, 0.99),
      orchestratorThreadCpuShare: (cpu.user + cpu.system) / 1e6 / seconds,
      profileFile,
      hot,
      stages,
    };
  };

  log(`burst: ${nodeCount} nodes × ${burst} templates`);
  const burstResult = await runPhase({ kind: "burst", perNode: burst, offset: 0 }, true);
  log(
    `burst done: ${burstResult.rate.toFixed(0)} templates/s, p50 ${burstResult.p50.toFixed(0)} ms, load average ${machine().loadavg1m}`,
  );
  // --paced 0 skips the latency phase
  const pacedResult =
    paced > 0
      ? await (async () => {
          log(`paced: ${rate} templates/s, ${nodeCount} nodes × ${paced}`);
          return runPhase({ kind: "paced", perNode: paced, offset: nodeCount * burst, rate }, false);
        })()
      : undefined;

  const printed = table(
    ["phase", "templates", "seconds", "templates/s", "p50 ms", "p99 ms", "process CPU (cores)"],
    [["burst", burstResult, "max"], ...(pacedResult ? [["paced", pacedResult, `${rate}/s`]] : [])].map(([name, r]) => {
      const x = r as typeof burstResult;
      return [
        name as string,
        x.templates,
        x.seconds.toFixed(1),
        x.rate.toFixed(0),
        x.p50.toFixed(1),
        x.p99.toFixed(1),
        x.orchestratorThreadCpuShare.toFixed(2),
      ];
    }),
  );
  const hotTable = table(
    ["self ms", "%", "function", "where"],
    (burstResult.hot?.functions ?? []).map((f) => [f.selfMs.toFixed(0), f.share.toFixed(1), f.name, f.where]),
  );
  const byPackage = table(
    ["self ms", "%", "package / area"],
    (burstResult.hot?.packages ?? []).map((f) => [f.selfMs.toFixed(0), f.share.toFixed(1), f.name]),
  );
  const burstTemplates = burstResult.templates;
  const profiledMs = (burstResult.stages ?? []).reduce((a, x) => a + x.ms, 0) || 1;
  const budget = table(
    ["ms / template", "%", "stage (orchestrator thread, burst)"],
    (burstResult.stages ?? []).map((x) => [
      (x.ms / burstTemplates).toFixed(3),
      ((100 * x.ms) / profiledMs).toFixed(1),
      x.label,
    ]),
  );
  // partial when run against an ingest from before micro-batching (for before/after figures)
  const m = ((await (await h.api("/api/metrics")).json()) as { ingest: Partial<IngestMetrics> & IngestMetrics }).ingest;
  console.log(
    `\nbench:ingest on ${JSON.stringify(machine())}; ${databaseUrl ? "Postgres" : "PGlite"}; gallery ${peopleCount * perPerson} templates (${centres}), ${graphLine}, ${nodeCount} nodes`,
  );
  console.log(
    m.statements
      ? `ingest: ${m.batches} batches (${((m.accepted + Object.values(m.rejected).reduce((a, b) => a + b, 0)) / Math.max(1, m.batches)).toFixed(1)} templates each), ${m.statements.lookups} node lookups, ${m.statements.compareAndSets} replay statements, ${m.statements.conflicts} lost compare-and-sets`
      : "ingest: one template at a time (no batch metrics)",
  );
  if (m.recognition)
    console.log(
      `recognition: ${m.recognition.batches} batches (${(m.recognition.templates / Math.max(1, m.recognition.batches)).toFixed(1)} templates each), ${m.recognition.failed} failed, ${m.recognition.fallbacks} retried one by one`,
    );
  console.log(`recognitions ${recognised} (members ${members$}), rejections ${rejected}\n`);
  console.log(
    `${printed}\n\nburst CPU budget per template:\n${budget}\n\nburst CPU profile, orchestrator thread (self time):\n${hotTable}\n\n${byPackage}\n`,
  );
  const file = await writeResults("ingest", {
    machine: machine(),
    gallery: { templates: peopleCount * perPerson, people: peopleCount, dim, space, threshold, centres, graph },
    nodes: nodeCount,
    bulkLoadSeconds: bulkSeconds,
    orchestratorStartSeconds: startSeconds,
    recognised,
    members: members$,
    rejected,
    burst: burstResult,
    paced: pacedResult,
    database: databaseUrl ? "postgres" : "pglite",
    ingest: m,
    tables: { phases: printed, budget, hot: hotTable, packages: byPackage },
  });
  console.log(`results: ${file}\nprofile: ${burstResult.profileFile}`);
  w.postMessage({ kind: "close" });
  await next("closed");
} finally {
  await worker?.terminate();
  await orch?.stop();
  await rm(dataDir, { recursive: true, force: true });
  await pg?.drop();
}
