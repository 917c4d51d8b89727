/**
 * npm run bench:models -- [--rounds 10] [--per-round 5] [--threads 1,2] [--no-peer]
 *   [--models blazeface-back,blazeface-front,dlib-resnet,dlib-resnet-int8] [--pipelines dlib-resnet,dlib-resnet-int8]
 * Prints markdown tables and writes the JSON to bench-results/ (git-ignored).
 */
import { parseArgs } from "node:util";
import cliProgress from "cli-progress";
import { defaultBenchOptions, formatBench, runBench, writeBench } from "./bench.ts";

const d = defaultBenchOptions;
const { values } = parseArgs({
  options: {
    rounds: { type: "string", default: String(d.rounds) },
    "per-round": { type: "string", default: String(d.perRound) },
    threads: { type: "string", default: d.threads.join(",") },
    models: { type: "string", default: d.models.join(",") },
    pipelines: { type: "string", default: d.pipelines.join(",") },
    detector: { type: "string", default: d.detector },
    "no-peer": { type: "boolean", default: false },
  },
});
const list = (s: string) => s.split(",").filter(Boolean);
const bar = new cliProgress.SingleBar(
  { format: "bench [{bar}] {value}/{total} {what}", hideCursor: true },
  cliProgress.Presets.shades_classic,
);
let started = false;
try {
  const result = await runBench({
    ...d,
    rounds: Number(values.rounds),
    perRound: Number(values["per-round"]),
    threads: list(values.threads).map(Number),
    models: list(values.models),
    pipelines: list(values.pipelines),
    detector: values.detector,
    peer: !values["no-peer"],
    onProgress: (done, total, what) => {
      if (!started) {
        bar.start(total, 0, { what });
        started = true;
      }
      bar.update(done, { what: what.padEnd(28) });
    },
  });
  bar.stop();
  console.log(`\n${formatBench(result)}\n`);
  console.log(`wrote ${await writeBench(result)}`);
} catch (err) {
  bar.stop();
  console.error(err instanceof Error ? err.message : String(err));
  process.exitCode = 1;
}
