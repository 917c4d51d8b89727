import { randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TemplateHeader } from "@glance/shared";
import { sql } from "drizzle-orm";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Database, openDatabase } from "../db/client.ts";
import { people, personKeys, stores, visitors, visits } from "../db/schema.ts";
import { Gallery } from "../gallery/gallery.ts";
import type { AcceptedTemplate } from "../ingest/open-template.ts";
import { erasePerson } from "../privacy/erase.ts";
import { MasterKey } from "../privacy/keyring.ts";
import { ScreenHub } from "../signage/hub.ts";
import { freshPostgres, randomEmbedding, requiredPostgresUrl, runPostgres } from "../testing/harness.ts";
import { Visitors } from "../visitors/visitors.ts";
import { PersonKeyCache } from "./key-cache.ts";
import { type BatchOutcome, createBatchRecognizer, createRecognizer, type Recognition } from "./recognize.ts";
import { VisitLog } from "./visit-log.ts";

const SPACE = "test-space@1";
const THRESHOLD = 0.6;
const logger = pino({ level: "silent" });

let seq = 0;
function accepted(storeId: string, embedding: Float32Array, cameraId = "entrance"): AcceptedTemplate {
  seq++;
  const header: TemplateHeader = {
    v: 2,
    nodeId: `node-${storeId}`,
    seq,
    ts: Date.now(),
    space: SPACE,
    kid: "sk-1",
    cameraId,
    trackId: `t${seq}`,
    quality: 0.9,
  } as TemplateHeader;
  return { header, embedding, node: { id: `node-${storeId}`, storeId } };
}

/** A face sampled again: close to `face` (cosine ≈ 0.99), as a second camera's template of the same person is. */
function again(face: Float32Array): Float32Array {
  const noise = randomEmbedding(face.length);
  const v = face.map((x, i) => x + 0.1 * (noise[i] as number));
  const n = Math.hypot(...v);
  return v.map((x) => x / n);
}

