import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { databaseBackends, expectJson, type Harness, startHarness } from "../testing/harness.ts";

for (const backend of databaseBackends) {
  describe.skipIf(!backend.enabled)(`request validation on ${backend.name}`, () => {
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
  });
}
