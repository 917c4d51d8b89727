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
import { type Database, openDatabase } from "../db/client.ts";
import { consents, nodes, people, stores } from "../db/schema.ts";
import type { Gallery } from "../gallery/gallery.ts";
import { erasePerson } from "../privacy/erase.ts";
import { MasterKey } from "../privacy/keyring.ts";
import { storeSealedTemplates } from "../privacy/templates.ts";
import { databaseBackends, freshPostgres, randomEmbedding } from "../testing/harness.ts";
import { aedesPublisher, type EdgeGalleries, startEdgeGalleries } from "./edge-galleries.ts";

const SPACE = "synthetic@1";
const STORE = "store-members";
const NODE = "node-members";
const logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });
const masterKey = new MasterKey(new Uint8Array(32).fill(9));

/** What enrolment writes (person, sealed template, consent for the store), in one transaction through `db`. */
async function enrol(db: Database["db"], personId: string, expiresAt: Date | null = null): Promise<void> {
  await db.transaction(async (tx) => {
    await tx.insert(people).values({ id: personId, displayName: personId });
    await storeSealedTemplates(tx, masterKey, personId, [
      {
        id: `t-${personId}`,
        space: SPACE,
        embedding: randomEmbedding(128),
        quality: 0.9,
        sourceSha256: "0".repeat(64),
      },
    ]);
    await tx.insert(consents).values({
      id: `c-${personId}`,
      personId,
      purpose: "loyalty-recognition",
      scope: STORE,
      source: "test",
      grantedAt: new Date(),
      expiresAt,
    });
  });
}

/**
 * Two orchestrator instances on one database, reduced to what matters here: instance A writes (enrolment, erasure)
 * through its own connection; instance B runs the edge galleries of a members-only node and is told nothing. On
 * PGlite there is one process, so A and B share the database handle.
 */
