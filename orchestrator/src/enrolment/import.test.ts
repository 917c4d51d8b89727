import { execFile } from "node:child_process";
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { databaseBackends, demoDir, expectJson, type Harness, startHarness } from "../testing/harness.ts";
import { type ImportProgress, type ImportResult, runImport } from "./import.ts";
import { planImport } from "./import-plan.ts";

const root = join(import.meta.dirname, "..", "..", "..");
const tsx = join(root, "node_modules", ".bin", "tsx");
const cli = join(import.meta.dirname, "import-cli.ts");

const HEADER =
  "person_key,display_name,consent_source,consent_purpose,consent_scope,consent_evidence,consent_granted,consent_expires,photos";

/** A well-lit, readable photo of an empty wall. */
const wall = () =>
  sharp({ create: { width: 640, height: 480, channels: 3, background: { r: 182, g: 176, b: 160 } } })
    .jpeg()
    .toBuffer();

const backends = databaseBackends;

for (const backend of backends)
  describe(`bulk enrolment import on ${backend.name}`, () => {
    let h: Harness;
    let dir: string;
    let photos: string;
    let csv: string;
    let first: ImportResult;
    const progress: ImportProgress[] = [];

    beforeAll(async () => {
      h = await startHarness({ databaseUrl: backend.url() });
      dir = await mkdtemp(join(tmpdir(), "glance-import-test-"));
      photos = join(dir, "photos");
      await cp(join(demoDir, "enroll"), photos, { recursive: true });
      await mkdir(join(photos, "extra"));
      await writeFile(join(photos, "extra", "wall.jpg"), await wall());
      const names = JSON.parse(await readFile(join(demoDir, "names.json"), "utf8")) as Record<string, string>;
      const six = Object.entries(names).map(([key, name]) =>
        key === "rose_leslie"
          ? `${key},${name},demo,recognition-promotions,all-stores,form 17,2026-03-01,2030-12-31,rose_leslie;extra/wall.jpg`
          : `${key},"${name}",demo,,,bundled demo data,,,`,
      );
      csv = join(dir, "people.csv");
      await writeFile(
        csv,
        [
          HEADER,
          ...six, // lines 2-7
          "walk-in-1,Walk In,store-counter,,,,,,extra/wall.jpg", // line 8: the one photo shows nobody
          "bad-1,,demo,,,,,2020-01-01,missing.jpg", // line 9: no name, consent long expired, photo missing
        ].join("\n"),
      );
    });

    afterAll(async () => {
      await h?.close();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    it("enrols the six demo people, reports the bad row by line and the photo with nobody in it", async () => {
      const plan = await planImport(await readFile(csv, "utf8"), photos);
      // nothing written yet: the bad row is known before the first request
      expect(plan.invalid).toEqual([
        {
          line: 9,
          personKey: "bad-1",
          problems: [
            "display_name is empty",
            "consent_expires 2020-01-01T23:59:59.999Z is in the past: nobody to enrol",
            `photo missing.jpg not found in ${photos}`,
          ],
        },
      ]);
      expect(plan.people.map((p) => [p.line, p.personKey, p.photos.length])).toEqual([
        [2, "alex_lacamoire", 2],
        [3, "barack_obama", 2],
        [4, "joe_biden", 2],
        [5, "kit_harington", 2],
        [6, "lin_manuel_miranda", 1],
        [7, "rose_leslie", 3],
        [8, "walk-in-1", 1],
      ]);

      first = await runImport(plan, {
        api: { url: h.orch.httpUrl, token: h.orch.adminToken },
        photosDir: photos,
        concurrency: 2,
        onProgress: (p) => progress.push(p),
      });

      expect(progress.map((p) => `${p.done}/${p.total}`)).toEqual(["1/7", "2/7", "3/7", "4/7", "5/7", "6/7", "7/7"]);
      expect(first.counts).toMatchObject({
        rows: 8,
        invalid: 1,
        enrolled: 6,
        skipped: 0,
        failed: 1,
        photosRejected: 2,
      });
      const byKey = new Map(first.people.map((p) => [p.personKey, p]));
      expect(byKey.get("rose_leslie")).toMatchObject({ status: "enrolled", templates: 2 });
      expect(byKey.get("rose_leslie")?.photos.find((p) => !p.accepted)).toMatchObject({
        photo: "extra/wall.jpg",
        code: "NO_FACE_FOUND",
      });
      expect(byKey.get("walk-in-1")).toMatchObject({
        line: 8,
        status: "failed",
        code: "NO_FACE_FOUND",
        photos: [{ photo: "extra/wall.jpg", accepted: false, code: "NO_FACE_FOUND" }],
      });

      const people = await expectJson<
        Array<{ personKey: string | null; displayName: string; templates: number; consents: unknown[] }>
      >(await h.api("/api/people"), 200);
      expect(people.map((p) => p.personKey).sort()).toEqual([
        "alex_lacamoire",
        "barack_obama",
        "joe_biden",
        "kit_harington",
        "lin_manuel_miranda",
        "rose_leslie",
      ]);
      // consent given on paper months ago keeps its date
      expect(people.find((p) => p.personKey === "rose_leslie")).toMatchObject({
        consents: [{ source: "demo", evidenceRef: "form 17", grantedAt: "2026-03-01T00:00:00.000Z" }],
      });
      expect(people.find((p) => p.personKey === "lin_manuel_miranda")).toMatchObject({
        displayName: "Lin-Manuel Miranda",
        templates: 1,
      });
      // each enrolment is audited as if it had been made at the counter, with the consent it rests on
      const audit = await expectJson<Array<{ action: string; details: { consent?: { evidenceRef: string | null } } }>>(
        await h.api("/api/audit?limit=100"),
        200,
      );
      const enrols = audit.filter((a) => a.action === "person.enrol");
      expect(enrols).toHaveLength(6);
      expect(enrols.map((a) => a.details.consent?.evidenceRef)).toContain("form 17");
    });

    it("run again from the command line, it changes nothing and says who was skipped", async () => {
      expect(first).toBeDefined();
      const before = await expectJson<unknown[]>(await h.api("/api/audit?limit=100"), 200);
      const run = await promisify(execFile)(tsx, [cli, "--csv", csv, "--photos", photos, "--api", h.orch.httpUrl], {
        env: { ...process.env, GLANCE_TOKEN: h.orch.adminToken, INIT_CWD: dir },
      }).catch((e: { code: number; stdout: string; stderr: string }) => e);
      // rows that are still wrong keep the exit status at 1 so a script notices
      expect("code" in run ? run.code : 0).toBe(1);
      expect(run.stderr).toContain("line 9 (bad-1): display_name is empty");
      expect(run.stdout).toContain("line 2 alex_lacamoire: skipped");
      expect(run.stdout).toContain("line 8 walk-in-1: failed NO_FACE_FOUND: no photo could be enrolled");
      expect(run.stdout).toContain("    extra/wall.jpg: NO_FACE_FOUND: No face found");
      expect(run.stdout).toContain("enrolled 0, skipped 6 (already enrolled), failed 1, invalid rows 1");

      const report = JSON.parse(await readFile(join(dir, "people.report.json"), "utf8")) as {
        counts: ImportResult["counts"];
        people: Array<{ personKey: string; status: string; personId?: string }>;
      };
      expect(report.counts).toMatchObject({ enrolled: 0, skipped: 6, failed: 1, invalid: 1 });
      const firstIds = Object.fromEntries(first.people.map((p) => [p.personKey, p.personId]));
      for (const p of report.people.filter((x) => x.status === "skipped"))
        expect(p.personId).toBe(firstIds[p.personKey]);

      // the re-run wrote nothing biometric: one people.read for the key check, no enrolment
      const after = await expectJson<Array<{ action: string }>>(await h.api("/api/audit?limit=100"), 200);
      expect(after.slice(0, after.length - before.length).map((a) => a.action)).toEqual(["people.read"]);
      const people = await expectJson<unknown[]>(await h.api("/api/people"), 200);
      expect(people).toHaveLength(6);
    });

    const enrolForm = async (personKey: string, photo: string) => {
      const form = new FormData();
      form.set("displayName", "Barack Obama");
      form.set("personKey", personKey);
      form.set("consentSource", "demo");
      form.append("photos", new Blob([await readFile(join(photos, photo))]), "1.jpg");
      return form;
    };

    it("refuses a second enrolment under the same person key at the API", async () => {
      const body = await expectJson<{ code: string; details: { personId: string } }>(
        await h.api("/api/people", { method: "POST", body: await enrolForm("barack_obama", "barack_obama/1.jpg") }),
        409,
      );
      expect(body.code).toBe("CONFLICT");
      expect(body.details.personId).toBe(first.people.find((p) => p.personKey === "barack_obama")?.personId);
    });

    it("stopped part-way, it finishes the enrolment in flight and a re-run enrols the rest", async () => {
      const csvText = [HEADER, ...["stop-1", "stop-2", "stop-3"].map((k) => `${k},${k},demo,,,,,,kit_harington/1.jpg`)];
      const plan = await planImport(csvText.join("\n"), photos);
      const api = { url: h.orch.httpUrl, token: h.orch.adminToken };
      const stop = new AbortController();
      const stopped = await runImport(plan, {
        api,
        photosDir: photos,
        concurrency: 1,
        signal: stop.signal,
        onProgress: () => stop.abort(),
      });
      expect(stopped.counts).toMatchObject({ enrolled: 1, notAttempted: 2 });
      const rest = await runImport(plan, { api, photosDir: photos, concurrency: 1 });
      expect(rest.people.map((p) => p.status)).toEqual(["skipped", "enrolled", "enrolled"]);
    });

    it("two imports racing on one new key enrol the person once", async () => {
      const [a, b] = await Promise.all([
        h.api("/api/people", { method: "POST", body: await enrolForm("race-1", "barack_obama/1.jpg") }),
        h.api("/api/people", { method: "POST", body: await enrolForm("race-1", "barack_obama/2.jpg") }),
      ]);
      expect([a?.status, b?.status].sort()).toEqual([201, 409]);
      const people = await expectJson<Array<{ personKey: string | null }>>(await h.api("/api/people"), 200);
      expect(people.filter((p) => p.personKey === "race-1")).toHaveLength(1);
    });
  });

describe("bulk enrolment CSV check (before anything is written)", () => {
  let photos: string;
  beforeAll(async () => {
    photos = await mkdtemp(join(tmpdir(), "glance-import-plan-"));
    await mkdir(join(photos, "ana"));
    await writeFile(join(photos, "ana", "1.jpg"), await wall());
    await writeFile(join(photos, "notes.txt"), "x");
  });
  afterAll(async () => {
    await rm(photos, { recursive: true, force: true });
  });

  it("names every wrong row by its line and what to fix", async () => {
    const plan = await planImport(
      [
        HEADER,
        "ana,Ana,store-counter,,,,,,",
        "",
        "ana,Ana again,store-counter,,,,,,ana/1.jpg", // line 4
        "bo,Bo,store-counter,marketing,,,,,ana/1.jpg", // line 5
        "cy,Cy,store-counter,,soho shop,,,31/12/2030,../secret.jpg", // line 6
        "di,Di,store-counter,,,,2099-01-01,,notes.txt;ana", // line 7
        "ed,Ed,store-counter", // line 8
      ].join("\n"),
      photos,
    );
    expect(plan.people.map((p) => p.personKey)).toEqual(["ana"]);
    expect(plan.invalid).toEqual([
      { line: 4, personKey: "ana", problems: ["person_key ana is already used on line 2"] },
      { line: 5, personKey: "bo", problems: ["consent_purpose must be recognition-promotions (or empty)"] },
      {
        line: 6,
        personKey: "cy",
        problems: [
          "consent_scope must be all-stores or a store id",
          "consent_expires must be a date (2027-12-31) or an ISO date-time with offset",
          "photo ../secret.jpg is outside the photos folder",
        ],
      },
      {
        line: 7,
        personKey: "di",
        problems: [
          "consent_granted 2099-01-01T00:00:00.000Z is in the future",
          "photo notes.txt is not a .jpg, .jpeg, .png or .webp file",
        ],
      },
      {
        line: 8,
        personKey: "ed",
        problems: [
          "expected 9 fields, found 3 (a comma inside a value needs quotes)",
          `photo ed not found in ${photos}`,
        ],
      },
    ]);
  });

  it("refuses a file whose header it does not know, naming the columns", async () => {
    await expect(planImport("person_key,name,consent_source\nx,y,z\n", photos)).rejects.toThrow(
      /unknown column\(s\) name; missing column\(s\) display_name on line 1/,
    );
  });
});
