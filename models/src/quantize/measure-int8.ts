/**
 * LFW figures for an int8 embedder calibrated on the bundled demo set (what `models:build` ships) against its fp32
 * model and against the same model quantized with LFW calibration (`npm run models:quantize`, <name>-int8-lfw), and
 * the cross-precision scores that decide whether fp32 and int8 templates can share one embedding space.
 *
 *   tsx models/src/quantize/measure-int8.ts [--fp32 dlib-resnet] [--int8 dlib-resnet-int8] [--lfw dlib-resnet-int8-lfw]
 *
 * Needs ../shared/datasets (LFW) and the three models in models/dist. Prints one JSON object.
 */
import * as os from "node:os";
import { parseArgs } from "node:util";
import { type Calibration, calibrate, type LfwEmbedding, lfwEmbeddings, pairScores } from "../calibrate.ts";
import { cosine, FacePipeline } from "../inference/pipeline.ts";

const { values } = parseArgs({
  options: {
    fp32: { type: "string", default: "dlib-resnet" },
    int8: { type: "string", default: "dlib-resnet-int8" },
    lfw: { type: "string", default: "dlib-resnet-int8-lfw" },
  },
});

const r4 = (x: number) => Math.round(x * 1e4) / 1e4;
const summary = (c: Calibration) => ({
  accuracy: r4(c.bestAccuracy),
  bestThreshold: r4(c.bestThreshold),
  auc: r4(c.auc),
  thresholds: c.thresholds,
  tar: Object.fromEntries(Object.entries(c.tar).map(([k, v]) => [k, r4(v)])),
  genuineMean: r4(c.genuineMean),
  impostorMean: r4(c.impostorMean),
  genuinePairs: c.genuinePairs,
  impostorPairs: c.impostorPairs,
});

/** TAR and FAR of a score set at a fixed threshold (e.g. fp32's, when an fp32 gallery meets int8 probes) */
function at(s: { genuine: number[]; impostor: number[] }, t: number) {
  return {
    threshold: t,
    tar: r4(s.genuine.filter((g) => g >= t).length / s.genuine.length),
    far: r4(s.impostor.filter((x) => x >= t).length / s.impostor.length),
  };
}

const embeddings = new Map<string, LfwEmbedding[]>();
const thresholds = new Map<string, number>();
let undetected = 0;
for (const name of [values.fp32, values.int8, values.lfw]) {
  const p = await FacePipeline.load({ embedder: name, threads: 1 });
  try {
    const r = await lfwEmbeddings(p);
    embeddings.set(name, r.embeddings);
    thresholds.set(name, p.threshold("1e-3"));
    undetected = r.undetected;
    process.stderr.write(`${name}: ${p.space}, ${r.embeddings.length} photos\n`);
  } finally {
    await p.close();
  }
}
const fp = embeddings.get(values.fp32) ?? [];
const out: Record<string, unknown> = {
  date: new Date().toISOString(),
  machine: `${os.cpus()[0]?.model} × ${os.cpus().length}, load ${os
    .loadavg()
    .map((x) => x.toFixed(2))
    .join(" ")}`,
  undetected,
};
const fpScores = pairScores(fp);
out[values.fp32] = summary(calibrate(fpScores));
for (const name of [values.int8, values.lfw]) {
  const q = embeddings.get(name) ?? [];
  const own = calibrate(pairScores(q));
  // both directions: fp32 gallery photo vs int8 probe photo, and the other way round
  const a = pairScores(fp, q);
  const b = pairScores(q, fp);
  const cross = { genuine: [...a.genuine, ...b.genuine], impostor: [...a.impostor, ...b.impostor], people: a.people };
  const parity = fp.reduce((s, e, i) => s + cosine(e.e, q[i]?.e ?? e.e), 0) / fp.length;
  const minParity = Math.min(...fp.map((e, i) => cosine(e.e, q[i]?.e ?? e.e)));
  out[name] = {
    ...summary(own),
    lossVsFp32Pt: r4((calibrate(fpScores).bestAccuracy - own.bestAccuracy) * 100),
    parity: { mean: r4(parity), min: r4(minParity) },
    crossPrecision: {
      ...summary(calibrate(cross)),
      atFp32Threshold1e3: at(cross, thresholds.get(values.fp32) ?? 0),
      atOwnThreshold1e3: at(cross, thresholds.get(name) ?? 0),
    },
  };
}
console.log(JSON.stringify(out, null, 2));
