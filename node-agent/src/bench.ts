/**
 * Throughput of the whole node pipeline on the demo clip, through a real (in-process) broker:
 *   npx tsx node-agent/src/bench.ts [--width 640] [--fps 30] [--pace every-frame|realtime]
 * every-frame: how fast this machine can go (no frame dropped); realtime: what a live camera would see.
 */
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { encodeMessage, generateSealingKeyPair, generateSigningKeyPair, topicFor } from "@glance/shared";
import { Aedes } from "aedes";
import { connectAsync } from "mqtt";
import { pino } from "pino";
import { startAgent } from "./agent.ts";

const { values } = parseArgs({
  options: {
    width: { type: "string", default: "640" },
    fps: { type: "string" },
    pace: { type: "string", default: "every-frame" },
    video: { type: "string", default: new URL("../../demo/people/video/hamilton-clip.mp4", import.meta.url).pathname },
  },
});
const pace = values.pace === "realtime" ? "realtime" : "every-frame";

const broker = await Aedes.createBroker();
const server = createServer(broker.handle);
await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
const url = `mqtt://127.0.0.1:${(server.address() as { port: number }).port}`;
const nodeId = "bench-node";
const orchestrator = await connectAsync(url);
await orchestrator.publishAsync(
  topicFor("desired", nodeId),
  encodeMessage("desired", {
    version: 1,
    storeId: "bench",
    privacyMode: "visitor",
    sealingKey: { kid: "bench", publicKey: generateSealingKeyPair().publicKey },
    templateIntervalMs: 5000,
    minFaceSizePx: 40,
  }),
  { qos: 1, retain: true },
);

const dataDir = await mkdtemp(join(tmpdir(), "glance-bench-"));
const agent = await startAgent({
  nodeId,
  cameraId: "bench-cam",
  mqtt: { url, username: nodeId, password: "bench" },
  signingKey: generateSigningKeyPair(),
  source: {
    kind: "replay",
    path: values.video,
    width: Number(values.width),
    fps: values.fps ? Number(values.fps) : undefined,
    pace,
  },
  dataDir,
  logger: pino({ level: "warn" }),
});
const started = performance.now();
await once(agent.events, "source-ended");
const seconds = (performance.now() - started) / 1000;
const stats = agent.stats();
await agent.stop();
await orchestrator.endAsync();
await new Promise<void>((resolve) => broker.close(() => resolve()));
server.close();
await rm(dataDir, { recursive: true, force: true });

const cpu = cpus()[0]?.model ?? "unknown CPU";
console.log(
  `${values.video.split("/").pop()} at ${values.width} px, fps ${values.fps ?? "native"}, pace ${pace}, ${cpus().length} × ${cpu}`,
);
console.log(
  `frames ${stats.frames} (dropped ${stats.dropped}) in ${seconds.toFixed(2)} s = ${(stats.frames / seconds).toFixed(1)} frames/s processed`,
);
console.log(`faces ${stats.faces}, tracks ${stats.tracks}, templates ${stats.templates}`);
console.log("stage ms (p50 / p95):");
for (const [stage, { p50, p95 }] of Object.entries(stats.stageMs)) console.log(`  ${stage.padEnd(8)} ${p50} / ${p95}`);
console.log("skipped:", JSON.stringify(stats.skipped));
