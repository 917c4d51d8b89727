import type { Worker } from "node:worker_threads";
import { afterEach, describe, expect, it } from "vitest";
import { type Consent, Gallery, type Member } from "./gallery.ts";
import { GalleryThread } from "./gallery-thread.ts";
import { syntheticGallery } from "./synthetic.ts";

const calibration = { thresholds: { "1e-3": 0.45, "1e-4": 0.5 }, margin: 0.02 };
const member = (personId: string, consents: Consent[]): Member => ({ personId, displayName: personId, consents });

/** 300 people × 3 templates (64-d); a third consented only in "camden", one consent already over */
function people() {
  const g = syntheticGallery({ people: 300, templatesPerPerson: 3, dim: 64, seed: 7 });
  const list = g.personIds.map((personId, i) => ({
    member: member(
      personId,
      i % 3 === 0
        ? [{ scope: "camden", expiresAt: null }]
        : i === 1
          ? [{ scope: "all-stores", expiresAt: new Date("2020-01-01") }]
          : [{ scope: "all-stores", expiresAt: null }],
    ),
    embeddings: [0, 1, 2].map((t) => g.vectors.subarray((i * 3 + t) * 64, (i * 3 + t + 1) * 64)),
  }));
  return { list, probes: g.queries(240) };
}

const threads: GalleryThread[] = [];
afterEach(async () => {
  await Promise.all(threads.splice(0).map((t) => t.close()));
});
async function start(...args: Parameters<typeof GalleryThread.start>): Promise<GalleryThread> {
  const thread = await GalleryThread.start(...args);
  threads.push(thread);
  return thread;
}

