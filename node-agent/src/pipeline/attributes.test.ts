import { once } from "node:events";
import { mkdtemp, rm, symlink } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  AttributesModel,
  buildModels,
  DEFAULT_DETECTOR,
  decodeImage,
  defaultEmbedder,
  defaultModelsDir,
  FacePipeline,
} from "@glance/models";
import {
  AgeBand,
  type DesiredState,
  decodeMessage,
  Emotion,
  encodeMessage,
  filterFor,
  Gender,
  generateSealingKeyPair,
  generateSigningKeyPair,
  type NodeEvent,
  type NodeStatus,
  parseTopic,
  topicFor,
} from "@glance/shared";
import { Aedes } from "aedes";
import { connectAsync } from "mqtt";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startAgent } from "../agent.ts";
import { TrackAttributes } from "./attributes.ts";

const VIDEO = new URL("../../../demo/people/video/hamilton-clip.mp4", import.meta.url).pathname;
const log = pino({ level: "silent" });

let broker: Aedes;
let server: Server;
let url: string;
/** detector + embedder only: the attributes model is not there to load */
let withoutAttributes: string;
/** detector + embedder + the attributes model, built for this test */
let withAttributes: string;

async function modelsDir(names: string[]): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "glance-attr-models-"));
  for (const n of names) await symlink(join(defaultModelsDir(), n), join(dir, n));
  return dir;
}

beforeAll(async () => {
  broker = await Aedes.createBroker();
  server = createServer(broker.handle);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  if (!address || typeof address === "string") throw new Error("no port");
  url = `mqtt://127.0.0.1:${address.port}`;
  const base = [DEFAULT_DETECTOR, defaultEmbedder().split("@")[0] as string];
  withoutAttributes = await modelsDir(base);
  withAttributes = await modelsDir(base);
  await buildModels({ distDir: withAttributes, only: ["attributes"] });
}, 300_000);

afterAll(async () => {
  await new Promise<void>((resolve) => broker.close(() => resolve()));
  await new Promise<void>((resolve) => server.close(() => resolve()));
  for (const d of [withoutAttributes, withAttributes]) if (d) await rm(d, { recursive: true, force: true });
});

/** the demo clip through a real agent, with the given desired state; what an orchestrator would receive */
async function runClip(nodeId: string, attributes: boolean | undefined, models: string) {
  const client = await connectAsync(url, { clientId: `observer-${nodeId}` });
  const events: NodeEvent[] = [];
  const statuses: NodeStatus[] = [];
  const templates: Buffer[] = [];
  client.on("message", (topic, payload) => {
    const t = parseTopic(topic);
    if (t?.nodeId !== nodeId) return;
    if (t.name === "event") events.push(decodeMessage("event", topic, payload));
    if (t.name === "status") statuses.push(decodeMessage("status", topic, payload));
    if (t.name === "template") templates.push(payload);
  });
  await client.subscribeAsync(
    [filterFor("event", nodeId), filterFor("status", nodeId), filterFor("template", nodeId)],
    {
      qos: 1,
    },
  );
  const desired: DesiredState = {
    version: 1,
    storeId: "store-1",
    privacyMode: "visitor",
    sealingKey: { kid: "orch-1", publicKey: generateSealingKeyPair().publicKey },
    templateIntervalMs: 2000,
    minFaceSizePx: 40,
    ...(attributes === undefined ? {} : { attributes }),
  };
  await client.publishAsync(topicFor("desired", nodeId), encodeMessage("desired", desired), { qos: 1, retain: true });
  const agent = await startAgent({
    nodeId,
    cameraId: "cam-1",
    mqtt: { url, username: nodeId, password: "unused-by-this-broker" },
    signingKey: generateSigningKeyPair(),
    source: { kind: "replay", path: VIDEO, fps: 10, width: 640, pace: "every-frame" },
    modelsDir: models,
    dataDir: await mkdtemp(join(tmpdir(), "glance-agent-")),
    heartbeatMs: 500,
    logger: log,
  });
  const failed = once(agent.events, "error").then(([e]) => {
    throw e;
  });
  await Promise.race([once(agent.events, "source-ended"), failed]);
  await new Promise((r) => setTimeout(r, 300));
  await agent.stop();
  await client.publishAsync(topicFor("desired", nodeId), Buffer.alloc(0), { retain: true });
  await client.endAsync();
  return { events: events.filter((e) => e.kind === "track-ended"), statuses, templates, stats: agent.stats() };
}

