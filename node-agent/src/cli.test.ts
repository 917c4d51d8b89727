import { execFile, spawn } from "node:child_process";
import { once } from "node:events";
import { readdirSync, statSync, writeFileSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { DEFAULT_EMBEDDER } from "@glance/models";
import { decodeMessage, type NodeStatus, topicFor } from "@glance/shared";
import { Aedes } from "aedes";
import { connectAsync } from "mqtt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DiskQueue } from "./queue/disk-queue.ts";
import { startBroker } from "./queue/test-helpers.ts";

const run = promisify(execFile);
const ROOT = new URL("../../", import.meta.url).pathname;
const TSX = join(ROOT, "node_modules", ".bin", "tsx");
const CLI = new URL("./cli.ts", import.meta.url).pathname;
const VIDEO = join(ROOT, "demo/people/video/hamilton-clip.mp4");

let broker: Aedes;
let server: Server;
let port: number;

beforeAll(async () => {
  broker = await Aedes.createBroker();
  server = createServer(broker.handle);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  port = (server.address() as { port: number }).port;
});

afterAll(async () => {
  await new Promise<void>((resolve) => broker.close(() => resolve()));
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

describe("glance-agent run", () => {
  it("creates the node key on first run (owner-only), prints its public key, and keeps it on the next run", async () => {
    const dir = await mkdtemp(join(tmpdir(), "glance-cli-"));
    const config = join(dir, "node.json");
    writeFileSync(
      config,
      JSON.stringify({
        nodeId: "cli-node",
        cameraId: "cam-1",
        mqtt: { url: `mqtt://127.0.0.1:${port}`, username: "cli-node", password: "pw" },
        source: { kind: "folder", path: join(ROOT, "demo/people/scenes"), pace: "every-frame" },
        dataDir: "state",
        logLevel: "silent",
      }),
    );
    const first = await run(TSX, [CLI, "run", "--config", config], { cwd: ROOT });
    const key = /public signing key: ([A-Za-z0-9_-]{43}) \(new\)/.exec(first.stdout)?.[1];
    expect(key).toBeDefined();
    expect(statSync(join(dir, "state", "node-signing-key.json")).mode & 0o777).toBe(0o600);

    const second = await run(TSX, [CLI, "run", "--config", config], { cwd: ROOT });
    expect(second.stdout).toContain(`public signing key: ${key}\n`);
  });

  it("a node killed outright is shown offline by its last will", async () => {
    const dir = await mkdtemp(join(tmpdir(), "glance-cli-"));
    const config = join(dir, "node.json");
    writeFileSync(
      config,
      JSON.stringify({
        nodeId: "cli-crash",
        cameraId: "cam-1",
        mqtt: { url: `mqtt://127.0.0.1:${port}`, username: "cli-crash", password: "pw" },
        source: {
          kind: "replay",
          path: join(ROOT, "demo/people/video/hamilton-clip.mp4"),
          loop: true,
          fps: 5,
          width: 320,
        },
        dataDir: "state",
        logLevel: "silent",
      }),
    );
    const observer = await connectAsync(`mqtt://127.0.0.1:${port}`);
    const statuses: NodeStatus[] = [];
    const topic = topicFor("status", "cli-crash");
    observer.on("message", (t, payload) => {
      if (t === topic && payload.length > 0) statuses.push(decodeMessage("status", t, payload));
    });
    await observer.subscribeAsync(topic, { qos: 1 });
    // one process (no tsx wrapper), so SIGKILL kills the node itself and nothing says goodbye
    const node = spawn(process.execPath, ["--import", "tsx", CLI, "run", "--config", config], {
      cwd: ROOT,
      stdio: "ignore",
    });
    const until = async (ok: () => boolean) => {
      for (let i = 0; i < 300 && !ok(); i++) await new Promise((r) => setTimeout(r, 100));
    };
    await until(() => statuses.some((s) => s.online));
    expect(statuses.at(-1)?.online).toBe(true);
    node.kill("SIGKILL");
    await once(node, "exit");
    await until(() => statuses.at(-1)?.online === false);
    expect(statuses.at(-1)?.online).toBe(false);
    await observer.endAsync();
  });

  it("rejects a config it cannot use with a message naming the problem", async () => {
    const dir = await mkdtemp(join(tmpdir(), "glance-cli-"));
    const config = join(dir, "node.json");
    writeFileSync(config, JSON.stringify({ nodeId: "x", cameraId: "c", source: { kind: "webcam" } }));
    const error = await run(TSX, [CLI, "run", "--config", config], { cwd: ROOT }).catch(
      (e: { code: number; stderr: string }) => e,
    );
    expect(error).toMatchObject({ code: 1 });
    expect((error as { stderr: string }).stderr).toMatch(/CONFIG_INVALID: .*mqtt/);
  });
});

describe("glance-agent bench", () => {
  it("prints per-stage latency on this CPU as JSON, fp32 and int8 embedders side by side when both are installed", async () => {
    const { stdout } = await run(TSX, [CLI, "bench", "--frames", "12", "--width", "320", "--json"], { cwd: ROOT });
    const result = JSON.parse(stdout) as {
      frames: number;
      faces: number;
      stages: Record<string, { n: number; p50: number; p95: number }>;
      embedders: { name: string; loaded: boolean; embed?: { n: number }; agreement?: { mean: number } }[];
    };
    expect(result.frames).toBe(12);
    expect(result.stages.detect?.n).toBe(12);
    expect(result.stages.detect?.p50).toBeGreaterThan(0);
    expect(result.stages.detect?.p95).toBeGreaterThanOrEqual(result.stages.detect?.p50 ?? 0);
    const [fp32, int8] = result.embedders;
    expect(fp32).toMatchObject({
      name: expect.stringMatching(new RegExp(`^${process.env.GLANCE_EMBEDDER?.trim() || DEFAULT_EMBEDDER}@`)),
      loaded: true,
      embed: { n: result.faces },
    });
    // the int8 model is built by the models package; where it is, it must embed the same faces close to fp32
    if (int8?.loaded) expect(int8.agreement?.mean).toBeGreaterThan(0.9);
  }, 60_000);
});

describe("glance-agent run, killed while offline", () => {
  it("a node killed with SIGKILL while its broker was down delivers that backlog first, in order, on its next run", async () => {
    // a port nothing listens on yet
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
    const brokerPort = (probe.address() as { port: number }).port;
    await new Promise<void>((resolve) => probe.close(() => resolve()));

    const dir = await mkdtemp(join(tmpdir(), "glance-cli-"));
    const config = join(dir, "node.json");
    const write = (cameraId: string) =>
      writeFileSync(
        config,
        JSON.stringify({
          nodeId: "cli-offline",
          cameraId,
          mqtt: { url: `mqtt://127.0.0.1:${brokerPort}`, username: "cli-offline", password: "pw" },
          // people walk through the clip, so tracks end (and dwell events are queued) all the time
          source: { kind: "replay", path: VIDEO, fps: 10, width: 320, pace: "every-frame", loop: true },
          dataDir: "state",
          logLevel: "silent",
        }),
      );
    write("cam-a");
    // one process (no tsx wrapper), so SIGKILL kills the node itself
    const first = spawn(process.execPath, ["--import", "tsx", CLI, "run", "--config", config], {
      cwd: ROOT,
      stdio: "ignore",
    });
    const queueDir = join(dir, "state", "queue");
    const queued = () => {
      try {
        return readdirSync(queueDir)
          .filter((n) => n.endsWith(".seg"))
          .reduce((sum, n) => sum + statSync(join(queueDir, n)).size, 0);
      } catch {
        return 0;
      }
    };
    const deadline = Date.now() + 60_000;
    while (queued() < 1500 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    const exited = once(first, "exit");
    first.kill("SIGKILL");
    await exited;
    const backlog = DiskQueue.open(queueDir);
    const depth = backlog.depth;
    await backlog.close();
    expect(depth).toBeGreaterThan(3);

    const broker = await startBroker(brokerPort);
    write("cam-b");
    const second = spawn(process.execPath, ["--import", "tsx", CLI, "run", "--config", config], {
      cwd: ROOT,
      stdio: "ignore",
    });
    const fromA = () => broker.events.filter((e) => e.cameraId === "cam-a");
    const until = Date.now() + 60_000;
    while ((fromA().length < depth || !broker.events.some((e) => e.cameraId === "cam-b")) && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 100));
    }
    const stopped = once(second, "exit");
    second.kill("SIGTERM");
    await stopped;
    await broker.stop();

    expect(fromA()).toHaveLength(depth);
    expect(new Set(fromA().map((e) => e.trackId)).size).toBe(depth);
    // the backlog goes first: no event of this run before the last one of the killed run
    const lastA = broker.events.findLastIndex((e) => e.cameraId === "cam-a");
    const firstB = broker.events.findIndex((e) => e.cameraId === "cam-b");
    expect(firstB).toBeGreaterThan(lastA);
  }, 150_000);
});
