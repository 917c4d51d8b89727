/**
 * npm run bench:agent -- [--width 640] [--frames N] [--embedders dlib-resnet,dlib-resnet-int8] [--no-peer]
 *   [--peer-stride 3] [--video file]
 * The node end to end on the demo clip (fp32 and int8 embedder), detect+embed of every face, and the same frames
 * through @vladmandic/human in the same run; prints markdown tables and writes JSON to bench-results/.
 */
import { parseArgs } from "node:util";
import {
  defaultAgentBenchOptions as d,
  formatAgentBench,
  runAgentBench,
  writeAgentBench,
} from "./bench/agent-bench.ts";

const { values } = parseArgs({
  options: {
    width: { type: "string", default: String(d.width) },
    frames: { type: "string" },
    embedders: { type: "string", default: d.embedders.join(",") },
    detector: { type: "string" },
    video: { type: "string", default: d.video },
    "no-peer": { type: "boolean", default: false },
    "peer-stride": { type: "string", default: String(d.peerStride) },
  },
});

try {
  const result = await runAgentBench({
    video: values.video,
    width: Number(values.width),
    frames: values.frames ? Number(values.frames) : undefined,
    embedders: values.embedders.split(",").filter(Boolean),
    detector: values.detector,
    peer: !values["no-peer"],
    peerStride: Number(values["peer-stride"]),
    onProgress: (what) => process.stderr.write(`bench:agent — ${what}\n`),
  });
  console.log(`\n${formatAgentBench(result)}\n`);
  console.log(`wrote ${await writeAgentBench(result)}`);
} catch (err) {
  console.error(err instanceof Error ? err.message : String(err));
  process.exitCode = 1;
}
