import { EventEmitter } from "node:events";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { contract, encodeMessage, topicFor } from "@glance/shared";
import mqtt, { type MqttClient } from "mqtt";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ORCHESTRATOR_USERNAME } from "../broker/broker.ts";
import { Id } from "../http/ids.ts";
import { type Orchestrator, startOrchestrator } from "../index.ts";
import { randomEmbedding, sealTemplate } from "../testing/harness.ts";
import { type MosquittoFleet, runMosquitto, startMosquittoFleet, TOOL_INSTANCE } from "../testing/mosquitto.ts";
import { generateMosquittoConfig, mosquittoAcl, orchestratorUser } from "./config.ts";
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

  it("makes each client's id its certificate CN and grants the orchestrator topics to every named instance", async () => {
    const dir = await mkdtemp(join(tmpdir(), "glance-mosquitto-conf-"));
    const { acl, confFile } = await generateMosquittoConfig(contract, {
      dir,
      port: 8883,
      tls: { ca: "ca", cert: "cert", key: "key" },
      orchestratorInstances: ["hq-1", "hq-2"],
      dynamicSecurityPlugin: "/usr/lib/mosquitto_dynamic_security.so",
    });
    const conf = await readFile(confFile, "utf8");
    expect(conf).toContain("use_identity_as_username true\n");
    expect(conf).toContain("use_username_as_clientid true\n");
    expect(await readFile(join(dir, "acl"), "utf8")).toBe(acl);
    for (const user of ["$orchestrator.hq-1", "$orchestrator.hq-2"]) {
      const block = acl.slice(acl.indexOf(`user ${user}\n`)).split("\n\n")[0] as string;
      expect(block).toContain("topic read glance/v1/node/+/template\n");
      expect(block).toContain("topic write glance/v1/node/+/desired\n");
      expect(block).toContain("topic write $CONTROL/dynamic-security/v1\n");
      expect(block).toContain("topic read $CONTROL/dynamic-security/v1/response");
    }
    // the unnamed user is not granted beside named instances: an instance started without its name gets nothing
    expect(acl.match(/^user .*$/gm)).toEqual(["user $orchestrator.hq-1", "user $orchestrator.hq-2"]);
    expect(mosquittoAcl(contract).match(/^user .*$/gm)).toEqual(["user $orchestrator"]);
    await rm(dir, { recursive: true, force: true });
  });

  it("refuses instance names mosquitto would read specially, and one name twice, before writing anything", async () => {
    const dir = join(tmpdir(), `glance-mosquitto-bad-${Math.random().toString(36).slice(2, 8)}`);
    const bad = ["a/b", "+", "#", "a#", "$x", "%u", "a b", "a.b", "", "-a", "x".repeat(33)];
    for (const name of bad) {
      expect(() => orchestratorUser(name), name).toThrow(expect.objectContaining({ code: "CONFIG_INVALID" }));
      await expect(
        generateMosquittoConfig(contract, {
          dir,
          port: 8883,
          tls: { ca: "ca", cert: "cert", key: "key" },
          orchestratorInstances: ["hq-1", name],
        }),
        name,
      ).rejects.toMatchObject({ code: "CONFIG_INVALID" });
    }
    expect(() => mosquittoAcl(contract, { orchestratorInstances: ["hq-1", "hq-1"] })).toThrow(/listed twice/);
    await expect(readFile(join(dir, "acl"), "utf8")).rejects.toThrow(/ENOENT/);
  });

  it("an orchestrator's user name can never be a node id", () => {
    for (const user of [ORCHESTRATOR_USERNAME, orchestratorUser("hq-1"), orchestratorUser("node-1")]) {
      expect(Id.safeParse(user).success, user).toBe(false);
    }
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

  /** connects with `clientId` and leaves again: what a node trying to take another client's session over does */
  const connectAs = async (tls: { ca: string; cert: string; key: string }, clientId: string) => {
    const c = await mqtt.connectAsync(fleet.url, {
      ...tls,
      clientId,
      protocolVersion: 4,
      reconnectPeriod: 0,
      connectTimeout: 5000,
    });
    // mosquitto closes a session it hands over while it handles the CONNECT; the victim's close arrives by now
    await new Promise((r) => setTimeout(r, 300));
    await c.endAsync();
  };
  const takeovers = (since: number) =>
    fleet
      .log()
      .slice(since)
      .match(/already connected, closing old connection/g);

  it("a node that sends another node's client id does not disconnect that node, which keeps receiving and publishing", async () => {
    const { orchs, api } = fleet;
    const o = orchs[0] as Orchestrator;
    const storeId = `store-${Math.random().toString(36).slice(2, 8)}`;
    await api("/api/stores", { id: storeId, name: "Glance Soho" });
    const space = ((await (await fetch(new URL("/api/health", o.httpUrl))).json()) as { space: string }).space;
    const victim = await registerAndConnect(storeId);
    const attacker = await fleet.register(storeId);
    await victim.client.subscribeAsync(topicFor("command", victim.node.nodeId), { qos: 1 });
    let closed = false;
    victim.client.on("close", () => {
      closed = true;
    });
    const since = fleet.log().length;

    // the client id the victim sent, and the one mosquitto now gives it (its CN)
    for (const clientId of [victim.client.options.clientId as string, victim.node.nodeId]) {
      await connectAs(attacker.tls, clientId);
    }
    expect(closed, fleet.log().slice(since)).toBe(false);
    expect(victim.client.connected).toBe(true);
    expect(takeovers(since), fleet.log().slice(since)).toBeNull();
    // mosquitto gave the attacker its own CN as client id, whatever it sent
    expect(fleet.log().slice(since)).toContain(` as ${attacker.nodeId} (`);

    const got: string[] = [];
    victim.client.on("message", (topic) => got.push(topic));
    const tool = await fleet.connectOrchestrator();
    const command = encodeMessage("command", { id: "cmd-still-there", kind: "restart-pipeline", ts: Date.now() });
    await tool.publishAsync(topicFor("command", victim.node.nodeId), command, { qos: 1 });
    await waitFor(() => got.length === 1);
    const accepted = () => orchs.reduce((sum, x) => sum + x.metrics().accepted, 0);
    const before = accepted();
    const template = sealTemplate({
      node: victim.node,
      seq: 1,
      embedding: randomEmbedding(),
      recipient: o.sealingKey,
      space,
    });
    await victim.client.publishAsync(topicFor("template", victim.node.nodeId), encodeMessage("template", template), {
      qos: 1,
    });
    await waitFor(() => accepted() === before + 1);
  });

  it("a node that sends an orchestrator's client id disconnects no orchestrator", async () => {
    const storeId = `store-${Math.random().toString(36).slice(2, 8)}`;
    await fleet.api("/api/stores", { id: storeId, name: "Glance Soho" });
    const attacker = await fleet.register(storeId);
    const tool = await fleet.connectOrchestrator();
    let closed = false;
    tool.on("close", () => {
      closed = true;
    });
    const since = fleet.log().length;
    const ids = [
      tool.options.clientId as string,
      orchestratorUser(TOOL_INSTANCE),
      ...fleet.instances.map((name) => orchestratorUser(name)),
      ORCHESTRATOR_USERNAME,
    ];
    for (const clientId of ids) await connectAs(attacker.tls, clientId);
    expect(closed, fleet.log().slice(since)).toBe(false);
    expect(tool.connected).toBe(true);
    // the instances' own sessions: an instance would reconnect by itself, but mosquitto logs each session it hands over
    expect(takeovers(since), fleet.log().slice(since)).toBeNull();
    // and the tool's connection still carries what an orchestrator sends
    const node = await registerAndConnect(storeId);
    const got: string[] = [];
    node.client.on("message", (topic) => got.push(topic));
    await node.client.subscribeAsync(topicFor("command", node.node.nodeId), { qos: 1 });
    const command = encodeMessage("command", { id: "cmd-from-tool", kind: "restart-pipeline", ts: Date.now() });
    await tool.publishAsync(topicFor("command", node.node.nodeId), command, { qos: 1 });
    await waitFor(() => got.length === 1);
  });

  it("an instance added later is refused until the configuration is generated with its name and mosquitto reloaded, and nobody is dropped meanwhile", async () => {
    const storeId = `store-${Math.random().toString(36).slice(2, 8)}`;
    await fleet.api("/api/stores", { id: storeId, name: "Glance Soho" });
    const node = await registerAndConnect(storeId);
    let closed = false;
    node.client.on("close", () => {
      closed = true;
    });
    const third = "instance-3";
    const start = () =>
      startOrchestrator({
        dataDir: join(fleet.dir, "orchestrator"),
        databaseUrl: fleet.databaseUrl,
        httpPort: 0,
        logger: pino({ level: "silent" }),
        broker: { external: { url: fleet.url, instance: third } },
      });
    // not in the ACL: mosquitto would let it subscribe and then deliver it nothing, so it refuses to start
    await expect(start()).rejects.toMatchObject({
      code: "CONFIG_INVALID",
      message: expect.stringMatching(/instance-3|orchestratorInstances/),
    });
    await fleet.reconfigure([...fleet.instances, TOOL_INSTANCE, third]);
    const o = await start();
    try {
      expect(closed).toBe(false);
      expect(node.client.connected).toBe(true);
    } finally {
      await o.stop();
      await fleet.reconfigure([...fleet.instances, TOOL_INSTANCE]);
    }
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
