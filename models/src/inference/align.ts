import type { RawImage } from "./image.ts";

/** 2×3 affine [a, b, tx; c, d, ty]: dst = M · [x, y, 1] */
export type Affine = [number, number, number, number, number, number];

/**
 * Least-squares similarity transform (Umeyama 1991, no reflection) taking src points onto dst points: the same
 * estimate insightface's norm_crop / skimage SimilarityTransform make, so crops match what ArcFace-style
 * embedders were trained on.
 */
export function umeyama(
  src: ReadonlyArray<readonly [number, number]>,
  dst: ReadonlyArray<readonly [number, number]>,
): Affine {
  const n = Math.min(src.length, dst.length);
  let sx = 0,
    sy = 0,
    dx = 0,
    dy = 0;
  for (let i = 0; i < n; i++) {
    const s = src[i] as readonly [number, number];
    const d = dst[i] as readonly [number, number];
    sx += s[0];
    sy += s[1];
    dx += d[0];
    dy += d[1];
  }
  sx /= n;
  sy /= n;
  dx /= n;
  dy /= n;
  // covariance Σ = (1/n) Σ (d - d̄)(s - s̄)ᵀ and source variance
  let a = 0,
    b = 0,
    c = 0,
    e = 0,
    varS = 0;
  for (let i = 0; i < n; i++) {
    const s = src[i] as readonly [number, number];
    const d = dst[i] as readonly [number, number];
    const px = s[0] - sx,
      py = s[1] - sy,
      qx = d[0] - dx,
      qy = d[1] - dy;
    a += qx * px;
    b += qx * py;
    c += qy * px;
    e += qy * py;
    varS += px * px + py * py;
  }
  // For 2-D similarity the optimal rotation/scale has a closed form: r·[cos, -sin; sin, cos] with
  // cos ∝ (a + e), sin ∝ (c - b); it equals Umeyama's SVD solution whenever det(Σ) ≥ 0 and picks the best
  // proper rotation otherwise (reflections are never wanted for faces).
  const p = a + e;
  const q = c - b;
  const norm = Math.hypot(p, q);
  if (varS === 0 || norm === 0) return [1, 0, dx - sx, 0, 1, dy - sy];
  const scale = norm / varS;
  const cos = (p / norm) * scale;
  const sin = (q / norm) * scale;
  return [cos, -sin, dx - (cos * sx - sin * sy), sin, cos, dy - (sin * sx + cos * sy)];
}

export function invertAffine(m: Affine): Affine {
  const [a, b, tx, c, d, ty] = m;
  const det = a * d - b * c;
  const ia = d / det,
    ib = -b / det,
    ic = -c / det,
    id = a / det;
  return [ia, ib, -(ia * tx + ib * ty), ic, id, -(ic * tx + id * ty)];
}

/**
 * Warps img by M into a width×height RGB crop, bilinear, black outside the frame. When the face is much larger
 * than the crop, each output pixel averages k×k bilinear taps so that the crop is not aliased (a 1080p face is
 * ~4× the crop).
 */
export function warpAffine(img: RawImage, m: Affine, width: number, height: number): RawImage {
  const [a, b, tx, c, d, ty] = invertAffine(m);
  const step = Math.max(Math.hypot(a, c), Math.hypot(b, d));
  const k = Math.max(1, Math.min(4, Math.round(step)));
  const out = new Uint8Array(width * height * 3);
  const src = img.data;
  const W = img.width;
  const H = img.height;
  const row = W * 3;
  const inv = 1 / (k * k);
  for (let v = 0; v < height; v++) {
    for (let u = 0; u < width; u++) {
      let r = 0;
      let g = 0;
      let bl = 0;
      for (let sv = 0; sv < k; sv++) {
        const yy = v + (sv + 0.5) / k - 0.5;
        for (let su = 0; su < k; su++) {
          const xx = u + (su + 0.5) / k - 0.5;
          const x = a * xx + b * yy + tx;
          const y = c * xx + d * yy + ty;
          const x0 = Math.floor(x);
          const y0 = Math.floor(y);
          const fx = x - x0;
          const fy = y - y0;
          if (x0 >= 0 && y0 >= 0 && x0 + 1 < W && y0 + 1 < H) {
            // interior: all four taps exist (the common case, kept branch-free)
            const p = y0 * row + x0 * 3;
            const q = p + row;
            const w00 = (1 - fx) * (1 - fy);
            const w10 = fx * (1 - fy);
            const w01 = (1 - fx) * fy;
            const w11 = fx * fy;
            r +=
              w00 * (src[p] as number) +
              w10 * (src[p + 3] as number) +
              w01 * (src[q] as number) +
              w11 * (src[q + 3] as number);
            g +=
              w00 * (src[p + 1] as number) +
              w10 * (src[p + 4] as number) +
              w01 * (src[q + 1] as number) +
              w11 * (src[q + 4] as number);
            bl +=
              w00 * (src[p + 2] as number) +
              w10 * (src[p + 5] as number) +
              w01 * (src[q + 2] as number) +
              w11 * (src[q + 5] as number);
          } else if (x0 >= -1 && y0 >= -1 && x0 < W && y0 < H) {
            // frame edge: missing taps count as black
            for (let j = 0; j < 2; j++) {
              const yj = y0 + j;
              if (yj < 0 || yj >= H) continue;
              const wy = j === 0 ? 1 - fy : fy;
              for (let i = 0; i < 2; i++) {
                const xi = x0 + i;
                if (xi < 0 || xi >= W) continue;
                const w = wy * (i === 0 ? 1 - fx : fx);
                const p = yj * row + xi * 3;
                r += w * (src[p] as number);
                g += w * (src[p + 1] as number);
                bl += w * (src[p + 2] as number);
              }
            }
          }
        }
      }
      const o = (v * width + u) * 3;
      out[o] = Math.round(r * inv);
      out[o + 1] = Math.round(g * inv);
      out[o + 2] = Math.round(bl * inv);
    }
  }
  return { data: out, width, height };
}
