import { once } from "node:events";
import { writeFileSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { defaultEmbedder, defaultModelsDir, loadManifest } from "@glance/models";
import {
  type DesiredState,
  decodeEmbedding,
  decodeMessage,
  encodeMessage,
  filterFor,
  generateSealingKeyPair,
  generateSigningKeyPair,
  isGlanceError,
  type KeyPair,
  type NodeEvent,
  type NodeStatus,
  openSessionTemplate,
  parseTopic,
  type SealedTemplate,
  templateHeader,
  topicFor,
} from "@glance/shared";
import { Aedes } from "aedes";
import { connectAsync, type MqttClient } from "mqtt";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Agent, type AgentOptions, startAgent } from "./index.ts";

const VIDEO = new URL("../../demo/people/video/hamilton-clip.mp4", import.meta.url).pathname;
const log = pino({ level: "silent" });

let broker: Aedes;
let server: Server;
let url: string;

beforeAll(async () => {
  broker = await Aedes.createBroker();
  server = createServer(broker.handle);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  if (!address || typeof address === "string") throw new Error("no port");
  url = `mqtt://127.0.0.1:${address.port}`;
});

afterAll(async () => {
  await new Promise<void>((resolve) => broker.close(() => resolve()));
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

interface Captured {
  templates: { topic: string; payload: Buffer; template: SealedTemplate }[];
  events: NodeEvent[];
  statuses: NodeStatus[];
}

/** An orchestrator stand-in: listens to everything nodes send. */
async function listen(nodeId: string): Promise<{ client: MqttClient; got: Captured }> {
  const client = await connectAsync(url, { clientId: `observer-${nodeId}` });
  const got: Captured = { templates: [], events: [], statuses: [] };
  client.on("message", (topic, payload) => {
    const t = parseTopic(topic);
    if (t?.nodeId !== nodeId) return;
    if (t.name === "template")
      got.templates.push({ topic, payload, template: decodeMessage("template", topic, payload) });
    if (t.name === "event") got.events.push(decodeMessage("event", topic, payload));
    if (t.name === "status") got.statuses.push(decodeMessage("status", topic, payload));
  });
  await client.subscribeAsync(
    [filterFor("template", nodeId), filterFor("event", nodeId), filterFor("status", nodeId)],
    { qos: 1 },
  );
  return { client, got };
}

function desired(sealing: KeyPair, privacyMode: DesiredState["privacyMode"] = "visitor"): DesiredState {
  return {
    version: 1,
    storeId: "store-1",
    privacyMode,
    sealingKey: { kid: "orch-1", publicKey: sealing.publicKey },
    templateIntervalMs: 2000,
    minFaceSizePx: 40,
  };
}

async function runOnce(opts: Partial<AgentOptions> & { nodeId: string; signingKey: KeyPair }): Promise<Agent> {
  const agent = await startAgent({
    cameraId: "cam-1",
    mqtt: { url, username: opts.nodeId, password: "unused-by-this-broker" },
    source: { kind: "replay", path: VIDEO, fps: 10, width: 640, pace: "every-frame" },
    dataDir: await mkdtemp(join(tmpdir(), "glance-agent-")),
    logger: log,
    ...opts,
  });
  const failed = once(agent.events, "error").then(([e]) => {
    throw e;
  });
  await Promise.race([once(agent.events, "source-ended"), failed]);
  // the last templates may still be on their way to the broker
  await new Promise((r) => setTimeout(r, 300));
  await agent.stop();
  return agent;
}

describe("node agent on the demo video", () => {
  it("publishes sealed templates that only the orchestrator's key opens, with no embedding in clear", async () => {
    const nodeId = "node-e2e";
    const sealing = generateSealingKeyPair();
    const signing = generateSigningKeyPair();
    const { client, got } = await listen(nodeId);
    await client.publishAsync(topicFor("desired", nodeId), encodeMessage("desired", desired(sealing)), {
      qos: 1,
      retain: true,
    });

    const agent = await runOnce({ nodeId, signingKey: signing });
    const stats = agent.stats();

    expect(got.templates.length).toBeGreaterThan(0);
    expect(stats.templates).toBe(got.templates.length);
    // one template per track per 2 s at most: a 10 s clip cannot give any track more than 5 + 1 at its end
    const perTrack = new Map<string, number>();
    for (const { template } of got.templates) perTrack.set(template.trackId, (perTrack.get(template.trackId) ?? 0) + 1);
    for (const n of perTrack.values()) expect(n).toBeLessThanOrEqual(6);

    const seqs = got.templates.map((t) => t.template.seq);
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    expect(new Set(seqs).size).toBe(seqs.length);

    // the node embeds in the space of the default embedder (GLANCE_EMBEDDER, else dlib-resnet-int8), as the orchestrator
    const { manifest: embedder } = await loadManifest(defaultModelsDir(), defaultEmbedder());
    const space = `${embedder.name}@${embedder.version}`;
    expect(embedder.embedding?.space).toBe(space);
    const wrong = generateSealingKeyPair();
    for (const { payload, template } of got.templates) {
      expect(template).toMatchObject({ v: 2, nodeId, cameraId: "cam-1", kid: "orch-1", space });
      const header = templateHeader(template);
      const plaintext = openSessionTemplate(template, header, sealing, signing.publicKey);
      const embedding = decodeEmbedding(plaintext);
      expect(embedding.length).toBe(embedder.embedding?.dim);
      expect(Math.hypot(...embedding)).toBeCloseTo(1, 3);

      expect(() => openSessionTemplate(template, header, wrong, signing.publicKey)).toThrow(
        expect.objectContaining({ code: "DECRYPT_FAILED" }),
      );
      // the embedding is nowhere in the message: not raw, not base64, not as numbers
      expect(payload.includes(plaintext)).toBe(false);
      expect(payload.includes(Buffer.from(plaintext.toString("base64url")))).toBe(false);
      expect(payload.includes(Buffer.from(plaintext.toString("base64")))).toBe(false);
      expect(payload.toString()).not.toContain((embedding[0] as number).toFixed(4));
    }
    // one session (one signature) for the whole run, every message still carrying it
    expect(new Set(got.templates.map(({ template }) => template.session.epk)).size).toBe(1);

    // anonymous dwell for every track; retained status ends offline after stop
    expect(got.events.filter((e) => e.kind === "track-ended").length).toBe(stats.tracks);
    expect(got.statuses.at(0)?.online).toBe(true);
    expect(got.statuses.at(-1)?.online).toBe(false);
    expect(stats.frames).toBeGreaterThanOrEqual(95);
    expect(stats.dropped).toBe(0);
    await client.publishAsync(topicFor("desired", nodeId), Buffer.alloc(0), { retain: true });
    await client.endAsync();
  });

  it("sends no templates before the orchestrator's desired state arrives, only anonymous counts", async () => {
    const nodeId = "node-undesired";
    const { client, got } = await listen(nodeId);
    const agent = await runOnce({ nodeId, signingKey: generateSigningKeyPair() });
    expect(agent.stats().faces).toBeGreaterThan(0);
    expect(got.templates).toEqual([]);
    expect(got.events.some((e) => e.kind === "track-ended" && (e.dwellMs ?? 0) > 0)).toBe(true);
    await client.endAsync();
  });

  it("in count-only mode sends dwell events and never a template", async () => {
    const nodeId = "node-count-only";
    const { client, got } = await listen(nodeId);
    await client.publishAsync(
      topicFor("desired", nodeId),
      encodeMessage("desired", desired(generateSealingKeyPair(), "count-only")),
      { qos: 1, retain: true },
    );
    const agent = await runOnce({ nodeId, signingKey: generateSigningKeyPair() });
    expect(agent.stats().tracks).toBeGreaterThan(0);
    expect(got.templates).toEqual([]);
    expect(got.events.filter((e) => e.kind === "track-ended")).toHaveLength(agent.stats().tracks);
    await client.publishAsync(topicFor("desired", nodeId), Buffer.alloc(0), { retain: true });
    await client.endAsync();
  });

  it("stops sending templates as soon as the orchestrator switches the node to count-only", async () => {
    const nodeId = "node-switch";
    const sealing = generateSealingKeyPair();
    const { client, got } = await listen(nodeId);
    await client.publishAsync(topicFor("desired", nodeId), encodeMessage("desired", desired(sealing)), {
      qos: 1,
      retain: true,
    });
    const agent = await startAgent({
      nodeId,
      cameraId: "cam-1",
      mqtt: { url, username: nodeId, password: "x" },
      signingKey: generateSigningKeyPair(),
      source: { kind: "replay", path: VIDEO, fps: 10, width: 640, pace: "every-frame", loop: true },
      dataDir: await mkdtemp(join(tmpdir(), "glance-agent-")),
      logger: log,
    });
    try {
      await once(agent.events, "template");
      const switched = once(agent.events, "desired");
      await client.publishAsync(
        topicFor("desired", nodeId),
        encodeMessage("desired", { ...desired(sealing, "count-only"), version: 2 }),
        { qos: 1, retain: true },
      );
      const [state] = (await switched) as [DesiredState];
      expect(state.privacyMode).toBe("count-only");
      // a template sealed just before the switch may still be on the wire
      await new Promise((r) => setTimeout(r, 500));
      const templatesAtSwitch = got.templates.length;
      const facesAtSwitch = agent.stats().faces;
      await new Promise((r) => setTimeout(r, 3000));
      expect(agent.stats().faces).toBeGreaterThan(facesAtSwitch);
      expect(got.templates.length).toBe(templatesAtSwitch);
    } finally {
      await agent.stop();
      await client.publishAsync(topicFor("desired", nodeId), Buffer.alloc(0), { retain: true });
      await client.endAsync();
    }
  });

  it("a restarted node carries on its sequence numbers instead of reusing them", async () => {
    const nodeId = "node-restart";
    const dataDir = await mkdtemp(join(tmpdir(), "glance-agent-"));
    const signingKey = generateSigningKeyPair();
    const { client, got } = await listen(nodeId);
    await client.publishAsync(
      topicFor("desired", nodeId),
      encodeMessage("desired", desired(generateSealingKeyPair())),
      {
        qos: 1,
        retain: true,
      },
    );
    const firstSeqOfARun = async () => {
      const agent = await startAgent({
        nodeId,
        cameraId: "cam-1",
        mqtt: { url, username: nodeId, password: "x" },
        signingKey,
        source: { kind: "replay", path: VIDEO, fps: 10, width: 640, pace: "every-frame", loop: true },
        dataDir,
        logger: log,
      });
      const [first] = (await once(agent.events, "template")) as [{ seq: number }];
      await agent.stop();
      return first.seq;
    };
    const before = await firstSeqOfARun();
    const sentBefore = got.templates.map((t) => t.template.seq);
    const after = await firstSeqOfARun();
    expect(after).toBeGreaterThan(Math.max(before, ...sentBefore));
    await client.publishAsync(topicFor("desired", nodeId), Buffer.alloc(0), { retain: true });
    await client.endAsync();
  });

  it("reports a camera that fails mid-run: CAMERA_UNAVAILABLE on the agent and a camera-down event to HQ", async () => {
    const nodeId = "node-badcam";
    const dir = await mkdtemp(join(tmpdir(), "glance-agent-"));
    const bogus = join(dir, "camera.mp4");
    writeFileSync(bogus, "not a video at all");
    const { client, got } = await listen(nodeId);
    const agent = await startAgent({
      nodeId,
      cameraId: "cam-1",
      mqtt: { url, username: nodeId, password: "x" },
      signingKey: generateSigningKeyPair(),
      source: { kind: "replay", path: bogus },
      dataDir: dir,
      logger: log,
    });
    const [error] = await once(agent.events, "error");
    expect(isGlanceError(error, "CAMERA_UNAVAILABLE")).toBe(true);
    await agent.stop();
    expect(got.events).toContainEqual(expect.objectContaining({ kind: "camera-down", detail: "CAMERA_UNAVAILABLE" }));
    await client.endAsync();
  });

  it("refuses to start on a camera that does not exist", async () => {
    const error = await startAgent({
      nodeId: "node-nocam",
      cameraId: "cam-1",
      mqtt: { url, username: "node-nocam", password: "x" },
      signingKey: generateSigningKeyPair(),
      source: { kind: "replay", path: "/nonexistent/cam.mp4" },
      dataDir: await mkdtemp(join(tmpdir(), "glance-agent-")),
      logger: log,
    }).catch((e: unknown) => e);
    expect(isGlanceError(error, "CAMERA_UNAVAILABLE")).toBe(true);
  });
});

describe("commands from the orchestrator", () => {
  it("acknowledges an erasure (no edge gallery holds the person), refuses what it cannot do, ignores malformed commands", async () => {
    const nodeId = "node-commands";
    const hq = await connectAsync(url, { clientId: "hq-commands" });
    const acks: Array<{ commandId: string; ok: boolean; error?: string }> = [];
    hq.on("message", (topic, payload) => {
      if (parseTopic(topic)?.name === "ack") acks.push(decodeMessage("ack", topic, payload));
    });
    await hq.subscribeAsync(filterFor("ack", nodeId), { qos: 1 });
    const agent = await startAgent({
      nodeId,
      cameraId: "cam-1",
      mqtt: { url, username: nodeId, password: "unused-by-this-broker" },
      signingKey: generateSigningKeyPair(),
      source: { kind: "replay", path: VIDEO, fps: 2, width: 320, pace: "realtime", loop: true },
      dataDir: await mkdtemp(join(tmpdir(), "glance-agent-")),
      logger: log,
    });
    try {
      const command = (id: string, kind: "erase-member" | "restart-pipeline") =>
        hq.publishAsync(
          topicFor("command", nodeId),
          encodeMessage("command", { id, ts: Date.now(), kind, personId: "p-1" }),
          { qos: 1 },
        );
      // the agent subscribes once connected; retry the first command until it is heard
      const deadline = Date.now() + 15_000;
      while (!acks.some((a) => a.commandId === "erase-1") && Date.now() < deadline) {
        await command("erase-1", "erase-member");
        await new Promise((r) => setTimeout(r, 300));
      }
      await hq.publishAsync(topicFor("command", nodeId), Buffer.from("{not json"), { qos: 1 });
      await command("restart-1", "restart-pipeline");
      while (!acks.some((a) => a.commandId === "restart-1") && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 100));
      expect(acks.find((a) => a.commandId === "erase-1")).toMatchObject({ ok: true });
      expect(acks.find((a) => a.commandId === "restart-1")).toMatchObject({
        ok: false,
        error: expect.stringContaining("not supported"),
      });
    } finally {
      await agent.stop();
      await hq.endAsync();
    }
  });
});
