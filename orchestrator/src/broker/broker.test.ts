import { encodeMessage, topicFor } from "@glance/shared";
import mqtt, { type MqttClient } from "mqtt";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import {
  connectNode,
  createStore,
  type Harness,
  randomEmbedding,
  registerNode,
  sealTemplate,
  startHarness,
  type TestNode,
} from "../testing/harness.ts";
import { NODE_CLIENT_PREFIX, ORCHESTRATOR_USERNAME } from "./broker.ts";

/** Resolves true if the client is disconnected by the broker within `ms`. */
function dropped(client: MqttClient, ms = 3000): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    client.once("close", () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

describe("broker access control", () => {
  let h: Harness;
  let a: TestNode;
  let b: TestNode;
  const seenTopics: string[] = [];

  beforeAll(async () => {
    h = await startHarness();
    const storeId = await createStore(h);
    a = await registerNode(h, storeId);
    b = await registerNode(h, storeId);
    h.orch.broker.on("publish", (packet, client) => {
      if (client) seenTopics.push(packet.topic);
    });
  });

  afterAll(async () => {
    await h?.close();
  });

  it("refuses a node that presents the wrong password", async () => {
    await expect(connectNode(a, "not-the-password")).rejects.toThrow(/Bad username or password/i);
  });

  it("refuses a client that is not a registered node", async () => {
    await expect(connectNode({ mqtt: { ...a.mqtt, username: "stranger" } })).rejects.toThrow(
      /Bad username or password/i,
    );
    await expect(mqtt.connectAsync(a.mqtt.url, { reconnectPeriod: 0, protocolVersion: 4 })).rejects.toThrow();
    await expect(connectNode({ mqtt: { ...a.mqtt, username: ORCHESTRATOR_USERNAME } })).rejects.toThrow(
      /Bad username or password/i,
    );
  });

  it("does not let a node take over another node's session by using its client id", async () => {
    const c = mqtt.connectAsync(a.mqtt.url, {
      clientId: `${NODE_CLIENT_PREFIX}${b.nodeId}`,
      username: a.nodeId,
      password: a.mqtt.password,
      reconnectPeriod: 0,
      protocolVersion: 4,
    });
    await expect(c).rejects.toThrow(/Bad username or password/i);
    const own = await mqtt.connectAsync(a.mqtt.url, {
      clientId: `${NODE_CLIENT_PREFIX}${a.nodeId}`,
      username: a.nodeId,
      password: a.mqtt.password,
      reconnectPeriod: 0,
      protocolVersion: 4,
    });
    expect(own.connected).toBe(true);
    await own.endAsync();
  });

  it("does not let a node publish on another node's template topic", async () => {
    const client = await connectNode(a);
    const closed = dropped(client);
    const forged = sealTemplate({
      node: b,
      seq: 1,
      embedding: randomEmbedding(),
      recipient: h.orch.sealingKey,
      space: "x",
    });
    client.publish(topicFor("template", b.nodeId), JSON.stringify(forged), { qos: 1 });
    expect(await closed).toBe(true);
    expect(seenTopics).not.toContain(topicFor("template", b.nodeId));
    await client.endAsync(true);
  });

  it("does not let a node publish its own desired state", async () => {
    const client = await connectNode(a);
    const closed = dropped(client);
    const desired = encodeMessage("desired", {
      version: 99,
      storeId: "elsewhere",
      privacyMode: "visitor",
      sealingKey: { kid: "attacker", publicKey: "A".repeat(43) },
      templateIntervalMs: 1,
      minFaceSizePx: 1,
    });
    client.publish(topicFor("desired", a.nodeId), desired, { qos: 1, retain: true });
    expect(await closed).toBe(true);
    expect(seenTopics).not.toContain(topicFor("desired", a.nodeId));
    await client.endAsync(true);
  });

  it("does not let a node read another node's desired state, only its own", async () => {
    const client = await connectNode(a);
    // SUBACK 0x80: mqtt.js turns a refused grant into a rejected promise; the connection stays up
    await expect(client.subscribeAsync(topicFor("desired", b.nodeId), { qos: 1 })).rejects.toThrow(/Subscribe error/);
    await expect(client.subscribeAsync("glance/#", { qos: 1 })).rejects.toThrow(/Subscribe error/);
    expect(client.connected).toBe(true);
    const own = await client.subscribeAsync(topicFor("desired", a.nodeId), { qos: 1 });
    expect(own[0]?.qos).toBe(1);
    await client.endAsync();
  });

  it("drops a connection that sends a packet far over the size limit, and keeps serving others", async () => {
    const client = await connectNode(a);
    const closed = dropped(client);
    client.publish(topicFor("template", a.nodeId), Buffer.alloc(5 * 1024 * 1024, 0x7b), { qos: 1 });
    expect(await closed).toBe(true);
    await client.endAsync(true);
    const again = await connectNode(a);
    expect(again.connected).toBe(true);
    await again.endAsync();
  });

  it("shows the technician a node's reported status, and offline once it drops without saying goodbye", async () => {
    const offline = encodeMessage("status", { nodeId: a.nodeId, online: false, ts: Date.now() });
    const client = await mqtt.connectAsync(a.mqtt.url, {
      username: a.nodeId,
      password: a.mqtt.password,
      reconnectPeriod: 0,
      protocolVersion: 4,
      will: { topic: topicFor("status", a.nodeId), payload: offline, qos: 1, retain: true },
    });
    const online = {
      nodeId: a.nodeId,
      online: true,
      ts: Date.now() + 1,
      agentVersion: "0.1.0",
      privacyMode: "visitor" as const,
    };
    await client.publishAsync(topicFor("status", a.nodeId), encodeMessage("status", online), { qos: 1, retain: true });
    const reported = async () => {
      const list = (await (await h.api("/api/nodes")).json()) as Array<{
        id: string;
        reported: { online: boolean; agentVersion?: string } | null;
        lastSeenAt: string | null;
      }>;
      return list.find((n) => n.id === a.nodeId);
    };
    await vi.waitFor(async () =>
      expect((await reported())?.reported).toMatchObject({ online: true, agentVersion: "0.1.0" }),
    );
    expect((await reported())?.lastSeenAt).not.toBeNull();

    client.stream.destroy(); // power cut: no DISCONNECT, so the broker publishes the last will
    await vi.waitFor(async () => expect((await reported())?.reported?.online).toBe(false));
    expect(h.orch.metrics().rejected).toEqual({});
    client.end(true);
  });

  it("lets a node publish its own template", async () => {
    const client = await connectNode(a);
    const t = sealTemplate({ node: a, seq: 1, embedding: randomEmbedding(), recipient: h.orch.sealingKey, space: "x" });
    await client.publishAsync(topicFor("template", a.nodeId), JSON.stringify(t), { qos: 1 });
    await vi.waitFor(() => expect(seenTopics).toContain(topicFor("template", a.nodeId)));
    expect(client.connected).toBe(true);
    await client.endAsync();
  });
});
