/**
 * Activation-range calibration: run the float model with the tensors to quantize exposed as extra graph outputs over
 * a calibration set, and reduce what they hold to one [min, max] per tensor.
 *
 * Methods: "minmax" (the observed extremes), "percentile" (two-sided, clips the rarest outliers), "entropy"
 * (TensorRT's KL-divergence threshold over a |x| histogram). Which is best depends on the model: measure.
 */

import type { onnx as O } from "onnx-proto";
import * as ort from "onnxruntime-node";
import { encodeModel, withExtraOutputs } from "../onnx/proto.ts";
import type { Range } from "./qdq.ts";

export type CalibrationMethod = "minmax" | "percentile" | "entropy";

export interface CalibrationSample {
  feeds: Record<string, { data: Float32Array; dims: readonly number[] }>;
}

export interface CalibrateOptions {
  method: CalibrationMethod;
  /** for "percentile": the share of values kept inside the range on each side, e.g. 99.99 */
  percentile?: number;
  bins?: number;
  onProgress?: (done: number, total: number) => void;
}

const defaultBins = 2048;

export async function calibrate(
  model: O.IModelProto,
  tensors: readonly string[],
  samples: readonly CalibrationSample[],
  opts: CalibrateOptions,
): Promise<Map<string, Range>> {
  const exposed = withExtraOutputs(model, tensors);
  const session = await ort.InferenceSession.create(encodeModel(exposed), {
    graphOptimizationLevel: "basic",
  });
  const passes = opts.method === "minmax" ? 1 : 2;
  const total = samples.length * passes;
  let done = 0;
  const run = async (sample: CalibrationSample) => {
    const feeds: Record<string, ort.Tensor> = {};
    for (const [k, v] of Object.entries(sample.feeds)) feeds[k] = new ort.Tensor("float32", v.data, [...v.dims]);
    const out = await session.run(feeds, [...tensors]);
    opts.onProgress?.(++done, total);
    return out;
  };

  const ranges = new Map<string, Range>();
  for (const sample of samples) {
    const out = await run(sample);
    for (const t of tensors) {
      const data = out[t]?.data as Float32Array | undefined;
      if (!data) continue;
      const r = ranges.get(t) ?? { min: Number.POSITIVE_INFINITY, max: Number.NEGATIVE_INFINITY };
      for (let i = 0; i < data.length; i++) {
        const v = data[i] ?? 0;
        if (v < r.min) r.min = v;
        if (v > r.max) r.max = v;
      }
      ranges.set(t, r);
    }
  }
  if (opts.method === "minmax") {
    await session.release();
    return ranges;
  }

  // second pass: histograms, over [min, max] for percentile and over [0, max|x|] for entropy
  const bins = opts.bins ?? defaultBins;
  const hists = new Map<string, Float64Array>();
  for (const t of ranges.keys()) hists.set(t, new Float64Array(bins));
  for (const sample of samples) {
    const out = await run(sample);
    for (const [t, r] of ranges) {
      const data = out[t]?.data as Float32Array | undefined;
      const h = hists.get(t);
      if (!data || !h) continue;
      if (opts.method === "percentile") {
        const width = (r.max - r.min) / bins || 1;
        for (let i = 0; i < data.length; i++) {
          const k = Math.min(bins - 1, Math.floor(((data[i] ?? 0) - r.min) / width));
          h[k] = (h[k] ?? 0) + 1;
        }
      } else {
        const absMax = Math.max(Math.abs(r.min), Math.abs(r.max)) || 1;
        const width = absMax / bins;
        for (let i = 0; i < data.length; i++) {
          const k = Math.min(bins - 1, Math.floor(Math.abs(data[i] ?? 0) / width));
          h[k] = (h[k] ?? 0) + 1;
        }
      }
    }
  }
  await session.release();

  const out = new Map<string, Range>();
  for (const [t, r] of ranges) {
    const h = hists.get(t);
    if (!h) continue;
    if (opts.method === "percentile") {
      const p = (opts.percentile ?? 99.99) / 100;
      const width = (r.max - r.min) / bins;
      const [lo, hi] = histogramQuantiles(h, 1 - p, p);
      out.set(t, { min: r.min + lo * width, max: r.min + (hi + 1) * width });
    } else {
      const absMax = Math.max(Math.abs(r.min), Math.abs(r.max));
      const threshold = entropyThreshold(h, 128) * (absMax / bins);
      out.set(t, { min: Math.max(r.min, -threshold), max: Math.min(r.max, threshold) });
    }
  }
  return out;
}

