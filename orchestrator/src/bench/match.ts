/**
 * `npm run bench:match` — 1:N matching at chain scale, through the product index (SpaceIndex: f32 store + HNSW
 * graph with one node per person, candidates re-scored exactly) on synthetic clustered galleries. Not a test: it
 * prints a table and writes JSON to bench-results/.
 *
 *   --sizes 10000,100000,1000000   gallery sizes in templates (4 per person)
 *   --queries 1000,1000,300        probes per size for recall and latency
 *   --exact-sample 300,50,10       probes per size timed on exact search (slow at 1M)
 *   --ef 32,64,128,256             HNSW search breadths to measure (one graph, re-opened at each ef)
 *   --data isotropic,lfw-spectrum  how identity centres are drawn (synthetic.ts): uniform directions, or with the
 *                                  covariance spectrum measured on real faces (LFW, dlib-resnet-int8)
 *   --dim 512                      embedding dimension (128: dlib-resnet-int8, the default embedder)
 *   --batch 32                     micro-batch size for searchMany (per-probe cost of a batch, every core)
 *   --m 16 --ef-add 64             HNSW build parameters
 *   --quantization i8              how the graph stores vectors (candidates are re-scored from the f32 store)
 *   --projection 64                graph space: PCA to this many dimensions when the axes keep ≥ 60 % of the
 *                                  variance (0: never), see AnnOptions.projection
 *   --no-cache                     rebuild the graph even if bench-results/cache holds one
 *
 * Recall@1 is measured against exact ground truth for every probe (usearch's SIMD brute force over every template,
 * all cores): the share of probes whose top-1 person is the exact top-1 person. "cpu ms/q" is process CPU time per
 * query: on a loaded machine wall time overstates the cost, CPU time does not.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import usearch, { type BatchMatches } from "usearch";
import type { AnnOptions } from "../gallery/index-ann.ts";
import { SpaceIndex } from "../gallery/space-index.ts";
import { type SyntheticCentres, syntheticGallery } from "../gallery/synthetic.ts";
import { machine, mib, percentile, repoRoot, table, writeResults } from "./stats.ts";

const { values: args } = parseArgs({
  options: {
    sizes: { type: "string", default: "10000,100000,1000000" },
    queries: { type: "string", default: "1000,1000,300" },
    "exact-sample": { type: "string", default: "300,50,10" },
    ef: { type: "string", default: "32,64,128,256" },
    data: { type: "string", default: "isotropic,lfw-spectrum" },
    dim: { type: "string", default: "512" },
    batch: { type: "string", default: "32" },
    m: { type: "string", default: "16" },
    "ef-add": { type: "string", default: "64" },
    quantization: { type: "string", default: "i8" },
    projection: { type: "string", default: "64" },
    "no-cache": { type: "boolean", default: false },
  },
});

const DIM = Number(args.dim);
const PER_PERSON = 4;
const BATCH = Number(args.batch);
const sizes = args.sizes.split(",").map(Number);
const queryCounts = args.queries.split(",").map(Number);
const exactSamples = args["exact-sample"].split(",").map(Number);
const efs = args.ef.split(",").map(Number);
const datas = args.data.split(",") as SyntheticCentres[];
const ann: AnnOptions = {
  connectivity: Number(args.m),
  expansionAdd: Number(args["ef-add"]),
  quantization: args.quantization as "i8" | "f16" | "f32",
  projection: Number(args.projection),
};
const load1m = () => Number((loadavg()[0] ?? 0).toFixed(2));
const cacheDir = join(repoRoot, "bench-results", "cache");
const rss = () => process.memoryUsage().rss;

interface Timing {
  p50: number;
  p99: number;
  mean: number;
  cpuMean: number;
}

function time<T>(queries: Float32Array[], run: (q: Float32Array) => T): { timing: Timing; results: T[] } {
  for (const q of queries.slice(0, Math.min(20, queries.length))) run(q);
  const lat: number[] = [];
  const results: T[] = [];
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

/** searchMany in micro-batches: wall and CPU per probe */
function timeBatched(index: SpaceIndex, queries: Float32Array[]): { wallPerProbe: number; cpuPerProbe: number } {
  index.searchMany(queries.slice(0, BATCH), { people: 1 });
  const cpu0 = process.cpuUsage();
  const t = performance.now();
  for (let at = 0; at < queries.length; at += BATCH) index.searchMany(queries.slice(at, at + BATCH), { people: 1 });
  const cpu = process.cpuUsage(cpu0);
  return {
    wallPerProbe: (performance.now() - t) / queries.length,
    cpuPerProbe: (cpu.user + cpu.system) / 1000 / queries.length,
  };
}

