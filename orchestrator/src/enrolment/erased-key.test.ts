import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openDatabase } from "../db/client.ts";
import { erasedKeys } from "../db/schema.ts";
import { databaseBackends, demoDir, expectJson, type Harness, startHarness } from "../testing/harness.ts";

const backends = databaseBackends;

for (const backend of backends)
  describe(`an erased person's key on ${backend.name}`, () => {
    let h: Harness;
    let photo: File;

    const enrol = async (fields: Record<string, string>) => {
      const form = new FormData();
      form.set("displayName", "Kit Harington");
      form.set("consentSource", "paper form");
      form.set("personKey", "crm-4711");
      for (const [k, v] of Object.entries(fields)) form.set(k, v);
      form.append("photos", photo);
      return h.api("/api/people", { method: "POST", body: form });
    };

    /** the erased_keys rows, read with the orchestrator stopped (PGlite allows one process at a time) */
    const tombstones = async () => {
      await h.orch.stop();
      const database = await openDatabase({ dataDir: h.dataDir, databaseUrl: h.databaseUrl });
      try {
        return await database.db.select().from(erasedKeys);
      } finally {
        await database.close();
        await h.restart();
      }
    };

    beforeAll(async () => {
      h = await startHarness({ databaseUrl: backend.url() });
      photo = new File([await readFile(join(demoDir, "enroll/kit_harington/1.jpg"))], "1.jpg", { type: "image/jpeg" });
    });
    afterAll(async () => {
      await h?.close();
    });

    it("is not re-enrolled by an old import, only by a consent given after the erasure", async () => {
      const { personId } = await expectJson<{ personId: string }>(
        await enrol({ consentGrantedAt: "2026-01-10T09:00:00Z" }),
        201,
      );
      expect((await h.api(`/api/people/${personId}`, { method: "DELETE" })).status).toBe(204);
      const erasedAt = Date.now();

      // the same CSV row again: its consent predates the erasure
      const old = await expectJson<{ code: string; message: string }>(
        await enrol({ consentGrantedAt: "2026-01-10T09:00:00Z" }),
        409,
      );
      expect(old.code).toBe("CONFLICT");
      expect(old.message).toContain("erased at the person's request");
      // no date at all is no evidence of a new consent either
      await expectJson(await enrol({}), 409);
      const people = await expectJson<{ personKey: string | null }[]>(await h.api("/api/people"), 200);
      expect(people.map((p) => p.personKey)).not.toContain("crm-4711");

      // the tombstone holds a keyed hash, never the key
      const held = await tombstones();
      expect(held).toHaveLength(1);
      expect(JSON.stringify(held)).not.toContain("crm-4711");

      // the person came back and signed again
      const fresh = new Date(Math.max(erasedAt + 1, Date.now())).toISOString();
      await expectJson(await enrol({ consentGrantedAt: fresh }), 201);
      expect(await tombstones()).toHaveLength(0);
    });
  });