/** Bin indices at which the cumulative share first reaches qLo and qHi. */
export function histogramQuantiles(h: Float64Array, qLo: number, qHi: number): [number, number] {
  const total = h.reduce((a, b) => a + b, 0);
  let acc = 0;
  let lo = 0;
  let hi = h.length - 1;
  let foundLo = false;
  for (let i = 0; i < h.length; i++) {
    acc += h[i] ?? 0;
    if (!foundLo && acc >= qLo * total) {
      lo = i;
      foundLo = true;
    }
    if (acc >= qHi * total) {
      hi = i;
      break;
    }
  }
  return [lo, hi];
}

/**
 * TensorRT's entropy calibration: the clipping bin i (in bins of |x|) whose 'levels'-level quantization loses the
 * least information, KL(P‖Q). P is the histogram cut at i with everything beyond folded into its last bin; Q is
 * the cut histogram (without the fold) merged into `levels` levels and spread back over P's non-empty bins.
 * Returns the threshold in bins (i + 0.5). Allocation-free: O(bins²) simple loops.
 */
export function entropyThreshold(h: Float64Array, levels: number): number {
  const n = h.length;
  const total = h.reduce((a, b) => a + b, 0);
  if (total === 0) return n;
  let best = n;
  let bestKl = Number.POSITIVE_INFINITY;
  let outliers = total;
  for (let k = 0; k < levels; k++) outliers -= h[k] ?? 0;
  for (let i = levels; i <= n; i++) {
    if (i > levels) outliers -= h[i - 1] ?? 0;
    const pAt = (k: number) => (h[k] ?? 0) + (k === i - 1 ? outliers : 0);
    const step = i / levels;
    // per quantized level: its bin range, P's mass merged into it, and how many of its P bins are non-empty
    const sums = new Float64Array(levels);
    const nonEmpty = new Int32Array(levels);
    const starts = new Int32Array(levels + 1);
    let qTotal = 0;
    for (let j = 0; j < levels; j++) {
      starts[j] = Math.floor(j * step);
      starts[j + 1] = j === levels - 1 ? i : Math.floor((j + 1) * step);
      for (let k = starts[j] as number; k < (starts[j + 1] as number); k++) {
        sums[j] = (sums[j] as number) + (h[k] ?? 0);
        if (pAt(k) > 0) nonEmpty[j] = (nonEmpty[j] as number) + 1;
      }
      // levels whose P bins are all empty contribute nothing to Q's total mass
      if ((nonEmpty[j] as number) > 0) qTotal += sums[j] as number;
    }
    if (qTotal === 0) continue;
    let kl = 0;
    for (let j = 0; j < levels; j++) {
      const sum = sums[j] as number;
      for (let k = starts[j] as number; k < (starts[j + 1] as number); k++) {
        const pk = pAt(k) / total;
        if (pk === 0) continue;
        // smoothing as in TensorRT/MXNet: an empty Q bin under a non-empty P bin costs a lot, not infinity
        const qk = sum > 0 ? sum / (nonEmpty[j] as number) / qTotal : 1e-8;
        kl += pk * Math.log(pk / qk);
      }
    }
    if (kl < bestKl) {
      bestKl = kl;
      best = i;
    }
  }
  return best + 0.5;
}
