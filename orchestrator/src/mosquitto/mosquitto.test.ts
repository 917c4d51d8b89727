import { EventEmitter } from "node:events";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { contract, encodeMessage, topicFor } from "@glance/shared";
import mqtt, { type MqttClient } from "mqtt";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Orchestrator } from "../index.ts";
import { randomEmbedding, sealTemplate } from "../testing/harness.ts";
import { type MosquittoFleet, runMosquitto, startMosquittoFleet } from "../testing/mosquitto.ts";
import { mosquittoAcl } from "./config.ts";
import { startMosquittoRevocation } from "./revocation.ts";

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

describe("telling mosquitto to reload the CRL", () => {
  const quiet = pino({ level: "silent" });
  const noClient = new EventEmitter() as unknown as MqttClient;

  it("runs the configured reload command", async () => {
    const dir = await mkdtemp(join(tmpdir(), "glance-reload-"));
    const marker = join(dir, "reloaded");
    const r = await startMosquittoRevocation({
      client: noClient,
      logger: quiet,
      reload: { command: ["touch", marker] },
      dynamicSecurity: false,
    });
    await r.reloadCrl();
    expect(await readFile(marker, "utf8")).toBe("");
    await rm(dir, { recursive: true, force: true });
  });

  it("fails with CONFIG_INVALID and says what to do when mosquitto's pid file is missing", async () => {
    const r = await startMosquittoRevocation({
      client: noClient,
      logger: quiet,
      reload: { pidFile: join(tmpdir(), "glance-no-such-dir", "mosquitto.pid") },
      dynamicSecurity: false,
    });
    await expect(r.reloadCrl()).rejects.toMatchObject({
      code: "CONFIG_INVALID",
      message: expect.stringMatching(/reload mosquitto by hand/),
    });
  });
});

async function waitFor(check: () => boolean, ms = 10_000): Promise<void> {
  const until = Date.now() + ms;
  while (!check()) {
    if (Date.now() > until) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** `closed` within `ms`, or a failure that says what did not happen */
function within(closed: Promise<void>, what: string, ms = 10_000): Promise<void> {
  return Promise.race([
    closed,
    new Promise<void>((_, reject) => setTimeout(() => reject(new Error(`${what} within ${ms} ms`)), ms).unref()),
  ]);
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

  it("revoking a node closes its live session on mosquitto and its certificate is refused from then on, with no signal from anyone but the orchestrator; other nodes still connect", async () => {
    const { orchs, api } = fleet;
    const o = orchs[0] as Orchestrator;
    const storeId = `store-${Math.random().toString(36).slice(2, 8)}`;
    await api("/api/stores", { id: storeId, name: "Glance Soho" });
    const lost = await fleet.register(storeId);
    const kept = await fleet.register(storeId);
    const live = await fleet.connect(lost);
    await live.subscribeAsync(
      [topicFor("desired", lost.nodeId), topicFor("command", lost.nodeId), topicFor("gallery", lost.nodeId)],
      { qos: 1 },
    );
    const closed = new Promise<void>((resolve) => live.once("close", () => resolve()));
    const reloadsBefore = fleet.log().split("Reloading config").length;

    const res = await fetch(new URL(`/api/nodes/${lost.nodeId}/revoke`, o.httpUrl), {
      method: "POST",
      headers: { authorization: `Bearer ${o.adminToken}` },
    });
    expect(res.status).toBe(200);
    // the revoke call returns once mosquitto has closed the session (dynamic-security plugin) and reloaded the CRL
    await within(closed, "the revoked node's live session was not closed");
    expect(live.connected).toBe(false);
    expect(fleet.log().split("Reloading config").length, fleet.log()).toBeGreaterThan(reloadsBefore);
    expect(await attempt(lost.tls), fleet.log()).toBe("revoked");
    expect(await attempt(kept.tls), fleet.log()).toBe("connected");
  });
});

/**
 * mosquitto that is never told to reload its CRL (no `reload` configured, or the signal failed): a revoked node's
 * certificate still passes the TLS handshake, but the dynamic-security plugin has it on a deny-all role ahead of the
 * ACL file, so the session it gets reads and writes nothing.
 */
describe.runIf(runMosquitto)("a revoked node behind mosquitto that kept its old CRL", () => {
  let fleet: MosquittoFleet;
  beforeAll(async () => {
    fleet = await startMosquittoFleet("glance-mosquitto-stale-", 1, { reloadCrl: false });
  }, 120_000);
  afterAll(async () => {
    await fleet?.stop();
  });

  it("gets a connection that receives none of its commands and delivers none of its templates", async () => {
    const o = fleet.orchs[0] as Orchestrator;
    const storeId = `store-${Math.random().toString(36).slice(2, 8)}`;
    await fleet.api("/api/stores", { id: storeId, name: "Glance Soho" });
    const space = ((await (await fetch(new URL("/api/health", o.httpUrl))).json()) as { space: string }).space;
    const lost = await fleet.register(storeId);
    const kept = await fleet.register(storeId);
    const first = await fleet.connect(lost);
    const closed = new Promise<void>((resolve) => first.once("close", () => resolve()));
    const res = await fetch(new URL(`/api/nodes/${lost.nodeId}/revoke`, o.httpUrl), {
      method: "POST",
      headers: { authorization: `Bearer ${o.adminToken}` },
    });
    expect(res.status).toBe(200);
    await within(closed, "the revoked node's live session was not closed");
    expect(fleet.log()).not.toContain("Reloading config");

    // back in with the revoked certificate (the CRL mosquitto holds predates the revocation)
    const again = await fleet.connect(lost);
    const other = await fleet.connect(kept);
    const got = { lost: [] as string[], kept: [] as string[] };
    again.on("message", (topic) => got.lost.push(topic));
    other.on("message", (topic) => got.kept.push(topic));
    // refused by the plugin's deny-all role (SUBACK 0x80); a read would be denied at delivery in any case
    await expect(again.subscribeAsync(topicFor("command", lost.nodeId), { qos: 1 })).rejects.toThrow(/Subscribe error/);
    await other.subscribeAsync(topicFor("command", kept.nodeId), { qos: 1 });
    // what the orchestrator would send: one command to each, through an orchestrator connection
    const orchestrator = await fleet.connectOrchestrator();
    const command = (nodeId: string) =>
      encodeMessage("command", { id: `cmd-${nodeId}`, kind: "restart-pipeline", ts: Date.now() });
    await orchestrator.publishAsync(topicFor("command", lost.nodeId), command(lost.nodeId), { qos: 1 });
    await orchestrator.publishAsync(topicFor("command", kept.nodeId), command(kept.nodeId), { qos: 1 });
    await waitFor(() => got.kept.length === 1);

    const before = o.metrics();
    const template = sealTemplate({ node: lost, seq: 1, embedding: randomEmbedding(), recipient: o.sealingKey, space });
    await again.publishAsync(topicFor("template", lost.nodeId), encodeMessage("template", template), { qos: 1 });
    await new Promise((r) => setTimeout(r, 500)); // the template and the command would have arrived by now
    expect(got.lost).toEqual([]);
    // not even rejected as NODE_REVOKED: mosquitto never passed it on
    expect(o.metrics()).toEqual(before);
  });
});
