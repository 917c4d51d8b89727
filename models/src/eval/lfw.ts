/**
 * The LFW aligned-pairs subset (../shared/datasets/lfw-aligned-pairs): 70 people × 2 grey 100×100 aligned crops.
 * Genuine pairs: the two photos of one person. Impostor pairs: every pair of photos of two different people
 * (4 per pair of people, so they are not independent: 2,415 pairs of people behind 9,660 image pairs).
 */
import { readdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import sharp from "sharp";

export const defaultLfwDir = resolve(
  fileURLToPath(import.meta.url),
  "../../../../../shared/datasets/lfw-aligned-pairs",
);

export interface LfwImage {
  person: string;
  file: string;
}

export interface LfwPair {
  a: number;
  b: number;
  genuine: boolean;
}

export interface LfwSet {
  images: LfwImage[];
  pairs: LfwPair[];
  people: number;
}

export function loadLfw(dir: string = defaultLfwDir): LfwSet {
  const people = readdirSync(dir, { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => d.name)
    .sort();
  const images: LfwImage[] = [];
  for (const person of people) {
    const files = readdirSync(join(dir, person))
      .filter((f) => /\.(jpe?g|png)$/i.test(f))
      .sort();
    for (const f of files) images.push({ person, file: join(dir, person, f) });
  }
  const pairs: LfwPair[] = [];
  for (let a = 0; a < images.length; a++) {
    for (let b = a + 1; b < images.length; b++) {
      pairs.push({ a, b, genuine: images[a]?.person === images[b]?.person });
    }
  }
  return { images, pairs, people: people.length };
}

export interface CropPreprocessing {
  width: number;
  height: number;
  layout: "NCHW" | "NHWC";
  colour: "RGB" | "BGR" | "GRAY";
  mean: number[];
  std: number[];
}

/**
 * Where the five facial points sit in the LFW crops, read off the mean of all 140 crops (no labels used): eye
 * centres (24, 32) and (76, 32), mouth centre (50, 76) in the 100×100 crop. These crops (MobileFace alignment) are
 * much tighter and wider than the ArcFace 112×112 template (eyes (38.3, 51.7)/(73.5, 51.5), mouth centre
 * (56.1, 92.3)), so a plain 100→112 resize feeds the embedder a face it was not trained on: fr_feature's AUC drops
 * from 0.998 to 0.877 (measured). `arcface` maps the crop onto the template with this axis-aligned affine instead.
 */
export const lfwCropLandmarks = { leftEye: [24, 32], rightEye: [76, 32], mouth: [50, 76] } as const;
const arcfaceTemplate = {
  leftEye: [38.2946, 51.6963],
  rightEye: [73.5318, 51.5014],
  mouth: [56.1396, 92.2848],
} as const;

export type CropPlacement = "arcface" | "stretch";

/** x_out = sx · x_in + dx, y_out = sy · y_in + dy, in pixel-centre coordinates of a crop of `size`. */
export function lfwToTemplate(size: number, out: { width: number; height: number }) {
  const k = size / 100;
  const eyeY = (arcfaceTemplate.leftEye[1] + arcfaceTemplate.rightEye[1]) / 2;
  const eyeX = (arcfaceTemplate.leftEye[0] + arcfaceTemplate.rightEye[0]) / 2;
  const sx =
    (arcfaceTemplate.rightEye[0] - arcfaceTemplate.leftEye[0]) /
    ((lfwCropLandmarks.rightEye[0] - lfwCropLandmarks.leftEye[0]) * k);
  const sy = (arcfaceTemplate.mouth[1] - eyeY) / ((lfwCropLandmarks.mouth[1] - lfwCropLandmarks.leftEye[1]) * k);
  const ox = out.width / 112;
  const oy = out.height / 112;
  return {
    sx: sx * ox,
    sy: sy * oy,
    dx: (eyeX - sx * 50 * k) * ox,
    dy: (eyeY - sy * lfwCropLandmarks.leftEye[1] * k) * oy,
  };
}

/**
 * An aligned LFW crop as the embedder's input tensor data: placed on the ArcFace template (default) or stretched,
 * grey → 3 channels, (pixel - mean) / std per channel. Bilinear sampling, edges replicated.
 */
export async function cropToTensor(
  file: string,
  p: CropPreprocessing,
  placement: CropPlacement = "arcface",
): Promise<Float32Array> {
  const { data, info } = await sharp(file)
    .removeAlpha()
    .toColourspace("srgb")
    .raw()
    .toBuffer({ resolveWithObject: true });
  const sw = info.width;
  const sh = info.height;
  const sc = info.channels;
  const t = placement === "arcface" ? lfwToTemplate(sw, p) : { sx: p.width / sw, sy: p.height / sh, dx: 0, dy: 0 };
  const channels = p.colour === "GRAY" ? 1 : 3;
  const plane = p.width * p.height;
  const out = new Float32Array(plane * channels);
  const px = (x: number, y: number, c: number) => data[(y * sw + x) * sc + c] ?? 0;
  for (let y = 0; y < p.height; y++) {
    const v = Math.min(sh - 1, Math.max(0, (y + 0.5 - t.dy) / t.sy - 0.5));
    const v0 = Math.floor(v);
    const v1 = Math.min(sh - 1, v0 + 1);
    const fv = v - v0;
    for (let x = 0; x < p.width; x++) {
      const u = Math.min(sw - 1, Math.max(0, (x + 0.5 - t.dx) / t.sx - 0.5));
      const u0 = Math.floor(u);
      const u1 = Math.min(sw - 1, u0 + 1);
      const fu = u - u0;
      const i = y * p.width + x;
      for (let c = 0; c < channels; c++) {
        const srcC = channels === 1 ? 0 : p.colour === "BGR" ? 2 - c : c;
        const val =
          (px(u0, v0, srcC) * (1 - fu) + px(u1, v0, srcC) * fu) * (1 - fv) +
          (px(u0, v1, srcC) * (1 - fu) + px(u1, v1, srcC) * fu) * fv;
        const norm = (val - (p.mean[c] ?? 0)) / (p.std[c] ?? 1);
        if (p.layout === "NCHW") out[c * plane + i] = norm;
        else out[i * channels + c] = norm;
      }
    }
  }
  return out;
}
