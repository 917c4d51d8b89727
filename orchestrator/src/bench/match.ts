/**
 * `npm run bench:match` — 1:N matching at chain scale: exact brute force vs the HNSW index (usearch) on synthetic
 * clustered 512-d galleries. Not a test: it prints a table and writes JSON to bench-results/.
 *
 *   --sizes 10000,100000,1000000   gallery sizes in templates (4 per person)
 *   --queries 1000,1000,300        probes per size for recall and ANN latency (ground truth at 1M is the slow part)
 *   --exact-sample 300,50,10       probes per size timed on the JS brute force (slow at 1M)
 *   --ef 64,128,256,512            HNSW search breadths to measure (one graph, re-opened at each ef)
 *   --m 16 --ef-add 64             HNSW build parameters
 *   --quantization i8              how the graph stores vectors (candidates are re-scored from the f32 store)
 *   --no-cache                     rebuild the ANN index even if bench-results/cache holds one
 *
 * Recall@1 is measured against exact ground truth for every probe (usearch's SIMD exact search, checked against
 * our JS brute force on the timed sample): the share of probes whose top-1 person is the exact top-1 person.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import usearch, { type BatchMatches } from "usearch";
import { AnnIndex, type AnnOptions } from "../gallery/index-ann.ts";
import { ExactIndex } from "../gallery/index-exact.ts";
import { syntheticGallery } from "../gallery/synthetic.ts";
import { machine, mib, percentile, repoRoot, table, writeResults } from "./stats.ts";

const { values: args } = parseArgs({
  options: {
    sizes: { type: "string", default: "10000,100000,1000000" },
    queries: { type: "string", default: "1000,1000,300" },
    "exact-sample": { type: "string", default: "300,50,10" },
    ef: { type: "string", default: "64,128,256,512" },
    m: { type: "string", default: "16" },
    "ef-add": { type: "string", default: "64" },
    quantization: { type: "string", default: "i8" },
    "no-cache": { type: "boolean", default: false },
  },
});

const DIM = 512;
const PER_PERSON = 4;
const sizes = args.sizes.split(",").map(Number);
const queryCounts = args.queries.split(",").map(Number);
const exactSamples = args["exact-sample"].split(",").map(Number);
const efs = args.ef.split(",").map(Number);
const ann: AnnOptions = {
  connectivity: Number(args.m),
  expansionAdd: Number(args["ef-add"]),
  expansionSearch: efs[0] as number,
  quantization: args.quantization as "i8" | "f16" | "f32",
};
const load1m = () => Number((loadavg()[0] ?? 0).toFixed(2));
const cacheDir = join(repoRoot, "bench-results", "cache");

const person = (key: number) => Math.floor(key / PER_PERSON);
const rss = () => process.memoryUsage().rss;

interface Timing {
  p50: number;
  p99: number;
  mean: number;
  /** process CPU per query: on a loaded machine wall time overstates the cost, CPU time does not */
  cpuMean: number;
}

function time(queries: Float32Array[], run: (q: Float32Array) => number): { timing: Timing; results: number[] } {
  for (const q of queries.slice(0, Math.min(20, queries.length))) run(q);
  const lat: number[] = [];
  const results: number[] = [];
  const cpu0 = process.cpuUsage();
  for (const q of queries) {
    const t = performance.now();
    results.push(run(q));
    lat.push(performance.now() - t);
  }
  const cpu = process.cpuUsage(cpu0);
  const sorted = [...lat].sort((a, b) => a - b);
  return {
    results,
    timing: {
      p50: percentile(sorted, 0.5),
      p99: percentile(sorted, 0.99),
      mean: lat.reduce((a, b) => a + b, 0) / lat.length,
      cpuMean: (cpu.user + cpu.system) / 1000 / queries.length,
    },
  };
}

const ms = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 1 ? x.toFixed(2) : x.toFixed(3));

