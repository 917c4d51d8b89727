/**
 * Why the 2-thread rows of bench:models fell behind the 1-thread ones: detect + embed of one face with the two
 * sessions at 1 intra-op thread, at 2 threads with ORT's default spin-waiting workers (what the pipeline did
 * before), and at 2 threads as sessionOptions() opens them now (no spinning). Interleaved rounds; prints medians.
 *
 *   tsx models/src/bench/threads.ts [embedder, default dlib-resnet-int8]
 */
import * as os from "node:os";
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import * as ort from "onnxruntime-node";
import { letterbox } from "../inference/blazeface.ts";
import { decodeImage } from "../inference/image.ts";
import { defaultModelsDir, loadManifest } from "../inference/manifest.ts";
import { DEFAULT_DETECTOR, embedderInput, FacePipeline } from "../inference/pipeline.ts";
import { sessionOptions } from "../inference/session.ts";
import { stats } from "./bench.ts";

const frameFile = resolve(fileURLToPath(import.meta.url), "../../../../demo/people/scenes/barack_obama-480p.jpg");
const spinning = { extra: { session: { intra_op: { allow_spinning: "1" } } } };
const configs = [
  { label: "1 thread", threads: 1, extra: {} },
  { label: "2 threads, spinning (ORT default, before)", threads: 2, extra: spinning },
  { label: "2 threads, no spinning (sessionOptions, now)", threads: 2, extra: {} },
];

const embedder = process.argv[2] ?? "dlib-resnet-int8";
const dir = defaultModelsDir();
const det = await loadManifest(dir, DEFAULT_DETECTOR);
const emb = await loadManifest(dir, embedder);
const img = await decodeImage(frameFile);
// the crop the pipeline would embed for this frame's face
const p = await FacePipeline.load({ embedder, threads: 1 });
const [face] = await p.detect(img);
if (!face) throw new Error(`no face in ${frameFile}`);
const crop = embedderInput(p.align(img, face), emb.manifest.preprocessing);
await p.close();
const size = det.manifest.preprocessing.width;
const detIn = det.manifest.inputs[0]?.name ?? "input:0";
const embIn = emb.manifest.inputs[0]?.name ?? "input";

const jobs: Array<{ label: string; run: () => Promise<number> }> = [];
for (const c of configs) {
  const ds = await ort.InferenceSession.create(det.modelPath, { ...sessionOptions(c.threads), ...c.extra });
  const es = await ort.InferenceSession.create(emb.modelPath, { ...sessionOptions(c.threads), ...c.extra });
  jobs.push({
    label: c.label,
    run: async () => {
      const t = performance.now();
      const lb = await letterbox(img, size, 127.5, 127.5);
      await ds.run({ [detIn]: new ort.Tensor("float32", lb.tensor, [1, size, size, 3]) });
      await es.run({ [embIn]: new ort.Tensor("float32", crop.data, crop.dims) });
      return performance.now() - t;
    },
  });
}
const samples = new Map<string, number[]>();
for (const j of jobs) for (let i = 0; i < 3; i++) await j.run();
for (let r = 0; r < 8; r++) {
  for (const j of jobs) {
    const list = samples.get(j.label) ?? [];
    for (let i = 0; i < 5; i++) list.push(await j.run());
    samples.set(j.label, list);
  }
}
console.log(
  `detect + embed (${embedder}) of one face, ms; load average ${os
    .loadavg()
    .map((x) => x.toFixed(2))
    .join(" ")}`,
);
console.log("| sessions | median | p95 |\n|---|---|---|");
for (const [label, v] of samples) {
  const s = stats(v);
  console.log(`| ${label} | ${s.median} | ${s.p95} |`);
}
