import { copyFile, mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Agent, startAgent } from "@glance/node-agent";
import { type Orchestrator, type Recognition, startOrchestrator } from "@glance/orchestrator";
import { claimNode } from "@glance/provisioning";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { enrolFolder } from "./helpers.ts";

const demo = join(import.meta.dirname, "..", "demo", "people");
const logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });

/**
 * Unaligned photos at store-camera resolutions go through the whole stack — a node-agent with a folder camera,
 * the sealed template over MQTT, the orchestrator's open-set match — and come out as the right person.
 */
describe("a camera showing Barack Obama at 480p, 720p and 1080p identifies him", () => {
  let dir: string;
  let orch: Orchestrator;
  const agents: Agent[] = [];
  const byCamera = new Map<string, Recognition[]>();
  const resolutions = ["480p", "720p", "1080p"];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "glance-ident-"));
    orch = await startOrchestrator({ dataDir: join(dir, "orch"), mqttPort: 0, httpPort: 0, logger });
    orch.events.on("recognition", (r: Recognition) =>
      byCamera.set(r.cameraId, [...(byCamera.get(r.cameraId) ?? []), r]),
    );
    const api = { url: orch.httpUrl, token: orch.adminToken };
    const store = await fetch(`${orch.httpUrl}/api/stores`, {
      method: "POST",
      headers: { authorization: `Bearer ${orch.adminToken}`, "content-type": "application/json" },
      body: JSON.stringify({ id: "store-1", name: "Store 1" }),
    });
    expect(store.status).toBe(201);
    await enrolFolder(api, join(demo, "enroll"));
    // one camera per resolution, each looking at a folder with that one photo
    for (const res of resolutions) {
      const folder = join(dir, `cam-${res}`);
      await mkdir(folder);
      await copyFile(join(demo, "scenes", `barack_obama-${res}.jpg`), join(folder, "frame.jpg"));
      const node = await claimNode({
        apiUrl: orch.httpUrl,
        token: orch.adminToken,
        nodeId: `node-${res}`,
        storeId: "store-1",
        cameraId: `cam-${res}`,
      });
      // the photo stays in front of the camera (a looping one-image folder at 5 fps) until it is recognised
      agents.push(
        await startAgent({
          nodeId: node.nodeId,
          cameraId: node.cameraId,
          mqtt: node.mqtt,
          signingKey: node.signingKey,
          source: { kind: "folder", path: folder, loop: true, fps: 5, pace: "realtime" },
          dataDir: join(dir, `node-${res}`),
          logger,
        }),
      );
    }
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline && resolutions.some((r) => !byCamera.has(`cam-${r}`)))
      await new Promise((r) => setTimeout(r, 100));
  }, 240_000);

  afterAll(async () => {
    for (const a of agents) await a.stop();
    await orch?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  for (const res of resolutions) {
    it(`identifies the ${res} photo as Barack Obama and as nobody else`, () => {
      const seen = byCamera.get(`cam-${res}`) ?? [];
      expect(seen.length, `no recognition from the ${res} camera`).toBeGreaterThan(0);
      for (const r of seen) {
        expect(r.visitor).toBe("member");
        expect(r.displayName).toBe("Barack Obama");
      }
    });
  }
});
