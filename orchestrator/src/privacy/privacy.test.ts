import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { decodeImage, FacePipeline } from "@glance/models";
import {
  type Command,
  decodeEmbedding,
  decodeMessage,
  encodeEmbedding,
  encodeMessage,
  filterFor,
  topicFor,
} from "@glance/shared";
import { eq, sql } from "drizzle-orm";
import type { MqttClient } from "mqtt";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { verifyAudit } from "../audit/log.ts";
import { type Db, openDatabase } from "../db/client.ts";
import { auditLog, consents, people, templates, visitors, visits } from "../db/schema.ts";
import type { Recognition } from "../index.ts";
import {
  connectNode,
  createStore,
  databaseBackends,
  demoDir,
  enrolDemoPerson,
  expectJson,
  type Harness,
  nextEvent,
  registerNode,
  sealTemplate,
  startHarness,
  type TestNode,
} from "../testing/harness.ts";
import { MASTER_KEY_FILE, MasterKey, openTemplate } from "./keyring.ts";

const exec = promisify(execFile);

let faces: FacePipeline;
beforeAll(async () => {
  faces = await FacePipeline.load();
});
afterAll(async () => {
  await faces?.close();
});

async function embed(path: string): Promise<Float32Array> {
  const [face] = await faces.process(await decodeImage(await readFile(join(demoDir, path))));
  if (!face) throw new Error(`no face in ${path}`);
  return face.embedding;
}

function cosine(a: Float32Array, b: Float32Array): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += (a[i] as number) * (b[i] as number);
    na += (a[i] as number) ** 2;
    nb += (b[i] as number) ** 2;
  }
  return dot / Math.sqrt(na * nb);
}

const enrol = (h: Harness, displayName: string, photos: string[], extra: Record<string, string> = {}) =>
  enrolDemoPerson(h, displayName, photos, { consentEvidence: "form-2026-0042", ...extra });

/** Stops the orchestrator, hands its database to `fn` (PGlite allows one process at a time), starts it again. */
async function withStoppedDb<T>(h: Harness, fn: (db: Db) => Promise<T>): Promise<T> {
  await h.orch.stop();
  const database = await openDatabase({ dataDir: h.dataDir, databaseUrl: h.databaseUrl });
  try {
    return await fn(database.db);
  } finally {
    await database.close();
    await h.restart();
  }
}

/** Every text, bytea and jsonb value in every table of the public schema: what a database dump holds. */
async function dumpDatabase(db: Db): Promise<{ table: string; column: string; row: number; value: unknown }[]> {
  const cols = (await db.execute(
    sql`select table_name, column_name, data_type from information_schema.columns
        where table_schema = 'public' and data_type in ('bytea', 'text', 'jsonb') order by table_name, column_name`,
  )) as unknown as { rows?: Record<string, string>[] } | Record<string, string>[];
  const list = (Array.isArray(cols) ? cols : (cols.rows ?? [])) as { table_name: string; column_name: string }[];
  const out: { table: string; column: string; row: number; value: unknown }[] = [];
  for (const { table_name: table, column_name: column } of list) {
    const res = (await db.execute(sql.raw(`select "${column}" as v from "${table}"`))) as unknown as
      | { rows?: { v: unknown }[] }
      | { v: unknown }[];
    const rows = Array.isArray(res) ? res : (res.rows ?? []);
    rows.forEach((r, i) => {
      if (r.v !== null) out.push({ table, column, row: i, value: r.v });
    });
  }
  return out;
}

const asBytes = (v: unknown): Uint8Array | undefined =>
  v instanceof Uint8Array ? new Uint8Array(v.buffer, v.byteOffset, v.byteLength) : undefined;

/**
 * Whatever in the dump the master key can open for `personId`: wrapped data keys (any bytea value as ciphertext,
 * any 12-byte value as its IV), then the templates those keys open (same pairing), then any value that is itself a
 * plaintext embedding close to `probe`.
 */
