import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Agent, startAgent } from "@glance/node-agent";
import { type Orchestrator, type Recognition, startOrchestrator } from "@glance/orchestrator";
import { claimNode } from "@glance/provisioning";
import {
  generateSealingKeyPair,
  isGlanceError,
  openSessionTemplate,
  parseTopic,
  SealedTemplate,
  templateHeader,
} from "@glance/shared";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freshPostgres } from "../orchestrator/src/testing/harness.ts";
import { type DemoSeed, readSse, type SseEvent, seedDemo } from "./helpers.ts";

const demo = join(import.meta.dirname, "..", "demo", "people");
const inVideo = ["Lin-Manuel Miranda", "Alex Lacamoire"];
const logger = pino({ level: process.env.LOG_LEVEL ?? "silent" });

/**
 * The walking skeleton end to end: a replayed camera recognises enrolled people and a signage screen shows their
 * promotion, through the real broker, real models and a real database (PGlite, and Postgres when DATABASE_URL is set).
 */
function scenario(label: string, databaseUrl: () => Promise<{ url?: string; drop(): Promise<void> }>) {
  describe(`a replayed camera recognises enrolled people and the screen greets them (${label})`, () => {
    let dir: string;
    let db: { url?: string; drop(): Promise<void> };
    let orch: Orchestrator;
    let agent: Agent | undefined;
    let seed: DemoSeed;
    let nodePublicKey: string;
    let screenEvents: SseEvent[] = [];
    const recognitions: Recognition[] = [];
    const rawTemplates: Buffer[] = [];

    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), "glance-scenario-"));
      db = await databaseUrl();
      orch = await startOrchestrator({
        dataDir: join(dir, "orch"),
        databaseUrl: db.url,
        mqttPort: 0,
        httpPort: 0,
        logger,
      });
      orch.broker.on("publish", (packet) => {
        if (parseTopic(packet.topic)?.name === "template") rawTemplates.push(Buffer.from(packet.payload));
      });
      orch.events.on("recognition", (r: Recognition) => recognitions.push(r));
      seed = await seedDemo({ url: orch.httpUrl, token: orch.adminToken }, demo);
      const stopScreen = new AbortController();
      const screen = readSse(
        `${orch.httpUrl}/api/screens/${seed.screenId}/events?token=${seed.screenToken}`,
        stopScreen.signal,
        240_000,
      );
      const node = await claimNode({
        apiUrl: orch.httpUrl,
        token: orch.adminToken,
        nodeId: "entrance-cam",
        storeId: seed.storeId,
        cameraId: "entrance",
      });
      nodePublicKey = node.signingKey.publicKey;
      const ended = new Promise<void>((resolve) => {
        startAgent({
          nodeId: node.nodeId,
          cameraId: node.cameraId,
          mqtt: node.mqtt,
          signingKey: node.signingKey,
          source: {
            kind: "replay",
            path: join(demo, "video", "hamilton-clip.mp4"),
            loop: false,
            fps: 10,
            width: 640,
            pace: "every-frame",
          },
          dataDir: join(dir, "node"),
          logger,
        }).then((a) => {
          agent = a;
          a.events.once("source-ended", () => resolve());
        });
      });
      await ended;
      // let the last templates (flushed at track end) drain through the broker and ingest
      await new Promise((r) => setTimeout(r, 2000));
      stopScreen.abort();
      screenEvents = await screen;
    }, 300_000);

    afterAll(async () => {
      await agent?.stop();
      await orch?.stop();
      await db?.drop();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    it("enrols all six demo people with at least one template each", () => {
      expect(seed.enrolled.map((p) => p.name).sort()).toEqual([
        "alex_lacamoire",
        "barack_obama",
        "joe_biden",
        "kit_harington",
        "lin_manuel_miranda",
        "rose_leslie",
      ]);
      for (const p of seed.enrolled) expect(p.templates, p.name).toBeGreaterThan(0);
    });

    it("recognises Lin-Manuel Miranda, who faces the camera", () => {
      const names = recognitions.map((r) => r.displayName);
      expect(names, `recognitions: ${JSON.stringify(names)}`).toContain("Lin-Manuel Miranda");
    });

    // Known limitation, measured (models/src/dlib/measure.ts): Alex Lacamoire appears only in strong profile
    // (1.5-2.5 s) while his enrolment photos are frontal. Every embedder we can ship scores him below its
    // FAR-1e-3 threshold there, and below what absent people reach elsewhere in the clip (dlib-resnet, the fp32
    // model of the int8 default: Alex 0.907, Obama in profile 0.912, threshold 0.935; fr-feature: 0.10, 0.35, 0.45;
    // faceres: 0.55, 0.59, 0.64), so no threshold recognises him without false accepts. This test
    // fails loudly (as `it.fails` passes) the day a model or a multi-pose enrolment makes him recognisable.
    it.fails("recognises Alex Lacamoire, who appears only in profile (known limitation)", () => {
      expect(recognitions.map((r) => r.displayName)).toContain("Alex Lacamoire");
    });

    it("attributes no face to the four enrolled people who are not in the video", () => {
      const wrong = recognitions.filter((r) => r.visitor === "member" && !inVideo.includes(r.displayName ?? ""));
      expect(wrong).toEqual([]);
    });

    it("pushes the member promotion, with the member's first name, to the store's signage screen", () => {
      const promotions = screenEvents
        .filter((e) => e.event === "promotion")
        .map((e) => JSON.parse(e.data) as { audience: string; message: string });
      expect(promotions.some((p) => p.audience === "member" && /Welcome back, (Lin-Manuel|Alex)/.test(p.message))).toBe(
        true,
      );
    });

    it("carries no plaintext embedding on the wire: captured payloads do not open with any other key", () => {
      expect(rawTemplates.length).toBeGreaterThan(0);
      const wrongKey = generateSealingKeyPair();
      for (const raw of rawTemplates) {
        const t = SealedTemplate.parse(JSON.parse(raw.toString("utf8")));
        let code: string | undefined;
        try {
          openSessionTemplate(t, templateHeader(t), wrongKey, nodePublicKey);
        } catch (e) {
          code = isGlanceError(e) ? e.code : "other";
        }
        expect(code).toBe("DECRYPT_FAILED");
      }
    });
  });
}

scenario("PGlite", async () => ({ drop: async () => {} }));

const pgUrl = process.env.DATABASE_URL;
describe.runIf(pgUrl || process.env.GLANCE_REQUIRE_POSTGRES)("on a real PostgreSQL server", () => {
  it("has DATABASE_URL (CI always provides one)", () => expect(pgUrl).toBeTruthy());
  if (pgUrl) scenario("PostgreSQL", () => freshPostgres(pgUrl));
});