describe("the gallery on its own worker thread", () => {
  it("decides exactly as the gallery in this thread, through enrolments and erasures", async () => {
    const { list, probes } = people();
    const here = Gallery.build("s@1", calibration, list);
    const there = await start("s@1", calibration, list);
    expect(there.size).toEqual(here.size);
    expect(there.openSet).toEqual(here.openSet);

    const now = new Date("2026-11-26T10:00:00Z");
    const asked = probes.map((q, i) => ({ probe: q.vector, storeId: i % 2 ? "camden" : "soho" }));
    const before = await there.matchMany(asked, now);
    expect(before).toEqual(here.matchMany(asked, now));
    // the probes are of enrolled people: most are named, and those consented only in camden are not named in soho
    expect(before.filter((m) => m.kind === "member").length).toBeGreaterThan(100);
    const camdenOnly = (personId: string) => Number(personId.split("-")[1]) % 3 === 0;
    expect(before.some((m, i) => m.kind === "member" && asked[i]?.storeId === "soho" && camdenOnly(m.personId))).toBe(
      false,
    );

    // erase everyone the first match named, enrol a newcomer with the first probe's face: the next match follows
    const named = [...new Set(before.flatMap((m) => (m.kind === "member" ? [m.personId] : [])))].slice(0, 40);
    const newcomer = member("newcomer", [{ scope: "all-stores", expiresAt: null }]);
    for (const personId of named) {
      here.remove(personId);
      void there.remove(personId);
    }
    here.add(newcomer, [probes[0]?.vector as Float32Array]);
    void there.add(newcomer, [probes[0]?.vector as Float32Array]);
    // not awaited: requests apply in the order they were made
    const after = await there.matchMany(asked, now);
    expect(after).toEqual(here.matchMany(asked, now));
    expect(after.some((m) => m.kind === "member" && named.includes(m.personId))).toBe(false);
    expect(after[0]).toMatchObject({ kind: "member", personId: "newcomer" });
    expect(there.size).toEqual(here.size);
    expect(there.threshold).toBe(here.threshold);
  });

  it("tunes its graph in the background and shows the result without being asked", async () => {
    const { list } = people();
    // a graph from 600 templates on, its breadth measured on the worker
    const there = await start("s@1", calibration, list, { indexOptions: { annThreshold: 600 } });
    expect(there.graphTuning).toMatchObject({ source: "default", pending: true });
    // no request is made: the worker reports the end of the tuning by itself
    for (let waited = 0; there.graphTuning?.pending && waited < 30_000; waited += 20)
      await new Promise((resolve) => setTimeout(resolve, 20));
    expect(there.graphTuning).toMatchObject({ source: "measured", templates: 900 });
    expect(there.graphTuning?.pending).toBeUndefined();
    expect(await there.graphTuned()).toEqual(there.graphTuning);
  });

  it("refuses a template of the wrong length with the gallery's own error, and goes on", async () => {
    const { list, probes } = people();
    const there = await start("s@1", calibration, list);
    await expect(
      there.add(member("odd", [{ scope: "all-stores", expiresAt: null }]), [new Float32Array(128)]),
    ).rejects.toThrow("space s@1 holds 64-d embeddings, not 128-d");
    expect(there.size).toEqual({ people: 300, templates: 900 });
    const [m] = await there.matchMany([{ probe: probes[3]?.vector as Float32Array, storeId: "camden" }]);
    expect(m).toMatchObject({ kind: "member", personId: probes[3]?.personId });
  });

  it("starts empty, and grows from enrolments", async () => {
    const there = await start("s@1", 0.5, []);
    expect(there.size).toEqual({ people: 0, templates: 0 });
    expect(await there.matchMany([{ probe: Float32Array.of(1, 0), storeId: "soho" }])).toEqual([
      { kind: "unknown", score: 0, threshold: 0.5, reason: "below-threshold" },
    ]);
    await there.add(member("ann", [{ scope: "all-stores", expiresAt: null }]), [Float32Array.of(1, 0)]);
    expect(there.size).toEqual({ people: 1, templates: 1 });
    expect(await there.matchMany([{ probe: Float32Array.of(1, 0), storeId: "soho" }])).toMatchObject([
      { kind: "member", personId: "ann", score: 1 },
    ]);
  });

  it("a dead worker is replaced by one rebuilt from the source; a second death within a minute is final", async () => {
    const { list, probes } = people();
    const failures: Error[] = [];
    const restarts: Error[] = [];
    // the source as it is when the worker dies: person-5 has been erased meanwhile
    let reloads = 0;
    const reload = async () => {
      reloads++;
      return list.filter((p) => p.member.personId !== "person-5");
    };
    const there = await start("s@1", calibration, list, {
      reload,
      onRestart: (error) => restarts.push(error),
      onFailure: (error) => failures.push(error),
    });
    const kill = () => (there as unknown as { worker: Worker }).worker.terminate();
    const asked = probes.map((q) => ({ probe: q.vector, storeId: "soho" }));
    const waiting = there.matchMany(asked);
    // what an out-of-memory kill or a crash in native code does to it: it stops, from outside
    await kill();
    await expect(waiting).rejects.toThrow(/gallery thread exited/);
    // calls made while the new worker is built wait for it, in order
    const five = list[5]?.embeddings[0] as Float32Array;
    const [again, fiveAgain] = await Promise.all([
      there.matchMany(asked),
      there.matchMany([{ probe: five, storeId: "soho" }]),
    ]);
    expect(reloads).toBe(1);
    expect(restarts).toHaveLength(1);
    expect(failures).toHaveLength(0);
    expect(there.failure).toBeUndefined();
    expect(there.size).toEqual({ people: 299, templates: 897 });
    expect(again).toEqual(Gallery.build("s@1", calibration, await reload()).matchMany(asked));
    expect(fiveAgain[0]).not.toMatchObject({ personId: "person-5" });

    // the new worker dies too, within a minute: that is final, and every call says so instead of hanging
    await kill();
    await expect(there.remove("person-1")).rejects.toThrow(/gallery thread exited/);
    expect(failures).toHaveLength(1);
    expect(there.failure?.message).toMatch(/gallery thread exited/);
    expect(restarts).toHaveLength(1);
  });

  it("a start that fails is reported to the caller, and leaves no worker to rebuild", async () => {
    const { list } = people();
    let reloads = 0;
    const failures: Error[] = [];
    // a calibration with no thresholds at all: the worker's gallery cannot state its open-set rule
    const started = GalleryThread.start("s@1", { thresholds: {} }, list, {
      reload: async () => {
        reloads++;
        return list;
      },
      onFailure: (error) => failures.push(error),
    });
    await expect(started).rejects.toThrow(/gallery thread/);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(reloads).toBe(0);
    expect(failures).toHaveLength(1);
  });

  it("without a source to rebuild from, the first death is final", async () => {
    const { list, probes } = people();
    const failures: Error[] = [];
    const there = await start("s@1", calibration, list, { onFailure: (error) => failures.push(error) });
    const waiting = there.matchMany(probes.map((q) => ({ probe: q.vector, storeId: "soho" })));
    await (there as unknown as { worker: Worker }).worker.terminate();
    await expect(waiting).rejects.toThrow(/gallery thread exited/);
    await expect(there.matchMany([])).rejects.toThrow(/gallery thread exited/);
    expect(failures).toHaveLength(1);
    expect(there.failure?.message).toMatch(/gallery thread exited/);
  });
});
