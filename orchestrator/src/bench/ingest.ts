/**
 * `npm run bench:ingest` — end-to-end template ingest at chain scale: simulated nodes (real MQTT clients in a worker
 * thread, bench/ingest-publisher.ts) publish through the embedded broker to a real orchestrator (PGlite in a temp
 * dir, or Postgres) whose gallery holds 100k synthetic templates. Templates are sealed as node-agent seals them: the
 * v2 session envelope (shared/src/crypto.ts `TemplateSealer`: one signed ephemeral X25519 session per simulated node,
 * then AES-256-GCM per template), sealed before each phase starts so the orchestrator's core is what is measured.
 * Not a test: prints a table, writes JSON and a CPU profile of the orchestrator's thread to bench-results/. The burst
 * runs first for the first sight of every probe's person (new visits and visitors written, code not yet optimised),
 * then `--steady` times again (the steady state: the third burst has run faster than the second), then again under
 * the profiler for the CPU budget. The header names the gallery graph's search breadth and the recall@1 it measured
 * (/api/metrics).
 *
 *   --people 25000 --per-person 4   gallery size (templates = people × per-person)
 *   --data isotropic|lfw-spectrum   identity centres of the synthetic gallery (gallery/synthetic.ts); default isotropic
 *   --nodes 16                      simulated nodes (each its own MQTT connection)
 *   --burst 1000                    templates per node published as fast as possible (throughput)
 *   --steady 2                      unprofiled bursts after the first (the steady state; more of them, more samples)
 *   --rate 200 --paced 100          steady phase: overall templates/s, templates per node (latency)
 *   --database-url postgres://…     a real Postgres (a throwaway database is created on it) instead of PGlite
 *   --gallery thread|main           the in-process orchestrator's gallery on its own worker thread (default, as in
 *                                   production) or on the main thread (OrchestratorOptions.galleryThread)
 *   --instances N                   scale-out: mosquitto with the generated configuration (mutual TLS, contract ACL,
 *                                   dynamic security) and N orchestrator instances, each its own process
 *                                   (bench/ingest-instance.ts), on the one Postgres and one data dir, sharing the
 *                                   template subscription; needs --database-url. The nodes connect with their
 *                                   certificates. Without it: one orchestrator in this process, embedded broker.
 *
 * Latency is publish → "recognition" event. A node's i-th recognition (by time, across instances) is paired with its
 * i-th publish: one instance processes a node's templates in order, so with one instance that pairing is exact; with
 * several it pairs order statistics: where a template is overtaken by a later one of its node on another instance,
 * their two latencies are replaced by the sorted pairing, which can shift single values more than the percentiles.
 * Instances stamp their events with their own clock (epoch ms) and send them in batches every 20 ms. The CPU profile
 * and the stage budget are of the in-process orchestrator only: with --instances there is none (the table shows each
 * instance's CPU, mosquitto's and the publishers' instead).
 */
import { type ChildProcess, fork } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { Session } from "node:inspector/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import type { Worker } from "node:worker_threads";
import { FacePipeline } from "@glance/models";
import { pino } from "pino";
import { openDatabase } from "../db/client.ts";
import type { GraphTuning } from "../gallery/space-index.ts";
import type { SyntheticCentres } from "../gallery/synthetic.ts";
import { type Orchestrator, type Recognition, startOrchestrator } from "../index.ts";
import type { IngestMetrics } from "../ingest/ingest.ts";
import { loadOrCreateFleetCa } from "../pki/fleet-ca.ts";
import { loadOrCreateMasterKey } from "../privacy/keyring.ts";
import { createStore, freshPostgres, type Harness, registerNode } from "../testing/harness.ts";
import { type MosquittoBroker, startMosquitto } from "../testing/mosquitto.ts";
import { tsWorker } from "../ts-worker.ts";
import { bulkLoadGallery } from "./bulk-load.ts";
import type { InstanceMessage, InstanceRequest } from "./ingest-instance.ts";
import type { PhaseRequest, PublisherData } from "./ingest-publisher.ts";
import { INGEST_STAGES, stageSplit, summariseProfile } from "./profile.ts";
import { machine, percentile, repoRoot, table, writeResults } from "./stats.ts";