function readableFor(
  dump: Awaited<ReturnType<typeof dumpDatabase>>,
  masterKey: MasterKey,
  personId: string,
  templateIds: { id: string; space: string }[],
  probe: Float32Array,
): string[] {
  const bytes = dump.map((d) => ({ ...d, b: asBytes(d.value) })).filter((d) => d.b) as {
    table: string;
    column: string;
    b: Uint8Array;
  }[];
  const ivs = bytes.filter((d) => d.b.length === 12).map((d) => d.b);
  const found: string[] = [];
  const keys = [];
  for (const d of bytes) {
    for (const iv of ivs) {
      try {
        keys.push(masterKey.unwrap({ personId, version: 1, wrappedKey: d.b, iv, masterKeyId: masterKey.id }));
        found.push(`${d.table}.${d.column}: a data key of ${personId}`);
      } catch {}
    }
  }
  for (const key of keys) {
    for (const d of bytes) {
      for (const iv of ivs) {
        for (const t of templateIds) {
          try {
            openTemplate(key, { ...t, ciphertext: d.b, iv });
            found.push(`${d.table}.${d.column}: template ${t.id}`);
          } catch {}
        }
      }
    }
  }
  for (const d of bytes) {
    try {
      const e = decodeEmbedding(d.b);
      if (e.length === probe.length && cosine(e, probe) > 0.3)
        found.push(`${d.table}.${d.column}: plaintext embedding`);
    } catch {}
  }
  return found;
}

const backends = databaseBackends;

