/**
 * npm run models:eval -- [--embedders fr-feature,fr-feature-int8] [--detector blazeface-back] [--threads 1]
 * Writes eval.json, eval.md and roc.png beside each embedder's manifest in models/dist and prints the markdown.
 */
import { parseArgs } from "node:util";
import { evaluate, writeReports } from "./evaluate.ts";

const { values } = parseArgs({
  options: {
    embedders: { type: "string", default: "fr-feature,fr-feature-int8" },
    detector: { type: "string" },
    threads: { type: "string", default: "1" },
  },
});
const t0 = performance.now();
try {
  const out = await evaluate({
    embedders: values.embedders.split(",").filter(Boolean),
    ...(values.detector ? { detector: values.detector } : {}),
    threads: Number(values.threads),
    onStage: (s) => process.stderr.write(`[${((performance.now() - t0) / 1000).toFixed(0)}s] ${s}\n`),
  });
  const dirs = await writeReports(out);
  console.log(out.markdown);
  console.log(`wrote eval.json, eval.md, roc.png to:\n${dirs.map((d) => `  ${d}`).join("\n")}`);
} catch (err) {
  console.error(err instanceof Error ? err.message : String(err));
  process.exitCode = 1;
}
