/**
 * The quantization itself, shared by `models:build` (demo-calibrated int8 shipped by default) and
 * `models:quantize` (a hand-made variant with LFW calibration): calibrate activation ranges on a sample set, insert
 * QDQ pairs with int8 weights, and rewrite PRelu (no integer kernel, slow float one) between its DQ and Q.
 */
import type { onnx as O } from "onnx-proto";
import { encodeModel } from "../onnx/proto.ts";
import { decomposePRelu } from "../onnx/rewrite.ts";
import { type CalibrationMethod, type CalibrationSample, calibrate } from "./calibrate.ts";
import { type ActivationType, activationsToQuantize, type QuantizeSummary, quantizeQdq, type Range } from "./qdq.ts";

export interface QuantizeModelOptions {
  method: CalibrationMethod;
  percentile?: number;
  activationType: ActivationType;
  reduceRange: boolean;
  /**
   * round every calibrated range bound to this many significant digits before it becomes a scale: the floats an
   * fp32 forward pass gives differ in the last bits from one CPU (SIMD kernel) to another, and rounding keeps those
   * differences out of the int8 file, so one calibration set gives the same bytes almost everywhere
   */
  significantDigits?: number;
  onProgress?: (done: number, total: number) => void;
}

export interface QuantizedModel {
  bytes: Uint8Array;
  summary: QuantizeSummary;
  preluRewritten: number;
  ranges: Map<string, Range>;
}

export async function quantizeModel(
  model: O.IModelProto,
  samples: readonly CalibrationSample[],
  opts: QuantizeModelOptions,
): Promise<QuantizedModel> {
  const tensors = activationsToQuantize(model);
  let ranges = await calibrate(model, tensors, samples, {
    method: opts.method,
    ...(opts.percentile !== undefined ? { percentile: opts.percentile } : {}),
    ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
  });
  const digits = opts.significantDigits;
  if (digits) {
    ranges = new Map(
      [...ranges].map(([t, r]) => [t, { min: roundSignificant(r.min, digits), max: roundSignificant(r.max, digits) }]),
    );
  }
  const quantized = quantizeQdq(model, { ranges, activationType: opts.activationType, reduceRange: opts.reduceRange });
  const { model: q, replaced } = decomposePRelu(quantized.model);
  return { bytes: encodeModel(q), summary: quantized.summary, preluRewritten: replaced, ranges };
}

export function roundSignificant(x: number, digits: number): number {
  if (x === 0 || !Number.isFinite(x)) return x;
  return Number(x.toPrecision(digits));
}
