import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  attestSealingKey,
  decodeEdgeGallery,
  decodeMessage,
  type EdgeGallery,
  edgeGalleryHeader,
  encodeMessage,
  gallerySigningKeyPair,
  generateSealingKeyPair,
  generateSigningKeyPair,
  nodeSealingKeyPair,
  open,
  topicFor,
} from "@glance/shared";
import { Aedes } from "aedes";
import mqtt, { type MqttClient } from "mqtt";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bulkLoadGallery } from "../bench/bulk-load.ts";
import { ORCHESTRATOR_USERNAME } from "../broker/broker.ts";
import { type Database, openDatabase } from "../db/client.ts";
import { nodes, stores } from "../db/schema.ts";
import { galleryBytesWithin, MOSQUITTO_MAX_PACKET_BYTES } from "../mosquitto/config.ts";
import { loadOrCreateFleetCa, signingKeyPem } from "../pki/fleet-ca.ts";
import { MasterKey } from "../privacy/keyring.ts";
import { haveMosquitto, startMosquitto } from "../testing/mosquitto.ts";
import { aedesPublisher, type EdgeGalleries, startEdgeGalleries } from "./edge-galleries.ts";

const MEMBERS = 2000;
const DIM = 128;
const SPACE = "synthetic@1";

let dir: string;
let database: Database;
let aedes: Aedes;
let server: Server;
let url: string;
let orchestratorClient: MqttClient;
let edge: EdgeGalleries | undefined;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "glance-edge-capacity-"));
  database = await openDatabase({ dataDir: dir });
  aedes = await Aedes.createBroker();
  server = createServer(aedes.handle);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  if (!address || typeof address === "string") throw new Error("no port");
  url = `mqtt://127.0.0.1:${address.port}`;
  orchestratorClient = await mqtt.connectAsync(url, { clientId: "orchestrator-capacity" });
}, 60_000);

afterAll(async () => {
  await edge?.stop();
  await orchestratorClient?.endAsync();
  await new Promise<void>((resolve) => aedes.close(() => resolve()));
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await database?.close();
  await rm(dir, { recursive: true, force: true });
});