const ms = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 1 ? x.toFixed(2) : x.toFixed(3));

const results = [];
console.log(
  `bench:match on ${JSON.stringify(machine())}; ${DIM}-d, graph ${ann.quantization} M=${ann.connectivity} efAdd=${ann.expansionAdd}${ann.projection ? ` PCA ${ann.projection}` : ""}, one node per person; ef=${efs.join("/")}`,
);
for (const data of datas) {
  for (const [i, size] of sizes.entries()) {
    const people = Math.ceil(size / PER_PERSON);
    let t = performance.now();
    const g = syntheticGallery({ people, templatesPerPerson: PER_PERSON, dim: DIM, seed: size, centres: data });
    const probes = g.queries(queryCounts[i] ?? queryCounts.at(-1) ?? 300);
    const probeVectors = probes.map((p) => p.vector);
    console.log(
      `${data} ${size}: gallery generated in ${((performance.now() - t) / 1000).toFixed(1)} s, load ${load1m()}`,
    );

    // ground truth for every probe: SIMD brute force over every template, all cores
    t = performance.now();
    const flatProbes = new Float32Array(probes.length * DIM);
    for (const [j, v] of probeVectors.entries()) flatProbes.set(v, j * DIM);
    const truth = usearch.exactSearch(g.vectors, flatProbes, DIM, 1, usearch.MetricKind.IP, 0) as BatchMatches;
    const truthPerson = Array.from(
      { length: probes.length },
      (_, j) => g.personIds[Math.floor(Number(truth.keys[j * truth.k]) / PER_PERSON)],
    );
    const truthSeconds = (performance.now() - t) / 1000;
    const exactIdentified = truthPerson.filter((p, j) => p === probes[j]?.personId).length / probes.length;

    // the product index on its exact path (store only)
    const rss0 = rss();
    // an explicit breadth: the bench measures every ef itself, so the graph's self-tuning stays out of the build time
    const index = new SpaceIndex({ annThreshold: Number.POSITIVE_INFINITY, ann: { ...ann, expansionSearch: efs[0] } });
    index.addMany(g.personIds, g.counts, g.vectors);
    // the store holds its own copy: let the generator's 2 GiB (at 1M × 512) go before the graph is built
    (g as { vectors?: Float32Array }).vectors = undefined;
    const storeRss = rss() - rss0;
    const storeBytes = index.memoryBytes();
    const sample = Math.min(probes.length, exactSamples[i] ?? exactSamples.at(-1) ?? 20);
    const exactRun = time(probeVectors.slice(0, sample), (q) => index.search(q, { people: 1 })[0]?.personId);
    const exactAgrees = exactRun.results.every((p, j) => p === truthPerson[j]);

    // the graph: built once per (data, size, dim, parameters) and cached
    const cacheFile = join(
      cacheDir,
      `person-${data}-${size}-${DIM}-${ann.quantization}-m${ann.connectivity}-efa${ann.expansionAdd}${ann.projection ? `-pca${ann.projection}` : ""}.usearch`,
    );
    let build: {
      seconds: number;
      cpuSeconds: number;
      cached: boolean;
      projected?: boolean;
      captured?: number;
      repaired?: number;
    };
    const rss1 = rss();
    if (!args["no-cache"] && existsSync(cacheFile)) {
      index.loadGraph(cacheFile, { ...ann, expansionSearch: efs[0] });
      build = { ...JSON.parse(readFileSync(`${cacheFile}.json`, "utf8")), cached: true };
    } else {
      console.log(`${data} ${size}: building the graph (${people} people), load ${load1m()}`);
      t = performance.now();
      const cpu0 = process.cpuUsage();
      index.buildGraph((done, total) => {
        const s = (performance.now() - t) / 1000;
        if (total >= 20_000)
          console.log(`  ${done} in ${s.toFixed(0)} s (${(done / s).toFixed(0)}/s), load ${load1m()}`);
      });
      const cpu = process.cpuUsage(cpu0);
      build = {
        seconds: (performance.now() - t) / 1000,
        cpuSeconds: (cpu.user + cpu.system) / 1e6,
        cached: false,
        ...index.graphProjection(),
        // people the parallel build left unreachable (usearch#735) and placed again
        repaired: index.graphRepaired,
      };
      console.log(
        `${data} ${size}: graph space ${JSON.stringify(index.graphProjection())}, ${build.repaired} stranded people placed again, built in ${build.seconds.toFixed(1)} s`,
      );
      mkdirSync(cacheDir, { recursive: true });
      index.saveGraph(cacheFile);
      writeFileSync(`${cacheFile}.json`, JSON.stringify({ ...build, machine: machine() }));
    }
    const graphRss = rss() - rss1;
    const anns = [];
    for (const ef of efs) {
      index.loadGraph(cacheFile, { ...ann, expansionSearch: ef });
      const run = time(probeVectors, (q) => index.search(q, { people: 1 })[0]?.personId);
      const batched = timeBatched(index, probeVectors);
      const recall = run.results.filter((p, j) => p === truthPerson[j]).length / probes.length;
      const identified = run.results.filter((p, j) => p === probes[j]?.personId).length / probes.length;
      anns.push({
        expansionSearch: ef,
        latencyMs: run.timing,
        batched,
        recallAt1: recall,
        identificationRate: identified,
        speedupP50: exactRun.timing.p50 / run.timing.p50,
        loadavg1m: load1m(),
      });
      console.log(
        `${data} ${size} ef ${ef}: p50 ${ms(run.timing.p50)} ms p99 ${ms(run.timing.p99)} ms cpu ${ms(run.timing.cpuMean)} ms/q, batched ${ms(batched.wallPerProbe)} ms/probe (cpu ${ms(batched.cpuPerProbe)}), recall@1 ${recall}, load ${load1m()}`,
      );
    }
    results.push({
      data,
      size,
      people,
      dim: DIM,
      queries: probes.length,
      groundTruthSeconds: truthSeconds,
      exact: {
        sampleQueries: sample,
        latencyMs: exactRun.timing,
        agreesWithGroundTruth: exactAgrees,
        identificationRate: exactIdentified,
        memoryMiB: mib(storeBytes),
      },
      graph: {
        ...ann,
        build,
        memoryMiB: mib(index.memoryBytes() - storeBytes),
        rssGrowthMiB: mib(graphRss),
        storeRssGrowthMiB: mib(storeRss),
      },
      ann: anns,
      rssMiB: mib(rss()),
    });
  }
}

