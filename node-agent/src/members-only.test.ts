import { once } from "node:events";
import { mkdtemp, readFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { decodeImage, FacePipeline } from "@glance/models";
import {
  type CommandAck,
  type DesiredState,
  decodeEmbedding,
  decodeMessage,
  type EdgeGalleryEntry,
  encodeEmbedding,
  encodeMessage,
  filterFor,
  gallerySigningKeyPair,
  generateSealingKeyPair,
  generateSigningKeyPair,
  type KeyPair,
  type NodeStatus,
  nodeSealingKeyPair,
  openSessionTemplate,
  parseTopic,
  type SealedTemplate,
  sealEdgeGallery,
  templateHeader,
  topicFor,
  verifySealingKey,
} from "@glance/shared";
import { Aedes } from "aedes";
import { connectAsync, type MqttClient } from "mqtt";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Agent, type AgentStats, startAgent } from "./index.ts";
import type { AgentEngine } from "./pipeline/types.ts";

const VIDEO = new URL("../../demo/people/video/hamilton-clip.mp4", import.meta.url).pathname;
const ENROL = new URL("../../demo/people/enroll/", import.meta.url).pathname;
const log = pino({ level: "silent" });

let broker: Aedes;
let server: Server;
let url: string;
let faces: FacePipeline;
/** the loaded models, shared by every run (the agent closes its engine on stop: this one it may not) */
let engine: AgentEngine;
let threshold: number;
/** enrolment templates of the demo people, as the orchestrator would hold them */
const enrolled = new Map<string, Float32Array>();

beforeAll(async () => {
  broker = await Aedes.createBroker();
  server = createServer(broker.handle);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  if (!address || typeof address === "string") throw new Error("no port");
  url = `mqtt://127.0.0.1:${address.port}`;
  faces = await FacePipeline.load();
  engine = {
    space: faces.space,
    detector: faces.detector,
    embedder: faces.embedder,
    detect: faces.detect.bind(faces),
    quality: faces.quality.bind(faces),
    embed: faces.embed.bind(faces),
    close: async () => {},
  };
  threshold = faces.threshold("1e-3");
  for (const [person, photo] of [
    ["lin_manuel_miranda", "1.png"],
    ["barack_obama", "1.jpg"],
    ["joe_biden", "1.jpg"],
  ] as const) {
    const [face] = await faces.process(await decodeImage(await readFile(join(ENROL, person, photo))));
    if (!face) throw new Error(`no face in ${person}/${photo}`);
    enrolled.set(person, face.embedding);
  }
}, 120_000);