const { values: args } = parseArgs({
  options: {
    people: { type: "string", default: "25000" },
    "per-person": { type: "string", default: "4" },
    nodes: { type: "string", default: "16" },
    burst: { type: "string", default: "1000" },
    steady: { type: "string", default: "2" },
    rate: { type: "string", default: "200" },
    paced: { type: "string", default: "100" },
    "database-url": { type: "string" },
    data: { type: "string", default: "isotropic" },
    instances: { type: "string" },
    gallery: { type: "string", default: "thread" },
  },
});
if (args.gallery !== "thread" && args.gallery !== "main")
  throw new Error(`--gallery must be thread or main, not ${args.gallery}`);
if (args.data !== "isotropic" && args.data !== "lfw-spectrum")
  throw new Error(`--data must be isotropic or lfw-spectrum, not ${args.data}`);
const centres: SyntheticCentres = args.data;
const peopleCount = Number(args.people);
const perPerson = Number(args["per-person"]);
const nodeCount = Number(args.nodes);
const burst = Number(args.burst);
const steady = Number(args.steady);
if (!Number.isInteger(steady) || steady < 1)
  throw new Error(`--steady must be a whole number of bursts (1 or more), not ${args.steady}`);
const paced = Number(args.paced);
const rate = Number(args.rate);
const instanceCount = args.instances === undefined ? undefined : Number(args.instances);
if (instanceCount !== undefined && !(Number.isInteger(instanceCount) && instanceCount >= 1))
  throw new Error(`--instances must be a whole number ≥ 1, not ${args.instances}`);
if (instanceCount !== undefined && !args["database-url"])
  throw new Error("--instances needs --database-url: the instances share one Postgres database");
