import { request } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Role } from "../db/schema.ts";
import {
  createScreen,
  createStore,
  databaseBackends,
  enrolDemoPerson,
  expectJson,
  type Harness,
  startHarness,
} from "../testing/harness.ts";

type Who = Role | "none";
const WHO: readonly Who[] = ["hq-admin", "store-manager", "technician", "signage-screen", "auditor", "none"];

/**
 * Who may call what. Each request is shaped to pass authorisation and then stop at validation or a missing id
 * (400/404), so the matrix changes nothing; "allow" means anything but 401/403.
 */
function routes(ids: { store: string; screen: string; person: string }) {
  const bad = { reason: 5 }; // fails every small JSON body's validation
  return [
    ["GET", "/api/metrics", undefined, ["hq-admin", "auditor", "technician"]],
    ["GET", "/api/audit", undefined, ["hq-admin", "auditor"]],
    ["GET", "/api/audit/verify", undefined, ["hq-admin", "auditor"]],
    ["POST", "/api/tokens", bad, ["hq-admin"]],
    ["GET", "/api/tokens", undefined, ["hq-admin", "auditor"]],
    ["POST", "/api/tokens/no-such-token/revoke", undefined, ["hq-admin"]],
    ["POST", "/api/stores", bad, ["hq-admin"]],
    ["GET", "/api/stores", undefined, ["hq-admin", "auditor", "store-manager", "technician"]],
    ["PATCH", `/api/stores/${ids.store}`, bad, ["hq-admin"]],
    ["GET", `/api/stores/${ids.store}/visitors`, undefined, ["hq-admin", "auditor", "store-manager"]],
    ["GET", `/api/stores/${ids.store}/footfall`, undefined, ["hq-admin", "auditor", "store-manager"]],
    ["POST", "/api/screens", bad, ["hq-admin", "store-manager"]],
    ["GET", `/api/screens/${ids.screen}/events`, undefined, ["hq-admin", "signage-screen"]],
    ["GET", `/api/screens/${ids.screen}/plays`, undefined, ["hq-admin", "auditor", "store-manager"]],
    ["POST", `/api/screens/${ids.screen}/plays`, bad, ["signage-screen"]],
    ["POST", "/api/nodes", bad, ["hq-admin", "technician"]],
    ["POST", "/api/nodes/no-such-node/revoke", undefined, ["hq-admin", "technician"]],
    ["GET", "/api/nodes", undefined, ["hq-admin", "technician", "auditor", "store-manager"]],
    // node certificate renewal has no token: the request is signed by the node's key
    ["POST", "/api/nodes/no-such-node/certificate", bad, [...WHO]],
    ["POST", "/api/people", new FormData(), ["hq-admin", "store-manager"]],
    ["GET", "/api/people", undefined, ["hq-admin", "auditor", "store-manager"]],
    ["GET", `/api/people/${ids.person}/export`, undefined, ["hq-admin", "auditor"]],
    ["GET", `/api/people/${ids.person}/erasure`, undefined, ["hq-admin", "auditor"]],
    ["POST", `/api/people/${ids.person}/withdraw-consent`, bad, ["hq-admin", "store-manager"]],
    ["DELETE", "/api/people/no-such-person", undefined, ["hq-admin"]],
    ["POST", "/api/promotions", bad, ["hq-admin", "store-manager"]],
    ["GET", "/api/promotions", undefined, ["hq-admin", "auditor", "store-manager"]],
    ["GET", "/api/visits", undefined, ["hq-admin", "auditor", "store-manager"]],
    ["POST", "/api/visits/no-such-visit/not-this-person", bad, ["hq-admin", "store-manager"]],
    ["GET", `/signage/${ids.screen}`, undefined, ["signage-screen"]],
  ] as const;
}

/**
 * POSTs up to `chunks` × 32 KiB as JSON, one chunk at a time, and answers the status of the first response: a server
 * that refuses early answers before the body is sent (fetch would only report the closed socket).
 */
function postChunks(url: URL, chunks: number, headers: Record<string, string> = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: "POST", headers: { "content-type": "application/json", ...headers } });
    let answered = false;
    req.on("response", (res) => {
      answered = true;
      resolve(res.statusCode ?? 0);
      res.resume();
      req.destroy();
    });
    req.on("error", (e) => {
      if (!answered) reject(e);
    });
    const chunk = "x".repeat(32 * 1024);
    let sent = 0;
    const more = () => {
      if (answered) return;
      if (sent === chunks) {
        if (!headers["content-length"]) req.end();
        return;
      }
      sent++;
      req.write(chunk, () => setTimeout(more, 5));
    };
    more();
  });
}

