/**
 * Measures an embedder for the profile-face question: LFW verification through the production path, the demo
 * clip at 10 fps against the demo enrolment gallery, and embedding latency on one thread.
 *
 *   tsx models/src/dlib/measure.ts [--embedder fr-feature] [--models models/dist]
 *   tsx models/src/dlib/measure.ts --dlib      # builds dlib-resnet into a scratch copy of models/dist first
 *
 * Prints one JSON object. Detection uses minScore 0.3 on the clip so that profile faces are embedded at all.
 */
import { execFileSync } from "node:child_process";
import { cp, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { buildModels, DEFAULT_DIST, MODELS_ROOT } from "../build.ts";
import { calibrate, lfwScores } from "../calibrate.ts";
import { decodeImage, type RawImage } from "../inference/image.ts";
import { cosine, FacePipeline } from "../inference/pipeline.ts";
import { dlibResnetRecipe } from "./recipe.ts";

const DEMO = resolve(MODELS_ROOT, "../demo/people");
const FFMPEG = resolve(MODELS_ROOT, "../node_modules/@ffmpeg-installer/linux-x64/ffmpeg");
const W = 640;
const H = 360;
/** Alex Lacamoire is on screen, in profile, at about 1.5–2.5 s */
const ALEX_FRAMES = [15, 25] as const;
const ABSENT = ["barack_obama", "joe_biden", "kit_harington", "rose_leslie"];

export interface ClipMeasure {
  thresholdAt1e3: number;
  alexMax: { score: number; frame: number };
  linManuelMax: { score: number; frame: number };
  /** best score of any face in the clip against each person not in it */
  absentMax: Record<string, { score: number; frame: number }>;
}

async function gallery(p: FacePipeline): Promise<Map<string, Float32Array[]>> {
  const g = new Map<string, Float32Array[]>();
  for (const person of (await readdir(join(DEMO, "enroll"))).sort()) {
    for (const f of (await readdir(join(DEMO, "enroll", person))).sort()) {
      const img = await decodeImage(join(DEMO, "enroll", person, f));
      const face = (await p.detect(img)).sort((a, b) => b.box.width - a.box.width)[0];
      if (!face) throw new Error(`no face in ${person}/${f}`);
      g.set(person, [...(g.get(person) ?? []), await p.embed(img, face)]);
    }
  }
  return g;
}

export async function measureClip(p: FacePipeline, threshold: number): Promise<ClipMeasure> {
  const g = await gallery(p);
  const raw = execFileSync(
    FFMPEG,
    ["-i", join(DEMO, "video/hamilton-clip.mp4"), "-vf", "fps=10", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"],
    { maxBuffer: 1 << 30, stdio: ["ignore", "pipe", "ignore"] },
  );
  const best = new Map<string, { score: number; frame: number }>();
  let alex = { score: -1, frame: -1 };
  for (let i = 0; (i + 1) * W * H * 3 <= raw.length; i++) {
    const img: RawImage = { data: raw.subarray(i * W * H * 3, (i + 1) * W * H * 3), width: W, height: H };
    for (const face of await p.detect(img, { minScore: 0.3 })) {
      const e = await p.embed(img, face);
      for (const [person, embs] of g) {
        const score = Math.max(...embs.map((x) => cosine(x, e)));
        if (score > (best.get(person)?.score ?? -2)) best.set(person, { score, frame: i });
        if (person === "alex_lacamoire" && i >= ALEX_FRAMES[0] && i <= ALEX_FRAMES[1] && score > alex.score)
          alex = { score, frame: i };
      }
    }
  }
  const r4 = (x: { score: number; frame: number }) => ({ score: Math.round(x.score * 1e4) / 1e4, frame: x.frame });
  return {
    thresholdAt1e3: threshold,
    alexMax: r4(alex),
    linManuelMax: r4(best.get("lin_manuel_miranda") ?? { score: -1, frame: -1 }),
    absentMax: Object.fromEntries(ABSENT.map((n) => [n, r4(best.get(n) ?? { score: -1, frame: -1 })])),
  };
}

/** mean ms per embedCrop of an aligned crop (warm), on the pipeline's thread count */
export async function embedLatency(p: FacePipeline, runs = 50): Promise<number> {
  const { width, height } = p.embedder.preprocessing;
  const crop: RawImage = { data: new Uint8Array(width * height * 3).fill(100), width, height };
  for (let i = 0; i < 5; i++) await p.embedCrop(crop);
  const t0 = performance.now();
  for (let i = 0; i < runs; i++) await p.embedCrop(crop);
  return (performance.now() - t0) / runs;
}

async function main(argv: string[]): Promise<void> {
  const arg = (name: string) => {
    const i = argv.indexOf(name);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  let modelsDir = arg("--models") ?? DEFAULT_DIST;
  let embedder = arg("--embedder") ?? "fr-feature";
  let scratch: string | undefined;
  if (argv.includes("--dlib")) {
    scratch = await mkdtemp(join(tmpdir(), "glance-dlib-"));
    await cp(join(DEFAULT_DIST, "blazeface-back"), join(scratch, "blazeface-back"), { recursive: true });
    await buildModels({ distDir: scratch, recipes: [dlibResnetRecipe], only: [dlibResnetRecipe.name] });
    modelsDir = scratch;
    embedder = dlibResnetRecipe.name;
  }
  try {
    const p = await FacePipeline.load({ modelsDir, embedder, threads: 1 });
    try {
      const lfw = await lfwScores(p);
      const cal = calibrate(lfw);
      const clip = await measureClip(p, cal.thresholds["1e-3"]);
      const ms = await embedLatency(p);
      console.log(
        JSON.stringify(
          {
            embedder: `${p.embedder.name}@${p.embedder.version}`,
            lfw: { undetected: lfw.undetected, ...cal },
            clip,
            embedMsPerFace1Thread: Math.round(ms * 10) / 10,
          },
          null,
          2,
        ),
      );
    } finally {
      await p.close();
    }
  } finally {
    if (scratch) await rm(scratch, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href)
  await main(process.argv.slice(2));
