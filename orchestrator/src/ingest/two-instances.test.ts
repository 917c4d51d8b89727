import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createConnection, createServer } from "node:net";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import { contract, encodeMessage, generateSigningKeyPair, type KeyPair, topicFor } from "@glance/shared";
import mqtt, { type MqttClient } from "mqtt";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Orchestrator, startOrchestrator } from "../index.ts";
import { generateMosquittoConfig } from "../mosquitto/config.ts";
import { loadOrCreateFleetCa, signingKeyPem } from "../pki/fleet-ca.ts";
import { freshPostgres, randomEmbedding, requiredPostgresUrl, runPostgres, sealTemplate } from "../testing/harness.ts";

const MOSQUITTO = "/usr/sbin/mosquitto";
const haveMosquitto = existsSync(MOSQUITTO);

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

/**
 * The replay window's reason to exist: mosquitto's shared subscription deals a node's burst out to two orchestrator
 * instances on one Postgres, so each sees that node's seqs with gaps and out of order relative to the other. With
 * "seq must exceed the last accepted" about a tenth of such a burst was lost as REPLAYED_SEQUENCE.
 */
describe.runIf(runPostgres && (haveMosquitto || process.env.GLANCE_REQUIRE_POSTGRES))(
  "a burst shared by two orchestrators behind mosquitto",
  () => {
    let dir: string;
    let pg: { url: string; drop(): Promise<void> };
    let broker: ChildProcess;
    let brokerLog = "";
    let url: string;
    const orchs: Orchestrator[] = [];
    const clients: MqttClient[] = [];

    beforeAll(async () => {
      if (!haveMosquitto) throw new Error(`${MOSQUITTO} is missing: apt-get install mosquitto`);
      pg = await freshPostgres(requiredPostgresUrl());
      dir = await mkdtemp(join(tmpdir(), "glance-two-instances-"));
      const dataDir = join(dir, "orchestrator");
      const ca = await loadOrCreateFleetCa(dataDir);
      const port = await freePort();
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

    const registerAndConnect = async (storeId: string) => {
      const signingKey: KeyPair = generateSigningKeyPair();
      const nodeId = `node-${Math.random().toString(36).slice(2, 10)}`;
      const body = (await api("/api/nodes", {
        nodeId,
        storeId,
        cameraId: "entrance",
        signingPublicKey: signingKey.publicKey,
      })) as { tls: { ca: string; cert: string } };
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

    it("a node's burst dealt out to both instances is accepted whole, each template by one of them, then replays are refused", async () => {
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
  },
);