describe("optional attributes on the demo clip (store opt-in, off by default)", () => {
  it("off by default: no track-ended event carries attributes, and the model is never loaded (it is not even installed)", async () => {
    const got = await runClip("node-attr-off", undefined, withoutAttributes);
    expect(got.stats.tracks).toBeGreaterThan(0);
    expect(got.events).toHaveLength(got.stats.tracks);
    for (const e of got.events) expect(e.attributes).toBeUndefined();
    expect(got.statuses.length).toBeGreaterThan(0);
    for (const s of got.statuses) expect(s.models?.attributes).toBeUndefined();
    expect(got.stats.stageMs.attributes).toBeUndefined();
  }, 180_000);

  it("switched on: track-ended events carry a coarse age band, gender and emotion; templates carry none", async () => {
    const got = await runClip("node-attr-on", true, withAttributes);
    const withAttrs = got.events.filter((e) => e.attributes);
    for (const e of got.events) console.log(`track ${e.trackId} dwell ${e.dwellMs} ms`, JSON.stringify(e.attributes));
    expect(got.events).toHaveLength(got.stats.tracks);
    expect(withAttrs.length).toBeGreaterThan(0);
    for (const { attributes: a } of withAttrs) {
      if (!a) continue;
      expect(AgeBand.options).toContain(a.ageBand);
      expect(Gender.options).toContain(a.gender);
      expect(Emotion.options).toContain(a.emotion);
      expect(a.samples).toBeGreaterThanOrEqual(1);
      expect(a.samples).toBeLessThanOrEqual(5);
      expect(Object.keys(a).sort()).toEqual(
        [
          "ageBand",
          "ageBandConfidence",
          "emotion",
          "emotionConfidence",
          "gender",
          "genderConfidence",
          "samples",
        ].sort(),
      );
    }
    // the clip's people are adults: no track with attributes may come out as a child
    expect(withAttrs.filter((e) => e.attributes?.ageBand === "0-17")).toEqual([]);
    expect(got.statuses.some((s) => s.models?.attributes === "attributes@3.0.4")).toBe(true);
    expect(got.stats.stageMs.attributes?.p50).toBeGreaterThan(0);
    expect(got.templates.length).toBeGreaterThan(0);
    for (const t of got.templates)
      for (const k of ["ageBand", "gender", "emotion"]) expect(t.toString()).not.toContain(k);
  }, 240_000);

  it("switched off at run time: the model is released and what was gathered is dropped", async () => {
    const pipeline = await FacePipeline.load({ modelsDir: withAttributes });
    const image = await decodeImage(new URL("../../../demo/people/enroll/rose_leslie/1.jpg", import.meta.url).pathname);
    const [face] = await pipeline.detect(image);
    if (!face) throw new Error("no face in the photo");
    let enabled = true;
    let loads = 0;
    const attributes = new TrackAttributes({
      enabled: () => enabled,
      landmarkNames: pipeline.detector.decoding.landmarkNames as string[],
      load: () => {
        loads++;
        return AttributesModel.load({ modelsDir: withAttributes });
      },
      minFaceSizePx: () => 40,
      log,
    });
    const frame = (ts: number) => ({ image, ts, index: ts });
    const ended = (trackId: string, ts: number) => [{ trackId, firstSeenTs: 0, lastSeenTs: ts, hits: 2 }];
    try {
      await attributes.observe({ frame: frame(0), faces: [{ trackId: "t1", face }], ended: [] });
      await attributes.observe({ frame: frame(1500), faces: [{ trackId: "t1", face }], ended: ended("t1", 1500) });
      expect(attributes.model).toBe("attributes@3.0.4");
      expect(attributes.take("t1")).toMatchObject({ gender: "female", samples: 2 });
      expect(attributes.take("t1")).toBeUndefined();

      await attributes.observe({ frame: frame(3000), faces: [{ trackId: "t2", face }], ended: [] });
      enabled = false;
      await attributes.observe({ frame: frame(4000), faces: [{ trackId: "t2", face }], ended: ended("t2", 4000) });
      expect(attributes.model).toBeUndefined();
      expect(attributes.take("t2")).toBeUndefined();
      expect(loads).toBe(1);
    } finally {
      await Promise.all([attributes.close(), pipeline.close()]);
    }
  }, 120_000);
});
