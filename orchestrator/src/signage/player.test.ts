import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { topicFor } from "@glance/shared";
import type { MqttClient } from "mqtt";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import {
  connectNode,
  createScreen,
  createStore,
  expectJson,
  type Harness,
  randomEmbedding,
  registerNode,
  sealTemplate,
  startHarness,
  type TestNode,
} from "../testing/harness.ts";

const chromium = [process.env.CHROMIUM_PATH, "/usr/bin/chromium", "/usr/bin/chromium-browser"].find(
  (p): p is string => !!p && existsSync(p),
);

/** The real player in a real (headless) browser: it must receive a promotion, show it, and report having played it. */
describe.runIf(chromium)("the signage player in a browser", () => {
  let h: Harness;
  let node: TestNode;
  let client: MqttClient;
  let screen: { screenId: string; token: string };
  let browser: ChildProcess | undefined;
  let profile: string;

  beforeAll(async () => {
    h = await startHarness();
    const storeId = await createStore(h, "soho", "Glance Soho");
    screen = await createScreen(h, storeId);
    await expectJson(
      await h.api("/api/promotions", {
        method: "POST",
        json: {
          storeId,
          audience: "unknown",
          title: "Hello",
          message: "Coffee on us",
          durationMs: 1000,
          cooldownMs: 0,
        },
      }),
      201,
    );
    node = await registerNode(h, storeId);
    client = await connectNode(node);
    profile = await mkdtemp(join(tmpdir(), "glance-chromium-"));
  });

  afterAll(async () => {
    browser?.kill("SIGKILL");
    await client?.endAsync();
    await h?.close();
    if (profile) await rm(profile, { recursive: true, force: true });
  });

  it("plays a promotion for its duration and reports proof of play", async () => {
    const url = `${h.orch.httpUrl}/signage/${screen.screenId}?token=${encodeURIComponent(screen.token)}`;
    browser = spawn(
      chromium as string,
      [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        `--user-data-dir=${profile}`,
        "--window-size=1280,720",
        // no --screenshot/--timeout: the browser stays on the page until the test kills it, however slow the machine
        url,
      ],
      { stdio: "ignore" },
    );
    // keep unknown visitors coming (a new track each time) until the screen is connected and has played one
    let seq = 0;
    const space = ((await (await h.api("/api/health")).json()) as { space: string }).space;
    const visitors = setInterval(() => {
      const t = sealTemplate({ node, seq: ++seq, embedding: randomEmbedding(), recipient: h.orch.sealingKey, space });
      void client.publishAsync(topicFor("template", node.nodeId), JSON.stringify(t), { qos: 1 });
    }, 500);
    try {
      await vi.waitFor(
        async () => {
          const plays = await expectJson<Array<{ playedAt: string | null; playedMs: number | null }>>(
            await h.api(`/api/screens/${screen.screenId}/plays`),
            200,
          );
          const played = plays.filter((p) => p.playedAt !== null);
          expect(played.length).toBeGreaterThan(0);
          expect(played[0]?.playedMs).toBeGreaterThanOrEqual(950);
        },
        { timeout: 90_000, interval: 500 },
      );
    } finally {
      clearInterval(visitors);
    }
  });
});
