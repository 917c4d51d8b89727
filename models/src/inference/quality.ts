import type { DetectedFace } from "./blazeface.ts";
import type { RawImage } from "./image.ts";

export interface FaceQuality {
  /** 0..1, product of the factors below; the node keeps the best shot of a track by this */
  score: number;
  /** face box width in frame pixels */
  sizePx: number;
  /** variance of the Laplacian over the aligned crop's inner face, grey 0..255 */
  sharpness: number;
  /** degrees, estimated from the ears and nose; 0 frontal, positive when the face turns towards image right */
  yaw: number;
  /** why the score is reduced: small-face, blurry, turned-away, low-confidence, cut-off */
  reasons: string[];
}

export interface QualityLimits {
  /** below this face width the embedding degrades quickly (the crop is 112 px) */
  minSizePx: number;
  /** Laplacian variance of a clearly sharp crop */
  sharpSharpness: number;
  maxYaw: number;
  minScore: number;
}

export const DEFAULT_QUALITY_LIMITS: QualityLimits = { minSizePx: 64, sharpSharpness: 120, maxYaw: 40, minScore: 0.75 };

/**
 * Cheap, explainable face quality from what detect and align already produced: size, focus, pose, detector
 * confidence and whether the face is cut by the frame edge. `crop` is the aligned 112×112 crop of `face`.
 */
export function faceQuality(
  img: RawImage,
  face: DetectedFace,
  crop: RawImage,
  idx: { noseTip: number; rightEar: number; leftEar: number },
  limits: QualityLimits = DEFAULT_QUALITY_LIMITS,
): FaceQuality {
  const reasons: string[] = [];
  const sizePx = face.box.width;
  const sizeF = clamp01(sizePx / limits.minSizePx);
  if (sizeF < 1) reasons.push("small-face");

  const sharpness = laplacianVariance(crop);
  const sharpF = clamp01(sharpness / limits.sharpSharpness);
  if (sharpF < 0.5) reasons.push("blurry");

  const yaw = estimateYaw(face, idx);
  // the embedder copes with moderate turns; the score falls off from 25° and reaches 0 at maxYaw + 20°
  const yawF = clamp01(1 - Math.max(0, Math.abs(yaw) - 25) / (limits.maxYaw - 5));
  if (Math.abs(yaw) > limits.maxYaw) reasons.push("turned-away");

  const confF = clamp01((face.score - 0.5) / (limits.minScore - 0.5));
  if (face.score < limits.minScore) reasons.push("low-confidence");

  const { x, y, width, height } = face.box;
  const inside =
    (Math.max(0, Math.min(img.width, x + width) - Math.max(0, x)) *
      Math.max(0, Math.min(img.height, y + height) - Math.max(0, y))) /
    Math.max(1e-6, width * height);
  const cutF = clamp01((inside - 0.7) / 0.25);
  if (inside < 0.95) reasons.push("cut-off");

  const score = sizeF * (0.25 + 0.75 * sharpF) * yawF * confF * cutF;
  return { score, sizePx, sharpness, yaw, reasons };
}

function estimateYaw(face: DetectedFace, idx: { noseTip: number; rightEar: number; leftEar: number }): number {
  const nose = face.landmarks[idx.noseTip];
  const re = face.landmarks[idx.rightEar];
  const le = face.landmarks[idx.leftEar];
  if (!nose || !re || !le) return 0;
  // On a frontal face the nose is midway between the ears; turning the head by θ shifts it by ~sin θ of the
  // half head width.
  const dr = Math.hypot(nose[0] - re[0], nose[1] - re[1]);
  const dl = Math.hypot(le[0] - nose[0], le[1] - nose[1]);
  const t = (dr - dl) / Math.max(1e-6, dr + dl);
  return (Math.asin(Math.max(-1, Math.min(1, t))) * 180) / Math.PI;
}

function laplacianVariance(crop: RawImage): number {
  const { width: w, height: h, data } = crop;
  // inner face only: the crop's corners are background or black fill
  const x0 = Math.round(w * 0.2),
    x1 = Math.round(w * 0.8),
    y0 = Math.round(h * 0.25),
    y1 = Math.round(h * 0.9);
  const grey = (x: number, y: number) => {
    const o = (y * w + x) * 3;
    return 0.299 * (data[o] ?? 0) + 0.587 * (data[o + 1] ?? 0) + 0.114 * (data[o + 2] ?? 0);
  };
  let sum = 0,
    sum2 = 0,
    n = 0;
  for (let y = y0; y < y1; y++) {
    for (let x = x0; x < x1; x++) {
      const l = grey(x - 1, y) + grey(x + 1, y) + grey(x, y - 1) + grey(x, y + 1) - 4 * grey(x, y);
      sum += l;
      sum2 += l * l;
      n++;
    }
  }
  return n > 0 ? sum2 / n - (sum / n) ** 2 : 0;
}

function clamp01(v: number): number {
  return Math.max(0, Math.min(1, v));
}
