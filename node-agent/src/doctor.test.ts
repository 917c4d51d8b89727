import { execFile } from "node:child_process";
import { chmodSync, writeFileSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { Aedes } from "aedes";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { keyFile, loadOrCreateKey, type NodeConfig, readConfig } from "./config.ts";
import { doctor, formatChecks } from "./doctor.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const TSX = join(ROOT, "node_modules", ".bin", "tsx");
const CLI = new URL("./cli.ts", import.meta.url).pathname;

let broker: Aedes;
let server: Server;
let port: number;

beforeAll(async () => {
  // a broker that, like HQ's, refuses a wrong password
  broker = await Aedes.createBroker({
    authenticate: (_client, username, password, done) => {
      const ok = username === "doc-node" && password?.toString() === "right";
      done(ok ? null : Object.assign(new Error("bad credentials"), { returnCode: 4 }), ok);
    },
  });
  server = createServer(broker.handle);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  port = (server.address() as { port: number }).port;
});

afterAll(async () => {
  await new Promise<void>((resolve) => broker.close(() => resolve()));
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

async function nodeConfig(overrides: Record<string, unknown> = {}): Promise<{ file: string; config: NodeConfig }> {
  const dir = await mkdtemp(join(tmpdir(), "glance-doctor-"));
  const file = join(dir, "node.json");
  writeFileSync(
    file,
    JSON.stringify({
      nodeId: "doc-node",
      cameraId: "cam-1",
      mqtt: { url: `mqtt://127.0.0.1:${port}`, username: "doc-node", password: "right" },
      source: { kind: "folder", path: join(ROOT, "demo/people/scenes"), pace: "every-frame" },
      dataDir: "state",
      ...overrides,
    }),
  );
  const config = readConfig(file);
  loadOrCreateKey(config.dataDir);
  return { file, config };
}

describe("glance-agent doctor", () => {
  it("on a healthy node every check passes: key, disk, clock, signed models, camera, broker credentials", async () => {
    const { config } = await nodeConfig();
    const checks = await doctor(config, config.mqtt.password);
    expect(checks.map((c) => [c.name, c.ok])).toEqual([
      ["node key", true],
      ["data disk", true],
      ["clock", true],
      ["models", true],
      ["camera", true],
      ["broker", true],
    ]);
    expect(checks.find((c) => c.name === "models")?.detail).toMatch(
      /^blazeface-back@[\d.]+ signed by \S+; \S+@[\d.]+ signed by \S+; signatures/,
    );
    expect(checks.find((c) => c.name === "camera")?.detail).toMatch(/first frame \d+×\d+/);
  }, 60_000);

  it("names each problem with its next step: readable key, dead camera, wrong password; exit code 1", async () => {
    const { file, config } = await nodeConfig({
      source: { kind: "v4l2", device: "/dev/video-not-there" },
      mqtt: { url: `mqtt://127.0.0.1:${port}`, username: "doc-node", password: "wrong" },
    });
    chmodSync(keyFile(config.dataDir), 0o644);
    const checks = await doctor(config, config.mqtt.password);
    const failed = Object.fromEntries(checks.filter((c) => !c.ok).map((c) => [c.name, c]));
    expect(Object.keys(failed).sort()).toEqual(["broker", "camera", "node key"]);
    expect(failed["node key"]?.next).toMatch(/chmod 600/);
    expect(failed.camera?.next).toMatch(/video group/);
    expect(failed.broker?.next).toMatch(/refused the credentials/);
    expect(formatChecks(checks)).toMatch(/\[FAIL\] node key .*0644[\s\S]*next: chmod 600/);

    const exit = await promisify(execFile)(TSX, [CLI, "doctor", "--config", file], { cwd: ROOT }).catch(
      (e: { code: number; stdout: string }) => e,
    );
    expect(exit).toMatchObject({ code: 1, stdout: expect.stringContaining("3 check(s) failed.") });
  }, 90_000);

  it("an unreachable broker is told apart from refused credentials", async () => {
    const { config } = await nodeConfig({
      mqtt: { url: "mqtt://127.0.0.1:9", username: "doc-node", password: "right" },
    });
    const checks = await doctor(config, "right");
    expect(checks.find((c) => c.name === "broker")).toMatchObject({
      ok: false,
      next: expect.stringMatching(/network/),
    });
  }, 60_000);
});
