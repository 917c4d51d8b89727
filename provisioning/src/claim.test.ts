import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Orchestrator, startOrchestrator } from "@glance/orchestrator";
import { decodeMessage, topicFor } from "@glance/shared";
import mqtt from "mqtt";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { claimNode } from "./index.ts";

describe("claiming a node for a broker with mutual TLS", () => {
  let dir: string;
  let orch: Orchestrator;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "glance-claim-"));
    orch = await startOrchestrator({
      dataDir: join(dir, "orchestrator"),
      httpPort: 0,
      mqttPort: 0,
      mqttTls: {},
      logger: pino({ level: "silent" }),
    });
    const res = await fetch(new URL("/api/stores", orch.httpUrl), {
      method: "POST",
      headers: { authorization: `Bearer ${orch.adminToken}`, "content-type": "application/json" },
      body: JSON.stringify({ id: "soho", name: "Glance Soho" }),
    });
    expect(res.status).toBe(201);
  }, 120_000);

  afterAll(async () => {
    await orch?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("keeps the certificate beside the key, readable only by the node, and it opens the broker", async () => {
    const keyDir = join(dir, "node");
    const node = await claimNode({
      apiUrl: orch.httpUrl,
      token: orch.adminToken,
      nodeId: "soho-entrance",
      storeId: "soho",
      cameraId: "entrance",
      keyDir,
    });
    for (const name of ["node-signing-key.json", "fleet-ca.pem", "node-cert.pem", "node-tls-key.pem"]) {
      expect((await stat(join(keyDir, name))).mode & 0o777, name).toBe(0o600);
    }
    expect(await readFile(join(keyDir, "node-cert.pem"), "utf8")).toBe(node.tls.cert);

    const client = await mqtt.connectAsync(node.mqtt.url, {
      ca: await readFile(join(keyDir, "fleet-ca.pem"), "utf8"),
      cert: await readFile(join(keyDir, "node-cert.pem"), "utf8"),
      key: await readFile(join(keyDir, "node-tls-key.pem"), "utf8"),
      clientId: `glance-node-${node.nodeId}`,
      protocolVersion: 4,
      reconnectPeriod: 0,
    });
    try {
      const desired = new Promise<Buffer>((resolve) => client.once("message", (_t, payload) => resolve(payload)));
      await client.subscribeAsync(topicFor("desired", node.nodeId), { qos: 1 });
      const state = decodeMessage("desired", topicFor("desired", node.nodeId), await desired);
      expect(state.storeId).toBe("soho");
    } finally {
      await client.endAsync();
    }
  });
});