const results = [];
console.log(
  `bench:match on ${JSON.stringify(machine())}; HNSW ${ann.quantization} M=${ann.connectivity} efAdd=${ann.expansionAdd} ef=${efs.join("/")}`,
);
for (const [i, size] of sizes.entries()) {
  const people = Math.ceil(size / PER_PERSON);
  let t = performance.now();
  const g = syntheticGallery({ people, templatesPerPerson: PER_PERSON, dim: DIM, seed: size });
  const probes = g.queries(queryCounts[i] ?? queryCounts.at(-1) ?? 300);
  const truthPerson = probes.map((p) => Number(p.personId.slice("person-".length)));
  const probeVectors = probes.map((p) => p.vector);
  console.log(`${size}: gallery generated in ${((performance.now() - t) / 1000).toFixed(1)} s`);

  // ground truth for every probe: SIMD brute force, all cores
  t = performance.now();
  const flatProbes = new Float32Array(probes.length * DIM);
  for (const [j, v] of probeVectors.entries()) flatProbes.set(v, j * DIM);
  const truth = usearch.exactSearch(g.vectors, flatProbes, DIM, 1, usearch.MetricKind.IP, 0) as BatchMatches;
  const exactTop = Array.from({ length: probes.length }, (_, j) => Number(truth.keys[j * truth.k]));
  const truthSeconds = (performance.now() - t) / 1000;

  // JS brute force (the gallery's exact index) on a sample
  let before = rss();
  t = performance.now();
  const exact = new ExactIndex(DIM, size);
  exact.addMany(
    Uint32Array.from({ length: size }, (_, k) => k),
    g.vectors,
  );
  const exactBuild = (performance.now() - t) / 1000;
  const exactMemory = exact.memoryBytes();
  const sample = Math.min(probes.length, exactSamples[i] ?? exactSamples.at(-1) ?? 20);
  const exactRun = time(probeVectors.slice(0, sample), (q) => exact.search(q, 1)[0]?.key ?? -1);
  const jsAgrees = exactRun.results.every((key, j) => person(key) === person(exactTop[j] as number));
  before = rss();

  // ANN: built once per (size, parameters) and cached, since a 1M build takes minutes on two cores
  const cacheFile = join(
    cacheDir,
    `ann-${size}-${DIM}-${ann.quantization}-m${ann.connectivity}-efa${ann.expansionAdd}-seed${size}.usearch`,
  );
  let annIndex: AnnIndex;
  let annBuild: number;
  let annBuildCpu: number | undefined;
  let cached = false;
  if (!args["no-cache"] && existsSync(cacheFile)) {
    annIndex = AnnIndex.restore(cacheFile, DIM, ann);
    ({ buildSeconds: annBuild, buildCpuSeconds: annBuildCpu } = JSON.parse(readFileSync(`${cacheFile}.json`, "utf8")));
    cached = true;
  } else {
    console.log(`${size}: building the HNSW graph (efAdd ${ann.expansionAdd}), load ${load1m()}`);
    t = performance.now();
    const cpu0 = process.cpuUsage();
    annIndex = new AnnIndex(DIM, ann);
    const keys = Uint32Array.from({ length: size }, (_, k) => k);
    // in tenths, so a long build shows its rate as it goes (and a stalled one can be told from a slow one)
    const step = Math.ceil(size / 10);
    for (let at = 0; at < size; at += step) {
      const end = Math.min(size, at + step);
      annIndex.addMany(keys.subarray(at, end), g.vectors.subarray(at * DIM, end * DIM));
      const s = (performance.now() - t) / 1000;
      if (size >= 100_000) console.log(`  ${end} in ${s.toFixed(0)} s (${(end / s).toFixed(0)}/s), load ${load1m()}`);
    }
    annBuild = (performance.now() - t) / 1000;
    const cpu = process.cpuUsage(cpu0);
    annBuildCpu = (cpu.user + cpu.system) / 1e6;
    mkdirSync(cacheDir, { recursive: true });
    annIndex.save(cacheFile);
    writeFileSync(
      `${cacheFile}.json`,
      JSON.stringify({ buildSeconds: annBuild, buildCpuSeconds: annBuildCpu, machine: machine() }),
    );
  }
  const annRss = rss() - before;
  const exactIdentified = exactTop.filter((key, j) => person(key) === truthPerson[j]).length;
  const anns = [];
  for (const ef of efs) {
    // usearch takes ef at construction: re-open the saved graph with each search breadth
    const index =
      ef === ann.expansionSearch ? annIndex : AnnIndex.restore(cacheFile, DIM, { ...ann, expansionSearch: ef });
    // as SpaceIndex does: the graph proposes 16 templates, the f32 store scores them exactly
    const annRun = time(probeVectors, (q) => {
      let bestKey = -1;
      let bestScore = -Infinity;
      for (const { key } of index.search(q, 16)) {
        const score = exact.score(key, q) ?? -Infinity;
        if (score > bestScore) {
          bestScore = score;
          bestKey = key;
        }
      }
      return bestKey;
    });
    let agree = 0;
    let identified = 0;
    annRun.results.forEach((key, j) => {
      if (person(key) === person(exactTop[j] as number)) agree++;
      if (person(key) === truthPerson[j]) identified++;
    });
    anns.push({
      ...ann,
      expansionSearch: ef,
      cached,
      buildSeconds: annBuild,
      buildCpuSeconds: annBuildCpu,
      /** graph only; the f32 store (the exact column) is kept beside it for re-scoring */
      memoryMiB: mib(annIndex.memoryBytes()),
      rssGrowthMiB: mib(annRss),
      latencyMs: annRun.timing,
      recallAt1: agree / probes.length,
      identificationRate: identified / probes.length,
      speedupP50: exactRun.timing.p50 / annRun.timing.p50,
      loadavg1m: load1m(),
    });
    console.log(
      `${size} ef ${ef}: exact p50 ${ms(exactRun.timing.p50)} ms, ANN p50 ${ms(annRun.timing.p50)} ms p99 ${ms(annRun.timing.p99)} ms, recall@1 ${agree / probes.length}, load ${load1m()}`,
    );
  }

  results.push({
    size,
    people,
    dim: DIM,
    queries: probes.length,
    exact: {
      sampleQueries: sample,
      buildSeconds: exactBuild,
      memoryMiB: mib(exactMemory),
      latencyMs: exactRun.timing,
      agreesWithSimdGroundTruth: jsAgrees,
      identificationRate: exactIdentified / probes.length,
      loadavg1m: load1m(),
    },
    ann: anns,
    groundTruthSeconds: truthSeconds,
  });
}

