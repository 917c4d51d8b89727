import { execFileSync } from "node:child_process";
import { once } from "node:events";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { defaultEmbedder, FacePipeline } from "@glance/models";
import {
  decodeMessage,
  filterFor,
  generateSigningKeyPair,
  type NodeEvent,
  type NodeStatus,
  parseTopic,
} from "@glance/shared";
import { connectAsync, type MqttClient } from "mqtt";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type AgentOptions, startAgent } from "./index.ts";
import { startBroker, type TestBroker } from "./queue/test-helpers.ts";
import { ffmpegPath } from "./sources/ffmpeg.ts";

const VIDEO = new URL("../../demo/people/video/hamilton-clip.mp4", import.meta.url).pathname;
const log = pino({ level: "silent" });

let broker: TestBroker;
let url: string;
beforeAll(async () => {
  broker = await startBroker();
  url = `mqtt://127.0.0.1:${broker.port}`;
});
afterAll(async () => broker.stop());

async function observe(nodeId: string): Promise<{ client: MqttClient; events: NodeEvent[]; statuses: NodeStatus[] }> {
  const client = await connectAsync(url, { clientId: `observer-${nodeId}` });
  const events: NodeEvent[] = [];
  const statuses: NodeStatus[] = [];
  client.on("message", (topic, payload) => {
    const t = parseTopic(topic);
    if (t?.name === "event") events.push(decodeMessage("event", topic, payload));
    if (t?.name === "status") statuses.push(decodeMessage("status", topic, payload));
  });
  await client.subscribeAsync([filterFor("event", nodeId), filterFor("status", nodeId)], { qos: 1 });
  return { client, events, statuses };
}

async function options(nodeId: string): Promise<AgentOptions> {
  return {
    nodeId,
    cameraId: "cam-1",
    mqtt: { url, username: nodeId, password: "x" },
    signingKey: generateSigningKeyPair(),
    source: { kind: "replay", path: VIDEO, fps: 10, width: 320, pace: "realtime", loop: true },
    dataDir: await mkdtemp(join(tmpdir(), "glance-watchdog-")),
    logger: log,
    watchdog: { stallMs: 1500, cameraSilenceMs: 1500, backoffMs: 200, backoffMaxMs: 1000 },
  };
}

/** ffmpeg processes this test process started (the agent's camera). */
function ffmpegChildren(): number[] {
  const out = execFileSync("ps", ["-o", "pid=,args=", "--ppid", String(process.pid)], { encoding: "utf8" });
  return out
    .split("\n")
    .filter((l) => l.includes("ffmpeg") && l.includes("hamilton-clip"))
    .map((l) => Number(l.trim().split(/\s+/)[0]));
}

