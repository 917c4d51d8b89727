import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { decodeImage, FacePipeline } from "@glance/models";
import { type DesiredState, decodeEmbedding, topicFor } from "@glance/shared";
import { eq } from "drizzle-orm";
import type { MqttClient } from "mqtt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Db, openDatabase } from "../db/client.ts";
import { visitorKeys, visitors, visits } from "../db/schema.ts";
import type { Recognition, VisitorDay } from "../index.ts";
import {
  connectNode,
  createStore,
  demoDir,
  expectJson,
  type Harness,
  nextEvent,
  registerNode,
  requiredPostgresUrl,
  runPostgres,
  sealTemplate,
  startHarness,
  type TestNode,
} from "../testing/harness.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const cosine = (a: Float32Array, b: Float32Array) => a.reduce((s, v, i) => s + v * (b[i] as number), 0);

/** A camera of a store: a registered node with its MQTT connection. */
interface Camera {
  node: TestNode;
  client: MqttClient;
}

/**
 * The store's own view of its rows, read with the orchestrator stopped (PGlite allows one process) and restarted
 * afterwards; cameras reconnect to the restarted broker.
 */
async function withStoppedDb<T>(h: Harness, cameras: Camera[], fn: (db: Db) => Promise<T>): Promise<T> {
  for (const c of cameras) await c.client.endAsync();
  await h.orch.stop();
  const database = await openDatabase({ dataDir: h.dataDir, databaseUrl: h.databaseUrl });
  try {
    return await fn(database.db);
  } finally {
    await database.close();
    await h.restart();
    for (const c of cameras) c.client = await connectNode({ mqtt: { ...c.node.mqtt, url: h.orch.mqttUrl } });
  }
}