for (const backend of databaseBackends) {
  describe(`edge galleries follow the database's change signal (${backend.name})`, () => {
    let dir: string;
    let drop: (() => Promise<void>) | undefined;
    let a: Database;
    let b: Database;
    let aedes: Aedes;
    let server: Server;
    let orchestrator: MqttClient;
    let node: MqttClient;
    let edge: EdgeGalleries;
    const sealing = generateSealingKeyPair();
    const identity = generateSigningKeyPair();
    const nodeKey = nodeSealingKeyPair(identity);
    const received: EdgeGallery[] = [];
    const members = () => {
      const g = received.at(-1);
      if (!g) return undefined;
      const entries = decodeEdgeGallery(
        open(g, edgeGalleryHeader(g), nodeKey, gallerySigningKeyPair(sealing).publicKey),
      );
      return [...new Set(entries.map((e) => e.personId))].sort();
    };

    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), "glance-edge-signal-"));
      let databaseUrl: string | undefined;
      const url = backend.url();
      if (url) {
        const pg = await freshPostgres(url);
        drop = pg.drop;
        databaseUrl = pg.url;
        a = await openDatabase({ dataDir: dir, databaseUrl });
        b = await openDatabase({ dataDir: dir, databaseUrl });
      } else {
        a = await openDatabase({ dataDir: dir });
        b = a;
      }
      await a.db.insert(stores).values({ id: STORE, name: "Members", privacyMode: "members-only" });
      await a.db.insert(nodes).values({
        id: NODE,
        storeId: STORE,
        cameraId: "cam-1",
        signingPublicKey: identity.publicKey,
        mqttPasswordHash: "unused",
      });
      await enrol(a.db, "person-1");
      await enrol(a.db, "person-2");

      aedes = await Aedes.createBroker();
      server = createServer(aedes.handle);
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      const address = server.address();
      if (!address || typeof address === "string") throw new Error("no port");
      const mqttUrl = `mqtt://127.0.0.1:${address.port}`;
      orchestrator = await mqtt.connectAsync(mqttUrl, { clientId: "orchestrator-b" });
      edge = await startEdgeGalleries({
        client: orchestrator,
        db: b.db,
        masterKey,
        sealingKey: sealing,
        space: SPACE,
        threshold: () => 0.5,
        logger,
        publish: aedesPublisher(aedes),
        databaseUrl,
        // ticks are cheap when nothing changed: many of them, and no fallback re-read within the test
        pollMs: 20,
        fallbackMs: 3_600_000,
      });
      node = await mqtt.connectAsync(mqttUrl, { clientId: NODE });
      node.on("message", (topic, payload) => {
        if (payload.length > 0) received.push(decodeMessage("gallery", topic, payload));
      });
      await node.subscribeAsync(topicFor("gallery", NODE), { qos: 1 });
      await node.publishAsync(
        topicFor("status", NODE),
        encodeMessage("status", {
          nodeId: NODE,
          online: true,
          ts: Date.now(),
          sealingKey: { publicKey: nodeKey.publicKey, sig: attestSealingKey(NODE, nodeKey.publicKey, identity) },
        }),
        { qos: 1, retain: true },
      );
      for (const until = Date.now() + 10_000; members()?.join() !== "person-1,person-2"; ) {
        if (Date.now() > until) throw new Error(`no first gallery: ${JSON.stringify(members())}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    }, 60_000);

    afterAll(async () => {
      await edge?.stop();
      await node?.endAsync(true);
      await orchestrator?.endAsync(true);
      await new Promise<void>((resolve) => (aedes ? aedes.close(() => resolve()) : resolve()));
      await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
      if (b !== a) await b?.close();
      await a?.close();
      await drop?.();
      await rm(dir, { recursive: true, force: true });
    });

    it("reads no template ids while nothing changes, however often it looks", async () => {
      const scans = edge.stats.scans;
      const idle = edge.stats.idle;
      await expect.poll(() => edge.stats.idle, { timeout: 10_000, interval: 20 }).toBeGreaterThanOrEqual(idle + 10);
      expect(edge.stats.scans).toBe(scans);
      expect(received).toHaveLength(1);
    });

    it("an enrolment through instance A reaches the gallery instance B publishes, unasked", async () => {
      const signals = edge.stats.signals;
      await enrol(a.db, "person-3");
      await expect.poll(members, { timeout: 10_000 }).toEqual(["person-1", "person-2", "person-3"]);
      expect(edge.stats.signals).toBeGreaterThan(signals);
    });

    it("an erasure through instance A takes the person out of the gallery instance B publishes", async () => {
      const sent: string[] = [];
      await erasePerson(
        {
          db: a.db,
          // instance A's own index and command path; B hears of the erasure from the database only
          gallery: { remove: () => {} } as unknown as Gallery,
          personKeys: { invalidate: () => {} },
          visitors: { space: "none", lookalikes: () => [], forget: () => {}, sync: async () => 0 },
          masterKey,
          sendCommand: async (nodeId) => {
            sent.push(nodeId);
          },
          logger,
        },
        "person-1",
        { mode: "erase", actor: "test" },
      );
      await expect.poll(members, { timeout: 10_000 }).toEqual(["person-2", "person-3"]);
      // and once it has settled, no more reads
      const published = received.length;
      const scans = edge.stats.scans;
      const idle = edge.stats.idle;
      await expect.poll(() => edge.stats.idle, { timeout: 10_000, interval: 20 }).toBeGreaterThanOrEqual(idle + 5);
      expect(edge.stats.scans).toBe(scans);
      expect(received).toHaveLength(published);
    });

    it("a consent that expires takes its member out with no statement to announce it", async () => {
      await enrol(a.db, "person-4", new Date(Date.now() + 1500));
      await expect.poll(members, { timeout: 10_000 }).toEqual(["person-2", "person-3", "person-4"]);
      await expect.poll(members, { timeout: 10_000 }).toEqual(["person-2", "person-3"]);
    });
  });
}
