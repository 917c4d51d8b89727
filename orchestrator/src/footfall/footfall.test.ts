import { encodeMessage, filterFor, type NodeEvent, topicFor } from "@glance/shared";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  connectNode,
  createStore,
  databaseBackends,
  expectJson,
  type Harness,
  registerNode,
  startHarness,
  type TestNode,
} from "../testing/harness.ts";
import type { FootfallReport } from "./footfall.ts";

const backends = databaseBackends;

const attributes = {
  ageBand: "25-34",
  ageBandConfidence: 0.6,
  gender: "female",
  genderConfidence: 0.9,
  emotion: "happy",
  emotionConfidence: 0.7,
  samples: 3,
} as const;

type Report = FootfallReport & { attributesEnabled: boolean };

for (const backend of backends)
  describe(`footfall on ${backend.name}`, () => {
    let h: Harness;
    let storeId: string;
    let node: TestNode;
    const day = Date.parse("2026-11-20T10:15:00Z");

    const trackEnded = (trackId: string, dwellMs: number, extra: Partial<NodeEvent> = {}): NodeEvent => ({
      nodeId: node.nodeId,
      ts: day,
      kind: "track-ended",
      cameraId: node.cameraId,
      trackId,
      dwellMs,
      ...extra,
    });

    const report = () =>
      h
        .api(`/api/stores/${storeId}/footfall?since=2026-11-20T00:00:00Z&until=2026-11-21T00:00:00Z`)
        .then((r) => expectJson<Report>(r, 200));

    /** footfall is counted asynchronously: poll the API until it shows `tracks` */
    const until = async (tracks: number): Promise<Report> => {
      for (let i = 0; i < 100; i++) {
        const r = await report();
        if ((r.days[0]?.tracks ?? 0) >= tracks) return r;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      throw new Error(`footfall never reached ${tracks} tracks`);
    };

    beforeAll(async () => {
      h = await startHarness({ databaseUrl: backend.url() });
      storeId = await createStore(h);
      node = await registerNode(h, storeId);
    });
    afterAll(async () => {
      await h?.close();
    });

    it("counts each track once with its dwell, keeps no track id, drops attributes the store did not opt into", async () => {
      const client = await connectNode(node);
      const topic = topicFor("event", node.nodeId);
      await client.publishAsync(topic, encodeMessage("event", trackEnded("t-1", 4000)), { qos: 1 });
      // a QoS 1 redelivery of the same track-ended event
      await client.publishAsync(topic, encodeMessage("event", trackEnded("t-1", 4000)), { qos: 1 });
      // malformed and camera events do not count and do not stop the counting
      await client.publishAsync(topic, Buffer.from("{not json"), { qos: 1 });
      await client.publishAsync(topic, encodeMessage("event", { ...trackEnded("t-x", 0), kind: "camera-down" }), {
        qos: 1,
      });
      await client.publishAsync(topic, encodeMessage("event", trackEnded("t-2", 2000, { attributes })), { qos: 1 });
      await client.endAsync();

      const r = await until(2);
      expect(r.days).toEqual([{ day: "2026-11-20", tracks: 2, avgDwellMs: 3000, byCamera: { [node.cameraId]: 2 } }]);
      expect(r.attributesEnabled).toBe(false);
      expect(r.attributes.gender).toEqual({ counts: {}, suppressed: 0 });
      expect(JSON.stringify(r)).not.toContain("t-1");
    });

    it("with the store opted in, tells its nodes and reports attributes, small counts suppressed", async () => {
      const client = await connectNode(node);
      const desired = new Promise<{ attributes?: boolean }>((resolve) => {
        client.on("message", (_t, payload) => {
          const d = JSON.parse(payload.toString()) as { attributes?: boolean };
          if (d.attributes) resolve(d);
        });
      });
      await client.subscribeAsync(filterFor("desired", node.nodeId), { qos: 1 });
      await expectJson(await h.api(`/api/stores/${storeId}`, { method: "PATCH", json: { attributes: true } }), 200);
      expect((await desired).attributes).toBe(true);

      const topic = topicFor("event", node.nodeId);
      for (let i = 0; i < 6; i++) {
        const a = i < 5 ? attributes : { ...attributes, gender: "male" as const, ageBand: "65+" as const };
        await client.publishAsync(topic, encodeMessage("event", trackEnded(`u-${i}`, 1000, { attributes: a })), {
          qos: 1,
        });
      }
      await client.endAsync();

      const r = await until(8);
      expect(r.attributesEnabled).toBe(true);
      expect(r.attributes.gender).toEqual({ counts: { female: 5 }, suppressed: 1 });
      expect(r.attributes.ageBand).toEqual({ counts: { "25-34": 5 }, suppressed: 1 });
      expect(r.attributes.emotion).toEqual({ counts: { happy: 6 }, suppressed: 0 });
    });
  });
