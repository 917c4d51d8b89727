import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createConnection, createServer } from "node:net";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import { contract, encodeMessage, generateSigningKeyPair, type KeyPair, topicFor } from "@glance/shared";
import mqtt, { type MqttClient } from "mqtt";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Orchestrator, startOrchestrator } from "../index.ts";
import { loadOrCreateFleetCa, signingKeyPem } from "../pki/fleet-ca.ts";
import { freshPostgres, randomEmbedding, requiredPostgresUrl, runPostgres, sealTemplate } from "../testing/harness.ts";
import { generateMosquittoConfig, mosquittoAcl } from "./config.ts";

const MOSQUITTO = "/usr/sbin/mosquitto";
const haveMosquitto = existsSync(MOSQUITTO);

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

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function waitForPort(port: number, ms = 10_000): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = createConnection({ port, host: "127.0.0.1" }, () => {
        s.destroy();
        resolve(true);
      }).on("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`mosquitto did not listen on ${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function waitFor(check: () => boolean, ms = 10_000): Promise<void> {
  const until = Date.now() + ms;
  while (!check()) {
    if (Date.now() > until) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * Chains that outgrow one box: mosquitto with the generated configuration (mutual TLS, certificate CN as user name,
 * contract ACL) and two orchestrator instances on one Postgres database, sharing the template subscription.
 */
describe.runIf(runPostgres && (haveMosquitto || process.env.GLANCE_REQUIRE_POSTGRES))(
  "two orchestrators behind mosquitto",
  () => {
    let dir: string;
    let dataDir: string;
    let pg: { url: string; drop(): Promise<void> };
    let broker: ChildProcess;
    let brokerLog = "";
    let url: string;
    const orchs: Orchestrator[] = [];
    const clients: MqttClient[] = [];

    beforeAll(async () => {
      if (!haveMosquitto) throw new Error(`${MOSQUITTO} is missing: apt-get install mosquitto`);
      pg = await freshPostgres(requiredPostgresUrl());
      dir = await mkdtemp(join(tmpdir(), "glance-mosquitto-"));
      dataDir = join(dir, "orchestrator");
      const ca = await loadOrCreateFleetCa(dataDir);
      const port = await freePort();
      // mosquitto wants the CRL at start; the orchestrators rewrite it as they start and at each revocation
      await writeFile(ca.crlFile, await ca.createCrl([]));
      const { confFile } = await generateMosquittoConfig(contract, {
        dir: join(dir, "mosquitto"),
        port,
        user: userInfo().username,
        tls: await ca.issueServerCertificate(["localhost"]),
        crlFile: ca.crlFile,
      });
      broker = spawn(MOSQUITTO, ["-c", confFile], { stdio: ["ignore", "pipe", "pipe"] });
      broker.stdout?.on("data", (d: Buffer) => {
        brokerLog += d.toString();
      });
      broker.stderr?.on("data", (d: Buffer) => {
        brokerLog += d.toString();
      });
      await waitForPort(port).catch((e: Error) => {
        throw new Error(`${e.message}: ${brokerLog}`);
      });
      url = `mqtts://127.0.0.1:${port}`;
      // one data directory: the instances share the sealing key, the fleet CA and the admin token
      for (let i = 0; i < 2; i++) {
        orchs.push(
          await startOrchestrator({
            dataDir,
            databaseUrl: pg.url,
            httpPort: 0,
            logger: pino({ level: process.env.LOG_LEVEL ?? "silent" }),
            broker: { external: { url } },
          }),
        );
      }
    }, 120_000);

    afterAll(async () => {
      await Promise.all(clients.map((c) => c.endAsync(true).catch(() => {})));
      for (const o of orchs) await o.stop();
      broker?.kill("SIGTERM");
      await pg?.drop();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    const api = async (path: string, json: unknown) => {
      const o = orchs[0] as Orchestrator;
      const res = await fetch(new URL(path, o.httpUrl), {
        method: "POST",
        headers: { authorization: `Bearer ${o.adminToken}`, "content-type": "application/json" },
        body: JSON.stringify(json),
      });
      const body = (await res.json()) as Record<string, unknown>;
      if (res.status !== 201) throw new Error(`${path}: ${res.status} ${JSON.stringify(body)}`);
      return body;
    };

    const register = async (storeId: string) => {
      const signingKey: KeyPair = generateSigningKeyPair();
      const nodeId = `node-${Math.random().toString(36).slice(2, 10)}`;
      const body = (await api("/api/nodes", {
        nodeId,
        storeId,
        cameraId: "entrance",
        signingPublicKey: signingKey.publicKey,
      })) as { tls: { ca: string; cert: string } };
      return { nodeId, cameraId: "entrance", signingKey, tls: { ...body.tls, key: signingKeyPem(signingKey) } };
    };

    const attempt = (tls: { ca: string; cert: string; key: string }) =>
      new Promise<string>((resolve) => {
        const c = mqtt.connect(url, { ...tls, protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 5000 });
        const done = (how: string) => {
          c.end(true);
          resolve(how);
        };
        c.once("connect", () => done("connected"));
        c.once("error", (e) => done(/revoked/.test(e.message) ? "revoked" : "refused"));
        c.once("close", () => done("refused"));
      });

    const registerAndConnect = async (storeId: string) => {
      const signingKey: KeyPair = generateSigningKeyPair();
      const nodeId = `node-${Math.random().toString(36).slice(2, 10)}`;
      const body = (await api("/api/nodes", {
        nodeId,
        storeId,
        cameraId: "entrance",
        signingPublicKey: signingKey.publicKey,
      })) as { tls: { ca: string; cert: string }; mqtt: { url: string } };
      expect(body.mqtt.url).toBe(url);
      const client = await mqtt.connectAsync(url, {
        ca: body.tls.ca,
        cert: body.tls.cert,
        key: signingKeyPem(signingKey),
        clientId: `glance-node-${nodeId}`,
        protocolVersion: 4,
        reconnectPeriod: 0,
        connectTimeout: 5000,
      });
      clients.push(client);
      return { node: { nodeId, cameraId: "entrance", signingKey }, client };
    };

    it("each template is processed by exactly one instance", async () => {
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
      expect(await readFile(join(dir, "mosquitto", "acl"), "utf8")).toContain("%u");
    });

    it("refuses a client without a fleet certificate", async () => {
      const ca = await readFile(join(dir, "mosquitto", "ca.pem"), "utf8");
      const outcome = await new Promise<string>((resolve) => {
        const c = mqtt.connect(url, { ca, protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 5000 });
        const done = (how: string) => {
          c.end(true);
          resolve(how);
        };
        c.once("connect", () => done("connected"));
        c.once("error", () => done("refused"));
        c.once("close", () => done("refused"));
      });
      expect(outcome, brokerLog).toBe("refused");
    });

    // last: it leaves a NODE_REVOKED rejection in the metrics the tests above compare
    it("a revoked node's certificate is refused once mosquitto reloads the CRL the orchestrator rewrote; others still connect", async () => {
      const o = orchs[0] as Orchestrator;
      const storeId = `store-${Math.random().toString(36).slice(2, 8)}`;
      await api("/api/stores", { id: storeId, name: "Glance Soho" });
      const lost = await register(storeId);
      const kept = await register(storeId);
      expect(await attempt(lost.tls)).toBe("connected");
      const live = await mqtt.connectAsync(url, { ...lost.tls, protocolVersion: 4, reconnectPeriod: 0 });
      clients.push(live);

      const res = await fetch(new URL(`/api/nodes/${lost.nodeId}/revoke`, o.httpUrl), {
        method: "POST",
        headers: { authorization: `Bearer ${o.adminToken}` },
      });
      expect(res.status).toBe(200);
      broker.kill("SIGHUP"); // what `systemctl reload mosquitto` does
      await waitFor(() => brokerLog.includes("Reloading config"));
      await new Promise((r) => setTimeout(r, 300));
      expect(await attempt(lost.tls), brokerLog).toBe("revoked");
      expect(await attempt(kept.tls), brokerLog).toBe("connected");

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
  },
);