describe("edge gallery capacity", () => {
  it(`delivers a ${MEMBERS}-member gallery (${DIM}-d) to a members-only node in one retained message`, async () => {
    const masterKey = new MasterKey(new Uint8Array(32).fill(7));
    const { db } = database;
    await bulkLoadGallery(db, masterKey, { space: SPACE, people: MEMBERS, templatesPerPerson: 1, dim: DIM });
    const identity = generateSigningKeyPair();
    await db.insert(stores).values({ id: "store-big", name: "Flagship", privacyMode: "members-only" });
    await db.insert(nodes).values({
      id: "node-big",
      storeId: "store-big",
      cameraId: "cam-1",
      signingPublicKey: identity.publicKey,
      mqttPasswordHash: "unused",
    });
    const sealing = generateSealingKeyPair();
    edge = await startEdgeGalleries({
      client: orchestratorClient,
      db,
      masterKey,
      sealingKey: sealing,
      space: SPACE,
      threshold: () => 0.5,
      logger: pino({ level: "silent" }),
      publish: aedesPublisher(aedes),
      pollMs: 60_000,
    });

    const node = await mqtt.connectAsync(url, { clientId: "node-big" });
    const received: { gallery: EdgeGallery; bytes: number; at: number }[] = [];
    node.on("message", (topic, payload) => {
      if (payload.length > 0)
        received.push({
          gallery: decodeMessage("gallery", topic, payload),
          bytes: payload.length,
          at: performance.now(),
        });
    });
    await node.subscribeAsync(topicFor("gallery", "node-big"), { qos: 1 });
    const key = nodeSealingKeyPair(identity);
    const started = performance.now();
    await node.publishAsync(
      topicFor("status", "node-big"),
      encodeMessage("status", {
        nodeId: "node-big",
        online: true,
        ts: Date.now(),
        sealingKey: { publicKey: key.publicKey, sig: attestSealingKey("node-big", key.publicKey, identity) },
      }),
      { qos: 1, retain: true },
    );
    await expect.poll(() => received.length, { timeout: 60_000 }).toBe(1);
    const { gallery, bytes, at } = received[0] as (typeof received)[number];
    const entries = decodeEdgeGallery(
      open(gallery, edgeGalleryHeader(gallery), key, gallerySigningKeyPair(sealing).publicKey),
    );
    expect(entries).toHaveLength(MEMBERS);
    expect(new Set(entries.map((e) => e.personId)).size).toBe(MEMBERS);
    // far over the 64 KiB a client connection may send: the gallery went into the broker directly
    expect(bytes).toBeGreaterThan(64 * 1024);
    console.log(
      `edge gallery: ${MEMBERS} members x ${DIM}-d = ${bytes} bytes (${(bytes / MEMBERS).toFixed(1)} B/member), status→gallery ${Math.round(at - started)} ms`,
    );
    await node.endAsync();
  }, 180_000);

  it.runIf(haveMosquitto)(
    `delivers the same ${MEMBERS}-member gallery through mosquitto (generated config, mutual TLS)`,
    async () => {
      // the members loaded by the test above; a second members-only node of the same store, behind mosquitto
      const { db } = database;
      const masterKey = new MasterKey(new Uint8Array(32).fill(7));
      const ca = await loadOrCreateFleetCa(join(dir, "orchestrator"));
      const mosquitto = await startMosquitto(join(dir, "mosquitto"), ca);
      const identity = generateSigningKeyPair();
      await db.insert(nodes).values({
        id: "node-mosq",
        storeId: "store-big",
        cameraId: "cam-2",
        signingPublicKey: identity.publicKey,
        mqttPasswordHash: "unused",
      });
      const tlsOf = async () => ({
        ca: ca.caPem,
        cert: (await ca.issueNodeCertificate("node-mosq", identity.publicKey)).certPem,
        key: signingKeyPem(identity),
      });
      const orchestrator = await mqtt.connectAsync(mosquitto.url, {
        ...(await ca.issueOrchestratorCertificate(ORCHESTRATOR_USERNAME)),
        clientId: "orchestrator-capacity-mosquitto",
        protocolVersion: 4,
        reconnectPeriod: 0,
      });
      const sealing = generateSealingKeyPair();
      const viaMosquitto = await startEdgeGalleries({
        client: orchestrator,
        db,
        masterKey,
        sealingKey: sealing,
        space: SPACE,
        threshold: () => 0.5,
        logger: pino({ level: "silent" }),
        // through the client connection, as an orchestrator behind mosquitto does (index.ts)
        maxBytes: galleryBytesWithin(MOSQUITTO_MAX_PACKET_BYTES),
        pollMs: 60_000,
      });
      const node = await mqtt.connectAsync(mosquitto.url, {
        ...(await tlsOf()),
        clientId: "glance-node-node-mosq",
        protocolVersion: 4,
        reconnectPeriod: 0,
      });
      try {
        const received: { gallery: EdgeGallery; bytes: number }[] = [];
        node.on("message", (topic, payload) => {
          if (payload.length > 0)
            received.push({ gallery: decodeMessage("gallery", topic, payload), bytes: payload.length });
        });
        await node.subscribeAsync(topicFor("gallery", "node-mosq"), { qos: 1 });
        const key = nodeSealingKeyPair(identity);
        await node.publishAsync(
          topicFor("status", "node-mosq"),
          encodeMessage("status", {
            nodeId: "node-mosq",
            online: true,
            ts: Date.now(),
            sealingKey: { publicKey: key.publicKey, sig: attestSealingKey("node-mosq", key.publicKey, identity) },
          }),
          { qos: 1, retain: true },
        );
        await expect.poll(() => received.length, { timeout: 60_000 }).toBe(1);
        const { gallery, bytes } = received[0] as (typeof received)[number];
        const entries = decodeEdgeGallery(
          open(gallery, edgeGalleryHeader(gallery), key, gallerySigningKeyPair(sealing).publicKey),
        );
        // every member with every template: no fallback to centroids, no 64 KiB limit on the way
        expect(entries).toHaveLength(MEMBERS);
        expect(viaMosquitto.published("node-mosq")).toMatchObject({ members: MEMBERS, templates: MEMBERS });
        expect(bytes).toBeGreaterThan(64 * 1024);
        expect(mosquitto.log()).not.toMatch(/exceeded|too large/i);
        console.log(`edge gallery through mosquitto: ${MEMBERS} members = ${bytes} bytes`);
      } finally {
        await viaMosquitto.stop();
        await node.endAsync(true);
        await orchestrator.endAsync(true);
        mosquitto.broker.kill("SIGTERM");
      }
    },
    180_000,
  );
});
