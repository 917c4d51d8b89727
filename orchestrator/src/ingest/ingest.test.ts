import { EventEmitter } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  DesiredState,
  generateSealingKeyPair,
  generateSigningKeyPair,
  type SealedTemplate,
  topicFor,
} from "@glance/shared";
import mqtt, { type MqttClient } from "mqtt";
import { pino } from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { hashSecret, newSecret, secretMatches } from "../auth/secrets.ts";
import { type Broker, ORCHESTRATOR_USERNAME, startBroker } from "../broker/broker.ts";
import { clientSource, matchesFilter } from "../broker/source.ts";
import { type Database, openDatabase } from "../db/client.ts";
import { nodes, stores } from "../db/schema.ts";
import type { Recognition, Rejection } from "../index.ts";
import {
  connectNode,
  createStore,
  type Harness,
  nextEvent,
  randomEmbedding,
  registerNode,
  requiredPostgresUrl,
  runPostgres,
  sealTemplate,
  startHarness,
  type TestNode,
} from "../testing/harness.ts";
import { type Ingest, startIngest } from "./ingest.ts";
import type { AcceptedTemplate } from "./open-template.ts";

function ingestSuite(label: string, pg: () => string | undefined) {
  describe(`template ingest (${label})`, () => {
    let h: Harness;
    let node: TestNode;
    let other: TestNode;
    let client: MqttClient;
    let space: string;
    let seq = 0;

    const publishRaw = async (topic: string, payload: Buffer | string) =>
      client.publishAsync(topic, payload, { qos: 1 });
    const template = (overrides: Partial<Parameters<typeof sealTemplate>[0]> = {}): SealedTemplate =>
      sealTemplate({
        node,
        seq: ++seq,
        embedding: randomEmbedding(),
        recipient: h.orch.sealingKey,
        space,
        ...overrides,
      });
    const publish = (t: SealedTemplate) => publishRaw(topicFor("template", node.nodeId), JSON.stringify(t));

    /** Publishes and resolves with the rejection it caused. */
    async function rejectedWith(send: () => Promise<unknown>): Promise<Rejection> {
      const rejection = nextEvent<Rejection>(h.orch.events, "rejection");
      await send();
      return rejection;
    }

    beforeAll(async () => {
      h = await startHarness({ databaseUrl: pg() });
      const res = await h.api("/api/health");
      space = ((await res.json()) as { space: string }).space;
      const storeId = await createStore(h);
      node = await registerNode(h, storeId);
      other = await registerNode(h, storeId);
      client = await connectNode(node);
    });

    afterAll(async () => {
      await client?.endAsync();
      await h?.close();
    });

    it("accepts a valid sealed template from a registered node as a visit", async () => {
      const recognised = nextEvent<Recognition>(h.orch.events, "recognition");
      await publish(template());
      const r = await recognised;
      expect(r).toMatchObject({ nodeId: node.nodeId, visitor: "unknown", personId: null });
      expect(h.orch.metrics().accepted).toBe(1);
    });

    it("rejects a tampered ciphertext under the node's valid, already verified session (AES-GCM tag)", async () => {
      const t = template();
      const ct = Buffer.from(t.ct, "base64url");
      ct[0] = (ct[0] as number) ^ 0xff;
      const r = await rejectedWith(() => publish({ ...t, ct: ct.toString("base64url") }));
      expect(r).toEqual({ code: "DECRYPT_FAILED", nodeId: node.nodeId });
    });

    it("rejects a tampered header under a valid session: the header is the AAD", async () => {
      const t = template();
      expect((await rejectedWith(() => publish({ ...t, quality: 0.1 }))).code).toBe("DECRYPT_FAILED");
      expect((await rejectedWith(() => publish({ ...t, trackId: "another-track" }))).code).toBe("DECRYPT_FAILED");
    });

    it("rejects a forged session signature, even while the node's genuine session is cached", async () => {
      const t = template();
      const sig = Buffer.from(t.session.sig, "base64url");
      sig[7] = (sig[7] as number) ^ 1;
      const forged = { ...t, session: { ...t.session, sig: sig.toString("base64url") } };
      expect(await rejectedWith(() => publish(forged))).toEqual({ code: "SIGNATURE_INVALID", nodeId: node.nodeId });
    });

    it("rejects a template stamped outside its session's validity window", async () => {
      const t = template();
      expect((await rejectedWith(() => publish({ ...t, ts: t.session.na + 1 }))).code).toBe("SIGNATURE_INVALID");
      expect((await rejectedWith(() => publish({ ...t, ts: t.session.nb - 1 }))).code).toBe("SIGNATURE_INVALID");
    });

    it("rejects another node's session carried in this node's message", async () => {
      const theirs = sealTemplate({
        node: other,
        seq: 1,
        embedding: randomEmbedding(),
        recipient: h.orch.sealingKey,
        space,
      });
      const r = await rejectedWith(() => publish({ ...theirs, nodeId: node.nodeId, seq: ++seq }));
      expect(r).toEqual({ code: "SIGNATURE_INVALID", nodeId: node.nodeId });
    });

    it("rejects a template signed with a key other than the node's registered one", async () => {
      const forged = template({ node: { ...node, signingKey: generateSigningKeyPair() } });
      expect((await rejectedWith(() => publish(forged))).code).toBe("SIGNATURE_INVALID");
    });

    it("rejects a correctly signed template sealed to another orchestrator's key", async () => {
      const elsewhere = { kid: h.orch.sealingKey.kid, publicKey: generateSealingKeyPair().publicKey };
      expect((await rejectedWith(() => publish(template({ recipient: elsewhere })))).code).toBe("DECRYPT_FAILED");
    });

    it("rejects a template sealed to a key id it does not hold", async () => {
      expect(
        (await rejectedWith(() => publish(template({ recipient: { ...h.orch.sealingKey, kid: "sk-retired" } })))).code,
      ).toBe("KEY_UNKNOWN");
    });

    it("rejects a template from a node it does not know", async () => {
      // a registered client cannot publish on an unregistered node's topic (ACL), so it arrives as a broker-side
      // publish, like a message bridged in from another broker
      const ghost = { ...node, nodeId: "ghost-node" };
      const t = sealTemplate({
        node: ghost,
        seq: 1,
        embedding: randomEmbedding(),
        recipient: h.orch.sealingKey,
        space,
      });
      const r = await rejectedWith(
        () =>
          new Promise<void>((resolve, reject) =>
            h.orch.broker.publish(
              {
                cmd: "publish",
                topic: topicFor("template", "ghost-node"),
                payload: Buffer.from(JSON.stringify(t)),
                qos: 1,
                retain: false,
                dup: false,
              },
              (e) => (e ? reject(e) : resolve()),
            ),
          ),
      );
      expect(r).toEqual({ code: "NODE_UNKNOWN", nodeId: "ghost-node" });
    });

    it("rejects a replayed sequence number, also after a restart", async () => {
      const t = template();
      const accepted = nextEvent<Recognition>(h.orch.events, "recognition");
      await publish(t);
      await accepted;
      expect((await rejectedWith(() => publish(t))).code).toBe("REPLAYED_SEQUENCE");
      // seq 1, accepted by the first test: within the replay window, but seen
      const older = template({ seq: 1 });
      expect((await rejectedWith(() => publish(older))).code).toBe("REPLAYED_SEQUENCE");

      await client.endAsync();
      await h.restart();
      client = await connectNode({ mqtt: { ...node.mqtt, url: h.orch.mqttUrl } });
      expect((await rejectedWith(() => publish(t))).code).toBe("REPLAYED_SEQUENCE");
    });

    it("rejects a payload that is not JSON", async () => {
      expect((await rejectedWith(() => publishRaw(topicFor("template", node.nodeId), "not json {"))).code).toBe(
        "PAYLOAD_NOT_JSON",
      );
    });

    it("rejects an oversized payload without parsing it", async () => {
      const big = JSON.stringify({ ...template(), pad: "x".repeat(10_000) });
      expect((await rejectedWith(() => publishRaw(topicFor("template", node.nodeId), big))).code).toBe(
        "PAYLOAD_TOO_LARGE",
      );
    });

    it("rejects a payload that does not match the contract", async () => {
      const t = template();
      const { sig: _sig, ...unsignedSession } = t.session;
      const unsigned = { ...t, session: unsignedSession };
      expect(
        (await rejectedWith(() => publishRaw(topicFor("template", node.nodeId), JSON.stringify(unsigned)))).code,
      ).toBe("PAYLOAD_INVALID");
    });

    it("rejects a payload naming another node than the topic it came on", async () => {
      const t = sealTemplate({
        node: other,
        seq: 1,
        embedding: randomEmbedding(),
        recipient: h.orch.sealingKey,
        space,
      });
      const r = await rejectedWith(() => publishRaw(topicFor("template", node.nodeId), JSON.stringify(t)));
      expect(r).toEqual({ code: "TOPIC_MISMATCH", nodeId: node.nodeId });
    });

    it("rejects a template from another embedding space", async () => {
      expect((await rejectedWith(() => publish(template({ space: "other-embedder@9.9.9" })))).code).toBe(
        "SPACE_UNKNOWN",
      );
    });

    it("keeps running after every rejection: the next valid template is accepted and each code was counted", async () => {
      const before = h.orch.metrics().accepted;
      const recognised = nextEvent<Recognition>(h.orch.events, "recognition");
      await publish(template());
      expect((await recognised).nodeId).toBe(node.nodeId);
      const m = h.orch.metrics();
      expect(m.accepted).toBe(before + 1);
      // counts since the restart in the replay test
      expect(m.rejected).toEqual({
        REPLAYED_SEQUENCE: 1,
        PAYLOAD_NOT_JSON: 1,
        PAYLOAD_TOO_LARGE: 1,
        PAYLOAD_INVALID: 1,
        TOPIC_MISMATCH: 1,
        SPACE_UNKNOWN: 1,
      });
      const api = (await (await h.api("/api/metrics")).json()) as { ingest: { rejected: Record<string, number> } };
      expect(api.ingest.rejected).toEqual(m.rejected);
    });

    it("accepts a node's templates delivered out of order within the replay window, each once", async () => {
      const base = seq + 2000;
      seq = base + 3;
      const recognised: number[] = [];
      const rejected: string[] = [];
      const onRecognition = (r: Recognition) => {
        if (r.nodeId === node.nodeId) recognised.push(r.score);
      };
      const onRejection = (r: Rejection) => rejected.push(r.code);
      h.orch.events.on("recognition", onRecognition);
      h.orch.events.on("rejection", onRejection);
      try {
        // a redelivered QoS 1 message and a burst split across instances arrive like this
        const sent = [base + 3, base + 1, base + 2, base + 1, base + 3 - 1024].map((s) => template({ seq: s }));
        for (const t of sent) await publish(t);
        await expect.poll(() => recognised.length + rejected.length, { timeout: 10_000 }).toBe(5);
        expect(recognised).toHaveLength(3);
        expect(rejected).toEqual(["REPLAYED_SEQUENCE", "REPLAYED_SEQUENCE"]);
      } finally {
        h.orch.events.off("recognition", onRecognition);
        h.orch.events.off("rejection", onRejection);
      }
    });

    it("templates of two nodes arriving together are recognised in each node's own order", async () => {
      const seen = new Map<string, number[]>();
      const onRecognition = (r: Recognition) => {
        const list = seen.get(r.nodeId) ?? [];
        list.push(Number(r.cameraId.slice(4)));
        seen.set(r.nodeId, list);
      };
      h.orch.events.on("recognition", onRecognition);
      // the orchestrator may have restarted (on another port) since the node was registered
      const otherClient = await connectNode({ mqtt: { ...other.mqtt, url: h.orch.mqttUrl } });
      try {
        // the camera id carries the publish order (the orchestrator passes it through unchecked)
        const burst = (n: TestNode, c: MqttClient) =>
          Array.from({ length: 40 }, (_, i) =>
            c.publishAsync(
              topicFor("template", n.nodeId),
              JSON.stringify(template({ node: { ...n, cameraId: `cam-${i}` }, seq: n === node ? ++seq : 10_000 + i })),
              { qos: 1 },
            ),
          );
        await Promise.all([...burst(node, client), ...burst(other, otherClient)]);
        await expect.poll(() => (seen.get(node.nodeId)?.length ?? 0) + (seen.get(other.nodeId)?.length ?? 0)).toBe(80);
        const inOrder = Array.from({ length: 40 }, (_, i) => i);
        expect(seen.get(node.nodeId)).toEqual(inOrder);
        expect(seen.get(other.nodeId)).toEqual(inOrder);
      } finally {
        h.orch.events.off("recognition", onRecognition);
        await otherClient.endAsync();
      }
    });

    it("publishes the node's desired state, retained, with the sealing key", async () => {
      const desired = new Promise<Buffer>((resolve) => client.once("message", (_t, p) => resolve(p)));
      await client.subscribeAsync(topicFor("desired", node.nodeId), { qos: 1 });
      const state = JSON.parse((await desired).toString("utf8"));
      expect(state).toMatchObject({
        privacyMode: "visitor",
        sealingKey: h.orch.sealingKey,
        templateIntervalMs: 5000,
        minFaceSizePx: 40,
      });
      expect(DesiredState.safeParse(state).success).toBe(true);
    });

    it("rejects a revoked node's templates although its session key is cached, and keeps rejecting them", async () => {
      // the broker's port changed with the restart in the replay test
      const theirs = await connectNode({ mqtt: { ...other.mqtt, url: h.orch.mqttUrl } });
      // above every seq other tests spent for this node, so the first one is new
      let otherSeq = 1_000_000;
      const sealOther = () =>
        sealTemplate({
          node: other,
          seq: ++otherSeq,
          embedding: randomEmbedding(),
          recipient: h.orch.sealingKey,
          space,
        });
      const recognised = nextEvent<Recognition>(h.orch.events, "recognition");
      const first = sealOther();
      await theirs.publishAsync(topicFor("template", other.nodeId), JSON.stringify(first), { qos: 1 });
      expect((await recognised).nodeId).toBe(other.nodeId);

      const closed = new Promise<void>((resolve) => theirs.once("close", () => resolve()));
      expect((await h.api(`/api/nodes/${other.nodeId}/revoke`, { method: "POST" })).status).toBe(200);
      await closed;
      await theirs.endAsync(true);
      // its connection is gone, so what it sealed arrives as a broker-side publish (a bridge, a stale broker)
      const inject = (t: SealedTemplate) =>
        new Promise<void>((resolve, reject) =>
          h.orch.broker.publish(
            {
              cmd: "publish",
              topic: topicFor("template", other.nodeId),
              payload: Buffer.from(JSON.stringify(t)),
              qos: 1,
              retain: false,
              dup: false,
            },
            (e) => (e ? reject(e) : resolve()),
          ),
        );
      for (let i = 0; i < 3; i++) {
        const next = sealOther();
        // the same session as the accepted template: its key is in the orchestrator's cache
        expect(next.session).toEqual(first.session);
        expect(await rejectedWith(() => inject(next))).toEqual({ code: "NODE_REVOKED", nodeId: other.nodeId });
      }
    });
  });
}

