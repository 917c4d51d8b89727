import { describe, expect, it } from "vitest";
import { AnnIndex } from "./index-ann.ts";
import { syntheticGallery } from "./synthetic.ts";

const DIM = 128;

describe("the ANN graph", () => {
  // usearch's parallel insert strands a few nodes that no search reaches (unum-cloud/USearch#735): 1 to 4 of these
  // 2,000 in every build when inserted on two threads. A search asking for every node returns exactly the reachable ones.
  it("reaches every node it holds, however many threads it may use", () => {
    const n = 2000;
    const g = syntheticGallery({ people: n, templatesPerPerson: 1, dim: DIM, seed: 4 });
    const keys = Uint32Array.from({ length: n }, (_, i) => i);
    for (let build = 0; build < 3; build++) {
      const index = new AnnIndex(DIM, { threads: 2 });
      // in two calls, as a gallery grows: the second insert grows the graph's capacity again
      index.addMany(keys.subarray(0, 700), g.vectors.subarray(0, 700 * DIM));
      index.addMany(keys.subarray(700), g.vectors.subarray(700 * DIM));
      expect(index.size).toBe(n);
      const reached = new Set(index.search(g.vectors.subarray(0, DIM), n, n).map((hit) => hit.key));
      expect(reached.size).toBe(n);
      // batch search still runs on two threads after single-threaded inserts
      const own = index.searchMany(g.vectors.subarray(0, 64 * DIM), 1, 2, 64);
      expect(own.map((hits) => hits[0]?.key)).toEqual([...keys.subarray(0, 64)]);
    }
  });
});