const now = () => performance.timeOrigin + performance.now();
const log = (msg: string) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${msg}`);

const root = await mkdtemp(join(tmpdir(), "glance-bench-ingest-"));
// the orchestrators' data dir (shared by the instances); mosquitto's configuration beside it
const dataDir = join(root, "orchestrator");
await mkdir(dataDir, { recursive: true, mode: 0o700 });
const pg = args["database-url"] ? await freshPostgres(args["database-url"]) : undefined;
const databaseUrl = pg?.url;
let orch: Orchestrator | undefined;
let worker: Worker | undefined;
let broker: MosquittoBroker | undefined;
const children: ChildProcess[] = [];
/** set when an instance process dies: the phase under way fails instead of waiting for ever */
let crashed: Error | undefined;

/** One orchestrator as the bench sees it: in this process, or a child process behind mosquitto. */
interface Instance {
  httpUrl: string;
  adminToken: string;
  sealingKey: { kid: string; publicKey: string };
  startSeconds: number;
  /** a child's CPU seconds since its last `phase-start` (undefined in-process: the process figure covers it) */
  phaseStart(): void;
  phaseCpu(): Promise<number | undefined>;
}

/** a process's user + system CPU seconds from /proc (Linux; clock ticks of 1/100 s); undefined elsewhere */
async function procCpuSeconds(pid: number | undefined): Promise<number | undefined> {
  if (pid === undefined) return undefined;
  const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => undefined);
  // the fields after the command name, which is in parentheses and may hold spaces: utime and stime are 14 and 15
  const fields = stat?.slice(stat.lastIndexOf(")") + 2).split(" ");
  return fields ? (Number(fields[11]) + Number(fields[12])) / 100 : undefined;
}

/**
 * CPU seconds the whole machine has spent busy (not idle, not waiting on I/O) since boot, and of those the ones
 * stolen by the hypervisor (a virtual CPU ready to run while the host ran someone else), from /proc/stat.
 */
async function machineBusySeconds(): Promise<{ busy: number; steal: number } | undefined> {
  const stat = await readFile("/proc/stat", "utf8").catch(() => undefined);
  // "cpu  user nice system idle iowait irq softirq steal …" in USER_HZ (100 per second)
  const ticks = stat?.split("\n")[0]?.split(/\s+/).slice(1).map(Number);
  if (!ticks || ticks.length < 8) return undefined;
  return {
    busy: (ticks.reduce((a, b) => a + b, 0) - (ticks[3] as number) - (ticks[4] as number)) / 100,
    steal: (ticks[7] as number) / 100,
  };
}

const exited = (c: ChildProcess) => c.exitCode !== null || c.signalCode !== null;
async function stopChild(c: ChildProcess): Promise<void> {
  if (exited(c)) return;
  const gone = new Promise<void>((resolve) => c.once("exit", () => resolve()));
  if (c.connected) c.send({ kind: "stop" } satisfies InstanceRequest);
  else c.kill("SIGTERM");
  const timer = setTimeout(() => c.kill("SIGKILL"), 20_000);
  await gone;
  clearTimeout(timer);
}

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

  // what the instances report during a phase: per node the times of its recognitions, in arrival order
  let nodeIndex = new Map<string, number>();
  let recognitionTimes: number[][] = [];
  let lastEventAt = 0;
  let recognised = 0;
  let members$ = 0;
  let rejected = 0;
  let onProgress = () => {};
  const onRecognition = (at: number, nodeId: string, member: boolean) => {
    recognitionTimes[nodeIndex.get(nodeId) as number]?.push(at);
    lastEventAt = Math.max(lastEventAt, at);
    recognised++;
    if (member) members$++;
    onProgress();
  };
  const onRejection = (at: number) => {
    lastEventAt = Math.max(lastEventAt, at);
    rejected++;
    onProgress();
  };

  const instances: Instance[] = [];
  if (instanceCount === undefined) {
    t = performance.now();
    orch = await startOrchestrator({
      dataDir,
      ...(databaseUrl ? { databaseUrl } : {}),
      logger: pino({ level: "warn" }),
      mqttPort: 0,
      httpPort: 0,
      galleryThread: args.gallery === "thread",
    });
    orch.events.on("recognition", (r: Recognition) => onRecognition(now(), r.nodeId, r.visitor === "member"));
    orch.events.on("rejection", () => onRejection(now()));
    instances.push({
      httpUrl: orch.httpUrl,
      adminToken: orch.adminToken,
      sealingKey: orch.sealingKey,
      startSeconds: (performance.now() - t) / 1000,
      phaseStart() {},
      phaseCpu: async () => undefined,
    });
    log(`orchestrator started (gallery loaded from the database) in ${instances[0]?.startSeconds.toFixed(1)} s`);
  } else {
    // as startMosquittoFleet does: the fleet CA of the shared data dir signs mosquitto's certificate
    // each instance its own name: mosquitto makes the certificate CN the client id (two of one name kick each other off)
    const names = Array.from({ length: instanceCount }, (_, i) => `instance-${i + 1}`);
    broker = await startMosquitto(join(root, "mosquitto"), await loadOrCreateFleetCa(dataDir), {
      orchestratorInstances: names,
    });
    const b = broker;
    log(`mosquitto listening on ${b.url}`);
    const entry = fileURLToPath(new URL("./ingest-instance.ts", import.meta.url));
    // one after the other: the first writes the admin token file the others read, and each gallery load uses every core
    for (let i = 0; i < instanceCount; i++) {
      const child = fork(entry, [], { execArgv: process.execArgv });
      children.push(child);
      const cpuWaiters: ((seconds: number) => void)[] = [];
      const ready = new Promise<Instance>((resolve, reject) => {
        child.on("message", (m: InstanceMessage) => {
          switch (m.kind) {
            case "ready":
              resolve({
                httpUrl: m.httpUrl,
                adminToken: m.adminToken,
                sealingKey: m.sealingKey,
                startSeconds: m.startSeconds,
                phaseStart: () => child.send({ kind: "phase-start" } satisfies InstanceRequest),
                phaseCpu: () =>
                  new Promise<number>((r) => {
                    cpuWaiters.push(r);
                    child.send({ kind: "phase-end" } satisfies InstanceRequest);
                  }),
              });
              break;
            case "failed":
              reject(new Error(`orchestrator instance ${i + 1} failed to start: ${m.error}`));
              break;
            case "events":
              for (const [at, nodeId, member] of m.recognitions) onRecognition(at, nodeId, member);
              for (const at of m.rejections) onRejection(at);
              break;
            case "cpu":
              cpuWaiters.shift()?.((m.user + m.system) / 1e6);
              break;
          }
        });
        child.once("exit", (code, signal) => {
          const e = new Error(`orchestrator instance ${i + 1} exited (${code ?? signal})`);
          crashed ??= e;
          reject(e);
        });
      });
      child.send({
        kind: "start",
        dataDir,
        databaseUrl: databaseUrl as string,
        brokerUrl: b.url,
        instance: names[i] as string,
        reload: { pidFile: b.pidFile },
      } satisfies InstanceRequest);
      instances.push(await ready);
      log(
        `orchestrator instance ${i + 1}/${instanceCount} started (own process, gallery loaded from the database) in ${instances[i]?.startSeconds.toFixed(1)} s`,
      );
    }
  }
  const startSeconds = instances.map((x) => x.startSeconds);
  const first = instances[0] as Instance;
  const apiOf =
    (x: Instance) =>
    (path: string, init: RequestInit & { json?: unknown } = {}) => {
      const { json, ...rest } = init;
      const headers = new Headers(rest.headers);
      headers.set("authorization", `Bearer ${x.adminToken}`);
      if (json !== undefined) headers.set("content-type", "application/json");
      return fetch(new URL(path, x.httpUrl), {
        ...rest,
        headers,
        ...(json !== undefined ? { body: JSON.stringify(json) } : {}),
      });
    };
  const h = { dataDir, api: apiOf(first) } as unknown as Harness;
  const metricsRes = await h.api("/api/metrics");
  if (!metricsRes.ok) throw new Error(`GET /api/metrics answered ${metricsRes.status}`);
  const { graph } = (await metricsRes.json()) as {
    graph: (Partial<GraphTuning> & { ef: number; source: string }) | null;
  };
  const graphLine = graph
    ? `graph ef ${graph.ef} (${graph.source}${graph.recall !== undefined ? `, recall@1 ${graph.recall.toFixed(3)} on ${graph.probes} probes${graph.reached ? "" : " BELOW target"}, tuned in ${graph.ms} ms` : ""})`
    : "exact search (no graph)";
  log(`${graphLine}${instanceCount ? " (instance 1)" : ""}`);
  const storeId = await createStore(h);
  // through the first instance's API, as HQ registers nodes: a password for the embedded broker, or the node's
  // certificate for mosquitto (client id `glance-node-<nodeId>`)
  const nodes: PublisherData["nodes"] = [];
  for (let n = 0; n < nodeCount; n++) {
    const { nodeId, cameraId, signingKey, mqtt, tls } = await registerNode(h, storeId, `bench-node-${n}`);
    nodes.push({
      nodeId,
      cameraId,
      signingKey,
      mqtt: instanceCount ? { url: mqtt.url, ...tls, clientId: `glance-node-${nodeId}` } : mqtt,
    });
  }
  nodeIndex = new Map(nodes.map((n, i) => [n.nodeId, i]));

  // probes: 80 % fresh samples of enrolled members, 20 % strangers (from a gallery nobody enrolled)
  const members = gallery.queries(1600).map((q) => q.vector);
  const strangers = (await import("../gallery/synthetic.ts"))
    .syntheticGallery({ people: 400, templatesPerPerson: 1, dim, seed: 999 })
    .queries(400)
    .map((q) => q.vector);
  const probes = [...members, ...strangers].sort(() => Math.random() - 0.5);

  // the burst `steady` + 2 times (first sight, the steady ones, again profiled) and the paced phase
  const bursts = steady + 2;
  const total = nodeCount * (bursts * burst + paced);
  const published = new SharedArrayBuffer(total * 8);
  const publishedAt = new Float64Array(published);

  worker = tsWorker(new URL("./ingest-publisher.ts", import.meta.url), {
    workerData: {
      nodes,
      recipient: first.sealingKey,
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
  log(`publisher connected${instanceCount ? " (mutual TLS to mosquitto)" : ""}`);

  // busy and idle time of the in-process orchestrator's event loops: this thread's, and its gallery thread's
  // (from /api/metrics; null when the gallery runs on this thread)
  type Loop = { activeMs: number; idleMs: number };
  const eventLoops = async (): Promise<{ main: Loop; gallery: Loop | null }> => {
    const { active, idle } = performance.eventLoopUtilization();
    const { galleryThread } = (await (await h.api("/api/metrics")).json()) as { galleryThread: Loop | null };
    return { main: { activeMs: active, idleMs: idle }, gallery: galleryThread };
  };
  const busyShare = (a: Loop, b: Loop) => {
    const active = b.activeMs - a.activeMs;
    return active / Math.max(1e-9, active + b.idleMs - a.idleMs);
  };
  const runPhase = async (req: PhaseRequest, profile: boolean) => {
    recognitionTimes = nodes.map(() => []);
    const target = recognised + rejected + req.perNode * nodeCount;
    let watchdog: NodeJS.Timeout | undefined;
    const done = new Promise<void>((resolve, reject) => {
      onProgress = () => {
        if (recognised + rejected >= target) resolve();
      };
      // a dead instance, or templates lost on the way, would otherwise leave the bench waiting for ever
      let seen = -1;
      let still = 0;
      watchdog = setInterval(() => {
        if (crashed) reject(crashed);
        still = recognised + rejected === seen ? still + 1 : 0;
        seen = recognised + rejected;
        if (still >= 60) {
          const drops = (broker?.log() ?? "").split("\n").filter((l) => /dropped/i.test(l));
          reject(
            new Error(
              `no progress for 60 s: ${seen} of ${target} templates recognised or rejected${drops.length ? `; mosquitto dropped messages (${drops.length} warnings; an instance fell more than max_queued_bytes behind), the first: ${drops[0]}` : ""}`,
            ),
          );
        }
      }, 1000);
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
    for (const x of instances) x.phaseStart();
    const loops0 = instanceCount === undefined ? await eventLoops() : undefined;
    const publishers0 = w.performance.eventLoopUtilization();
    const brokerCpu0 = await procCpuSeconds(broker?.broker.pid);
    const machine0 = await machineBusySeconds();
    const cpu0 = process.cpuUsage();
    // the nodes publish from here on: the phase's time, CPU and event-loop counters all start before the first send
    const start = now();
    w.postMessage({ kind: "go" });
    await done.finally(() => clearInterval(watchdog));
    const seconds = (lastEventAt - start) / 1000;
    const cpu = process.cpuUsage(cpu0);
    const cpuWall = (now() - start) / 1000;
    const instanceCpu = await Promise.all(instances.map((x) => x.phaseCpu()));
    const loops1 = loops0 ? await eventLoops() : undefined;
    const publishersBusy = w.performance.eventLoopUtilization(publishers0).utilization;
    const brokerCpu1 = await procCpuSeconds(broker?.broker.pid);
    const machine1 = await machineBusySeconds();
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
    recognitionTimes.forEach((times, n) => {
      times.sort((a, b) => a - b);
      times.forEach((at, i) => {
        const sent = i < req.perNode ? publishedAt[req.offset + n * req.perNode + i] : undefined;
        if (sent) lat.push(at - sent);
      });
    });
    lat.sort((a, b) => a - b);
    return {
      templates: req.perNode * nodeCount,
      seconds,
      rate: (req.perNode * nodeCount) / seconds,
      p50: percentile(lat, 0.5),
      p99: percentile(lat, 0.99),
      /** this process: the in-process orchestrator and the publishers, or (--instances) the publishers alone */
      orchestratorThreadCpuShare: (cpu.user + cpu.system) / 1e6 / cpuWall,
      /** the whole machine's busy CPU (cores) over the phase: this process, Postgres, mosquitto, everything else */
      machineCpu: machine0 && machine1 ? (machine1.busy - machine0.busy) / cpuWall : undefined,
      /** of `machineCpu`, the cores' time the hypervisor gave to other guests (this VM's CPUs were ready to run) */
      stolenCpu: machine0 && machine1 ? (machine1.steal - machine0.steal) / cpuWall : undefined,
      /** in-process orchestrator: share of the phase its main thread's and its gallery thread's event loops were busy */
      mainBusy: loops0 && loops1 ? busyShare(loops0.main, loops1.main) : undefined,
      galleryBusy: loops0?.gallery && loops1?.gallery ? busyShare(loops0.gallery, loops1.gallery) : undefined,
      /** the simulated nodes' worker thread (in this process) */
      publishersBusy,
      /** --instances: each instance process's CPU (cores) over the phase */
      instanceCpu: instanceCount ? instanceCpu.map((c) => (c ?? 0) / cpuWall) : undefined,
      /** --instances: mosquitto's CPU (cores) over the phase */
      brokerCpu: brokerCpu0 !== undefined && brokerCpu1 !== undefined ? (brokerCpu1 - brokerCpu0) / cpuWall : undefined,
      profileFile,
      hot,
      stages,
    };
  };

  // The burst runs `steady` + 2 times. The first meets every probe's person for the first time: each new visit and
  // visitor is written, and the code is not yet optimised. The next ones, the same people again within the visit
  // window, are the steady state of a running orchestrator (the third has run faster than the second: warming up
  // takes more than one burst). The last repeats it under the CPU profiler (which costs the orchestrator's thread
  // ~5-8 %) for the CPU budget; in-process orchestrator only.
  const burstAt = (i: number) => ({ kind: "burst" as const, perNode: burst, offset: i * nodeCount * burst });
  log(`burst: ${nodeCount} nodes × ${burst} templates`);
  const burstResult = await runPhase(burstAt(0), false);
  log(
    `burst done: ${burstResult.rate.toFixed(0)} templates/s, p50 ${burstResult.p50.toFixed(0)} ms, load average ${machine().loadavg1m}`,
  );
  const steadyResults: (typeof burstResult)[] = [];
  for (let i = 1; i <= steady; i++) {
    log(`burst again (${i} of ${steady}: the same people, within the visit window)`);
    steadyResults.push(await runPhase(burstAt(i), false));
    log(`${steadyResults.at(-1)?.rate.toFixed(0)} templates/s, load average ${machine().loadavg1m}`);
  }
  const profiledResult =
    instanceCount === undefined
      ? await (async () => {
          log("burst again, under the CPU profiler");
          return runPhase(burstAt(steady + 1), true);
        })()
      : undefined;
  // --paced 0 skips the latency phase
  const pacedResult =
    paced > 0
      ? await (async () => {
          log(`paced: ${rate} templates/s, ${nodeCount} nodes × ${paced}`);
          return runPhase({ kind: "paced", perNode: paced, offset: nodeCount * burst * bursts, rate }, false);
        })()
      : undefined;

  const phases = [
    ["burst, first sight", burstResult],
    ...steadyResults.map((r, i) => [`burst again (${i + 1})`, r]),
    ...(profiledResult ? [["burst again, profiled", profiledResult]] : []),
    ...(pacedResult ? [["paced", pacedResult]] : []),
  ] as [string, typeof burstResult][];
  // with --instances: each instance's CPU, their sum, mosquitto's and the publishers' (this process); else this process
  const cpuColumns = instanceCount
    ? [...instances.map((_, i) => `instance ${i + 1} CPU`), "instances CPU", "mosquitto CPU", "publishers CPU"]
    : ["process CPU (cores)", "main thread busy", "gallery thread busy"];
  cpuColumns.push("publisher thread busy", "machine CPU (cores)", "of it stolen");
  const printed = table(
    ["phase", "templates", "seconds", "templates/s", "p50 ms", "p99 ms", ...cpuColumns],
    phases.map(([name, x]) => [
      name,
      x.templates,
      x.seconds.toFixed(1),
      x.rate.toFixed(0),
      x.p50.toFixed(1),
      x.p99.toFixed(1),
      ...(instanceCount
        ? [
            ...(x.instanceCpu ?? []).map((c) => c.toFixed(2)),
            (x.instanceCpu ?? []).reduce((a, b) => a + b, 0).toFixed(2),
            x.brokerCpu?.toFixed(2) ?? "?",
          ]
        : []),
      x.orchestratorThreadCpuShare.toFixed(2),
      ...(instanceCount ? [] : [x.mainBusy?.toFixed(2) ?? "?", x.galleryBusy?.toFixed(2) ?? "(on main)"]),
      x.publishersBusy.toFixed(2),
      x.machineCpu?.toFixed(2) ?? "?",
      x.stolenCpu?.toFixed(2) ?? "?",
    ]),
  );
  const hotTable = table(
    ["self ms", "%", "function", "where"],
    (profiledResult?.hot?.functions ?? []).map((f) => [f.selfMs.toFixed(0), f.share.toFixed(1), f.name, f.where]),
  );
  const byPackage = table(
    ["self ms", "%", "package / area"],
    (profiledResult?.hot?.packages ?? []).map((f) => [f.selfMs.toFixed(0), f.share.toFixed(1), f.name]),
  );
  const burstTemplates = burstResult.templates;
  const profiledMs = (profiledResult?.stages ?? []).reduce((a, x) => a + x.ms, 0) || 1;
  const budget = table(
    ["ms / template", "%", "stage (orchestrator thread, burst again)"],
    (profiledResult?.stages ?? []).map((x) => [
      (x.ms / burstTemplates).toFixed(3),
      ((100 * x.ms) / profiledMs).toFixed(1),
      x.label,
    ]),
  );
  // partial when run against an ingest from before micro-batching (for before/after figures)
  const ms = await Promise.all(
    instances.map(
      async (x) =>
        ((await (await apiOf(x)("/api/metrics")).json()) as { ingest: Partial<IngestMetrics> & IngestMetrics }).ingest,
    ),
  );
  const topology = instanceCount
    ? `${instanceCount} orchestrator instance${instanceCount > 1 ? "s" : ""} (own processes) behind mosquitto`
    : "1 orchestrator (in-process, embedded broker)";
  console.log(
    `\nbench:ingest on ${JSON.stringify(machine())}; ${databaseUrl ? "Postgres" : "PGlite"}; ${topology}; gallery ${peopleCount * perPerson} templates (${centres}), ${graphLine}, ${nodeCount} nodes`,
  );
  ms.forEach((m, i) => {
    const who = instanceCount ? `instance ${i + 1} ` : "";
    console.log(
      m.statements
        ? `${who}ingest: ${m.batches} batches (${((m.accepted + Object.values(m.rejected).reduce((a, b) => a + b, 0)) / Math.max(1, m.batches)).toFixed(1)} templates each), ${m.statements.lookups} node lookups, ${m.statements.compareAndSets} replay statements, ${m.statements.conflicts} lost compare-and-sets`
        : `${who}ingest: one template at a time (no batch metrics)`,
    );
    if (m.recognition)
      console.log(
        `${who}recognition: ${m.recognition.batches} batches (${(m.recognition.templates / Math.max(1, m.recognition.batches)).toFixed(1)} templates each), ${m.recognition.failed} failed, ${m.recognition.fallbacks} retried one by one`,
      );
  });
  console.log(`recognitions ${recognised} (members ${members$}), rejections ${rejected}\n`);
  console.log(
    instanceCount
      ? `${printed}\n\nCPU in cores over each phase (mosquitto's from /proc); publishers = this process (the simulated nodes' worker). No CPU profile or stage budget with --instances: the orchestrators run in other processes.\n`
      : `${printed}\n\nCPU budget per template, burst again (profiled):\n${budget}\n\nCPU profile of that burst, orchestrator thread (self time):\n${hotTable}\n\n${byPackage}\n`,
  );
  const file = await writeResults("ingest", {
    machine: machine(),
    gallery: { templates: peopleCount * perPerson, people: peopleCount, dim, space, threshold, centres, graph },
    nodes: nodeCount,
    instances: instanceCount ?? 1,
    broker: instanceCount ? "mosquitto" : "embedded",
    bulkLoadSeconds: bulkSeconds,
    orchestratorStartSeconds: instanceCount ? startSeconds : startSeconds[0],
    recognised,
    members: members$,
    rejected,
    burst: burstResult,
    /** the unprofiled steady bursts, in order */
    steady: steadyResults,
    burstProfiled: profiledResult,
    paced: pacedResult,
    database: databaseUrl ? "postgres" : "pglite",
    ingest: instanceCount ? ms : ms[0],
    tables: instanceCount ? { phases: printed } : { phases: printed, budget, hot: hotTable, packages: byPackage },
  });
  console.log(`results: ${file}${profiledResult?.profileFile ? `\nprofile: ${profiledResult.profileFile}` : ""}`);
  w.postMessage({ kind: "close" });
  await next("closed");
} finally {
  await worker?.terminate();
  await orch?.stop();
  await Promise.all(children.map(stopChild));
  if (broker && !exited(broker.broker)) {
    const gone = new Promise((resolve) => broker?.broker.once("exit", resolve));
    broker.broker.kill("SIGTERM");
    await gone;
  }
  await rm(root, { recursive: true, force: true });
  await pg?.drop();
}