describe("topic filters on the orchestrator's client", () => {
  it("match one level per +, literally elsewhere", () => {
    const f = "glance/v1/node/+/template";
    expect(matchesFilter(f, "glance/v1/node/n-1/template")).toBe(true);
    expect(matchesFilter(f, "glance/v1/node/n-1/status")).toBe(false);
    expect(matchesFilter(f, "glance/v1/node/a/b/template")).toBe(false);
    expect(matchesFilter(f, "glance/v1/node/n-1/template/x")).toBe(false);
    // no character of a filter is a pattern but +
    expect(matchesFilter("a.b/+", "axb/c")).toBe(false);
    expect(matchesFilter("$share/g/a/+", "$share/g/a/c")).toBe(true);
  });
});

describe("recognition batches of the ingest (real broker, PGlite)", () => {
  const logger = pino({ level: "silent" });
  const sealing = { kid: "sk-test", ...generateSealingKeyPair() };
  const space = "test-space@1";
  let dataDir: string;
  let database: Database;
  let broker: Broker;
  let orchestrator: MqttClient;
  let ingest: Ingest;
  const simulated = ["node-a", "node-b"].map((nodeId) => ({
    nodeId,
    cameraId: "entrance",
    signingKey: generateSigningKeyPair(),
    password: newSecret(),
  }));
  const clients: MqttClient[] = [];
  const seqs = new Map<string, number>();
  /** recognitions as they happened, "<node>/<camera>"; a camera called "poison" fails any batch it is in, and itself */
  const recognised: string[] = [];
  const batches: string[][] = [];
  const label = (t: AcceptedTemplate) => `${t.node.id}/${t.header.cameraId}`;
  /** while set, each recognition batch waits until the test releases it */
  let holding = false;
  const held: (() => void)[] = [];
  /** each batch's preparation, as it started */
  const prepared: string[][] = [];
  /** while set, each preparation waits until the test releases it */
  let holdingPreparation = false;
  const heldPreparations: (() => void)[] = [];
  /** batches whose recognition was handed another batch's preparation (none, or a bug) */
  const mismatched: string[][] = [];
  const MAX_BATCH = 2;
  const MAX_RECOGNITION_BATCH = 4;

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), "glance-ingest-batches-"));
    database = await openDatabase({ dataDir });
    const { db } = database;
    await db.insert(stores).values({ id: "soho", name: "Soho" });
    await db.insert(nodes).values(
      simulated.map((n) => ({
        id: n.nodeId,
        storeId: "soho",
        cameraId: n.cameraId,
        signingPublicKey: n.signingKey.publicKey,
        mqttPasswordHash: hashSecret(n.password),
      })),
    );
    const orchestratorSecret = newSecret();
    broker = await startBroker({
      host: "127.0.0.1",
      port: 0,
      orchestratorSecret,
      logger,
      async verifyNode(nodeId, password) {
        const n = simulated.find((s) => s.nodeId === nodeId);
        return !!n && secretMatches(password, hashSecret(n.password));
      },
    });
    orchestrator = await mqtt.connectAsync(broker.url, {
      username: ORCHESTRATOR_USERNAME,
      password: orchestratorSecret,
      protocolVersion: 4,
    });
    ingest = await startIngest({
      source: clientSource(orchestrator),
      deps: { db, sealingKey: sealing, space },
      events: new EventEmitter(),
      logger,
      async onAccepted(t) {
        if (t.header.cameraId === "poison") throw new Error("this template cannot be recognised");
        recognised.push(label(t));
      },
      maxBatch: MAX_BATCH,
      maxRecognitionBatch: MAX_RECOGNITION_BATCH,
      async prepareBatch(templates) {
        prepared.push(templates.map(label));
        if (holdingPreparation) await new Promise<void>((release) => heldPreparations.push(release));
        if (templates.some((t) => t.header.cameraId === "unprepared")) throw new Error("the gallery search failed");
        return templates.map(label).join();
      },
      async onAcceptedBatch(templates, preparation) {
        batches.push(templates.map(label));
        if (preparation !== undefined && preparation !== templates.map(label).join())
          mismatched.push(templates.map(label));
        if (holding) await new Promise<void>((release) => held.push(release));
        if (templates.some((t) => t.header.cameraId === "poison")) throw new Error("the batch failed as a whole");
        recognised.push(...templates.map(label));
        return [];
      },
    });
    for (const n of simulated)
      clients.push(await connectNode({ mqtt: { url: broker.url, username: n.nodeId, password: n.password } }));
  });

  // a failed test must not leave batches held for the next one
  afterEach(() => {
    holding = false;
    holdingPreparation = false;
    for (const release of [...held.splice(0), ...heldPreparations.splice(0)]) release();
  });

  afterAll(async () => {
    await ingest?.stop();
    for (const c of clients) await c.endAsync();
    await orchestrator?.endAsync();
    await broker?.close();
    await database?.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  const publish = (n: number, cameraId: string) => {
    const node = simulated[n] as (typeof simulated)[number];
    const seq = (seqs.get(node.nodeId) ?? 0) + 1;
    seqs.set(node.nodeId, seq);
    const t = sealTemplate({
      node: { ...node, cameraId },
      seq,
      embedding: randomEmbedding(128),
      recipient: sealing,
      space,
    });
    return (clients[n] as MqttClient).publishAsync(topicFor("template", node.nodeId), JSON.stringify(t), { qos: 1 });
  };

  it("a failed batch is retried one template at a time: only the bad one is lost, in order, and the loop goes on", async () => {
    const sent: string[] = [];
    const all: Promise<unknown>[] = [];
    for (let i = 0; i < 30; i++) {
      const n = i % 2;
      const cameraId = i === 13 ? "poison" : `cam-${i}`;
      sent.push(`${simulated[n]?.nodeId}/${cameraId}`);
      all.push(publish(n, cameraId));
    }
    await Promise.all(all);
    await expect.poll(() => ingest.metrics.accepted, { timeout: 10_000 }).toBe(30);
    await ingest.idle();
    // every template but the bad one, in arrival order; the two connections interleave as the broker pleases, but
    // each node's templates stay in the order it sent them
    const arrived = batches.flat();
    expect(recognised).toEqual(arrived.filter((s) => !s.endsWith("/poison")));
    for (const { nodeId } of simulated) {
      const of = (list: string[]) => list.filter((s) => s.startsWith(`${nodeId}/`));
      expect(of(arrived)).toEqual(of(sent));
    }
    expect(ingest.metrics.recognition).toMatchObject({ templates: 30, failed: 1, fallbacks: 1 });

    await publish(0, "after");
    await expect.poll(() => recognised.at(-1), { timeout: 10_000 }).toBe("node-a/after");
    expect(ingest.metrics.recognition.failed).toBe(1);
  });

  it("checks the next recognition batch while one is being recognised, and runs no further ahead", async () => {
    await ingest.idle();
    const before = ingest.metrics.accepted;
    const batchesBefore = batches.length;
    holding = true;
    const all: Promise<unknown>[] = [];
    for (let i = 0; i < 20; i++) all.push(publish(0, `held-${i}`));
    await Promise.all(all);
    const accepted = () => ingest.metrics.accepted - before;
    const size = (n: number) => (batches[batchesBefore + n] as string[]).length;

    // the first batch is held; the next one is checked meanwhile, up to a full recognition batch
    await expect.poll(() => held.length, { timeout: 10_000 }).toBe(1);
    await expect.poll(accepted, { timeout: 10_000 }).toBeGreaterThanOrEqual(size(0) + MAX_RECOGNITION_BATCH);
    // once recognition takes that one, the one after it is checked while it is held (before, checking waited until
    // recognition had nothing left, so checking and recognition took turns)
    held.shift()?.();
    await expect.poll(() => held.length, { timeout: 10_000 }).toBe(1);
    const upTo = size(0) + size(1) + MAX_RECOGNITION_BATCH;
    await expect.poll(accepted, { timeout: 10_000 }).toBeGreaterThanOrEqual(upTo);
    // and no further: the rest waits in the inbox until recognition takes another batch
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(accepted()).toBeLessThan(upTo + MAX_BATCH);

    holding = false;
    for (const release of held.splice(0)) release();
    await expect.poll(accepted, { timeout: 10_000 }).toBe(20);
    await ingest.idle();
    for (const release of held.splice(0)) release();
    expect(recognised.slice(-20)).toEqual(Array.from({ length: 20 }, (_, i) => `node-a/held-${i}`));
  });

  it("prepares a batch while the one before it is recognised, and hands each batch its own preparation", async () => {
    await ingest.idle();
    const from = prepared.length;
    const before = ingest.metrics.accepted;
    holding = true;
    holdingPreparation = true;
    const all: Promise<unknown>[] = [];
    for (let i = 0; i < 12; i++) all.push(publish(1, `ahead-${i}`));
    await Promise.all(all);
    // the first batch's preparation is held until the next templates have been checked
    await expect.poll(() => heldPreparations.length, { timeout: 10_000 }).toBe(1);
    const first = (prepared[from] as string[]).length;
    await expect.poll(() => ingest.metrics.accepted - before, { timeout: 10_000 }).toBeGreaterThan(first);
    holdingPreparation = false;
    heldPreparations.shift()?.();
    // while the first batch is held in recognition, the second one's preparation has started
    await expect.poll(() => held.length, { timeout: 10_000 }).toBe(1);
    await expect.poll(() => prepared.length - from, { timeout: 10_000 }).toBe(2);
    holding = false;
    for (const release of held.splice(0)) release();
    await expect.poll(() => recognised.at(-1), { timeout: 10_000 }).toBe("node-b/ahead-11");
    await ingest.idle();
    expect(recognised.slice(-12)).toEqual(Array.from({ length: 12 }, (_, i) => `node-b/ahead-${i}`));
    expect(mismatched).toEqual([]);
    // every batch was prepared once, in order
    expect(prepared.slice(from).flat()).toEqual(recognised.slice(-12));
  });

  it("a batch whose preparation fails is recognised one template at a time, and none is lost", async () => {
    await ingest.idle();
    const fallbacks = ingest.metrics.recognition.fallbacks;
    const all: Promise<unknown>[] = [];
    for (let i = 0; i < 3; i++) all.push(publish(0, i === 1 ? "unprepared" : `plain-${i}`));
    await Promise.all(all);
    await expect.poll(() => recognised.at(-1), { timeout: 10_000 }).toBe("node-a/plain-2");
    await ingest.idle();
    expect(recognised.slice(-3)).toEqual(["node-a/plain-0", "node-a/unprepared", "node-a/plain-2"]);
    expect(ingest.metrics.recognition.fallbacks).toBe(fallbacks + 1);
    expect(mismatched).toEqual([]);
  });
});

ingestSuite("PGlite", () => undefined);
describe.runIf(runPostgres)("on real Postgres", () => {
  ingestSuite("Postgres", requiredPostgresUrl);
});
