import { createHash } from "node:crypto";
import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { deflateSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createScreen, createStore, demoDir, expectJson, type Harness, startHarness } from "../testing/harness.ts";

/** A plain grey PNG: a readable photo with nobody in it. */
function greyPng(size = 96): Buffer {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (b: Buffer) => {
    let c = 0xffffffff;
    for (const x of b) c = (crcTable[(c ^ x) & 0xff] as number) ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type: string, data: Buffer) => {
    const td = Buffer.concat([Buffer.from(type, "ascii"), data]);
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const sum = Buffer.alloc(4);
    sum.writeUInt32BE(crc(td));
    return Buffer.concat([len, td, sum]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(size, 0);
  ihdr.writeUInt32BE(size, 4);
  ihdr.set([8, 2, 0, 0, 0], 8); // 8-bit RGB
  const rows = Buffer.alloc(size * (1 + size * 3), 128);
  for (let y = 0; y < size; y++) rows[y * (1 + size * 3)] = 0; // filter: none
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", ihdr),
    chunk("IDAT", deflateSync(rows)),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

async function demoFile(path: string): Promise<File> {
  return new File([await readFile(join(demoDir, path))], path.split("/").pop() as string);
}

function enrolForm(fields: Record<string, string>, photos: File[]): FormData {
  const form = new FormData();
  for (const [k, v] of Object.entries(fields)) form.set(k, v);
  for (const p of photos) form.append("photos", p);
  return form;
}

type Feedback = { photo: string; accepted: boolean; code?: string; message: string };

describe("HTTP API", () => {
  let h: Harness;
  let storeId: string;

  beforeAll(async () => {
    h = await startHarness();
    storeId = await createStore(h, "camden", "Glance Camden");
  });

  afterAll(async () => {
    await h?.close();
  });

  describe("enrolment tells the operator which photo to retake", () => {
    it("enrols from the good photos and explains each rejected one", async () => {
      const photos = [
        await demoFile("enroll/kit_harington/1.jpg"),
        await demoFile("scenes/two-faces.jpg"),
        new File([new Uint8Array(greyPng())], "wall.png"),
      ];
      const res = await h.api("/api/people", {
        method: "POST",
        body: enrolForm({ displayName: "Kit Harington", consentSource: "demo" }, photos),
      });
      const body = await expectJson<{
        personId: string;
        templates: Array<{ sourceSha256: string; space: string }>;
        feedback: Feedback[];
      }>(res, 201);
      expect(body.feedback.map((f) => [f.photo, f.accepted, f.code])).toEqual([
        ["1.jpg", true, undefined],
        ["two-faces.jpg", false, "MULTIPLE_FACES"],
        ["wall.png", false, "NO_FACE_FOUND"],
      ]);
      // the template records which photo it came from by hash; the photo itself is not kept
      const sha = createHash("sha256")
        .update(await readFile(join(demoDir, "enroll/kit_harington/1.jpg")))
        .digest("hex");
      const { space } = await expectJson<{ space: string }>(await h.api("/api/health", { token: null }), 200);
      expect(body.templates).toEqual([expect.objectContaining({ sourceSha256: sha, space })]);

      const people = await expectJson<Array<Record<string, unknown>>>(await h.api("/api/people"), 200);
      const kit = people.find((p) => p.id === body.personId);
      expect(kit).toMatchObject({
        displayName: "Kit Harington",
        templates: 1,
        consents: [expect.objectContaining({ source: "demo", scope: "all-stores" })],
      });
      expect(JSON.stringify(people)).not.toMatch(/embedding/);
    });

    it("enrols nobody when no photo shows exactly one face", async () => {
      const res = await h.api("/api/people", {
        method: "POST",
        body: enrolForm({ displayName: "Nobody", consentSource: "demo" }, [
          new File([new Uint8Array(greyPng())], "wall.png"),
          new File([Buffer.from("not an image")], "notes.txt"),
        ]),
      });
      const body = await expectJson<{ code: string; details: { feedback: Feedback[] } }>(res, 422);
      expect(body.code).toBe("NO_FACE_FOUND");
      expect(body.details.feedback.map((f) => f.code)).toEqual(["NO_FACE_FOUND", "IMAGE_UNREADABLE"]);
      const people = await expectJson<Array<{ displayName: string }>>(await h.api("/api/people"), 200);
      expect(people.map((p) => p.displayName)).not.toContain("Nobody");
    });

    it("refuses to enrol without a record of consent", async () => {
      const res = await h.api("/api/people", {
        method: "POST",
        body: enrolForm({ displayName: "Rose Leslie" }, [await demoFile("enroll/rose_leslie/1.jpg")]),
      });
      expect((await expectJson<{ code: string }>(res, 422)).code).toBe("CONSENT_REQUIRED");
    });

    it("answers a malformed request with the fields to fix", async () => {
      const res = await h.api("/api/people", { method: "POST", body: enrolForm({ consentSource: "demo" }, []) });
      const body = await expectJson<{ code: string; details: { issues: string[] } }>(res, 400);
      expect(body.code).toBe("VALIDATION_FAILED");
      expect(body.details.issues.join(" ")).toMatch(/displayName/);
    });
  });

  describe("erasure", () => {
    it("forgets a person on request: templates, consents and the gallery entry go at once", async () => {
      const form = enrolForm({ displayName: "Joe Biden", consentSource: "store-counter" }, [
        await demoFile("enroll/joe_biden/1.jpg"),
      ]);
      const { personId } = await expectJson<{ personId: string }>(
        await h.api("/api/people", { method: "POST", body: form }),
        201,
      );
      const before = await expectJson<{ gallery: { people: number } }>(await h.api("/api/metrics"), 200);
      expect((await h.api(`/api/people/${personId}`, { method: "DELETE" })).status).toBe(204);
      const after = await expectJson<{ gallery: { people: number } }>(await h.api("/api/metrics"), 200);
      expect(after.gallery.people).toBe(before.gallery.people - 1);
      const people = await expectJson<Array<{ id: string }>>(await h.api("/api/people"), 200);
      expect(people.map((p) => p.id)).not.toContain(personId);
      expect((await h.api(`/api/people/${personId}`, { method: "DELETE" })).status).toBe(404);
    });
  });

  describe("roles", () => {
    it("answers 401 without a token and 403 to a role that may not act", async () => {
      expect((await h.api("/api/people", { token: null })).status).toBe(401);
      const tech = await expectJson<{ token: string }>(
        await h.api("/api/tokens", { method: "POST", json: { role: "technician", label: "Sam" } }),
        201,
      );
      const res = await h.api("/api/people", { token: tech.token });
      expect(res.status).toBe(403);
      expect(((await res.json()) as { code: string }).code).toBe("FORBIDDEN");
    });

    it("keeps a store manager to their own store", async () => {
      const other = await createStore(h, "brixton", "Glance Brixton");
      const mgr = await expectJson<{ token: string }>(
        await h.api("/api/tokens", { method: "POST", json: { role: "store-manager", storeId, label: "Ada" } }),
        201,
      );
      const own = await h.api("/api/screens", { method: "POST", token: mgr.token, json: { storeId, name: "Till" } });
      expect(own.status).toBe(201);
      const foreign = await h.api("/api/screens", {
        method: "POST",
        token: mgr.token,
        json: { storeId: other, name: "Till" },
      });
      expect(foreign.status).toBe(403);
      const stores = await expectJson<Array<{ id: string }>>(await h.api("/api/stores", { token: mgr.token }), 200);
      expect(stores.map((s) => s.id)).toEqual([storeId]);
    });
  });

  describe("signage player", () => {
    it("serves a self-contained full-screen page for the screen, without echoing its token", async () => {
      const screen = await createScreen(h, storeId);
      const res = await fetch(`${h.orch.httpUrl}/signage/${screen.screenId}?token=${encodeURIComponent(screen.token)}`);
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toMatch(/text\/html/);
      const html = await res.text();
      expect(html).toContain("Glance Camden");
      expect(html).toContain("new EventSource(");
      expect(html).toContain("/plays");
      expect(html).not.toContain(screen.token);
      expect(html).not.toMatch(/<script[^>]+src=|<link[^>]+href=|https?:\/\//);
    });

    it("refuses the page to another screen's token", async () => {
      const a = await createScreen(h, storeId);
      const b = await createScreen(h, storeId);
      const res = await fetch(`${h.orch.httpUrl}/signage/${a.screenId}?token=${encodeURIComponent(b.token)}`);
      expect(res.status).toBe(403);
    });
  });

  describe("OpenAPI", () => {
    it("describes every route with the schemas that validate it", async () => {
      const doc = await expectJson<{
        paths: Record<
          string,
          Record<string, { requestBody?: { content: Record<string, { schema: { required?: string[] } }> } }>
        >;
      }>(await h.api("/api/openapi.json", { token: null }), 200);
      expect(Object.keys(doc.paths)).toEqual(
        expect.arrayContaining(["/api/nodes", "/api/people", "/api/screens/{screenId}/events"]),
      );
      expect(doc.paths["/api/nodes"]?.post?.requestBody?.content["application/json"]?.schema.required).toEqual([
        "nodeId",
        "storeId",
        "cameraId",
        "signingPublicKey",
      ]);
      expect(doc.paths["/api/people"]?.post?.requestBody?.content["multipart/form-data"]?.schema.required).toEqual([
        "displayName",
        "photos",
      ]);
    });
  });

  describe("bootstrap", () => {
    it("keeps the admin token in a file only its owner can read, and the same token after a restart", async () => {
      const file = join(h.dataDir, "admin-token");
      expect((await stat(file)).mode & 0o777).toBe(0o600);
      expect((await stat(join(h.dataDir, "sealing-key.json"))).mode & 0o777).toBe(0o600);
      const before = { token: h.orch.adminToken, key: h.orch.sealingKey };
      await h.restart();
      expect(h.orch.adminToken).toBe(before.token);
      expect(h.orch.sealingKey).toEqual(before.key);
      expect((await h.api("/api/stores")).status).toBe(200);
      // anyone may ask whether it is up; how many are enrolled, and the thresholds, take a metrics role
      const health = await expectJson<Record<string, unknown>>(await h.api("/api/health", { token: null }), 200);
      expect(Object.keys(health).sort()).toEqual(["ok", "space"]);
      expect(health.ok).toBe(true);
      const metrics = await expectJson<{ galleryThread: { activeMs: number; idleMs: number } }>(
        await h.api("/api/metrics"),
        200,
      );
      expect(metrics).toMatchObject({
        gallery: { people: 1, templates: 1 },
        openSet: { threshold: expect.any(Number) },
        // one template: exact search, no graph to tune
        graph: null,
      });
      // the gallery runs on its own thread (the default), which has been both busy (building, matching) and idle
      expect(metrics.galleryThread.activeMs).toBeGreaterThan(0);
      expect(metrics.galleryThread.idleMs).toBeGreaterThan(0);
      expect((await h.api("/api/metrics", { token: null })).status).toBe(401);
    });
  });
});