function suite(label: string, databaseUrl: () => string | undefined) {
  describe(`recognition in batches (${label})`, () => {
    let database: Database;
    let dataDir: string;
    let drop: (() => Promise<void>) | undefined;
    let stopKeys: (() => Promise<void>) | undefined;
    let keyCache: PersonKeyCache;
    let recognizeBatch: ReturnType<typeof createBatchRecognizer>;
    let recognize: ReturnType<typeof createRecognizer>;
    let visitLog: VisitLog;
    let visitorView: Visitors;
    let gallery: Gallery;
    const events = new EventEmitter();
    const emitted: Recognition[] = [];
    events.on("recognition", (r: Recognition) => emitted.push(r));
    const masterKey = new MasterKey(new Uint8Array(randomBytes(32)));

    beforeAll(async () => {
      dataDir = await mkdtemp(join(tmpdir(), "glance-recognition-batch-"));
      const url = databaseUrl();
      const pg = url ? await freshPostgres(url) : undefined;
      drop = pg?.drop;
      database = await openDatabase({ dataDir, databaseUrl: pg?.url });
      const { db } = database;
      await db.insert(stores).values([
        { id: "soho", name: "Soho" },
        { id: "camden", name: "Camden" },
        { id: "mayfair", name: "Mayfair", privacyMode: "members-only" },
      ]);
      // real database refusals: camden's visitor templates, and visits from a camera called "broken"
      await db.execute(sql`create function glance_test_refuse() returns trigger language plpgsql as $$
        begin raise exception 'refused by the test'; end $$`);
      await db.execute(sql`create trigger glance_test_refuse_visitor before insert on visitors
        for each row when (new.store_id = 'camden') execute function glance_test_refuse()`);
      await db.execute(sql`create trigger glance_test_refuse_visit before insert on visits
        for each row when (new.camera_id = 'broken') execute function glance_test_refuse()`);

      gallery = new Gallery(SPACE, THRESHOLD);
      visitorView = await Visitors.load(db, masterKey, SPACE, THRESHOLD);
      visitLog = await VisitLog.load(db, 10 * 60_000, logger);
      const keys = await PersonKeyCache.start({ db, logger });
      stopKeys = keys.stop;
      keyCache = keys.cache;
      const deps = {
        db,
        gallery,
        hub: new ScreenHub(),
        events,
        logger,
        visitLog,
        keys: keys.cache,
        visitors: visitorView,
        promotionMaxAgeMs: 60_000,
      };
      recognizeBatch = createBatchRecognizer(deps);
      recognize = createRecognizer(deps);
    });

    afterAll(async () => {
      await visitLog?.drain();
      await stopKeys?.();
      await database?.close();
      await drop?.();
      await rm(dataDir, { recursive: true, force: true });
    });

    const recognitionOf = (o: BatchOutcome | undefined): Recognition => {
      if (!o || "error" in o) throw new Error(`expected a recognition, got ${String(o && "error" in o && o.error)}`);
      return o.recognition;
    };

    it("the same new face twice in one batch is one visitor: first-time, then the same visit", async () => {
      emitted.length = 0;
      const face = randomEmbedding(128);
      const stranger = randomEmbedding(128);
      const outcomes = await recognizeBatch([
        accepted("soho", face, "entrance"),
        accepted("soho", stranger, "entrance"),
        accepted("soho", again(face), "till"),
      ]);
      const [first, other, second] = outcomes.map(recognitionOf);
      expect(first?.pseudonym).toMatchObject({ status: "first-time", visits: 1 });
      expect(first?.newVisit).toBe(true);
      expect(second?.pseudonym?.visitorId).toBe(first?.pseudonym?.visitorId);
      // the second camera's sighting belongs to the visit just counted, so the visitor is still first-time
      expect(second).toMatchObject({ newVisit: false, pseudonym: { status: "first-time", visits: 1 } });
      expect(other?.pseudonym?.visitorId).not.toBe(first?.pseudonym?.visitorId);
      expect(emitted.map((r) => r.cameraId)).toEqual(["entrance", "entrance", "till"]);

      const rows = await database.db.select({ id: visitors.id }).from(visitors);
      expect(rows.map((r) => r.id).sort()).toEqual([first?.pseudonym?.visitorId, other?.pseudonym?.visitorId].sort());
      await visitLog.drain();
      const counted = await database.db.select({ visitorId: visits.visitorId }).from(visits);
      expect(counted.map((v) => v.visitorId).sort()).toEqual(rows.map((r) => r.id).sort());
    });

    it("names in one batch only members who still hold a data key; the others are forgotten, not named", async () => {
      emitted.length = 0;
      const ann = randomEmbedding(128);
      const bob = randomEmbedding(128);
      const all = { scope: "all-stores", expiresAt: null };
      gallery.add({ personId: "ann", displayName: "Ann", consents: [all] }, [ann]);
      gallery.add({ personId: "bob", displayName: "Bob", consents: [all] }, [bob]);
      // ann's key is there; bob was crypto-shredded by another instance (no key row) after our index was built
      await database.db.insert(people).values([{ id: "ann", displayName: "Ann" }]);
      const wrapped = masterKey.newDataKey("ann").wrapped;
      await database.db
        .insert(personKeys)
        .values({ personId: "ann", wrappedKey: wrapped.ciphertext, iv: wrapped.iv, masterKeyId: wrapped.masterKeyId });
      const outcomes = await recognizeBatch([
        accepted("mayfair", again(ann)),
        accepted("mayfair", again(bob)),
        accepted("mayfair", again(ann)),
        accepted("mayfair", again(bob)),
      ]);
      expect(outcomes.map((o) => recognitionOf(o).personId)).toEqual(["ann", null, "ann", null]);
      expect(gallery.size.people).toBe(1);
      gallery.remove("ann");
    });

    it("a person erased between a batch's search and its finish is not named (the search ran ahead)", async () => {
      const cleo = randomEmbedding(128);
      gallery.add({ personId: "cleo", displayName: "Cleo", consents: [{ scope: "all-stores", expiresAt: null }] }, [
        cleo,
      ]);
      await database.db.insert(people).values([{ id: "cleo", displayName: "Cleo" }]);
      const wrapped = masterKey.newDataKey("cleo").wrapped;
      await database.db
        .insert(personKeys)
        .values({ personId: "cleo", wrappedKey: wrapped.ciphertext, iv: wrapped.iv, masterKeyId: wrapped.masterKeyId });
      // recognised once, so her key is cached as held
      expect(recognitionOf((await recognizeBatch([accepted("mayfair", again(cleo))]))[0]).personId).toBe("cleo");

      const batch = [accepted("mayfair", again(cleo)), accepted("mayfair", again(cleo))];
      const searched = await recognizeBatch.search(batch);
      expect(searched.found.map((m) => (m.kind === "member" ? m.personId : null))).toEqual(["cleo", "cleo"]);
      await erasePerson(
        {
          db: database.db,
          gallery,
          personKeys: keyCache,
          visitors: visitorView,
          masterKey,
          sendCommand: async () => {},
          logger,
        },
        "cleo",
        { mode: "erase", actor: "test" },
      );
      const outcomes = await recognizeBatch.finish(batch, searched);
      expect(outcomes.map((o) => recognitionOf(o).personId)).toEqual([null, null]);
      expect(gallery.size.people).toBe(0);
    });

    it("a refused write of a batch's new visitors emits nothing and records no visit; one by one, the rest go through", async () => {
      emitted.length = 0;
      const before = await database.db.select({ id: visits.id }).from(visits);
      const batch = [accepted("soho", randomEmbedding(128)), accepted("camden", randomEmbedding(128))];
      await expect(recognizeBatch(batch)).rejects.toThrow();
      await visitLog.drain();
      expect(emitted).toEqual([]);
      expect(await database.db.select({ id: visits.id }).from(visits)).toHaveLength(before.length);
      // nothing of the refused batch is held in memory either: no later sighting can refer to it
      expect(visitorView.size).toBe(2);

      // what the ingest does next: each template on its own
      const results = await Promise.allSettled(batch.map((t) => recognize(t)));
      expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected"]);
      expect(emitted.map((r) => r.storeId)).toEqual(["soho"]);
      await visitLog.drain();
      const counted = await database.db.select({ visitorId: visits.visitorId, storeId: visits.storeId }).from(visits);
      expect(counted).toHaveLength(before.length + 1);
      const held = new Set((await database.db.select({ id: visitors.id }).from(visitors)).map((r) => r.id));
      // no visit points at a visitor template that does not exist
      for (const v of counted) if (v.visitorId) expect(held.has(v.visitorId)).toBe(true);
    });

    it("a template whose recognition fails does not lose the others of its batch", async () => {
      emitted.length = 0;
      const outcomes = await recognizeBatch([
        accepted("soho", randomEmbedding(128), "entrance"),
        accepted("soho", randomEmbedding(128), "broken"),
        accepted("soho", randomEmbedding(128), "till"),
      ]);
      expect(outcomes.map((o) => ("error" in o ? "error" : o.recognition.cameraId))).toEqual([
        "entrance",
        "error",
        "till",
      ]);
      expect(emitted.map((r) => r.cameraId)).toEqual(["entrance", "till"]);
    });
  });
}

suite("PGlite", () => undefined);
describe.runIf(runPostgres)("on real Postgres", () => {
  suite("Postgres", requiredPostgresUrl);
});