afterAll(async () => {
  await faces?.close();
  await new Promise<void>((resolve) => broker.close(() => resolve()));
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

const cosine = (a: Float32Array, b: Float32Array) => a.reduce((s, x, i) => s + x * (b[i] as number), 0);

/** The orchestrator's side, by hand: its keys, the node's desired state and edge galleries. */
function hq(nodeId: string, signing: KeyPair) {
  const sealing = generateSealingKeyPair();
  const gallerySigner = gallerySigningKeyPair(sealing);
  const desired: DesiredState = {
    version: 1,
    storeId: "store-1",
    privacyMode: "members-only",
    sealingKey: { kid: "orch-1", publicKey: sealing.publicKey },
    templateIntervalMs: 1000,
    minFaceSizePx: 40,
    gallerySigningKey: gallerySigner.publicKey,
  };
  const gallery = (version: number, people: string[], by: KeyPair = gallerySigner) => {
    const entries: EdgeGalleryEntry[] = people.map((p) => ({
      personId: p,
      embedding: encodeEmbedding(enrolled.get(p) as Float32Array),
    }));
    const message = sealEdgeGallery(
      {
        v: 1,
        nodeId,
        storeId: "store-1",
        version,
        ts: Date.now(),
        space: engine.space,
        threshold,
        recipient: nodeSealingKeyPair(signing).publicKey,
      },
      entries,
      by,
    );
    return encodeMessage("gallery", message);
  };
  return { sealing, desired, gallery };
}

interface Captured {
  templates: SealedTemplate[];
  statuses: NodeStatus[];
  acks: CommandAck[];
  tracksEnded: number;
}

async function listen(nodeId: string): Promise<{ client: MqttClient; got: Captured }> {
  const client = await connectAsync(url, { clientId: `hq-${nodeId}` });
  const got: Captured = { templates: [], statuses: [], acks: [], tracksEnded: 0 };
  client.on("message", (topic, payload) => {
    const t = parseTopic(topic);
    if (t?.nodeId !== nodeId) return;
    if (t.name === "template") got.templates.push(decodeMessage("template", topic, payload));
    if (t.name === "status") got.statuses.push(decodeMessage("status", topic, payload));
    if (t.name === "ack") got.acks.push(decodeMessage("ack", topic, payload));
    if (t.name === "event" && decodeMessage("event", topic, payload).kind === "track-ended") got.tracksEnded++;
  });
  await client.subscribeAsync(
    [filterFor("template", nodeId), filterFor("status", nodeId), filterFor("ack", nodeId), filterFor("event", nodeId)],
    { qos: 1 },
  );
  return { client, got };
}

async function start(nodeId: string, signingKey: KeyPair): Promise<Agent> {
  return startAgent({
    nodeId,
    cameraId: "cam-1",
    mqtt: { url, username: nodeId, password: "unused-by-this-broker" },
    signingKey,
    engine,
    source: { kind: "replay", path: VIDEO, fps: 10, width: 640, pace: "every-frame" },
    dataDir: await mkdtemp(join(tmpdir(), "glance-agent-")),
    logger: log,
  });
}

async function finish(agent: Agent): Promise<AgentStats> {
  const failed = once(agent.events, "error").then(([e]) => {
    throw e;
  });
  await Promise.race([once(agent.events, "source-ended"), failed]);
  await new Promise((r) => setTimeout(r, 300));
  await agent.stop();
  return agent.stats();
}

async function until(what: string, check: () => boolean, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("members-only node on the demo video (Lin-Manuel Miranda enrolled, Obama and Biden as decoys)", () => {
  it("publishes nothing for non-members: every template sent is the member's, every other face is discarded on the node", async () => {
    const nodeId = "node-members";
    const signing = generateSigningKeyPair();
    const orch = hq(nodeId, signing);
    const { client, got } = await listen(nodeId);
    await client.publishAsync(topicFor("desired", nodeId), encodeMessage("desired", orch.desired), {
      qos: 1,
      retain: true,
    });
    await client.publishAsync(
      topicFor("gallery", nodeId),
      orch.gallery(1, ["lin_manuel_miranda", "barack_obama", "joe_biden"]),
      {
        qos: 1,
        retain: true,
      },
    );

    const stats = await finish(await start(nodeId, signing));

    const miranda = enrolled.get("lin_manuel_miranda") as Float32Array;
    expect(stats.gallery).toEqual({ version: 1, members: 3 });
    expect(got.templates.length).toBeGreaterThan(0);
    expect(got.templates.length).toBe(stats.members);
    for (const template of got.templates) {
      const probe = decodeEmbedding(
        openSessionTemplate(template, templateHeader(template), orch.sealing, signing.publicKey),
      );
      expect(cosine(probe, miranda)).toBeGreaterThanOrEqual(threshold - 0.01);
    }
    console.log(
      `members-only on the clip: ${stats.tracks} tracks, ${stats.members} member matches, ${got.templates.length} templates, ${stats.skipped["non-member"] ?? 0} non-member faces dropped, match p50 ${stats.stageMs.match?.p50} ms`,
    );
    // the other faces of the clip were embedded, matched on the node and dropped there
    expect(stats.skipped["non-member"] ?? 0).toBeGreaterThan(0);
    expect(new Set(got.templates.map((t) => t.trackId)).size).toBeLessThan(stats.tracks);
    // anonymous counts still flow for every track
    expect(got.tracksEnded).toBe(stats.tracks);
    // the status carries the node's sealing key, signed by its identity key, and the gallery it holds
    const status = got.statuses.find((s) => s.online && s.edgeGallery?.version === 1);
    expect(status?.edgeGallery).toEqual({ version: 1, members: 3 });
    const key = status?.sealingKey;
    expect(key?.publicKey).toBe(nodeSealingKeyPair(signing).publicKey);
    expect(verifySealingKey(nodeId, key?.publicKey ?? "", key?.sig ?? "", signing.publicKey)).toBe(true);
    expect(got.statuses.at(-1)).toMatchObject({ online: false, sealingKey: key });
    await client.publishAsync(topicFor("gallery", nodeId), Buffer.alloc(0), { retain: true });
    await client.publishAsync(topicFor("desired", nodeId), Buffer.alloc(0), { retain: true });
    await client.endAsync();
  }, 300_000);

  it("refuses a forged gallery (reporting why) and, once the member is erased, acknowledges and never publishes them again", async () => {
    const nodeId = "node-erase";
    const signing = generateSigningKeyPair();
    const orch = hq(nodeId, signing);
    const { client, got } = await listen(nodeId);
    await client.publishAsync(topicFor("desired", nodeId), encodeMessage("desired", orch.desired), {
      qos: 1,
      retain: true,
    });
    await client.publishAsync(topicFor("gallery", nodeId), orch.gallery(1, ["lin_manuel_miranda", "barack_obama"]), {
      qos: 1,
      retain: true,
    });
    const agent = await start(nodeId, signing);
    const refused: { code: string }[] = [];
    agent.events.on("gallery-refused", (r: { code: string }) => refused.push(r));
    const erased: { personId: string; held: boolean }[] = [];
    agent.events.on("erased", (e: { personId: string; held: boolean }) => erased.push(e));
    await until("the first gallery", () => agent.stats().gallery.version === 1);

    // a gallery without the member, signed by a key that is not the orchestrator's: refused, the old one kept
    await client.publishAsync(
      topicFor("gallery", nodeId),
      orch.gallery(2, ["barack_obama"], generateSigningKeyPair()),
      {
        qos: 1,
        retain: true,
      },
    );
    await until("the refusal", () => refused.length > 0);
    expect(refused[0]?.code).toBe("SIGNATURE_INVALID");
    expect(agent.stats().gallery).toMatchObject({
      version: 1,
      members: 2,
      refused: expect.stringMatching(/^SIGNATURE_INVALID/),
    });
    await until("the refusal in the status", () =>
      got.statuses.some((s) => s.edgeGallery?.refused?.startsWith("SIGNATURE_INVALID")),
    );

    // erasure as the orchestrator does it: the new gallery first, then the command; the ack says it is done
    await client.publishAsync(topicFor("gallery", nodeId), orch.gallery(3, ["barack_obama"]), { qos: 1, retain: true });
    await client.publishAsync(
      topicFor("command", nodeId),
      encodeMessage("command", { id: "erase-1", ts: Date.now(), kind: "erase-member", personId: "lin_manuel_miranda" }),
      { qos: 1 },
    );
    await until("the ack", () => got.acks.some((a) => a.commandId === "erase-1"));
    expect(got.acks.find((a) => a.commandId === "erase-1")).toMatchObject({ ok: true });
    expect(erased).toHaveLength(1);
    const membersAtAck = agent.stats().members;
    expect(agent.stats().gallery).toEqual({ version: 3, members: 1 });

    const stats = await finish(agent);
    // nothing of the erased member passed the gate after the ack, and the clip went on: he is now a non-member
    expect(stats.members).toBe(membersAtAck);
    expect(got.templates.length).toBeLessThanOrEqual(membersAtAck);
    expect(stats.skipped["non-member"] ?? 0).toBeGreaterThan(0);
    await client.publishAsync(topicFor("gallery", nodeId), Buffer.alloc(0), { retain: true });
    await client.publishAsync(topicFor("desired", nodeId), Buffer.alloc(0), { retain: true });
    await client.endAsync();
  }, 300_000);
});
