import sharp from "sharp";
import type { RawImage } from "./image.ts";

/**
 * BlazeFace decoding, as MediaPipe's TensorsToDetectionsCalculator does it and keijiro's Postprocess1/2 shaders
 * re-implement it: one anchor per (cell, slot), centred in its cell; the regressor gives the box centre offset,
 * box size and 6 keypoint offsets in input pixels; scores are logits; overlapping boxes are blended (weighted NMS).
 */
export interface BlazeFaceDecoding {
  inputSize: number;
  /** one entry per output pair, in the model's anchor order */
  layers: Array<{ scores: string; boxes: string; grid: number; anchorsPerCell: number }>;
  anchorOffset: number;
  scoreClip: number;
  minScore: number;
  nms: "weighted" | "hard";
  iouThreshold: number;
  maxFaces: number;
  landmarkNames: string[];
}

export interface DetectedFace {
  /** frame pixels */
  box: { x: number; y: number; width: number; height: number };
  score: number;
  /** frame pixels, detector order (manifest decoding.landmarkNames) */
  landmarks: Array<[number, number]>;
}

export interface Letterbox {
  tensor: Float32Array;
  /** frame px = (input px - pad) * scale, per axis (rounding the resized size makes them differ slightly) */
  scaleX: number;
  scaleY: number;
  padX: number;
  padY: number;
}

/** Fits the frame into size×size keeping its aspect ratio, centred on black, as NHWC floats (pixel - mean) / std. */
export async function letterbox(img: RawImage, size: number, mean: number, std: number): Promise<Letterbox> {
  const s = size / Math.max(img.width, img.height);
  const rw = Math.max(1, Math.min(size, Math.round(img.width * s)));
  const rh = Math.max(1, Math.min(size, Math.round(img.height * s)));
  const resized =
    rw === img.width && rh === img.height
      ? img.data
      : await sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } })
          .resize(rw, rh, { fit: "fill", kernel: "linear" })
          .raw()
          .toBuffer();
  const padX = Math.floor((size - rw) / 2);
  const padY = Math.floor((size - rh) / 2);
  const tensor = new Float32Array(size * size * 3).fill((0 - mean) / std);
  const inv = 1 / std;
  for (let y = 0; y < rh; y++) {
    let o = ((y + padY) * size + padX) * 3;
    let i = y * rw * 3;
    for (let x = 0; x < rw * 3; x++) tensor[o++] = ((resized[i++] ?? 0) - mean) * inv;
  }
  return { tensor, scaleX: img.width / rw, scaleY: img.height / rh, padX, padY };
}

interface Candidate {
  score: number;
  /** cx, cy, w, h, then 6 × (x, y), in input pixels */
  g: Float64Array;
}

export function decodeBlazeFace(
  outputs: Record<string, Float32Array>,
  d: BlazeFaceDecoding,
  lb: Letterbox,
  minScore: number,
): DetectedFace[] {
  const nk = d.landmarkNames.length;
  const stride = 4 + nk * 2;
  const logitMin = Math.log(minScore / (1 - minScore));
  const cands: Candidate[] = [];
  for (const layer of d.layers) {
    const scores = outputs[layer.scores];
    const boxes = outputs[layer.boxes];
    if (!scores || !boxes) throw new Error(`missing output ${layer.scores}/${layer.boxes}`);
    const cell = d.inputSize / layer.grid;
    for (let cy = 0, i = 0; cy < layer.grid; cy++) {
      for (let cx = 0; cx < layer.grid; cx++) {
        for (let a = 0; a < layer.anchorsPerCell; a++, i++) {
          const logit = Math.max(-d.scoreClip, Math.min(d.scoreClip, scores[i] ?? -Infinity));
          if (logit < logitMin) continue;
          const ax = (cx + d.anchorOffset) * cell;
          const ay = (cy + d.anchorOffset) * cell;
          const b = i * stride;
          const g = new Float64Array(stride);
          g[0] = ax + (boxes[b] ?? 0);
          g[1] = ay + (boxes[b + 1] ?? 0);
          g[2] = boxes[b + 2] ?? 0;
          g[3] = boxes[b + 3] ?? 0;
          for (let k = 0; k < nk; k++) {
            g[4 + k * 2] = ax + (boxes[b + 4 + k * 2] ?? 0);
            g[5 + k * 2] = ay + (boxes[b + 5 + k * 2] ?? 0);
          }
          cands.push({ score: 1 / (1 + Math.exp(-logit)), g });
        }
      }
    }
  }
  const kept = suppress(cands, d.nms, d.iouThreshold).slice(0, d.maxFaces);
  return kept.map(({ score, g }) => {
    const fx = (x: number) => (x - lb.padX) * lb.scaleX;
    const fy = (y: number) => (y - lb.padY) * lb.scaleY;
    const w = (g[2] ?? 0) * lb.scaleX;
    const h = (g[3] ?? 0) * lb.scaleY;
    const landmarks: Array<[number, number]> = [];
    for (let k = 0; k < nk; k++) landmarks.push([fx(g[4 + k * 2] ?? 0), fy(g[5 + k * 2] ?? 0)]);
    return { box: { x: fx(g[0] ?? 0) - w / 2, y: fy(g[1] ?? 0) - h / 2, width: w, height: h }, score, landmarks };
  });
}

function iou(a: Float64Array, b: Float64Array): number {
  const ax0 = (a[0] ?? 0) - (a[2] ?? 0) / 2;
  const ay0 = (a[1] ?? 0) - (a[3] ?? 0) / 2;
  const bx0 = (b[0] ?? 0) - (b[2] ?? 0) / 2;
  const by0 = (b[1] ?? 0) - (b[3] ?? 0) / 2;
  const ix = Math.min(ax0 + (a[2] ?? 0), bx0 + (b[2] ?? 0)) - Math.max(ax0, bx0);
  const iy = Math.min(ay0 + (a[3] ?? 0), by0 + (b[3] ?? 0)) - Math.max(ay0, by0);
  if (ix <= 0 || iy <= 0) return 0;
  const inter = ix * iy;
  return inter / ((a[2] ?? 0) * (a[3] ?? 0) + (b[2] ?? 0) * (b[3] ?? 0) - inter);
}

/**
 * MediaPipe's weighted NMS: take the best remaining box, blend every box overlapping it by score, keep the best
 * score. Blending steadies boxes and landmarks from frame to frame, which the tracker and the aligner both want.
 */
function suppress(cands: Candidate[], mode: "weighted" | "hard", threshold: number): Candidate[] {
  const rest = [...cands].sort((a, b) => b.score - a.score);
  const out: Candidate[] = [];
  while (rest.length > 0) {
    const best = rest[0] as Candidate;
    const group: Candidate[] = [];
    const remaining: Candidate[] = [];
    for (const c of rest) (iou(best.g, c.g) > threshold ? group : remaining).push(c);
    if (mode === "hard" || group.length === 1) out.push(best);
    else {
      const g = new Float64Array(best.g.length);
      let total = 0;
      for (const c of group) {
        total += c.score;
        for (let k = 0; k < g.length; k++) g[k] = (g[k] ?? 0) + (c.g[k] ?? 0) * c.score;
      }
      for (let k = 0; k < g.length; k++) g[k] = (g[k] ?? 0) / total;
      out.push({ score: best.score, g });
    }
    rest.length = 0;
    rest.push(...remaining);
  }
  return out;
}
