import { type ChildProcess, execFile, spawn } from "node:child_process";
import { once } from "node:events";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import type { Orchestrator } from "@glance/orchestrator";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { claimNode, writeNodeConfig } from "./index.ts";
import { startTlsOrchestrator } from "./test-orchestrator.ts";

const run = promisify(execFile);
const ROOT = new URL("../../", import.meta.url).pathname;
const TSX = join(ROOT, "node_modules", ".bin", "tsx");
const AGENT = join(ROOT, "node-agent", "src", "cli.ts");
const SCENES = join(ROOT, "demo", "people", "scenes");

async function waitFor(check: () => boolean, ms: number): Promise<void> {
  const until = Date.now() + ms;
  while (!check()) {
    if (Date.now() > until) throw new Error(`condition not met in ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function stopAgent(agent: ChildProcess | undefined): Promise<void> {
  if (!agent || agent.exitCode !== null) return;
  const exited = once(agent, "exit");
  agent.kill("SIGTERM");
  await exited;
}

describe("a claimed node on the mutual-TLS broker, from its config file", () => {
  let dir: string;
  let orch: Orchestrator;
  let stop: () => Promise<void>;
  let agent: ChildProcess | undefined;

  beforeAll(async () => {
    ({ dir, orch, stop } = await startTlsOrchestrator("glance-tls-node-"));
  }, 120_000);

  afterAll(async () => {
    await stopAgent(agent);
    await stop?.();
  });

  it("claim, write node.json, doctor passes, the agent's templates arrive; renew; revoked: dropped and refused", {
    timeout: 420_000,
  }, async () => {
    const nodeDir = join(dir, "node");
    const config = join(nodeDir, "node.json");
    const node = await claimNode({
      apiUrl: orch.httpUrl,
      token: orch.adminToken,
      nodeId: "soho-door",
      storeId: "soho",
      cameraId: "door",
      keyDir: join(nodeDir, "state"),
    });
    await writeNodeConfig(config, node, {
      apiUrl: orch.httpUrl,
      dataDir: "state",
      source: { kind: "folder", path: SCENES, loop: true, pace: "every-frame" },
    });
    expect(JSON.parse(await readFile(config, "utf8")).mqtt).toEqual({
      url: orch.mqttUrl,
      ca: "state/fleet-ca.pem",
      cert: "state/node-cert.pem",
    });

    // the technician's check: certificate and broker over TLS (no password anywhere)
    const doctor = await run(TSX, [AGENT, "doctor", "--config", config], { cwd: ROOT });
    expect(doctor.stdout).toMatch(
      /\[ ok \] certificate serial [0-9a-f]+ for soho-door and this node's key, chains to the fleet CA, valid until .* \(89 days left\)/,
    );
    expect(doctor.stdout).toContain("accepted soho-door's certificate (mutual TLS)");
    expect(doctor.stdout).toContain("All checks passed.");

    // the agent, started from its config, sends templates the orchestrator accepts
    const rejections: string[] = [];
    orch.events.on("rejection", (r: { code: string }) => rejections.push(r.code));
    agent = spawn(TSX, [AGENT, "run", "--config", config], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    agent.stderr?.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    const accepted = orch.metrics().accepted;
    await waitFor(() => orch.metrics().accepted > accepted || agent?.exitCode !== null, 240_000);
    expect(agent.exitCode, stderr).toBeNull();
    expect(rejections).toEqual([]);

    // renewal from the node: a new certificate in node-cert.pem
    const before = await readFile(join(nodeDir, "state", "node-cert.pem"), "utf8");
    const renewed = await run(TSX, [AGENT, "renew", "--config", config], { cwd: ROOT });
    expect(renewed.stdout).toMatch(/^renewed: serial [0-9a-f]+, valid until .* \(89 days\)\n$/);
    expect(await readFile(join(nodeDir, "state", "node-cert.pem"), "utf8")).not.toBe(before);
    const notDue = await run(TSX, [AGENT, "renew", "--if-due", "--config", config], { cwd: ROOT });
    expect(notDue.stdout).toMatch(/^not due/);

    // revocation: the running agent's session is dropped at once, and its reconnects (every 2 s) are refused
    const clientId = `glance-node-${node.nodeId}`;
    const aedes = orch.broker;
    const connects: string[] = [];
    aedes.on("client", (c) => connects.push(c.id));
    const dropped = new Promise<void>((resolve) => aedes.on("clientDisconnect", (c) => c.id === clientId && resolve()));
    const res = await fetch(new URL(`/api/nodes/${node.nodeId}/revoke`, orch.httpUrl), {
      method: "POST",
      headers: { authorization: `Bearer ${orch.adminToken}` },
    });
    expect(res.status).toBe(200);
    await dropped;
    await new Promise((r) => setTimeout(r, 6000));
    expect(connects.filter((id) => id === clientId)).toEqual([]);
    await stopAgent(agent);

    const after = await run(TSX, [AGENT, "doctor", "--json", "--config", config], { cwd: ROOT }).catch(
      (e: { stdout: string }) => e,
    );
    const broker = (JSON.parse(after.stdout) as { name: string; ok: boolean; next?: string }[]).find(
      (c) => c.name === "broker",
    );
    expect(broker).toMatchObject({ ok: false, next: expect.stringMatching(/revoked/) });
  });
});

describe("a running node renews its short-lived certificate by itself", () => {
  let dir: string;
  let orch: Orchestrator;
  let stop: () => Promise<void>;
  let agent: ChildProcess | undefined;

  beforeAll(async () => {
    // 120 s certificates (plus the CA's minute of clock skew before): renewal falls due about 60 s after issue
    ({ dir, orch, stop } = await startTlsOrchestrator("glance-tls-renew-", { nodeCertValidityDays: 120 / 86_400 }));
  }, 120_000);

  afterAll(async () => {
    await stopAgent(agent);
    await stop?.();
  });

  it("renews when a third of the lifetime is left and keeps delivering with the new certificate", {
    timeout: 420_000,
  }, async () => {
    const nodeDir = join(dir, "node");
    const config = join(nodeDir, "node.json");
    const node = await claimNode({
      apiUrl: orch.httpUrl,
      token: orch.adminToken,
      nodeId: "soho-till",
      storeId: "soho",
      cameraId: "till",
      keyDir: join(nodeDir, "state"),
    });
    await writeNodeConfig(config, node, {
      apiUrl: orch.httpUrl,
      dataDir: "state",
      source: { kind: "folder", path: SCENES, loop: true, pace: "every-frame", fps: 2 },
    });
    agent = spawn(TSX, [AGENT, "run", "--config", config], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
    let log = "";
    const collect = (d: Buffer) => {
      log += d.toString();
    };
    agent.stdout?.on("data", collect);
    agent.stderr?.on("data", collect);
    await waitFor(() => orch.metrics().accepted > 0 || agent?.exitCode !== null, 120_000);
    expect(agent.exitCode, log).toBeNull();

    await waitFor(() => log.includes("reconnecting with the renewed certificate") || agent?.exitCode !== null, 150_000);
    expect(agent.exitCode, log).toBeNull();
    const renewed = await readFile(join(nodeDir, "state", "node-cert.pem"), "utf8");
    expect(renewed).not.toBe(node.tls.cert);
    // after the restart with the new certificate, templates are accepted again
    const before = orch.metrics().accepted;
    await waitFor(() => orch.metrics().accepted > before || agent?.exitCode !== null, 120_000);
    expect(agent.exitCode, log).toBeNull();
    expect(orch.metrics().rejected).toEqual({});
  });
});