async function until(check: () => boolean, what: string, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("watchdog", () => {
  it("a camera process that dies is reopened, and HQ hears camera-down then camera-up", async () => {
    const nodeId = "node-camdrop";
    const { client, events } = await observe(nodeId);
    const agent = await startAgent(await options(nodeId));
    await until(() => agent.stats().frames > 5, "frames");
    const [pid] = ffmpegChildren();
    process.kill(pid as number, "SIGKILL");
    await once(agent.events, "camera-up");
    const framesAtUp = agent.stats().frames;
    await until(() => agent.stats().frames > framesAtUp + 5, "frames after the reconnect");
    expect(ffmpegChildren()).not.toContain(pid);
    expect(agent.stats().reconnects).toBe(1);
    await agent.stop();
    const kinds = events.map((e) => e.kind).filter((k) => k.startsWith("camera"));
    expect(kinds).toEqual(["camera-down", "camera-up"]);
    expect(events.find((e) => e.kind === "camera-down")?.detail).toMatch(/CAMERA_UNAVAILABLE/);
    await client.endAsync();
  }, 40_000);

  it("a Pi camera (MJPEG pipe) whose process exits is started again", async () => {
    const nodeId = "node-picam";
    // ffmpeg stands in for rpicam-vid: 2 s of the demo clip as MJPEG on stdout, then it exits
    const command = [ffmpegPath(), "-hide_banner", "-loglevel", "error", "-re", "-t", "2", "-i", VIDEO, "-an"];
    command.push("-vf", "fps=10,scale=480:-2", "-f", "mjpeg", "-q:v", "5", "pipe:1");
    const agent = await startAgent({ ...(await options(nodeId)), source: { kind: "picamera", command } });
    const [down] = (await once(agent.events, "camera-down")) as [{ detail: string }];
    expect(down.detail).toMatch(/Pi camera failed/);
    const framesAtDown = agent.stats().frames;
    expect(framesAtDown).toBeGreaterThan(5);
    await once(agent.events, "camera-up");
    await until(() => agent.stats().frames > framesAtDown + 5, "frames from the restarted camera");
    await agent.stop();
  }, 40_000);

  it("a camera that hangs without exiting is noticed by its silence and reopened", async () => {
    const nodeId = "node-camfreeze";
    const { client, events } = await observe(nodeId);
    const agent = await startAgent(await options(nodeId));
    await until(() => agent.stats().frames > 5, "frames");
    const [pid] = ffmpegChildren();
    process.kill(pid as number, "SIGSTOP");
    const [down] = (await once(agent.events, "camera-down")) as [{ detail: string }];
    expect(down.detail).toMatch(/No frame from the camera/);
    await once(agent.events, "camera-up");
    await agent.stop();
    expect(ffmpegChildren()).toEqual([]);
    expect(events.map((e) => e.kind)).toEqual(expect.arrayContaining(["camera-down", "camera-up"]));
    await client.endAsync();
  }, 40_000);

  it("a stage that hangs is restarted and reported, and frames flow again", async () => {
    const nodeId = "node-stall";
    const { client, events } = await observe(nodeId);
    const real = await FacePipeline.load();
    let calls = 0;
    // the real models, except that the 10th detection never returns (a wedged inference thread)
    const engine = Object.assign(Object.create(real) as FacePipeline, {
      detect: (...args: Parameters<FacePipeline["detect"]>) =>
        ++calls === 10 ? new Promise<never>(() => {}) : real.detect(...args),
    });
    const agent = await startAgent({ ...(await options(nodeId)), engine });
    const [restarted] = (await once(agent.events, "stage-restarted")) as [{ stage: string; ms: number }];
    expect(restarted.stage).toBe("detect");
    expect(restarted.ms).toBeGreaterThan(1500);
    const framesAfter = agent.stats().frames;
    await until(() => agent.stats().frames > framesAfter + 5, "frames after the restart");
    expect(agent.stats().restarts).toBe(1);
    await agent.stop();
    expect(events).toContainEqual(
      expect.objectContaining({ kind: "stage-restarted", detail: expect.stringMatching(/^detect /) }),
    );
    await client.endAsync();
  }, 40_000);
});

describe("heartbeat", () => {
  it("the retained status carries fps, stage latency, queue depth, model signers and uptime", async () => {
    const nodeId = "node-heartbeat";
    const { client, statuses } = await observe(nodeId);
    const agent = await startAgent({ ...(await options(nodeId)), heartbeatMs: 500 });
    await until(() => (statuses.at(-1)?.stats?.frames ?? 0) > 10, "a heartbeat with frames");
    await until(() => statuses.length >= 3, "three heartbeats");
    const last = statuses.at(-1) as NodeStatus;
    await agent.stop();
    expect(last.online).toBe(true);
    expect(last.stats).toMatchObject({
      fps: expect.any(Number),
      detectP50Ms: expect.any(Number),
      detectP95Ms: expect.any(Number),
      queueDepth: expect.any(Number),
      queueDropped: 0,
      uptimeS: expect.any(Number),
      facesPerHour: expect.any(Number),
    });
    expect(last.stats?.fps).toBeGreaterThan(1);
    expect(last.stats?.fps).toBeLessThan(15);
    expect(last.models?.detector).toMatch(/^blazeface-back@[\d.]+ signed by \S+/);
    expect(last.models?.embedder).toMatch(new RegExp(`^${defaultEmbedder()}@[\\d.]+ signed by \\S+`));
    await client.endAsync();
  }, 40_000);
});
