import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Agent, type AgentStats, startAgent } from "@glance/node-agent";
import { type Orchestrator, type Recognition, startOrchestrator } from "@glance/orchestrator";
import { type ClaimedNode, claimNode } from "@glance/provisioning";
import { parseTopic } from "@glance/shared";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type DemoSeed, seedDemo } from "./helpers.ts";

const demo = join(import.meta.dirname, "..", "demo", "people");
const logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });

/**
 * Issue 5, members-only, the whole way: the demo people enrolled through the API, the store switched to members-only,
 * a node claimed and run on the demo clip with the real models, the orchestrator's embedded broker and PGlite.
 */
describe("a members-only store: the node matches on the edge and sends only members", () => {
  let dir: string;
  let orch: Orchestrator;
  let seed: DemoSeed;
  let node: ClaimedNode;
  const recognitions: Recognition[] = [];
  const templatesSeen: number[] = [];
  let linId: string;

  async function run(onGallery?: (agent: Agent) => Promise<void>): Promise<AgentStats> {
    const agent = await startAgent({
      nodeId: node.nodeId,
      cameraId: node.cameraId,
      mqtt: node.mqtt,
      signingKey: node.signingKey,
      source: {
        kind: "replay",
        path: join(demo, "video", "hamilton-clip.mp4"),
        fps: 10,
        width: 640,
        pace: "every-frame",
      },
      dataDir: join(dir, "node"),
      logger,
    });
    try {
      const applied = once(agent.events, "gallery");
      const ended = once(agent.events, "source-ended");
      await applied;
      await onGallery?.(agent);
      await ended;
      await new Promise((r) => setTimeout(r, 2000));
    } finally {
      await agent.stop();
    }
    return agent.stats();
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "glance-members-only-"));
    orch = await startOrchestrator({ dataDir: join(dir, "orch"), mqttPort: 0, httpPort: 0, logger });
    orch.broker.on("publish", (packet) => {
      if (parseTopic(packet.topic)?.name === "template") templatesSeen.push(Date.now());
    });
    orch.events.on("recognition", (r: Recognition) => recognitions.push(r));
    seed = await seedDemo({ url: orch.httpUrl, token: orch.adminToken }, demo);
    linId = seed.enrolled.find((p) => p.name === "lin_manuel_miranda")?.personId as string;
    const res = await fetch(new URL(`/api/stores/${seed.storeId}`, orch.httpUrl), {
      method: "PATCH",
      headers: { authorization: `Bearer ${orch.adminToken}`, "content-type": "application/json" },
      body: JSON.stringify({ privacyMode: "members-only" }),
    });
    expect(res.status).toBe(200);
    node = await claimNode({
      apiUrl: orch.httpUrl,
      token: orch.adminToken,
      nodeId: "members-cam",
      storeId: seed.storeId,
      cameraId: "entrance",
    });
  }, 300_000);

  afterAll(async () => {
    await orch?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("publishes nothing for non-members: every template is recognised as Lin-Manuel Miranda, the other faces stay on the node", async () => {
    const stats = await run();
    expect(stats.gallery).toMatchObject({ members: 6 });
    expect(templatesSeen.length).toBeGreaterThan(0);
    expect(templatesSeen.length).toBe(stats.members);
    expect(recognitions).toHaveLength(templatesSeen.length);
    expect(new Set(recognitions.map((r) => r.displayName))).toEqual(new Set(["Lin-Manuel Miranda"]));
    expect(recognitions.every((r) => r.visitor === "member" && r.pseudonym === undefined)).toBe(true);
    expect(stats.skipped["non-member"] ?? 0).toBeGreaterThan(0);
    console.log(
      `members-only e2e: ${stats.tracks} tracks, ${stats.members} member templates, ${stats.skipped["non-member"] ?? 0} non-member faces dropped on the node`,
    );
  }, 300_000);

  it("after erasure the node acknowledges, holds the gallery without him, and never sends him again", async () => {
    const before = { templates: templatesSeen.length, recognitions: recognitions.length };
    let membersAtErase = -1;
    const stats = await run(async (agent) => {
      const erased = once(agent.events, "erased");
      const res = await fetch(new URL(`/api/people/${linId}`, orch.httpUrl), {
        method: "DELETE",
        headers: { authorization: `Bearer ${orch.adminToken}` },
      });
      expect(res.status).toBe(204);
      const [e] = (await erased) as [{ personId: string; held: boolean }];
      membersAtErase = agent.stats().members;
      expect(e.personId).toBe(linId);
      // the gallery without him reached the node before the command
      expect(agent.stats().gallery.members).toBe(5);
      expect(e.held).toBe(false);
    });
    await expect
      .poll(
        async () => {
          const r = await fetch(new URL(`/api/people/${linId}/erasure`, orch.httpUrl), {
            headers: { authorization: `Bearer ${orch.adminToken}` },
          });
          return ((await r.json()) as { pending: string[] }).pending;
        },
        { timeout: 10_000 },
      )
      .toEqual([]);
    expect(stats.gallery).toMatchObject({ members: 5 });
    expect(stats.members).toBe(membersAtErase);
    expect(templatesSeen.length - before.templates).toBe(membersAtErase);
    expect(recognitions.slice(before.recognitions).filter((r) => r.personId === linId)).toHaveLength(0);
    expect(stats.skipped["non-member"] ?? 0).toBeGreaterThan(0);
  }, 300_000);
});
