import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Database, openDatabase } from "../db/client.ts";
import { nodes, stores } from "../db/schema.ts";
import { freshPostgres, requiredPostgresUrl, runPostgres } from "../testing/harness.ts";
import { classifySeq, REPLAY_WINDOW, ReplayGuard, recordSeq, windowFromRow } from "./replay-window.ts";

describe("replay window (in memory)", () => {
  const fresh = () => windowFromRow(null, null);
  const feed = (seqs: number[]) => {
    const w = fresh();
    return seqs.map((s) => {
      const v = classifySeq(w, s);
      if (v === "new") recordSeq(w, s);
      return v;
    });
  };

  it("accepts a node's sequence numbers out of order within the window, each once", () => {
    expect(feed([10, 7, 9, 8, 7, 10, 11, 3])).toEqual([
      "new",
      "new",
      "new",
      "new",
      "duplicate",
      "duplicate",
      "new",
      "new",
    ]);
  });

  it("rejects anything at or below highest − window, however new to us", () => {
    const top = 5000;
    expect(feed([top, top - REPLAY_WINDOW + 1, top - REPLAY_WINDOW, 0])).toEqual(["new", "new", "too-old", "too-old"]);
  });

  it("forgets slots it slides past, so a seq a window later is new while its ring slot's old owner is too old", () => {
    const w = fresh();
    for (const s of [1, 2, 3]) recordSeq(w, s);
    recordSeq(w, 2 + REPLAY_WINDOW); // slides past 1 and 2
    expect(classifySeq(w, 2)).toBe("too-old");
    expect(classifySeq(w, 3)).toBe("duplicate");
    expect(classifySeq(w, 1 + REPLAY_WINDOW)).toBe("new");
    expect(classifySeq(w, 2 + REPLAY_WINDOW)).toBe("duplicate");
    recordSeq(w, 10 * REPLAY_WINDOW); // a jump beyond the window clears it
    expect(classifySeq(w, 10 * REPLAY_WINDOW - 1)).toBe("new");
    expect(classifySeq(w, 3)).toBe("too-old");
  });

  it("treats a node row from before the window as having seen everything up to its last seq", () => {
    const w = windowFromRow(100, null);
    expect([classifySeq(w, 100), classifySeq(w, 99), classifySeq(w, 101)]).toEqual(["duplicate", "duplicate", "new"]);
  });
});

function guardSuite(label: string, open: () => Promise<{ a: Database; b: Database; close(): Promise<void> }>) {
  describe(`replay window in the database (${label})`, () => {
    let dbs: Awaited<ReturnType<typeof open>>;
    let n = 0;
    const addNode = async () => {
      const id = `rw-node-${++n}`;
      await dbs.a.db.insert(nodes).values({
        id,
        storeId: "rw-store",
        cameraId: "cam",
        signingPublicKey: "unused",
        mqttPasswordHash: "unused",
      });
      return id;
    };

    beforeAll(async () => {
      dbs = await open();
      await dbs.a.db.insert(stores).values({ id: "rw-store", name: "replay window store" });
    });
    afterAll(async () => {
      await dbs?.close();
    });

    it("accepts out-of-order seqs in one batch and across batches, and rejects duplicates and too-old ones", async () => {
      const guard = new ReplayGuard(dbs.a.db);
      const id = await addNode();
      const at = (seq: number) => ({ nodeId: id, seq });
      expect(await guard.admit([at(5), at(3), at(5), at(4)])).toEqual(["accepted", "accepted", "replayed", "accepted"]);
      expect(await guard.admit([at(1), at(3), at(2000), at(2000 - REPLAY_WINDOW), at(1999)])).toEqual([
        "accepted",
        "replayed",
        "accepted",
        "replayed",
        "accepted",
      ]);
      // a restarted instance (empty cache) reads the same window back
      const restarted = new ReplayGuard(dbs.a.db);
      expect(await restarted.admit([at(1999), at(1998), at(2000 - REPLAY_WINDOW + 1)])).toEqual([
        "replayed",
        "accepted",
        "accepted",
      ]);
      const [row] = await dbs.a.db.select({ lastSeq: nodes.lastSeq }).from(nodes).where(eq(nodes.id, id));
      expect(row?.lastSeq).toBe(2000);
    });

    it("two instances on one database never both accept a seq, and together accept each one", async () => {
      const ids = [await addNode(), await addNode(), await addNode()];
      const one = new ReplayGuard(dbs.a.db);
      const two = new ReplayGuard(dbs.b.db);
      // both warm their caches first, so every later decision of one is news to the other
      await Promise.all([one.nodes(ids), two.nodes(ids)]);
      // every seq is delivered to both instances (QoS 1 redelivery, shared subscriptions), shuffled, in small batches
      const seqs = Array.from({ length: 300 }, (_, i) => i + 1);
      const items = ids.flatMap((nodeId) => seqs.map((seq) => ({ nodeId, seq })));
      const shuffled = () => [...items].sort(() => Math.random() - 0.5);
      const run = async (guard: ReplayGuard) => {
        const mine: string[] = [];
        const list = shuffled();
        for (let i = 0; i < list.length; i += 25) {
          const batch = list.slice(i, i + 25);
          const verdicts = await guard.admit(batch);
          batch.forEach((it, j) => {
            if (verdicts[j] === "accepted") mine.push(`${it.nodeId}#${it.seq}`);
          });
        }
        return mine;
      };
      const [a, b] = await Promise.all([run(one), run(two)]);
      const all = [...a, ...b];
      expect(new Set(all).size).toBe(all.length);
      expect(all.length).toBe(items.length);
      expect(a.length).toBeGreaterThan(0);
      expect(b.length).toBeGreaterThan(0);
      expect(one.stats.conflicts + two.stats.conflicts).toBeGreaterThan(0);
    });

    it("a node revoked by another instance is refused at once, though this instance still caches it as active", async () => {
      const id = await addNode();
      const guard = new ReplayGuard(dbs.a.db);
      expect(await guard.admit([{ nodeId: id, seq: 1 }])).toEqual(["accepted"]);
      await dbs.b.db.update(nodes).set({ revokedAt: new Date() }).where(eq(nodes.id, id));
      expect(await guard.admit([{ nodeId: id, seq: 2 }])).toEqual(["revoked"]);
      expect(await guard.admit([{ nodeId: "rw-ghost", seq: 1 }])).toEqual(["unknown"]);
    });
  });
}

guardSuite("PGlite", async () => {
  const dir = await mkdtemp(join(tmpdir(), "glance-replay-"));
  // PGlite is one process-local connection: the second "instance" shares it, but keeps its own cache
  const a = await openDatabase({ dataDir: dir });
  return {
    a,
    b: a,
    async close() {
      await a.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
});
describe.runIf(runPostgres)("on real Postgres", () => {
  guardSuite("Postgres", async () => {
    const pg = await freshPostgres(requiredPostgresUrl());
    const a = await openDatabase({ dataDir: "", databaseUrl: pg.url });
    const b = await openDatabase({ dataDir: "", databaseUrl: pg.url });
    return {
      a,
      b,
      async close() {
        await a.close();
        await b.close();
        await pg.drop();
      },
    };
  });
});
