/**
 * int8 models that `models:build` makes itself from a built fp32 model, calibrated on the bundled demo set
 * (demo-set.ts), so that every clone gets them without ../shared. Their figures were measured on LFW by
 * `tsx models/src/quantize/measure-int8.ts` and are pinned here, like the fp32 recipes' calibrations.
 */
import type { ModelManifest } from "@glance/shared";
import type { CalibrationMethod } from "./calibrate.ts";
import type { ActivationType } from "./qdq.ts";

export interface QuantizedRecipe {
  /** the int8 model's name; its version is the fp32 model's */
  name: string;
  /** the fp32 recipe it is made from (recipes.ts) */
  from: string;
  quantization: {
    calibrationSet: "demo";
    /** frames per second taken from the demo clip */
    clipFps: number;
    method: CalibrationMethod;
    percentile: number;
    activationType: ActivationType;
    reduceRange: boolean;
    significantDigits: number;
  };
  precisionReason: string;
  /** the embedding section: the space it shares (or not) with fp32, and thresholds measured on this int8 model */
  embedding: ModelManifest["embedding"];
  metrics: Record<string, unknown>;
}

/**
 * `tsx models/src/quantize/measure-int8.ts` on ../shared/datasets/lfw-aligned-pairs through blazeface-back (70
 * people × 2 photos: 70 genuine, 9,660 impostor photo pairs), 2026-11-25, the int8 model this recipe builds
 * (demo-calibrated, sha256 c8fc0588…) beside its fp32 model and the LFW-calibrated int8 of `models:quantize`.
 */
export const DLIB_RESNET_INT8_LFW = {
  date: "2026-11-25",
  people: 70,
  genuinePairs: 70,
  impostorPairs: 9660,
  impostorPersonPairs: 2415,
  thresholds: { "1e-2": 0.9203, "1e-3": 0.9367, "1e-4": 0.9778 },
  tar: { "1e-2": 0.9714, "1e-3": 0.8429, "1e-4": 0.0857 },
  genuineMean: 0.9525,
  impostorMean: 0.8545,
  lfwAccuracy: 0.9818,
  auc: 0.9968,
  /** the same LFW figures of the fp32 model and of the LFW-calibrated int8 (models:quantize), same run */
  fp32: { lfwAccuracy: 0.983, auc: 0.9961, tar1e3: 0.8714 },
  lfwCalibratedInt8: { lfwAccuracy: 0.9815, auc: 0.9967, tar1e3: 0.8571 },
  lossVsFp32Pt: 0.11,
  /** cosine between the fp32 and int8 embeddings of the same LFW crop */
  parity: { mean: 0.9966, min: 0.9831 },
  /**
   * fp32 template vs int8 template of the other photo, both directions (140 genuine, 19,320 impostor pairs):
   * accuracy 0.53 pt under fp32 and TAR at fp32's FAR 1e-3 threshold 3.6 pt under it, so the two precisions are
   * not mixed: the int8 model has its own space (see the README, "int8 by default")
   */
  crossPrecision: {
    lfwAccuracy: 0.9777,
    auc: 0.9963,
    atFp32Threshold1e3: { threshold: 0.9346, tar: 0.8357, far: 0.0011 },
  },
};

const m = DLIB_RESNET_INT8_LFW;

export const dlibResnetInt8Recipe: QuantizedRecipe = {
  name: "dlib-resnet-int8",
  from: "dlib-resnet",
  quantization: {
    calibrationSet: "demo",
    clipFps: 3,
    method: "percentile",
    percentile: 99.999,
    activationType: "uint8",
    reduceRange: true,
    significantDigits: 4,
  },
  precisionReason:
    `int8 is the default embedder because it meets the target (LFW loss ≤ 0.5 pt vs fp32): LFW accuracy ` +
    `${m.fp32.lfwAccuracy} → ${m.lfwAccuracy} (${m.lossVsFp32Pt} pt; LFW-calibrated int8 ${m.lfwCalibratedInt8.lfwAccuracy}), ` +
    `AUC ${m.fp32.auc} → ${m.auc}, 22.4 → 5.7 MB, and faster per face on one core (models/README.md, "int8 by ` +
    'default"). Calibrated at build on the bundled demo set (no LFW), so every clone makes it. Its own embedding ' +
    `space: fp32-vs-int8 comparisons lose ${((m.fp32.lfwAccuracy - m.crossPrecision.lfwAccuracy) * 100).toFixed(2)} pt.`,
  embedding: {
    dim: 128,
    space: "dlib-resnet-int8@1.0.0",
    metric: "cosine",
    thresholds: m.thresholds,
    calibration:
      `Cosine of L2-normalised descriptors on LFW (../shared/datasets/lfw-aligned-pairs: ${m.people} people × 2 ` +
      `photos), measured ${m.date} on this int8 model by models/src/quantize/measure-int8.ts: ${m.genuinePairs} ` +
      `genuine, ${m.impostorPairs} impostor photo pairs from ${m.impostorPersonPairs} person pairs, crops padded ` +
      "and re-aligned through blazeface-back. 1e-2 and 1e-3 empirical (1e-3 rests on the 9 highest impostor " +
      `scores), 1e-4 extrapolated from a normal fit: a guess. TAR ${m.tar["1e-2"]}/${m.tar["1e-3"]}/${m.tar["1e-4"]}; ` +
      `accuracy ${m.lfwAccuracy}, AUC ${m.auc}. The build calibrates activations on the demo set only, ` +
      "deterministically, so these thresholds hold for the model it makes. LFW is celebrity photos, not store " +
      "cameras: re-calibrate on site data.",
  },
  metrics: { lfw: DLIB_RESNET_INT8_LFW },
};

export const quantizedRecipes: QuantizedRecipe[] = [dlibResnetInt8Recipe];