const printed = table(
  [
    "templates",
    "exact p50 ms",
    "exact p99 ms",
    "exact cpu ms/q",
    "ANN build s (cpu s)",
    "ef",
    "ANN p50 ms",
    "ANN p99 ms",
    "ANN cpu ms/q",
    "recall@1",
    "ident. exact/ANN",
    "× brute force",
    "mem exact/ANN MiB",
    "load 1m",
  ],
  results.flatMap((r) =>
    r.ann.map((a) => [
      r.size,
      ms(r.exact.latencyMs.p50),
      ms(r.exact.latencyMs.p99),
      ms(r.exact.latencyMs.cpuMean),
      `${a.buildSeconds.toFixed(0)}${a.buildCpuSeconds ? ` (${a.buildCpuSeconds.toFixed(0)})` : ""}${a.cached ? " cached" : ""}`,
      a.expansionSearch,
      ms(a.latencyMs.p50),
      ms(a.latencyMs.p99),
      ms(a.latencyMs.cpuMean),
      a.recallAt1.toFixed(4),
      `${r.exact.identificationRate.toFixed(3)}/${a.identificationRate.toFixed(3)}`,
      a.speedupP50.toFixed(0),
      `${r.exact.memoryMiB}/+${a.memoryMiB}`,
      a.loadavg1m,
    ]),
  ),
);
console.log(`\n${printed}\n`);
const file = await writeResults("match", { machine: machine(), perPerson: PER_PERSON, results, table: printed });
console.log(`results: ${file}`);
