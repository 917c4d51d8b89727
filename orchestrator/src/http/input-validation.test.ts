import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { databaseBackends, demoDir, expectJson, type Harness, startHarness } from "../testing/harness.ts";

for (const backend of databaseBackends) {
  describe(`request validation on ${backend.name}`, () => {
    let h: Harness;

    beforeAll(async () => {
      h = await startHarness({ databaseUrl: backend.url() });
    }, 120_000);

    afterAll(async () => {
      await h?.close();
    });

    it("a NUL character in any text is a 400 naming the field, not a 500 from the database", async () => {
      const store = await h.api("/api/stores", { method: "POST", json: { name: "Glance\u0000Soho" } });
      const body = await expectJson<{ code: string; details: { issues: string[] } }>(store, 400);
      expect(body.code).toBe("VALIDATION_FAILED");
      expect(body.details.issues.join(" ")).toMatch(/name/);
      const token = await h.api("/api/tokens", { method: "POST", json: { role: "auditor", label: "a\u0000b" } });
      expect(token.status).toBe(400);
      expect((await h.api("/api/people/a%00b/export")).status).toBe(400);
      // other unicode is text like any other
      const rtl = await h.api("/api/stores", { method: "POST", json: { name: "Glance \u202eoH\u202c Zürich 東京 🛍" } });
      expect(rtl.status).toBe(201);
    });

    it("nobody is enrolled on a consent that has already expired, or that expires before it was given", async () => {
      const photo = new File([await readFile(join(demoDir, "enroll/alex_lacamoire/1.jpg"))], "1.jpg");
      const enrol = (fields: Record<string, string>) => {
        const form = new FormData();
        form.set("displayName", "Alex Lacamoire");
        form.set("consentSource", "store-counter");
        for (const [k, v] of Object.entries(fields)) form.set(k, v);
        form.append("photos", photo);
        return h.api("/api/people", { method: "POST", body: form });
      };
      const expired = await expectJson<{ details: { issues: string[] } }>(
        await enrol({ consentExpiresAt: "2020-01-01T00:00:00Z" }),
        400,
      );
      expect(expired.details.issues.join(" ")).toMatch(/consentExpiresAt/);
      const backwards = await enrol({
        consentGrantedAt: "2026-01-01T00:00:00Z",
        consentExpiresAt: "2025-06-01T00:00:00Z",
      });
      expect(backwards.status).toBe(400);
      const people = await expectJson<{ displayName: string }[]>(await h.api("/api/people"), 200);
      expect(people.map((p) => p.displayName)).not.toContain("Alex Lacamoire");
      // a consent that runs into the future enrols as before
      const later = new Date(Date.now() + 365 * 86_400_000).toISOString();
      expect((await enrol({ consentExpiresAt: later })).status).toBe(201);
    });
  });
}
