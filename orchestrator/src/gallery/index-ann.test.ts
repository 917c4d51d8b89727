import { describe, expect, it } from "vitest";
import { AnnIndex } from "./index-ann.ts";
import { syntheticGallery } from "./synthetic.ts";

const DIM = 128;

describe("the ANN graph", () => {
  // usearch's parallel insert strands a few nodes that no search reaches (unum-cloud/USearch#735): 1 to 4 of these
  // 2,000 in nearly every build on two threads. A search asking for every node returns exactly the reachable ones.
  it("reaches every node it holds, after bulk inserts on every core and small ones on one", () => {
    const n = 2400;
    const g = syntheticGallery({ people: n, templatesPerPerson: 1, dim: DIM, seed: 4 });
    const keys = Uint32Array.from({ length: n }, (_, i) => i);
    const rows = (from: number, to: number) => g.vectors.subarray(from * DIM, to * DIM);
    let repaired = 0;
    for (let build = 0; build < 3; build++) {
      const index = new AnnIndex(DIM, { threads: 2 });
      // as a gallery grows: a bulk build, a doubling (bulk again), then enrolments smaller than the graph
      index.addMany(keys.subarray(0, 700), rows(0, 700));
      index.addMany(keys.subarray(700, 2000), rows(700, 2000));
      for (let at = 2000; at < n; at += 100) index.addMany(keys.subarray(at, at + 100), rows(at, at + 100));
      expect(index.size).toBe(n);
      const reached = new Set(index.search(g.vectors.subarray(0, DIM), n, n).map((hit) => hit.key));
      expect(reached.size).toBe(n);
      repaired += index.repaired;
      // batch search runs on two threads after the one-thread inserts grew the graph
      const own = index.searchMany(rows(0, 64), 1, 2, 64);
      expect(own.map((hits) => hits[0]?.key)).toEqual([...keys.subarray(0, 64)]);
    }
    // not asserted (a build on two threads may strand none), but seen in nearly every run here
    console.info(`stranded by parallel inserts and re-inserted, in 3 builds: ${repaired}`);
  });

  it("a gallery built in tenths on every core is checked once, and reaches every person", async () => {
    const { SpaceIndex } = await import("./space-index.ts");
    const people = 1500;
    const g = syntheticGallery({ people, templatesPerPerson: 2, dim: DIM, seed: 12 });
    let stranded = 0;
    for (let build = 0; build < 3; build++) {
      const index = new SpaceIndex({ annThreshold: 0, ann: { threads: 2, expansionSearch: people } });
      index.addMany(g.personIds, g.counts, g.vectors.slice());
      // a probe at a person's graph node (the mean of their templates) finds that person, with a breadth as wide as
      // the graph: every node it reaches is a candidate, so only a stranded one could be missed
      const own = index.searchMany(
        g.personIds.map((_, p) => {
          const v = new Float32Array(DIM);
          for (let d = 0; d < DIM; d++)
            v[d] = (g.vectors[p * 2 * DIM + d] as number) + (g.vectors[(p * 2 + 1) * DIM + d] as number);
          return v;
        }),
        { people: 1 },
      );
      expect(own.filter((hits, p) => hits[0]?.personId === g.personIds[p]).length).toBe(people);
      stranded += index.graphRepaired;
    }
    console.info(`people stranded by the parallel build and placed again, in 3 builds: ${stranded}`);
  });
});
