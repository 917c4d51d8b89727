import { encodeMessage, topicFor } from "@glance/shared";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Orchestrator } from "../index.ts";
import { randomEmbedding, sealTemplate } from "../testing/harness.ts";
import { type MosquittoFleet, runMosquitto, startMosquittoFleet } from "../testing/mosquitto.ts";

/**
 * The replay window's reason to exist: mosquitto's shared subscription deals a node's burst out to two orchestrator
 * instances on one Postgres, so each sees that node's seqs with gaps and out of order relative to the other. With
 * "seq must exceed the last accepted" about a tenth of such a burst was lost as REPLAYED_SEQUENCE.
 */
describe.runIf(runMosquitto)("a burst shared by two orchestrators behind mosquitto", () => {
  let fleet: MosquittoFleet;
  beforeAll(async () => {
    fleet = await startMosquittoFleet("glance-two-instances-");
  }, 120_000);
  afterAll(async () => {
    await fleet?.stop();
  });

  const registerAndConnect = async (storeId: string) => {
    const node = await fleet.register(storeId);
    return { node, client: await fleet.connect(node) };
  };

  it("a node's burst dealt out to both instances is accepted whole, each template by one of them, then replays are refused", async () => {
    const { orchs, api } = fleet;
    const o = orchs[0] as Orchestrator;
    await api("/api/stores", { id: "store-burst", name: "Glance Burst" });
    const space = ((await (await fetch(new URL("/api/health", o.httpUrl))).json()) as { space: string }).space;
    const nodes = [await registerAndConnect("store-burst"), await registerAndConnect("store-burst")];
    const perNode = 120;
    const payloads = nodes.map(({ node }) =>
      Array.from({ length: perNode }, (_, i) =>
        encodeMessage(
          "template",
          sealTemplate({ node, seq: i + 1, embedding: randomEmbedding(), recipient: o.sealingKey, space }),
        ),
      ),
    );
    const settled = () =>
      orchs.reduce(
        (sum, x) => sum + x.metrics().accepted + Object.values(x.metrics().rejected).reduce((a, b) => a + b, 0),
        0,
      );
    // as fast as the node can: no waiting for the orchestrators between templates
    await Promise.all(
      nodes.map(({ node, client }, n) =>
        Promise.all(
          (payloads[n] as Buffer[]).map((p) => client.publishAsync(topicFor("template", node.nodeId), p, { qos: 1 })),
        ),
      ),
    );
    await expect.poll(settled, { timeout: 60_000, interval: 50 }).toBe(nodes.length * perNode);
    const perInstance = orchs.map((x) => x.metrics());
    expect(perInstance.map((m) => m.rejected)).toEqual([{}, {}]);
    for (const m of perInstance) expect(m.accepted).toBeGreaterThan(0);

    // the same burst again (a node replaying its backlog, or an attacker): every template refused, none twice
    const first = nodes[0] as (typeof nodes)[number];
    await Promise.all(
      (payloads[0] as Buffer[]).map((p) =>
        first.client.publishAsync(topicFor("template", first.node.nodeId), p, { qos: 1 }),
      ),
    );
    await expect.poll(settled, { timeout: 60_000, interval: 50 }).toBe((nodes.length + 1) * perNode);
    const replayed = orchs.reduce((sum, x) => sum + (x.metrics().rejected.REPLAYED_SEQUENCE ?? 0), 0);
    expect(replayed).toBe(perNode);
  }, 120_000);

  // mosquitto holds at most max_queued_messages (default 1,000) for a subscriber that is behind, and drops the rest
  // silently after acknowledging them to the node: the generated configuration must not lose a burst that way
  it("a burst far deeper than mosquitto's default queue reaches the instances whole", async () => {
    const { orchs, api } = fleet;
    const o = orchs[0] as Orchestrator;
    await api("/api/stores", { id: "store-deep", name: "Glance Deep" });
    const space = ((await (await fetch(new URL("/api/health", o.httpUrl))).json()) as { space: string }).space;
    const nodes = [];
    for (let n = 0; n < 4; n++) nodes.push(await registerAndConnect("store-deep"));
    const perNode = 1000;
    const before = orchs.reduce((sum, x) => sum + x.metrics().accepted, 0);
    const payloads = nodes.map(({ node }) =>
      Array.from({ length: perNode }, (_, i) =>
        encodeMessage(
          "template",
          sealTemplate({ node, seq: i + 1, embedding: randomEmbedding(), recipient: o.sealingKey, space }),
        ),
      ),
    );
    await Promise.all(
      nodes.map(({ node, client }, n) =>
        Promise.all(
          (payloads[n] as Buffer[]).map((p) => client.publishAsync(topicFor("template", node.nodeId), p, { qos: 1 })),
        ),
      ),
    );
    const accepted = () => orchs.reduce((sum, x) => sum + x.metrics().accepted, 0) - before;
    await expect.poll(accepted, { timeout: 90_000, interval: 100 }).toBe(nodes.length * perNode);
    expect(fleet.log()).not.toMatch(/messages are being dropped/);
  }, 180_000);
});
