import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { contract, encodeMessage, topicFor } from "@glance/shared";
import mqtt from "mqtt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Orchestrator } from "../index.ts";
import { randomEmbedding, sealTemplate } from "../testing/harness.ts";
import { type MosquittoFleet, runMosquitto, startMosquittoFleet } from "../testing/mosquitto.ts";
import { mosquittoAcl } from "./config.ts";

describe("mosquitto configuration from the contract", () => {
  it("lets each node write only its own node-originated topics and the orchestrator read them all", () => {
    const acl = mosquittoAcl(contract);
    expect(acl).toContain("pattern write glance/v1/node/%u/template\n");
    expect(acl).toContain("pattern read glance/v1/node/%u/desired\n");
    expect(acl).toContain("user $orchestrator\ntopic read glance/v1/node/+/template\n");
    expect(acl).toContain("topic write glance/v1/node/+/desired\n");
    expect(acl).not.toContain("pattern write glance/v1/node/%u/desired");
    const rules = acl.split("\n").filter((l) => l && !l.startsWith("#"));
    expect(rules.join("\n")).not.toMatch(/readwrite|#/);
  });
});

async function waitFor(check: () => boolean, ms = 10_000): Promise<void> {
  const until = Date.now() + ms;
  while (!check()) {
    if (Date.now() > until) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Two orchestrator instances on one Postgres behind mosquitto with the generated configuration. */
describe.runIf(runMosquitto)("two orchestrators behind mosquitto", () => {
  let fleet: MosquittoFleet;
  beforeAll(async () => {
    fleet = await startMosquittoFleet("glance-mosquitto-");
  }, 120_000);
  afterAll(async () => {
    await fleet?.stop();
  });

  const attempt = (tls: { ca: string; cert: string; key: string }) =>
    new Promise<string>((resolve) => {
      const c = mqtt.connect(fleet.url, { ...tls, protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 5000 });
      const done = (how: string) => {
        c.end(true);
        resolve(how);
      };
      c.once("connect", () => done("connected"));
      c.once("error", (e) => done(/revoked/.test(e.message) ? "revoked" : "refused"));
      c.once("close", () => done("refused"));
    });

  const registerAndConnect = async (storeId: string) => {
    const node = await fleet.register(storeId);
    expect(node.mqttUrl).toBe(fleet.url);
    return { node, client: await fleet.connect(node) };
  };

  it("each template is processed by exactly one instance", async () => {
    const { orchs, api } = fleet;
    const o = orchs[0] as Orchestrator;
    const storeId = `store-${Math.random().toString(36).slice(2, 8)}`;
    await api("/api/stores", { id: storeId, name: "Glance Soho" });
    const space = ((await (await fetch(new URL("/api/health", o.httpUrl))).json()) as { space: string }).space;
    const nodes = [await registerAndConnect(storeId), await registerAndConnect(storeId)];
    const N = 40;
    const accepted = () => orchs.reduce((sum, x) => sum + x.metrics().accepted, 0);
    // a node sends its next template after the previous one was taken in (its cadence is seconds, not µs)
    for (let seq = 1; seq <= N / nodes.length; seq++) {
      for (const { node, client } of nodes) {
        const before = accepted();
        const template = sealTemplate({ node, seq, embedding: randomEmbedding(), recipient: o.sealingKey, space });
        await client.publishAsync(topicFor("template", node.nodeId), encodeMessage("template", template), {
          qos: 1,
        });
        await waitFor(() => accepted() > before);
      }
    }
    await new Promise((r) => setTimeout(r, 500)); // a second delivery would arrive by now
    const perInstance = orchs.map((x) => x.metrics());
    expect(perInstance.map((m) => m.rejected)).toEqual([{}, {}]);
    expect(accepted()).toBe(N);
    // shared subscription: the work is spread, not duplicated
    for (const m of perInstance) expect(m.accepted).toBeGreaterThan(0);
  });

  it("refuses a node publishing on another node's topic, by the ACL made from the contract", async () => {
    const { orchs, api } = fleet;
    const o = orchs[0] as Orchestrator;
    const storeId = `store-${Math.random().toString(36).slice(2, 8)}`;
    await api("/api/stores", { id: storeId, name: "Glance Soho" });
    const a = await registerAndConnect(storeId);
    const b = await registerAndConnect(storeId);
    const before = orchs.map((x) => x.metrics());
    const template = sealTemplate({
      node: b.node,
      seq: 1,
      embedding: randomEmbedding(),
      recipient: o.sealingKey,
      space: "x",
    });
    // mosquitto acknowledges and silently drops a publish the ACL denies (MQTT 3.1.1 has no negative PUBACK)
    await a.client.publishAsync(topicFor("template", b.node.nodeId), encodeMessage("template", template), { qos: 1 });
    await new Promise((r) => setTimeout(r, 500));
    expect(orchs.map((x) => x.metrics())).toEqual(before);
    expect(await readFile(join(fleet.dir, "mosquitto", "acl"), "utf8")).toContain("%u");
  });

  it("refuses a client without a fleet certificate", async () => {
    const ca = await readFile(join(fleet.dir, "mosquitto", "ca.pem"), "utf8");
    const outcome = await new Promise<string>((resolve) => {
      const c = mqtt.connect(fleet.url, { ca, protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 5000 });
      const done = (how: string) => {
        c.end(true);
        resolve(how);
      };
      c.once("connect", () => done("connected"));
      c.once("error", () => done("refused"));
      c.once("close", () => done("refused"));
    });
    expect(outcome, fleet.log()).toBe("refused");
  });

  // last: it leaves a NODE_REVOKED rejection in the metrics the tests above compare
  it("a revoked node's certificate is refused once mosquitto reloads the CRL the orchestrator rewrote; others still connect", async () => {
    const { orchs, api } = fleet;
    const o = orchs[0] as Orchestrator;
    const storeId = `store-${Math.random().toString(36).slice(2, 8)}`;
    await api("/api/stores", { id: storeId, name: "Glance Soho" });
    const lost = await fleet.register(storeId);
    const kept = await fleet.register(storeId);
    expect(await attempt(lost.tls)).toBe("connected");
    const live = await mqtt.connectAsync(fleet.url, { ...lost.tls, protocolVersion: 4, reconnectPeriod: 0 });

    const res = await fetch(new URL(`/api/nodes/${lost.nodeId}/revoke`, o.httpUrl), {
      method: "POST",
      headers: { authorization: `Bearer ${o.adminToken}` },
    });
    expect(res.status).toBe(200);
    fleet.broker.kill("SIGHUP"); // what `systemctl reload mosquitto` does
    await waitFor(() => fleet.log().includes("Reloading config"));
    await new Promise((r) => setTimeout(r, 300));
    expect(await attempt(lost.tls), fleet.log()).toBe("revoked");
    expect(await attempt(kept.tls), fleet.log()).toBe("connected");

    // mosquitto keeps a session opened before the revocation: its templates are rejected by the orchestrators
    const space = ((await (await fetch(new URL("/api/health", o.httpUrl))).json()) as { space: string }).space;
    const rejected = () => orchs.reduce((n, x) => n + (x.metrics().rejected.NODE_REVOKED ?? 0), 0);
    const before = rejected();
    const template = sealTemplate({
      node: lost,
      seq: 1,
      embedding: randomEmbedding(),
      recipient: o.sealingKey,
      space,
    });
    await live.publishAsync(topicFor("template", lost.nodeId), encodeMessage("template", template), { qos: 1 });
    await waitFor(() => rejected() === before + 1);
  });
});
