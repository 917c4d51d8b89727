import { describe, expect, it } from "vitest";
import { ExactTop1, type ExactTop1Options, type Top1Session, top1Session } from "./exact-truth.ts";
import { ExactIndex } from "./index-exact.ts";
import { fillGaussian, prng } from "./synthetic.ts";

const DIM = 64;

/** `rows` random unit vectors, row-major */
function unitRows(rows: number, seed: number): Float32Array {
  const random = prng(seed);
  const out = new Float32Array(rows * DIM);
  const v = new Float64Array(DIM);
  for (let r = 0; r < rows; r++) {
    fillGaussian(v, random);
    const norm = Math.hypot(...v);
    for (let d = 0; d < DIM; d++) out[r * DIM + d] = (v[d] as number) / norm;
  }
  return out;
}

/** Each probe's best key by a plain double-precision dot product over every stored row, first of equals. */
function bruteForce(store: ExactIndex, probes: Float32Array): (number | undefined)[] {
  return Array.from({ length: probes.length / DIM }, (_, i) => {
    let best: number | undefined;
    let top = Number.NEGATIVE_INFINITY;
    for (const [key, row] of store.entries()) {
      let dot = 0;
      for (let d = 0; d < DIM; d++) dot += (probes[i * DIM + d] as number) * (row[d] as number);
      if (dot > top) [best, top] = [key, dot];
    }
    return best;
  });
}

/** The real onnxruntime session, whose `run` rejects after `blocks` blocks (as a crashed native call would). */
function failingAfter(blocks: number): () => Promise<Top1Session> {
  return async () => {
    const session = await top1Session();
    let runs = 0;
    return {
      run: (feeds: Parameters<Top1Session["run"]>[0]) =>
        runs++ < blocks ? session.run(feeds) : Promise.reject(new Error("onnxruntime: bad_alloc")),
    };
  };
}

describe("exact nearest template for the graph tuning, in slices", () => {
  it("finds what one exactSearch scan finds", async () => {
    const store = new ExactIndex(DIM);
    store.addMany(
      Uint32Array.from({ length: 5000 }, (_, i) => i * 3),
      unitRows(5000, 1),
    );
    const probes = unitRows(40, 2);
    const truth = new ExactTop1(store, probes);
    expect(await truth.scan({ rows: 700 })).toBe(true);
    truth.close();
    const expected = store.searchMany(probes, 1).map((hits) => hits[0]?.key);
    expect(Array.from(truth.best)).toEqual(expected);
    expect(Array.from({ length: 40 }, (_, i) => truth.known(i)).every(Boolean)).toBe(true);
  });

  it.each([
    // a JavaScript block yields one turn (one round of erasures), a block in onnxruntime several: smaller blocks
    ["in onnxruntime", 512, {}],
    ["in JavaScript once onnxruntime fails a block", 256, { session: failingAfter(3) }],
  ])(
    "templates erased while it scans (%s) are never its answer, and the rows they move are still all compared",
    async (_, block: number, options: ExactTop1Options) => {
      const store = new ExactIndex(DIM);
      const rows = 20_000;
      store.addMany(
        Uint32Array.from({ length: rows }, (_, i) => i),
        unitRows(rows, 3),
      );
      const probes = unitRows(64, 4);
      const warnings: string[] = [];
      const truth = new ExactTop1(store, probes, { ...options, warn: (message) => warnings.push(message) });
      const random = prng(5);
      const erased = new Set<number>();
      let turning = true;
      let turn = 0;
      const dropped = new Set<number>();
      // erasures arrive between the blocks (and between a block's read and its result): 20 keys from anywhere a
      // turn, so rows move into the part already scanned, and, once the scan has begun, the best template so far of probes 0 to 11
      const erase = () => {
        const best = truth.best[turn] as number;
        if (turn < 12 && best >= 0) {
          if (store.remove(best)) erased.add(best);
          dropped.add(turn);
          turn++;
        }
        for (let j = 0; j < 20; j++) {
          const key = Math.floor(random() * rows);
          if (store.remove(key)) erased.add(key);
        }
        if (turning) setImmediate(erase);
      };
      setImmediate(erase);
      const done = await truth.scan({ rows: block });
      turning = false;
      truth.close();
      expect(done).toBe(true);
      expect(erased.size).toBeGreaterThan(1000);
      const expected = store.searchMany(probes, 1).map((hits) => hits[0]?.key);
      expect(bruteForce(store, probes)).toEqual(expected);
      expect(warnings).toHaveLength(options.session ? 1 : 0);
      let known = 0;
      for (let i = 0; i < 64; i++) {
        if (!truth.known(i)) continue;
        known++;
        expect(erased.has(truth.best[i] as number)).toBe(false);
        expect(truth.best[i]).toBe(expected[i]);
      }
      // a probe loses its truth when its best template so far is erased (and with 20 random erasures a turn, now
      // and then another probe's best is among them)
      for (const i of dropped) expect(truth.known(i)).toBe(false);
      expect(dropped.size).toBeGreaterThan(5);
      expect(known).toBeGreaterThan(24);
      // closed: later removals are not followed any more
      const before = Array.from(truth.best);
      store.remove(expected.find((k) => k !== undefined) as number);
      expect(Array.from(truth.best)).toEqual(before);
    },
  );

  it("forgets a probe at once: zeroed, and without a truth", async () => {
    const store = new ExactIndex(DIM);
    store.addMany(
      Uint32Array.from({ length: 100 }, (_, i) => i),
      unitRows(100, 6),
    );
    const probes = unitRows(3, 7);
    const truth = new ExactTop1(store, probes);
    truth.forget(1);
    expect(probes.subarray(DIM, 2 * DIM).every((x) => x === 0)).toBe(true);
    await truth.scan();
    truth.close();
    expect([0, 1, 2].map((i) => truth.known(i))).toEqual([true, false, true]);
  });

  it("where onnxruntime cannot build its session, the same truth is computed in JavaScript, in short slices, with one warning", async () => {
    const store = new ExactIndex(DIM);
    const rows = 20_000;
    store.addMany(
      Uint32Array.from({ length: rows }, (_, i) => i * 3),
      unitRows(rows, 8),
    );
    const probes = unitRows(64, 9);
    const byOnnx = new ExactTop1(store, probes.slice());
    await byOnnx.scan();
    byOnnx.close();
    const warnings: string[] = [];
    const truth = new ExactTop1(store, probes, {
      warn: (message) => warnings.push(message),
      session: () => Promise.reject(new Error("libonnxruntime.so.1: file too short")),
    });
    // the event loop keeps turning while it scans: count its turns and the longest gap between two
    let turns = 0;
    let longest = 0;
    let last = performance.now();
    let ticking = true;
    const tick = () => {
      const now = performance.now();
      longest = Math.max(longest, now - last);
      last = now;
      turns++;
      if (ticking) setImmediate(tick);
    };
    setImmediate(tick);
    const started = performance.now();
    expect(await truth.scan()).toBe(true);
    const took = performance.now() - started;
    ticking = false;
    truth.close();
    expect(Array.from(truth.best)).toEqual(Array.from(byOnnx.best));
    expect(Array.from(truth.best)).toEqual(bruteForce(store, probes));
    expect(Array.from({ length: 64 }, (_, i) => truth.known(i)).every(Boolean)).toBe(true);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain("file too short");
    expect(warnings[0]).toContain("JavaScript");
    // 20,000 rows × 64 probes is several slices' worth (about 20 ms each here): never one long block
    expect(turns).toBeGreaterThan(3);
    expect(longest).toBeLessThan(took / 2);
  });
});
