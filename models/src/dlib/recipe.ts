/**
 * The dlib face recognition ResNet as a Glance embedder recipe: `dlib-resnet`, built from the TF.js weights in
 * `@vladmandic/face-api` by face-api-resnet.ts. Registered in recipes.ts and the default embedder (DEFAULT_EMBEDDER):
 * the most accurate candidate on LFW whose weights may be used commercially (models/README.md, "Choosing the
 * embedder"). It does not solve profile faces either (see DLIB_RESNET_MEASUREMENTS).
 */
import type { Recipe } from "../recipes.ts";
import { DLIB_MEAN_RGB, DLIB_STD, dlibOnnxFromFaceApi, FACE_API_RECOGNITION_MANIFEST } from "./face-api-resnet.ts";

/**
 * dlib's 150×150 face chip (get_face_chip_details, padding 0.25): its mean face shape (points 17-67 of the 68-point
 * scheme, in [0, 1]) mapped by (padding + p) / (1 + 2·padding) · 150, then zoomed 1.2× about the chip centre.
 * Points, as our BlazeFace gives them: eye centres (mean of points 36-41 / 42-47), nose tip (30), mouth corners
 * (48, 54; the pipeline aligns on their mean). Zoom 1.2 was the best of 0.9/1.0/1.1/1.2/1.3 on LFW through the
 * production path (accuracy 0.9535/0.9600/0.9801/0.9830/0.9796); dlib's own chip is 1.0. The LFW crops are tight
 * (grey padding outside them), which favours tighter chips: on the demo video Lin-Manuel Miranda's best score fell
 * slightly with zoom (0.973 at 1.0, 0.960 at 1.2).
 */
export const DLIB_150: Array<[number, number]> = [
  [42.06, 40.92],
  [105.57, 40.92],
  [73.82, 76.88],
  [45.5, 108.63],
  [102.13, 108.63],
];

/** `tsx models/src/dlib/measure.ts` on ../shared/datasets/lfw-aligned-pairs through blazeface-back, fp32, 2026-11-25 */
export const DLIB_RESNET_CALIBRATION = {
  date: "2026-11-25",
  people: 70,
  genuinePairs: 70,
  impostorPairs: 9660,
  impostorPersonPairs: 2415,
  thresholds: { "1e-2": 0.9209, "1e-3": 0.9346, "1e-4": 0.9766 },
  tar: { "1e-2": 0.971, "1e-3": 0.871, "1e-4": 0.071 },
  genuineMean: 0.952,
  impostorMean: 0.852,
  lfwAccuracy: 0.983,
  auc: 0.9961,
};

/**
 * The question it was measured for (measure.ts, 2026-11-25, demo clip at 10 fps, detector minScore 0.3): Alex
 * Lacamoire in strong profile at frames 15-25 against his two frontal enrolment photos, and the best score of any
 * face in the clip against members who are not in it. Alex stays below the FAR 1e-3 threshold (0.9346) and below
 * the absent members' best scores, so this model does not solve the profile case either.
 */
export const DLIB_RESNET_MEASUREMENTS = {
  alexFrames15to25Max: 0.9067,
  linManuelMax: 0.9601,
  absentMax: { barack_obama: 0.9121, joe_biden: 0.8959, kit_harington: 0.8909, rose_leslie: 0.9107 },
};

const c = DLIB_RESNET_CALIBRATION;

