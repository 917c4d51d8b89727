import { readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { defaultTokenLifetimeDays, maxTokenLifetimeDays } from "../auth/token-lifetime.ts";
import type { Role } from "../db/schema.ts";
import {
  createScreen,
  createStore,
  databaseBackends,
  expectJson,
  type Harness,
  startHarness,
} from "../testing/harness.ts";

const DAY_MS = 24 * 60 * 60 * 1000;

interface Issued {
  id: string;
  token: string;
  expiresAt: string;
}

/**
 * Time moves by the server's own clock, which these tests set (the orchestrator runs in this process): only Date is
 * faked, so timers, sockets and the database keep real time and nothing sleeps.
 */
function clockAt(at: number): void {
  vi.useFakeTimers({ toFake: ["Date"] });
  vi.setSystemTime(at);
}

for (const backend of databaseBackends) {
  describe(`token expiry on ${backend.name}`, () => {
    let h: Harness;
    let store: string;

    const issue = async (json: Record<string, unknown>) =>
      expectJson<Issued>(await h.api("/api/tokens", { method: "POST", json }), 201);

    beforeAll(async () => {
      h = await startHarness({ databaseUrl: backend.url(), pingIntervalMs: 100 });
      store = await createStore(h, "store-exp", "Glance Expiry");
    }, 120_000);

    afterEach(() => {
      vi.useRealTimers();
    });

    afterAll(async () => {
      await h?.close();
    });

    it("a token issued for 7 days works until then and is refused after, exactly as a revoked one", async () => {
      const before = Date.now();
      const tech = await issue({ role: "technician", label: "site visit", expiresInDays: 7 });
      const expiresAt = Date.parse(tech.expiresAt);
      expect(expiresAt - before).toBeGreaterThanOrEqual(7 * DAY_MS);
      expect(expiresAt - Date.now()).toBeLessThanOrEqual(7 * DAY_MS);
      const listed = await expectJson<{ id: string; expiresAt: string | null }[]>(await h.api("/api/tokens"), 200);
      expect(listed.find((t) => t.id === tech.id)?.expiresAt).toBe(tech.expiresAt);

      expect((await h.api("/api/nodes", { token: tech.token })).status).toBe(200);
      clockAt(expiresAt - 60_000);
      expect((await h.api("/api/nodes", { token: tech.token })).status).toBe(200);
      clockAt(expiresAt);
      const expired = await h.api("/api/nodes", { token: tech.token });
      vi.useRealTimers();

      const other = await issue({ role: "technician", label: "lost laptop" });
      expect((await h.api(`/api/tokens/${other.id}/revoke`, { method: "POST" })).status).toBe(200);
      const revoked = await h.api("/api/nodes", { token: other.token });
      expect(expired.status).toBe(401);
      expect(await expired.json()).toEqual(await expectJson(revoked, 401));
    });

    it("a token issued without a lifetime gets its role's default, and a screen's token a year", async () => {
      const screen = await expectJson<{ screen: { id: string }; tokenExpiresAt: string }>(
        await h.api("/api/screens", { method: "POST", json: { storeId: store, name: "Till screen" } }),
        201,
      );
      const bodies: Record<Role, Record<string, string>> = {
        "hq-admin": { role: "hq-admin", label: "crm sync" },
        technician: { role: "technician", label: "tech" },
        auditor: { role: "auditor", label: "dpo audit" },
        "store-manager": { role: "store-manager", label: "manager", storeId: store },
        "signage-screen": { role: "signage-screen", label: "screen re-issue", screenId: screen.screen.id },
      };
      const lifetimes: Record<string, number> = {};
      for (const [role, json] of Object.entries(bodies)) {
        const before = Date.now();
        const t = await issue(json);
        lifetimes[role] = Math.round((Date.parse(t.expiresAt) - before) / DAY_MS);
      }
      expect(lifetimes).toEqual(defaultTokenLifetimeDays);
      expect(lifetimes).toEqual({
        "hq-admin": 30,
        technician: 30,
        auditor: 30,
        "store-manager": 90,
        "signage-screen": 365,
      });
      expect(Math.round((Date.parse(screen.tokenExpiresAt) - Date.now()) / DAY_MS)).toBe(365);
    });

    it("a lifetime that is not a whole number of days from 1 to 365 is refused, naming expiresInDays", async () => {
      for (const expiresInDays of [0, -1, maxTokenLifetimeDays + 1, 1e9, 1.5, "30", null]) {
        const res = await h.api("/api/tokens", {
          method: "POST",
          json: { role: "technician", label: "bad", expiresInDays },
        });
        const body = await expectJson<{ code: string; details: { issues: string[] } }>(res, 400);
        expect(body.code).toBe("VALIDATION_FAILED");
        expect(body.details.issues.join(" ")).toMatch(/expiresInDays/);
      }
      const longest = await issue({ role: "technician", label: "a year", expiresInDays: maxTokenLifetimeDays });
      expect(Math.round((Date.parse(longest.expiresAt) - Date.now()) / DAY_MS)).toBe(365);
    });

    it("the bootstrap admin token never expires, also after a restart", async () => {
      const listed = await expectJson<{ label: string; expiresAt: string | null }[]>(await h.api("/api/tokens"), 200);
      expect(listed.find((t) => t.label === "bootstrap admin")?.expiresAt).toBeNull();
      clockAt(Date.now() + 10 * 365 * DAY_MS);
      expect((await h.api("/api/nodes")).status).toBe(200);
      vi.useRealTimers();
      await h.restart();
      clockAt(Date.now() + 10 * 365 * DAY_MS);
      expect((await h.api("/api/nodes")).status).toBe(200);
    }, 60_000);

    it("deleting the admin token file and restarting rotates it: the old token is refused, the rotation audited", async () => {
      const old = h.orch.adminToken;
      await h.restart();
      // with the file in place a restart keeps the token
      expect(h.orch.adminToken).toBe(old);
      await rm(join(h.dataDir, "admin-token"));
      await h.restart();
      const fresh = h.orch.adminToken;
      expect(fresh).not.toBe(old);
      expect((await readFile(join(h.dataDir, "admin-token"), "utf8")).trim()).toBe(fresh);
      expect((await h.api("/api/nodes", { token: old })).status).toBe(401);
      expect((await h.api("/api/nodes", { token: fresh })).status).toBe(200);
      const listed = await expectJson<{ id: string; label: string; revokedAt: string | null; expiresAt: null }[]>(
        await h.api("/api/tokens"),
        200,
      );
      const bootstrap = listed.filter((t) => t.label === "bootstrap admin");
      expect(bootstrap.map((t) => t.revokedAt === null)).toEqual([false, true]);
      const audit = await expectJson<{ action: string; subject: string; details: { revokedTokenIds: string[] } }[]>(
        await h.api("/api/audit?limit=5"),
        200,
      );
      const rotation = audit.find((e) => e.action === "admin-token.rotate");
      expect(rotation?.subject).toBe(bootstrap[1]?.id);
      expect(rotation?.details.revokedTokenIds).toEqual([bootstrap[0]?.id]);
    }, 60_000);

    it("the bootstrap admin token's label is refused for issued tokens, in any case", async () => {
      for (const label of ["bootstrap admin", " Bootstrap Admin "]) {
        const res = await h.api("/api/tokens", { method: "POST", json: { role: "hq-admin", label } });
        const body = await expectJson<{ code: string; details: { issues: string[] } }>(res, 400);
        expect(body.details.issues.join(" ")).toMatch(/label/);
      }
    });

    it("a screen whose token expires is cut off: its open event stream ends, and it cannot reconnect", async () => {
      const screen = await createScreen(h, store);
      const url = `${h.orch.httpUrl}/api/screens/${screen.screenId}/events?token=${encodeURIComponent(screen.token)}`;
      const res = await fetch(url);
      expect(res.status).toBe(200);
      clockAt(Date.now() + 366 * DAY_MS);
      // the server ends the stream at the next keep-alive (text() resolves only then), saying why
      expect(await res.text()).toMatch(/event: revoked\ndata: This token was revoked or has expired/);
      expect((await fetch(url)).status).toBe(401);
    }, 10_000);
  });
}
