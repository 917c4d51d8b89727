import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import type { Orchestrator } from "@glance/orchestrator";
import { decodeMessage, topicFor } from "@glance/shared";
import mqtt from "mqtt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { claimNode } from "./index.ts";
import { startTlsOrchestrator } from "./test-orchestrator.ts";

describe("claiming a node for a broker with mutual TLS", () => {
  let dir: string;
  let orch: Orchestrator;
  let stop: () => Promise<void>;

  beforeAll(async () => {
    ({ dir, orch, stop } = await startTlsOrchestrator("glance-claim-"));
  }, 120_000);

  afterAll(async () => {
    await stop?.();
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
