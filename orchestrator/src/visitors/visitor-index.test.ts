import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Database, openDatabase } from "../db/client.ts";
import { stores, visitors } from "../db/schema.ts";
import { MasterKey } from "../privacy/keyring.ts";
import { randomEmbedding } from "../testing/harness.ts";
import { type StorePolicy, Visitors } from "./visitors.ts";

const SPACE = "test-space@1";
const THRESHOLD = 0.6;
const DAY = 24 * 3600_000;
const policy: StorePolicy = { privacyMode: "visitor", visitorRetentionDays: 30 };

/** `face` seen again with noise of relative size `s` (cosine ≈ 1/√(1+s²)). */
function near(face: Float32Array, s: number): Float32Array {
  const noise = randomEmbedding(face.length);
  const v = face.map((x, i) => x + s * (noise[i] as number));
  const n = Math.hypot(...v);
  return v.map((x) => x / n);
}

describe("a store's visitor templates, searched through its index (PGlite)", () => {
  let database: Database;
  let dataDir: string;
  let view: Visitors;
  const masterKey = new MasterKey(new Uint8Array(randomBytes(32)));

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), "glance-visitor-index-"));
    database = await openDatabase({ dataDir });
    await database.db.insert(stores).values([
      { id: "soho", name: "Soho" },
      { id: "camden", name: "Camden" },
    ]);
    view = await Visitors.load(database.db, masterKey, SPACE, THRESHOLD);
  });

  afterAll(async () => {
    await database?.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  it("never matches an expired visitor, however close, and finds the live one behind many expired ones", async () => {
    const face = randomEmbedding(128);
    const longAgo = new Date(Date.now() - 31 * DAY);
    // ten sightings a month ago, each its own (now expired) visitor: expired templates never match
    for (let i = 0; i < 10; i++) {
      const old = await view.recognise("soho", near(face, 0.05), longAgo, policy);
      expect(old.status).toBe("first-time");
    }
    expect(view.match("soho", face)).toBeUndefined();
    // today, farther from the probe than every expired one: the search widens past them to reach it
    const today = await view.recognise("soho", near(face, 0.3), new Date(), policy);
    expect(today.status).toBe("first-time");
    expect(view.match("soho", face)?.entry.id).toBe(today.visitorId);
    // and only in its own store
    expect(view.match("camden", face)).toBeUndefined();

    view.forget([today.visitorId]);
    expect(view.match("soho", face)).toBeUndefined();
  });

  it("two sightings of one new face in a batch are one visitor, one template row", async () => {
    const face = randomEmbedding(128);
    const before = (await database.db.select({ id: visitors.id }).from(visitors)).length;
    const seenAt = new Date();
    const [a, b, c] = await view.recogniseMany([
      { storeId: "camden", probe: face, seenAt, policy },
      { storeId: "soho", probe: near(face, 0.1), seenAt, policy },
      { storeId: "camden", probe: near(face, 0.1), seenAt, policy },
    ]);
    expect(a).toMatchObject({ status: "first-time" });
    expect(c).toMatchObject({ status: "returning", visitorId: a?.visitorId });
    // visitors are per store: the same face in soho is another visitor
    expect(b).toMatchObject({ status: "first-time" });
    expect(b?.visitorId).not.toBe(a?.visitorId);
    expect((await database.db.select({ id: visitors.id }).from(visitors)).length).toBe(before + 2);
    expect(view.match("camden", face)?.entry.id).toBe(a?.visitorId);
  });
});