const printed = table(
  [
    "data",
    "templates",
    "dim",
    "exact p50 ms",
    "exact cpu ms/q",
    "graph build s (cpu s)",
    "ef",
    "ANN p50 ms",
    "ANN p99 ms",
    "ANN cpu ms/q",
    `batch ${BATCH} ms/probe (cpu)`,
    "recall@1",
    "ident. exact/ANN",
    "× exact",
    "RSS MiB (store+/graph+)",
    "load 1m",
  ],
  results.flatMap((r) =>
    r.ann.map((a) => [
      r.data,
      r.size,
      r.dim,
      ms(r.exact.latencyMs.p50),
      ms(r.exact.latencyMs.cpuMean),
      `${r.graph.build.seconds.toFixed(0)} (${r.graph.build.cpuSeconds.toFixed(0)})${r.graph.build.cached ? " cached" : ""}`,
      a.expansionSearch,
      ms(a.latencyMs.p50),
      ms(a.latencyMs.p99),
      ms(a.latencyMs.cpuMean),
      `${ms(a.batched.wallPerProbe)} (${ms(a.batched.cpuPerProbe)})`,
      a.recallAt1.toFixed(4),
      `${r.exact.identificationRate.toFixed(3)}/${a.identificationRate.toFixed(3)}`,
      a.speedupP50.toFixed(0),
      `${r.rssMiB} (${r.graph.storeRssGrowthMiB}/${r.graph.rssGrowthMiB})`,
      a.loadavg1m,
    ]),
  ),
);
console.log(`\n${printed}\n`);
const file = await writeResults("match", { machine: machine(), perPerson: PER_PERSON, results, table: printed });
console.log(`results: ${file}`);