for (const backend of backends) {
  describe(`privacy on ${backend.name}`, () => {
    let h: Harness;
    let storeId: string;
    let node: TestNode;
    let nodeClient: MqttClient;
    let seq = 0;
    let kitProbe: Float32Array;
    let roseProbe: Float32Array;
    const commands: Command[] = [];

    beforeAll(async () => {
      h = await startHarness({ databaseUrl: backend.url(), retentionIntervalMs: 250 });
      storeId = await createStore(h, "soho", "Glance Soho");
      node = await registerNode(h, storeId);
      kitProbe = await embed("enroll/kit_harington/2.jpg");
      roseProbe = await embed("enroll/rose_leslie/2.jpg");
    }, 120_000);

    afterAll(async () => {
      await nodeClient?.endAsync();
      await h?.close();
    });

    /** (Re)connects the node after a restart and listens to its command topic like a node agent does. */
    async function connect() {
      await nodeClient?.endAsync();
      nodeClient = await connectNode({ mqtt: { ...node.mqtt, url: h.orch.mqttUrl } });
      nodeClient.on("message", (topic, payload) => {
        if (topic === topicFor("command", node.nodeId)) commands.push(decodeMessage("command", topic, payload));
      });
      await nodeClient.subscribeAsync(filterFor("command", node.nodeId), { qos: 1 });
    }

    async function probe(embedding: Float32Array, ts = Date.now(), trackId?: string): Promise<Recognition> {
      seq++;
      const sealed = sealTemplate({
        node,
        seq,
        embedding,
        recipient: h.orch.sealingKey,
        space: faces.space,
        ts,
        trackId: trackId ?? `t${seq}`,
      });
      const seen = nextEvent<Recognition>(h.orch.events, "recognition", (r) => r.nodeId === node.nodeId);
      await nodeClient.publishAsync(topicFor("template", node.nodeId), encodeMessage("template", sealed), { qos: 1 });
      return seen;
    }

    it("stores templates only as ciphertext and rebuilds the gallery from them after a restart", async () => {
      await connect();
      const kit = await enrol(h, "Kit Harington", ["enroll/kit_harington/1.jpg"]);
      expect((await probe(kitProbe)).personId).toBe(kit.personId);
      const rows = await withStoppedDb(h, (db) =>
        db.select().from(templates).where(eq(templates.personId, kit.personId)),
      );
      await connect();
      expect(rows).toHaveLength(1);
      expect(rows[0]?.legacyEmbedding).toBeNull();
      // the codec's 7-byte header and one int8 per dimension, plus the 16-byte GCM tag
      expect(rows[0]?.ciphertext?.length).toBe(7 + kitProbe.length + 16);
      // read as if it were the plaintext codec, a sealed row is nothing like the face
      const asIfPlain = (() => {
        try {
          return cosine(decodeEmbedding(rows[0]?.ciphertext as Uint8Array), kitProbe);
        } catch {
          return 0;
        }
      })();
      expect(Math.abs(asIfPlain)).toBeLessThan(0.3);
      // rebuilt by unwrapping after the restart
      expect((await probe(kitProbe)).personId).toBe(kit.personId);
    }, 60_000);

    it("seals plaintext templates left by a database from before encryption at rest, and still recognises them", async () => {
      const legacyId = `legacy-${seq}-${Date.now()}`;
      const embedding = await embed("enroll/barack_obama/1.jpg");
      // what a pre-0002 orchestrator wrote: the int8 codec bytes in the clear, no data key
      await withStoppedDb(h, async (db) => {
        await db.insert(people).values({ id: legacyId, displayName: "Legacy Barack" });
        await db.insert(consents).values({
          id: `${legacyId}-c`,
          personId: legacyId,
          purpose: "recognition-promotions",
          scope: "all-stores",
          source: "demo",
          grantedAt: new Date(),
        });
        await db.insert(templates).values({
          id: `${legacyId}-t`,
          personId: legacyId,
          space: faces.space,
          legacyEmbedding: encodeEmbedding(embedding),
          quality: 0.9,
          sourceSha256: "0".repeat(64),
        });
      });
      await connect();
      expect((await probe(await embed("enroll/barack_obama/2.jpg"))).personId).toBe(legacyId);
      const [row] = await withStoppedDb(h, (db) => db.select().from(templates).where(eq(templates.personId, legacyId)));
      await connect();
      expect(row?.legacyEmbedding).toBeNull();
      expect(row?.ciphertext?.length).toBe(7 + embedding.length + 16);
      expect((await h.api(`/api/people/${legacyId}`, { method: "DELETE" })).status).toBe(204);
    }, 60_000);

    it("refuses to start with another master key instead of serving an empty gallery", async () => {
      await h.orch.stop();
      const other = "ab".repeat(32);
      const { startOrchestrator } = await import("../index.ts");
      const { pino } = await import("pino");
      await expect(
        startOrchestrator({
          dataDir: h.dataDir,
          ...(h.databaseUrl ? { databaseUrl: h.databaseUrl } : {}),
          mqttPort: 0,
          httpPort: 0,
          masterKey: other,
          logger: pino({ level: "silent" }),
        }),
      ).rejects.toThrow(/wrapped by master key .* restore the original master key/);
      await h.restart();
      await connect();
    }, 60_000);

    it("erasure crypto-shreds: no row, no match, edge told, and a dump holds nothing that opens to the face", async () => {
      const kit = await enrol(h, "Kit H", ["enroll/kit_harington/1.jpg", "enroll/kit_harington/2.jpg"]);
      const rose = await enrol(h, "Rose Leslie", ["enroll/rose_leslie/1.jpg"]);
      const before = await probe(kitProbe);
      expect(before.visitor).toBe("member");
      const masterKey = new MasterKey(
        Buffer.from((await readFile(join(h.dataDir, MASTER_KEY_FILE), "utf8")).trim(), "hex"),
      );
      // the dump check can see a live person: Rose's templates open with the master key
      const liveDump = await withStoppedDb(h, dumpDatabase);
      await connect();
      expect(readableFor(liveDump, masterKey, rose.personId, rose.templates, roseProbe).length).toBeGreaterThan(0);
      expect(readableFor(liveDump, masterKey, kit.personId, kit.templates, kitProbe).length).toBeGreaterThan(0);

      // erase both Kit enrolments (the first test enrolled one too)
      const kitIds = (await expectJson<{ id: string; displayName: string }[]>(await h.api("/api/people"), 200))
        .filter((p) => p.displayName.startsWith("Kit"))
        .map((p) => p.id);
      const commandsBefore = commands.length;
      for (const id of kitIds) expect((await h.api(`/api/people/${id}`, { method: "DELETE" })).status).toBe(204);

      // the node was told, acks, and the ack is recorded
      await expect.poll(() => commands.length - commandsBefore, { timeout: 5000 }).toBe(kitIds.length);
      const erase = commands.at(-1) as Command;
      expect(erase).toMatchObject({ kind: "erase-member" });
      const pendingBefore = await expectJson<{ pending: string[] }>(
        await h.api(`/api/people/${erase.personId}/erasure`),
        200,
      );
      expect(pendingBefore.pending).toEqual([node.nodeId]);
      await nodeClient.publishAsync(
        topicFor("ack", node.nodeId),
        encodeMessage("ack", { commandId: erase.id, nodeId: node.nodeId, ts: Date.now(), ok: true }),
        { qos: 1 },
      );
      await expect
        .poll(
          async () =>
            (await expectJson<{ pending: string[] }>(await h.api(`/api/people/${erase.personId}/erasure`), 200))
              .pending,
          { timeout: 5000 },
        )
        .toEqual([]);

      // no index hit: Kit's photo now matches nobody, Rose still matches
      const after = await probe(kitProbe);
      expect(after.visitor).toBe("unknown");
      expect((await probe(roseProbe)).personId).toBe(rose.personId);

      // no row, and nothing in a dump (every text/bytea/jsonb column) opens to Kit's template with the master key
      const dump = await withStoppedDb(h, dumpDatabase);
      await connect();
      for (const id of kitIds) {
        expect(
          dump.filter((d) => ["people", "templates", "person_keys", "consents"].includes(d.table) && d.value === id),
        ).toEqual([]);
      }
      expect(readableFor(dump, masterKey, kit.personId, kit.templates, kitProbe)).toEqual([]);
      expect(readableFor(dump, masterKey, rose.personId, rose.templates, roseProbe).length).toBeGreaterThan(0);
      // still no hit after a restart rebuilt the index
      expect((await probe(kitProbe)).visitor).toBe("unknown");
    }, 120_000);

    it("withdrawing consent shreds the templates but keeps the consent record, marked withdrawn", async () => {
      const rose = await enrol(h, "Rose Withdrawn", ["enroll/rose_leslie/2.jpg"]);
      const commandsBefore = commands.length;
      const res = await expectJson<{ templatesDestroyed: number; keyDestroyed: boolean; edgeCommands: unknown[] }>(
        await h.api(`/api/people/${rose.personId}/withdraw-consent`, {
          method: "POST",
          json: { reason: "asked at the till" },
        }),
        200,
      );
      expect(res).toMatchObject({ templatesDestroyed: 1, keyDestroyed: true });
      expect(res.edgeCommands).toHaveLength(1);
      await expect.poll(() => commands.length - commandsBefore, { timeout: 5000 }).toBe(1);
      const people = await expectJson<{ id: string; templates: number; consents: { withdrawnAt: string | null }[] }[]>(
        await h.api("/api/people"),
        200,
      );
      const row = people.find((p) => p.id === rose.personId);
      expect(row?.templates).toBe(0);
      expect(row?.consents[0]?.withdrawnAt).not.toBeNull();
      const match = await probe(roseProbe);
      expect(match.personId).not.toBe(rose.personId);
    }, 60_000);

    it("erasure and consent withdrawal de-identify the person's visits: counted still, named and linked no more", async () => {
      const alex = await enrol(h, "Alex Lacamoire", ["enroll/alex_lacamoire/1.jpg"]);
      const lin = await enrol(h, "Lin-Manuel Miranda", ["enroll/lin_manuel_miranda/1.png"]);
      const alexFace = await embed("enroll/alex_lacamoire/1.jpg");
      const linFace = await embed("enroll/lin_manuel_miranda/1.png");
      // two visits each: an hour apart, outside the dedupe window
      for (const ts of [Date.now() - 3600_000, Date.now()]) {
        expect((await probe(alexFace, ts)).personId).toBe(alex.personId);
        expect((await probe(linFace, ts)).personId).toBe(lin.personId);
      }
      const ids = [alex.personId, lin.personId];
      const theirs = (rows: { personId: string | null; subject: string | null }[]) =>
        rows.filter((r) => ids.some((id) => r.personId === id || r.subject?.includes(id)));
      const read = () =>
        withStoppedDb(h, (db) => db.select({ personId: visits.personId, subject: visits.subject }).from(visits));
      const before = await read();
      await connect();
      expect(theirs(before)).toHaveLength(4);

      expect((await h.api(`/api/people/${alex.personId}`, { method: "DELETE" })).status).toBe(204);
      await expectJson(
        await h.api(`/api/people/${lin.personId}/withdraw-consent`, { method: "POST", json: { reason: "test" } }),
        200,
      );
      const after = await read();
      await connect();
      expect(theirs(after)).toEqual([]);
      // the same number of visits, four of them now anonymous and each on its own
      expect(after).toHaveLength(before.length);
      const erased = after.filter((r) => r.subject?.startsWith("erased:"));
      expect(erased.length).toBeGreaterThanOrEqual(4);
      expect(new Set(erased.map((r) => r.subject)).size).toBe(erased.length);
    }, 60_000);

    it("erasure also shreds the pseudonymous visitor template a person left before enrolling", async () => {
      // Lin's consent was withdrawn above: seen now, Lin is a pseudonymous visitor of this store
      const linFace = await embed("enroll/lin_manuel_miranda/1.png");
      const before = await probe(linFace);
      expect(before.visitor).toBe("unknown");
      const visitorId = before.pseudonym?.visitorId as string;
      expect(visitorId).toBeTruthy();
      // then enrols again, and asks to be erased
      const lin = await enrol(h, "Lin-Manuel Miranda again", ["enroll/lin_manuel_miranda/1.png"]);
      expect((await probe(linFace, Date.now() + 1)).personId).toBe(lin.personId);
      expect((await h.api(`/api/people/${lin.personId}`, { method: "DELETE" })).status).toBe(204);
      const audit = await expectJson<{ action: string; details: { visitorTemplatesDestroyed?: number } }[]>(
        await h.api("/api/audit?limit=5"),
        200,
      );
      expect(audit.find((a) => a.action === "person.erase")?.details.visitorTemplatesDestroyed).toBe(1);
      // the face is a stranger again (a new visitor, first time), and no row of that visitor is left
      const after = await probe(linFace, Date.now() + 2);
      expect(after.pseudonym?.visitorId).not.toBe(visitorId);
      expect(after.pseudonym?.status).toBe("first-time");
      const rows = await withStoppedDb(h, (db) => db.select({ id: visitors.id }).from(visitors));
      await connect();
      expect(rows.map((r) => r.id)).not.toContain(visitorId);
    }, 60_000);

    it("an expired consent never matches, live or after a restart", async () => {
      const expiresAt = new Date(Date.now() + 3000);
      // Kit was erased above: enrolled again, this time with a consent that runs out in 3 s
      const kit = await enrol(h, "Kit Expiring", ["enroll/kit_harington/1.jpg"], {
        consentExpiresAt: expiresAt.toISOString(),
      });
      expect((await probe(kitProbe)).personId).toBe(kit.personId);
      await new Promise((r) => setTimeout(r, expiresAt.getTime() - Date.now() + 100));
      expect((await probe(kitProbe)).visitor).toBe("unknown");
      await h.restart();
      await connect();
      expect((await probe(kitProbe)).visitor).toBe("unknown");
    }, 60_000);

    it("exports everything held about a person without the embedding, and audits the export", async () => {
      const barack = await enrol(h, "Barack Obama", ["enroll/barack_obama/1.jpg"]);
      const res = await h.api(`/api/people/${barack.personId}/export`);
      const text = await res.text();
      expect(res.status).toBe(200);
      const body = JSON.parse(text) as Record<string, unknown[]> & { person: { displayName: string } };
      expect(body.person.displayName).toBe("Barack Obama");
      expect(body.consents).toEqual([
        expect.objectContaining({ source: "store-counter", evidenceRef: "form-2026-0042", scope: "all-stores" }),
      ]);
      expect(body.templates).toEqual([expect.objectContaining({ id: barack.templates[0]?.id, space: faces.space })]);
      expect(text).not.toMatch(/embedding"|ciphertext|wrappedKey|"iv"/);
      expect(body.auditTrail).toEqual(expect.arrayContaining([expect.objectContaining({ action: "person.enrol" })]));
      const audit = await expectJson<{ action: string; subject: string | null }[]>(await h.api("/api/audit"), 200);
      expect(audit[0]).toMatchObject({ action: "person.export", subject: `person:${barack.personId}` });
    }, 60_000);

    it("pseudonymous visitor records expire after the retention period; recent ones stay", async () => {
      const stranger = await embed("enroll/joe_biden/1.jpg");
      const old = await probe(stranger, Date.now() - 31 * 24 * 3600_000);
      expect(old.visitor).toBe("unknown");
      await probe(stranger, Date.now());
      const unknownVisits = async () =>
        (
          await expectJson<{ ts: string }[]>(await h.api(`/api/visits?storeId=${storeId}&kind=unknown&limit=500`), 200)
        ).map((v) => new Date(v.ts).getTime());
      await expect
        .poll(async () => (await unknownVisits()).filter((t) => t < Date.now() - 30 * 24 * 3600_000).length, {
          timeout: 5000,
        })
        .toBe(0);
      expect((await unknownVisits()).length).toBeGreaterThan(0);
      const audit = await expectJson<{ action: string }[]>(await h.api("/api/audit?limit=1000"), 200);
      expect(audit.map((a) => a.action)).toContain("retention.expire-visitors");
    }, 60_000);

    it("staff's 'not this person' suppresses that person on that track, also after a restart, and nowhere else", async () => {
      // an hour ago, outside the dedupe window of Rose's earlier visits, so this track gets a visit of its own
      const seenAt = Date.now() - 3600_000;
      const first = await probe(roseProbe, seenAt, "track-contested");
      expect(first.visitor).toBe("member");
      const visits = await expectJson<{ id: string; personId: string | null; ts: string }[]>(
        await h.api(`/api/visits?storeId=${storeId}&kind=member&limit=100`),
        200,
      );
      const visit = visits.find((v) => v.personId === first.personId && new Date(v.ts).getTime() === seenAt);
      // who was recognised where and when is a biometric read: audited, naming whose visits were read
      // (newest first; the retention job may have written one since)
      const read = (
        await expectJson<{ action: string; details: { people: string[] } }[]>(await h.api("/api/audit?limit=5"), 200)
      ).find((a) => a.action === "visits.read");
      expect(read?.details.people).toContain(first.personId);
      const res = await expectJson<{ suppressed: { trackId: string } }>(
        await h.api(`/api/visits/${visit?.id}/not-this-person`, { method: "POST", json: { note: "her sister" } }),
        201,
      );
      expect(res.suppressed.trackId).toBe("track-contested");
      expect((await probe(roseProbe, Date.now(), "track-contested")).visitor).toBe("unknown");
      expect((await probe(roseProbe, Date.now(), "track-later")).personId).toBe(first.personId);
      await h.restart();
      await connect();
      expect((await probe(roseProbe, Date.now(), "track-contested")).visitor).toBe("unknown");
      const unknownVisit = (
        await expectJson<{ id: string }[]>(await h.api(`/api/visits?storeId=${storeId}&kind=unknown&limit=1`), 200)
      )[0];
      expect((await h.api(`/api/visits/${unknownVisit?.id}/not-this-person`, { method: "POST" })).status).toBe(409);
    }, 60_000);

    // only a shared Postgres has another instance to erase through (PGlite is one process's own)
    if (backend.name === "Postgres")
      it("an erasure made by another instance on the same Postgres is honoured at once", async () => {
        const barackProbe = await embed("enroll/barack_obama/2.jpg");
        const before = await probe(barackProbe);
        expect(before.visitor).toBe("member");
        // another orchestrator instance shreds the person: its rows go, our in-memory index still holds them
        const other = postgres(h.databaseUrl as string, { max: 1, onnotice: () => {} });
        await other`delete from person_keys where person_id = ${before.personId as string}`;
        await other`delete from templates where person_id = ${before.personId as string}`;
        await other.end();
        expect((await probe(barackProbe)).visitor).toBe("unknown");
      }, 60_000);

    it("the audit chain records who did what, verifies, and reports the first edited or deleted entry", async () => {
      const actions = (await expectJson<{ action: string }[]>(await h.api("/api/audit?limit=1000"), 200)).map(
        (a) => a.action,
      );
      expect(actions).toEqual(
        expect.arrayContaining([
          "admin POST /api/stores",
          "admin POST /api/nodes",
          "person.enrol",
          "people.read",
          "person.erase",
          "consent.withdraw",
          "edge.erase-ack",
          "person.export",
          "visit.not-this-person",
          "visits.read",
        ]),
      );
      const intact = await expectJson<{ ok: boolean; rows: number }>(await h.api("/api/audit/verify"), 200);
      expect(intact).toMatchObject({ ok: true, rows: actions.length });

      // an insider edits one entry: the verify route names it
      await withStoppedDb(h, (db) =>
        db.update(auditLog).set({ actor: "token:someone-else/hq-admin" }).where(eq(auditLog.seq, 3)),
      );
      expect(await expectJson(await h.api("/api/audit/verify"), 409)).toMatchObject({ ok: false, brokenAt: 3 });

      // …and deleting an entry (after restoring nothing) is caught at the gap, also by `npm run audit:verify`
      const verdict = await withStoppedDb(h, async (db) => {
        await db.delete(auditLog).where(eq(auditLog.seq, 2));
        return verifyAudit(db);
      });
      expect(verdict).toMatchObject({ ok: false, brokenAt: 2 });
      await h.orch.stop();
      const target = h.databaseUrl ? ["--database-url", h.databaseUrl] : ["--data-dir", h.dataDir];
      const cli = await exec("npx", ["tsx", "src/audit/verify-cli.ts", ...target], {
        cwd: join(import.meta.dirname, "..", ".."),
      }).then(
        () => ({ code: 0, stderr: "" }),
        (e: { code: number; stderr: string }) => e,
      );
      await h.restart();
      expect(cli.code).toBe(1);
      expect(cli.stderr).toMatch(/BROKEN at entry 2: row 2 is missing/);
    }, 120_000);
  });
}