for (const backend of databaseBackends) {
  describe(`least privilege on ${backend.name}`, () => {
    let h: Harness;
    let storeA: string;
    let storeB: string;
    const tokens = {} as Record<Who, string | null>;

    beforeAll(async () => {
      h = await startHarness({ databaseUrl: backend.url(), pingIntervalMs: 200 });
      storeA = await createStore(h, "store-a", "Glance A");
      storeB = await createStore(h, "store-b", "Glance B");
      const issue = async (json: Record<string, string>) =>
        (await expectJson<{ token: string }>(await h.api("/api/tokens", { method: "POST", json }), 201)).token;
      tokens["hq-admin"] = h.orch.adminToken;
      tokens["store-manager"] = await issue({ role: "store-manager", storeId: storeA, label: "manager A" });
      tokens.technician = await issue({ role: "technician", label: "tech" });
      tokens.auditor = await issue({ role: "auditor", label: "auditor" });
      tokens.none = null;
    }, 120_000);

    afterAll(async () => {
      await h?.close();
    });

    it("every route answers only the roles that need it", async () => {
      const screen = await createScreen(h, storeA);
      tokens["signage-screen"] = screen.token;
      const { personId } = await enrolDemoPerson(h, "Kit Harington", ["enroll/kit_harington/1.jpg"], {
        consentScope: storeA,
      });
      const ids = { store: storeA, screen: screen.screenId, person: personId };
      const expected: string[] = [];
      const actual: string[] = [];
      for (const [method, path, body, allowed] of routes(ids)) {
        for (const who of WHO) {
          const abort = new AbortController();
          const res = await h.api(path, {
            method,
            token: tokens[who],
            signal: abort.signal,
            ...(body instanceof FormData ? { body } : body !== undefined ? { json: body } : {}),
          });
          abort.abort(); // the screen's event stream stays open otherwise
          const verdict = res.status === 401 || res.status === 403 ? "deny" : "allow";
          expected.push(`${method} ${path} ${who}: ${(allowed as readonly Who[]).includes(who) ? "allow" : "deny"}`);
          actual.push(`${method} ${path} ${who}: ${verdict} (${res.status})`);
        }
      }
      expect(actual.map((a) => a.replace(/ \(\d+\)$/, ""))).toEqual(expected);
    }, 120_000);

    it("a store manager's people list holds only people who consented at their store", async () => {
      const atA = await enrolDemoPerson(h, "Barack Obama", ["enroll/barack_obama/1.jpg"], { consentScope: storeA });
      const atB = await enrolDemoPerson(h, "Rose Leslie", ["enroll/rose_leslie/1.jpg"], { consentScope: storeB });
      const everywhere = await enrolDemoPerson(h, "Joe Biden", ["enroll/joe_biden/1.jpg"]);
      const mgr = await expectJson<{ id: string; personKey: string | null; consents: { scope: string }[] }[]>(
        await h.api("/api/people", { token: tokens["store-manager"] }),
        200,
      );
      const hq = await expectJson<{ id: string }[]>(await h.api("/api/people"), 200);
      expect(hq.map((p) => p.id)).toEqual(expect.arrayContaining([atB.personId, everywhere.personId]));
      expect(mgr.map((p) => p.id)).not.toContain(atB.personId);
      expect(mgr.map((p) => p.id)).not.toContain(everywhere.personId);
      expect(mgr.map((p) => p.id)).toContain(atA.personId);
      for (const p of mgr) expect(p.consents.map((c) => c.scope)).toContain(storeA);
    });

    it("a JSON body larger than any request needs is refused before it is read, also without a token", async () => {
      const url = new URL("/api/nodes/no-such-node/certificate", h.orch.httpUrl);
      // announced as 2 MiB: refused on the header, after one chunk of it
      expect(await postChunks(url, 1, { "content-length": String(2 * 1024 * 1024) })).toBe(413);
      // chunked, no Content-Length: counted as it arrives, refused past the limit
      expect(await postChunks(url, 64)).toBe(413);
      // a real renewal request (a CSR of a few KiB) is still read and answered
      const small = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ csr: "x".repeat(4000) }),
      });
      expect(small.status).toBe(404);
    }, 30_000);

    it("a screen whose token is revoked is cut off: its open event stream ends, and it cannot reconnect", async () => {
      const screen = await createScreen(h, storeA);
      const url = `${h.orch.httpUrl}/api/screens/${screen.screenId}/events?token=${encodeURIComponent(screen.token)}`;
      const res = await fetch(url);
      expect(res.status).toBe(200);
      const listed = await expectJson<{ id: string; screenId: string | null }[]>(await h.api("/api/tokens"), 200);
      const id = listed.find((t) => t.screenId === screen.screenId)?.id;
      expect((await h.api(`/api/tokens/${id}/revoke`, { method: "POST" })).status).toBe(200);
      // the server ends the stream (text() resolves only then), saying why
      expect(await res.text()).toMatch(/event: revoked/);
      expect((await fetch(url)).status).toBe(401);
    }, 10_000);

    it("HQ lists the tokens it issued (never a token or its hash) and revokes a leaked one: it stops working at once", async () => {
      const leaked = await expectJson<{ id: string; token: string }>(
        await h.api("/api/tokens", { method: "POST", json: { role: "technician", label: "lost laptop" } }),
        201,
      );
      expect((await h.api("/api/nodes", { token: leaked.token })).status).toBe(200);
      const listed = await expectJson<Record<string, unknown>[]>(await h.api("/api/tokens"), 200);
      expect(listed.find((t) => t.id === leaked.id)).toMatchObject({ role: "technician", label: "lost laptop" });
      expect(JSON.stringify(listed)).not.toMatch(/gl_|tokenHash|token_hash/);
      expect(JSON.stringify(listed)).not.toContain(leaked.token);

      const revoked = await h.api(`/api/tokens/${leaked.id}/revoke`, { method: "POST" });
      expect(revoked.status).toBe(200);
      expect((await h.api("/api/nodes", { token: leaked.token })).status).toBe(401);
      expect((await h.api(`/api/tokens/${leaked.id}/revoke`, { method: "POST" })).status).toBe(409);
      // HQ cannot lock itself out with the token it is using
      const self = await expectJson<{ id: string }[]>(await h.api("/api/tokens"), 200).then((rows) =>
        rows.find((t) => (t as { label?: string }).label === "bootstrap admin"),
      );
      expect((await h.api(`/api/tokens/${self?.id}/revoke`, { method: "POST" })).status).toBe(409);
      const actions = (await expectJson<{ action: string; subject: string }[]>(await h.api("/api/audit"), 200)).map(
        (a) => `${a.action} ${a.subject}`,
      );
      expect(actions).toContain(`admin POST /api/tokens/:tokenId/revoke /api/tokens/${leaked.id}/revoke`);
    });
  });
}
