/**
 * Runs the face pipeline on one image and prints what it found and how long each stage took.
 *
 *   tsx models/src/try.ts <image> [--threads n] [--runs n] [--detector name] [--embedder name]
 */
import { decodeImage } from "./inference/image.ts";
import { FacePipeline } from "./inference/pipeline.ts";

const argv = process.argv.slice(2);
const opt = (name: string) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
const file = argv.find((a, i) => !a.startsWith("--") && !argv[i - 1]?.startsWith("--"));
if (!file) {
  console.error("usage: tsx models/src/try.ts <image> [--threads n] [--runs n] [--detector name] [--embedder name]");
  process.exit(2);
}
const runs = Number(opt("--runs") ?? 10);
const ms = (t0: number) => performance.now() - t0;

let t = performance.now();
const pipeline = await FacePipeline.load({
  threads: Number(opt("--threads") ?? 1),
  ...(opt("--detector") ? { detector: opt("--detector") } : {}),
  ...(opt("--embedder") ? { embedder: opt("--embedder") } : {}),
});
const loadMs = ms(t);
t = performance.now();
const img = await decodeImage(file);
const decodeMs = ms(t);
console.log(
  `${file}: ${img.width}×${img.height}, decode ${decodeMs.toFixed(1)} ms, load+warm-up ${loadMs.toFixed(0)} ms`,
);
console.log(
  `detector ${pipeline.detector.name}@${pipeline.detector.version}, embedder ${pipeline.space}, threshold@1e-3 ${pipeline.threshold()}`,
);

const stats = { detect: [] as number[], align: [] as number[], embed: [] as number[], quality: [] as number[] };
let faces = await pipeline.detect(img);
for (let r = 0; r < runs; r++) {
  t = performance.now();
  faces = await pipeline.detect(img);
  stats.detect.push(ms(t));
  for (const face of faces) {
    t = performance.now();
    // a fresh face object: align() caches the crop per face
    const crop = pipeline.align(img, { ...face });
    stats.align.push(ms(t));
    t = performance.now();
    await pipeline.embedCrop(crop);
    stats.embed.push(ms(t));
    t = performance.now();
    pipeline.quality(img, { ...face });
    stats.quality.push(ms(t));
  }
}
for (const [i, face] of faces.entries()) {
  const b = face.box;
  const q = pipeline.quality(img, face);
  console.log(
    `face ${i}: score ${face.score.toFixed(3)} box x=${b.x.toFixed(0)} y=${b.y.toFixed(0)} w=${b.width.toFixed(0)} h=${b.height.toFixed(0)}` +
      ` quality ${q.score.toFixed(2)} (size ${q.sizePx.toFixed(0)} px, sharpness ${q.sharpness.toFixed(0)}, yaw ${q.yaw.toFixed(0)}°${q.reasons.length ? `, ${q.reasons.join(", ")}` : ""})`,
  );
}
const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)] ?? Number.NaN;
console.log(
  `median of ${runs} runs (ms): ` +
    Object.entries(stats)
      .map(([k, v]) => `${k} ${median(v).toFixed(2)}`)
      .join(", ") +
    (faces.length ? "  (align/embed/quality per face)" : ""),
);
await pipeline.close();
