/**
 * The int8 calibration set every clone has: the bundled demo photos (demo/people/enroll and scenes, MIT, see
 * demo/people/ATTRIBUTION.md) and frames of the demo clip (video/hamilton-clip.mp4), each face found by our own
 * detector and aligned by our own aligner, i.e. exactly the crops the embedder sees in production. No labels are
 * used. Deterministic: files in sorted order, a fixed frame rate, faces in detector order.
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { GlanceError } from "@glance/shared";
import { decodeImage, type RawImage } from "../inference/image.ts";
import { embedderInput, type FacePipeline } from "../inference/pipeline.ts";
import type { CalibrationSample } from "./calibrate.ts";

const run = promisify(execFile);

// not MODELS_ROOT from build.ts: build.ts imports this module
export const DEMO_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "../../../demo/people");
export const DEMO_CLIP = "video/hamilton-clip.mp4";
/** frames per second taken from the 10 s clip: 30 frames, ~50 faces, enough for stable percentile ranges */
export const DEMO_CLIP_FPS = 3;
const CLIP_W = 640;
const CLIP_H = 360;

export interface DemoSet {
  samples: CalibrationSample[];
  /** how many crops came from the stills and from the clip */
  stills: number;
  clipFaces: number;
  clipFrames: number;
  /** sha256 over the source files, in the order read: says which demo data a build calibrated on */
  sourcesSha256: string;
}

/** ffmpeg from PATH, else the binary @ffmpeg-installer ships for this platform */
export function ffmpegBinary(): string {
  const fromEnv = process.env.GLANCE_FFMPEG?.trim();
  if (fromEnv) return fromEnv;
  try {
    return (createRequire(import.meta.url)("@ffmpeg-installer/ffmpeg") as { path: string }).path;
  } catch {
    return "ffmpeg";
  }
}

async function stills(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string) => {
    for (const e of (await readdir(d, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
      if (e.isDirectory()) await walk(join(d, e.name));
      else if (/\.(jpe?g|png)$/i.test(e.name)) out.push(join(d, e.name));
    }
  };
  for (const sub of ["enroll", "scenes"]) await walk(join(dir, sub));
  return out;
}

/** the clip's frames at `fps` as 640×360 RGB; the clip's size is fixed (it is bundled) */
async function clipFrames(file: string, fps: number): Promise<RawImage[]> {
  const args = ["-v", "error", "-i", file, "-an", "-vf", `fps=${fps},scale=${CLIP_W}:${CLIP_H}`, "-f", "rawvideo"];
  let raw: Buffer;
  try {
    ({ stdout: raw } = (await run(ffmpegBinary(), [...args, "-pix_fmt", "rgb24", "pipe:1"], {
      encoding: "buffer",
      maxBuffer: 1 << 30,
    })) as unknown as { stdout: Buffer });
  } catch (cause) {
    throw new GlanceError(
      "MODEL_NOT_FOUND",
      `Cannot decode ${file} for int8 calibration: install ffmpeg (or run npm install so @ffmpeg-installer/ffmpeg brings it), or set GLANCE_FFMPEG.`,
      { file },
      { cause },
    );
  }
  const size = CLIP_W * CLIP_H * 3;
  const frames: RawImage[] = [];
  for (let i = 0; (i + 1) * size <= raw.length; i++) {
    frames.push({ data: new Uint8Array(raw.subarray(i * size, (i + 1) * size)), width: CLIP_W, height: CLIP_H });
  }
  return frames;
}

/** the demo stills (decoded, sorted) and the clip's frames at `fps` */
export async function demoImages(
  dir: string = DEMO_DIR,
  fps: number = DEMO_CLIP_FPS,
): Promise<{ stills: RawImage[]; frames: RawImage[] }> {
  const stillImages: RawImage[] = [];
  for (const f of await stills(dir)) stillImages.push(await decodeImage(f));
  return { stills: stillImages, frames: await clipFrames(join(dir, DEMO_CLIP), fps) };
}

/**
 * Calibration samples for `pipeline`'s embedder: every face the detector finds (its default minimum score) in the
 * demo stills and in the clip at DEMO_CLIP_FPS, aligned and normalised as embed() does.
 */
export async function demoCalibrationSet(
  pipeline: FacePipeline,
  opts: { dir?: string; fps?: number; onProgress?: (done: number, total: number) => void } = {},
): Promise<DemoSet> {
  const dir = opts.dir ?? DEMO_DIR;
  const { stills: files, frames } = await demoImages(dir, opts.fps ?? DEMO_CLIP_FPS);
  const p = pipeline.embedder.preprocessing;
  const input = pipeline.embedder.inputs[0]?.name ?? "input";
  const samples: CalibrationSample[] = [];
  const total = files.length + frames.length;
  let done = 0;
  const add = async (img: RawImage): Promise<number> => {
    const faces = await pipeline.detect(img);
    for (const face of faces) {
      const { data, dims } = embedderInput(pipeline.align(img, face), p);
      samples.push({ feeds: { [input]: { data, dims } } });
    }
    opts.onProgress?.(++done, total);
    return faces.length;
  };
  let still = 0;
  for (const img of files) still += await add(img);
  let clipFaces = 0;
  for (const frame of frames) clipFaces += await add(frame);
  if (samples.length < 20) {
    throw new GlanceError(
      "MODEL_CORRUPT",
      `Only ${samples.length} faces found in ${dir} for int8 calibration (expected about 80): is demo/people complete?`,
    );
  }
  return {
    samples,
    stills: still,
    clipFaces,
    clipFrames: frames.length,
    sourcesSha256: await demoSourcesSha256(dir),
  };
}

/** sha256 over the demo files the set is made from (relative path, then bytes, in sorted order) */
export async function demoSourcesSha256(dir: string = DEMO_DIR): Promise<string> {
  const hash = createHash("sha256");
  for (const f of [...(await stills(dir)), join(dir, DEMO_CLIP)]) {
    hash.update(relative(dir, f));
    hash.update(await readFile(f));
  }
  return hash.digest("hex");
}
