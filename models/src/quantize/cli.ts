/**
 * npm run models:quantize -- <model dir> [--method percentile|minmax|entropy] [--percentile 99.999]
 *                                       [--activations uint8|int8] [--full-range]
 * e.g. npm run models:quantize -- models/dist/fr-feature/0.0.1
 */
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import cliProgress from "cli-progress";
import type { CalibrationMethod } from "./calibrate.ts";
import type { ActivationType } from "./qdq.ts";
import { quantizeModelDir } from "./quantize-dir.ts";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    method: { type: "string", default: "percentile" },
    percentile: { type: "string", default: "99.999" },
    activations: { type: "string", default: "uint8" },
    "full-range": { type: "boolean", default: false },
  },
});
const dir = positionals[0];
if (
  !dir ||
  !["percentile", "minmax", "entropy"].includes(values.method) ||
  !["uint8", "int8"].includes(values.activations)
) {
  console.error(
    "usage: npm run models:quantize -- <model dir, e.g. models/dist/fr-feature/0.0.1> [--method percentile|minmax|entropy] [--percentile 99.999] [--activations uint8|int8] [--full-range]",
  );
  process.exit(2);
}

// npm runs scripts from the root: resolve relative dirs against where the user typed the command
const srcDir = resolve(process.env.INIT_CWD ?? process.cwd(), dir);
const bar = new cliProgress.SingleBar(
  { format: "{stage} [{bar}] {value}/{total}", hideCursor: true, clearOnComplete: false },
  cliProgress.Presets.shades_classic,
);
let current = "";
bar.start(1, 0, { stage: "start" });
try {
  const res = await quantizeModelDir(srcDir, {
    method: values.method as CalibrationMethod,
    percentile: Number(values.percentile),
    activationType: values.activations as ActivationType,
    reduceRange: !values["full-range"],
    onStage: (stage, done, total) => {
      if (stage !== current) {
        current = stage;
        bar.setTotal(total);
      }
      bar.update(done, { stage: stage.padEnd(34) });
    },
  });
  bar.stop();
  const f = res.figures;
  console.log(`\nwrote ${res.dir}`);
  console.table({
    fp32: { MB: +(f.fp32.bytes / 1e6).toFixed(2), "median ms (1 thread)": f.fp32.medianMs, "LFW AUC": f.fp32.auc },
    "fp32, PRelu rewritten": {
      MB: Number.NaN,
      "median ms (1 thread)": f.fp32PReluRewritten.medianMs,
      "LFW AUC": Number.NaN,
    },
    int8: { MB: +(f.int8.bytes / 1e6).toFixed(2), "median ms (1 thread)": f.int8.medianMs, "LFW AUC": f.int8.auc },
  });
  console.log(
    `fp32/int8 embedding cosine ${f.parity}; thresholds ${JSON.stringify(res.manifest.embedding?.thresholds)}`,
  );
} catch (err) {
  bar.stop();
  console.error(`\n${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
}