export const dlibResnetRecipe: Recipe = {
  name: "dlib-resnet",
  task: "embedder",
  version: "1.0.0",
  npm: {
    pkg: "@vladmandic/face-api",
    version: "1.7.15",
    integrity: "sha512-WDMmK3CfNLo8jylWqMoQgf4nIst3M0fzx1dnac96wv/dvMTN4DxC/Pq1DGtduDk1lktCamQ3MIDXFnvrdHTXDw==",
  },
  pathInPackage: FACE_API_RECOGNITION_MANIFEST,
  sha256: "38f840a7b90e4763b1843b3b2c451c6bdcf064807f133a5c4492d96be2b15e98",
  derive: {
    files: {
      [FACE_API_RECOGNITION_MANIFEST]: "cbaffa501b0b9275a12b63357a6843e7e30c054e1c9151e1a5f879b26e32986b",
      "model/face_recognition_model.bin": "b413e420d6840b2775fba32008db6f3cddb07d485967fb42cfcf379c16a8c589",
    },
    make: dlibOnnxFromFaceApi,
  },
  precision: "fp32",
  precisionReason:
    "face-api ships the weights uint8-quantized (per-tensor affine); they are dequantized to fp32 once at build, " +
    "so the ONNX model gives face-api's descriptors (max abs diff ~2e-7), not bit-exact dlib ones",
  preprocessing: {
    width: 150,
    height: 150,
    layout: "NCHW",
    colour: "RGB",
    mean: DLIB_MEAN_RGB,
    std: [DLIB_STD, DLIB_STD, DLIB_STD],
    resize: "aligned-crop",
    alignment: { template: "dlib-chip-150-zoom-1.2", points: DLIB_150 },
  },
  decoding: {},
  embedding: {
    dim: 128,
    space: "dlib-resnet@1.0.0",
    metric: "cosine",
    thresholds: c.thresholds,
    calibration:
      `Cosine of L2-normalised descriptors (not dlib's Euclidean 0.6) on LFW (../shared/datasets/lfw-aligned-pairs: ` +
      `${c.people} people × 2 photos), measured ${c.date}: ${c.genuinePairs} genuine, ${c.impostorPairs} impostor ` +
      `photo pairs from ${c.impostorPersonPairs} person pairs, crops padded and re-aligned through blazeface-back. ` +
      "1e-2 and 1e-3 empirical (1e-3 rests on the 9 highest impostor scores), 1e-4 extrapolated from a normal fit: a " +
      `guess. TAR ${c.tar["1e-2"]}/${c.tar["1e-3"]}/${c.tar["1e-4"]}; accuracy ${c.lfwAccuracy}, AUC ${c.auc}. ` +
      "dlib descriptors are not centred, so cosines are compressed (impostor mean " +
      `${c.impostorMean}, genuine ${c.genuineMean}): thresholds are close together. The alignment template was ` +
      "chosen on the same LFW pairs. LFW is celebrity photos, not store cameras: re-calibrate on site data.",
  },
  licence: {
    spdx: "LicenseRef-public-domain",
    status: "permissive",
    notes:
      "Weights: dlib_face_recognition_resnet_model_v1 by Davis King. The dlib-models README (github.com/davisking/" +
      'dlib-models, commit 04d09a5) says: "As far as I am concerned, anyone can do whatever they want with these ' +
      "model files as I've released them into the public domain.\" A public-domain statement, not a CC0 deed. " +
      "The TF.js conversion and its packaging are in @vladmandic/face-api (MIT, Copyright (c) Vladimir Mandic; " +
      "originally justadudewhohacks/face-api.js, MIT): keep that notice when redistributing. Training images " +
      "carry their own rights (see trainingDataLicence).",
  },
  provenance: {
    upstream:
      "davisking/dlib-models dlib_face_recognition_resnet_model_v1.dat (ResNet-34-like, 29 conv layers, half the " +
      "filters), as TF.js weights in @vladmandic/face-api model/face_recognition_model.*",
    trainingData:
      "about 3 million faces of 7485 identities (dlib-models README): FaceScrub, the VGG Face dataset and images " +
      "scraped from the internet, about half from VGG and FaceScrub; cleaned by Davis King; no identity overlap " +
      "with LFW. Pair-wise hinge metric loss (balls of radius 0.6). Reported LFW accuracy 0.993833 ± 0.00272732 " +
      "with dlib's own detector and 5-point chip",
    trainingDataLicence:
      "not stated by dlib-models; FaceScrub and VGG Face are published as lists of web image URLs for research, " +
      "and the scraped images belong to their owners",
    conversion:
      "models/src/dlib/face-api-resnet.ts writes the network face-api runs in code (src/faceRecognitionNet) as an " +
      "ONNX opset-13 graph: uint8 weights dequantized, conv bias and scale layer folded into each Conv",
  },
  metrics: { lfw: DLIB_RESNET_CALIBRATION, demoClip: DLIB_RESNET_MEASUREMENTS },
};