function suite(label: string, databaseUrl: () => string | undefined) {
  let faces: FacePipeline;
  const probes = new Map<string, Float32Array>();
  let seq = 0;

  async function seen(h: Harness, camera: Camera, photo: string, trackId: string, ts = Date.now()) {
    const embedding = probes.get(photo) as Float32Array;
    const t = sealTemplate({
      node: camera.node,
      seq: ++seq,
      embedding,
      recipient: h.orch.sealingKey,
      space: faces.space,
      trackId,
      ts,
    });
    const recognised = nextEvent<Recognition>(h.orch.events, "recognition", (r) => r.nodeId === camera.node.nodeId);
    await camera.client.publishAsync(topicFor("template", camera.node.nodeId), JSON.stringify(t), { qos: 1 });
    return recognised;
  }

  async function camerasOf(h: Harness, storeId: string, n: number): Promise<Camera[]> {
    const list: Camera[] = [];
    for (let i = 0; i < n; i++) {
      const node = await registerNode(h, storeId);
      list.push({ node, client: await connectNode(node) });
    }
    return list;
  }

  beforeAll(async () => {
    faces = await FacePipeline.load();
    for (const photo of [
      "scenes/barack_obama-720p.jpg",
      "scenes/barack_obama-1080p.jpg",
      "scenes/barack_obama-480p.jpg",
      "enroll/kit_harington/1.jpg",
      "enroll/rose_leslie/1.jpg",
      "enroll/rose_leslie/2.jpg",
    ]) {
      const detected = await faces.process(await decodeImage(await readFile(join(demoDir, photo))));
      expect(detected).toHaveLength(1);
      probes.set(photo, (detected[0] as (typeof detected)[number]).embedding);
    }
  }, 60_000);

  afterAll(async () => {
    await faces?.close();
  });

  describe(`a store that keeps pseudonymous visitors (${label})`, () => {
    let h: Harness;
    let storeId: string;
    let cameras: Camera[];

    beforeAll(async () => {
      // a 1.5 s visit window stands in for the default ten minutes
      h = await startHarness({ databaseUrl: databaseUrl(), visitDedupeMs: 1500 });
      storeId = await createStore(h);
      cameras = await camerasOf(h, storeId, 2);
      for (const [audience, title, cooldownMs] of [
        ["first-time", "Welcome, first-timer", 3_600_000],
        ["returning", "Good to see you again", 3_600_000],
      ] as const) {
        await expectJson(
          await h.api("/api/promotions", {
            method: "POST",
            json: { storeId, audience, title, message: title, durationMs: 5000, cooldownMs },
          }),
          201,
        );
      }
    }, 60_000);

    afterAll(async () => {
      for (const c of cameras ?? []) await c.client.endAsync();
      await h?.close();
    });

    it("a first-time visitor seen by two cameras is one visit, one offer, and returning after the visit ends", async () => {
      const [entrance, aisle] = cameras as [Camera, Camera];
      const first = await seen(h, entrance, "scenes/barack_obama-720p.jpg", "track-1");
      expect(first).toMatchObject({ visitor: "unknown", personId: null, newVisit: true });
      expect(first.pseudonym).toMatchObject({ status: "first-time", visits: 1 });
      expect(first.promotion?.title).toBe("Welcome, first-timer");

      // the aisle camera a moment later, on its own track: the same visitor and the same visit, no second offer
      const aisleSight = await seen(h, aisle, "scenes/barack_obama-1080p.jpg", "aisle-7");
      expect(aisleSight.pseudonym).toMatchObject({ visitorId: first.pseudonym?.visitorId, status: "first-time" });
      expect(aisleSight.pseudonym?.score).toBeGreaterThanOrEqual(faces.threshold("1e-3"));
      expect(aisleSight.newVisit).toBe(false);
      expect(aisleSight.promotion).toBeUndefined();

      // someone else at the same moment is a visitor of their own
      const other = await seen(h, aisle, "enroll/kit_harington/1.jpg", "aisle-8");
      expect(other.pseudonym?.status).toBe("first-time");
      expect(other.pseudonym?.visitorId).not.toBe(first.pseudonym?.visitorId);

      await sleep(1600);
      const back = await seen(h, aisle, "scenes/barack_obama-480p.jpg", "aisle-9");
      expect(back.pseudonym).toMatchObject({ visitorId: first.pseudonym?.visitorId, status: "returning", visits: 2 });
      expect(back.newVisit).toBe(true);
      expect(back.promotion?.title).toBe("Good to see you again");

      const counts = await expectJson<{ days: VisitorDay[] }>(await h.api(`/api/stores/${storeId}/visitors`), 200);
      expect(counts.days).toEqual([{ day: new Date().toISOString().slice(0, 10), firstTime: 2, returning: 1 }]);
      const unknownVisits = await expectJson<unknown[]>(
        await h.api(`/api/visits?storeId=${storeId}&kind=unknown`),
        200,
      );
      expect(unknownVisits).toHaveLength(3);
    });

    it("keeps each visitor template sealed under its own key, and knows the visitor again after a restart", async () => {
      // HQ shortens the store's period: the templates already held expire sooner too
      await expectJson(
        await h.api(`/api/stores/${storeId}`, { method: "PATCH", json: { visitorRetentionDays: 7 } }),
        200,
      );
      const rows = await withStoppedDb(h, cameras, async (db) => ({
        visitors: await db.select().from(visitors).where(eq(visitors.storeId, storeId)),
        keys: await db.select().from(visitorKeys),
        visits: await db.select().from(visits).where(eq(visits.storeId, storeId)),
      }));
      expect(rows.visitors).toHaveLength(2);
      expect(rows.keys.map((k) => k.visitorId).sort()).toEqual(rows.visitors.map((v) => v.id).sort());
      const obama = probes.get("scenes/barack_obama-720p.jpg") as Float32Array;
      for (const v of rows.visitors) {
        // the codec's 7-byte header and one int8 per dimension, plus the 16-byte GCM tag; nothing like a face
        expect(v.ciphertext.length).toBe(7 + obama.length + 16);
        const asIfPlain = (() => {
          try {
            return cosine(decodeEmbedding(v.ciphertext), obama);
          } catch {
            return 0;
          }
        })();
        expect(asIfPlain).toBeLessThan(0.3);
        expect(v.expiresAt.getTime() - v.firstSeenAt.getTime()).toBe(7 * 24 * 3600_000);
      }
      expect(rows.visits.map((v) => v.visitor).sort()).toEqual(["first-time", "first-time", "returning"]);

      await sleep(1600);
      const again = await seen(h, cameras[0] as Camera, "scenes/barack_obama-1080p.jpg", "track-after-restart");
      expect(again.pseudonym).toMatchObject({ status: "returning", visits: 3 });
      expect(rows.visitors.map((v) => v.id)).toContain(again.pseudonym?.visitorId);
    }, 60_000);

    it("a store switched to members-only keeps no visitor template, and its nodes are told", async () => {
      const desired = new Promise<DesiredState>((resolve) => {
        const c = (cameras[0] as Camera).client;
        c.on("message", (topic, payload) => {
          if (topic !== topicFor("desired", (cameras[0] as Camera).node.nodeId)) return;
          const d = JSON.parse(payload.toString()) as DesiredState;
          if (d.privacyMode === "members-only") resolve(d);
        });
        void c.subscribeAsync(topicFor("desired", (cameras[0] as Camera).node.nodeId), { qos: 1 });
      });
      const changed = await expectJson<{ privacyMode: string; visitorTemplatesShredded: number }>(
        await h.api(`/api/stores/${storeId}`, { method: "PATCH", json: { privacyMode: "members-only" } }),
        200,
      );
      expect(changed).toMatchObject({ privacyMode: "members-only", visitorTemplatesShredded: 2 });
      expect((await desired).privacyMode).toBe("members-only");

      await sleep(1600);
      const r = await seen(h, cameras[1] as Camera, "scenes/barack_obama-720p.jpg", "track-members-only");
      expect(r.newVisit).toBe(true);
      expect(r.visitor).toBe("unknown");
      expect(r.pseudonym).toBeUndefined();
      expect(r.promotion).toBeUndefined();

      const left = await withStoppedDb(h, cameras, async (db) => ({
        visitors: await db.select().from(visitors).where(eq(visitors.storeId, storeId)),
        keys: await db.select().from(visitorKeys),
      }));
      expect(left).toEqual({ visitors: [], keys: [] });
    }, 60_000);
  });

  describe(`a count-only store and visitor retention (${label})`, () => {
    let h: Harness;
    let cameras: Camera[];
    let visitorStore: string;
    let countOnlyStore: string;

    beforeAll(async () => {
      h = await startHarness({
        databaseUrl: databaseUrl(),
        visitDedupeMs: 1000,
        visitorRetentionMs: 3000,
        retentionIntervalMs: 300,
      });
      visitorStore = await createStore(h);
      countOnlyStore = await createStore(h);
      await expectJson(
        await h.api(`/api/stores/${countOnlyStore}`, { method: "PATCH", json: { privacyMode: "count-only" } }),
        200,
      );
      cameras = [...(await camerasOf(h, visitorStore, 1)), ...(await camerasOf(h, countOnlyStore, 1))];
    }, 60_000);

    afterAll(async () => {
      for (const c of cameras ?? []) await c.client.endAsync();
      await h?.close();
    });

    it("a count-only store counts the visit and keeps nothing of the face", async () => {
      const r = await seen(h, cameras[1] as Camera, "enroll/rose_leslie/1.jpg", "t-count");
      expect(r).toMatchObject({ visitor: "unknown", personId: null, newVisit: true, score: 0 });
      expect(r.pseudonym).toBeUndefined();
      const counts = await expectJson<{ privacyMode: string; days: VisitorDay[] }>(
        await h.api(`/api/stores/${countOnlyStore}/visitors`),
        200,
      );
      expect(counts).toEqual({ storeId: countOnlyStore, privacyMode: "count-only", days: [] });
    });

    it("a visitor past retention is first-time again, their template and key gone", async () => {
      const camera = cameras[0] as Camera;
      const firstAt = Date.now();
      const first = await seen(h, camera, "enroll/rose_leslie/1.jpg", "t-1", firstAt);
      expect(first.pseudonym?.status).toBe("first-time");
      await sleep(1200);
      const back = await seen(h, camera, "enroll/rose_leslie/2.jpg", "t-2");
      expect(back.pseudonym).toMatchObject({ visitorId: first.pseudonym?.visitorId, status: "returning" });

      // three seconds after the first sighting the retention job (every 300 ms here) shreds the visitor
      await sleep(Math.max(0, firstAt + 3600 - Date.now()));
      const rows = await withStoppedDb(h, cameras, async (db) => ({
        visitors: await db.select().from(visitors),
        keys: await db.select().from(visitorKeys),
        visits: await db.select().from(visits).where(eq(visits.storeId, visitorStore)),
      }));
      expect(rows.visitors).toEqual([]);
      expect(rows.keys).toEqual([]);
      // visits past the period went too; none still names the visitor
      expect(rows.visits.filter((v) => v.visitorId !== null)).toEqual([]);

      const later = await seen(h, camera, "enroll/rose_leslie/2.jpg", "t-3");
      expect(later.pseudonym?.status).toBe("first-time");
      expect(later.pseudonym?.visitorId).not.toBe(first.pseudonym?.visitorId);
    }, 60_000);
  });
}

suite("PGlite", () => undefined);
describe.runIf(runPostgres)("on real Postgres", () => {
  suite("Postgres", requiredPostgresUrl);
});
