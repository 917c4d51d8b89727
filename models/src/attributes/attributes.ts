import { AgeBand, type Emotion, type Gender, GlanceError, type ModelManifest } from "@glance/shared";
import { type Affine, umeyama, warpAffine } from "../inference/align.ts";
import type { DetectedFace } from "../inference/blazeface.ts";
import type { RawImage } from "../inference/image.ts";
import { defaultModelsDir, loadManifest } from "../inference/manifest.ts";
import { checkIo, openSession, ort } from "../inference/session.ts";
import type { TrustedKey } from "../signing/keys.ts";
import { resolveTrust } from "../signing/trust.ts";
import { ATTRIBUTES_OUTPUTS, EMOTIONS } from "./graph.ts";

export const ATTRIBUTES_MODEL = "attributes";

/** lower bound (years) of each AgeBand, in order */
const BAND_FROM = [0, 18, 25, 35, 45, 55, 65];

/** What the model says about one face: distributions, so a track can average several faces before deciding. */
export interface FaceAttributes {
  /** age in years as HSE's facial_analysis.py reads it: 1 + the two most likely bins, weighted (never sent) */
  ageYears: number;
  /** probability of each AgeBand (sums to 1), from the 100 one-year bins */
  ageBands: Record<AgeBand, number>;
  /** P(male) from the sigmoid head; P(female) = 1 − it */
  pMale: number;
  /** probability of each emotion (softmax, sums to 1) */
  emotions: Record<Emotion, number>;
}

/** The coarse, sendable summary: the most likely band / gender / emotion, each with its probability. */
export interface CoarseFaceAttributes {
  ageBand: AgeBand;
  ageBandConfidence: number;
  gender: Gender;
  genderConfidence: number;
  emotion: Emotion;
  emotionConfidence: number;
  samples: number;
}

export interface AttributesModelOptions {
  modelsDir?: string;
  /** manifest name (or name@version), default "attributes" */
  name?: string;
  threads?: number;
  /** as FacePipelineOptions.trustedKeys: unsigned or untrusted manifests are refused */
  trustedKeys?: readonly TrustedKey[];
}

/**
 * Age band, gender and emotion of an aligned face crop, on the CPU with onnxruntime: the optional attributes model
 * (`npm run models:build -- --only attributes`). It crops its own face from the detector's landmarks (ArcFace
 * template at 224 px, as faceres was fed for identification), so it works beside any embedder.
 */
export class AttributesModel {
  private constructor(
    readonly manifest: ModelManifest,
    private readonly session: ort.InferenceSession,
    /** eyes, nose tip, mouth centre in crop pixels */
    private readonly target: Array<[number, number]>,
  ) {}

  static async load(opts: AttributesModelOptions = {}): Promise<AttributesModel> {
    const trust = await resolveTrust(opts.trustedKeys);
    const { manifest, modelPath } = await loadManifest(
      opts.modelsDir ?? defaultModelsDir(),
      opts.name ?? ATTRIBUTES_MODEL,
      { trust },
    );
    if (manifest.task !== "attributes") {
      throw new GlanceError("CONFIG_INVALID", `${manifest.name} is a ${manifest.task}, not an attributes model.`);
    }
    const pts = manifest.preprocessing.alignment?.points;
    if (manifest.preprocessing.resize !== "aligned-crop" || pts?.length !== 5) {
      throw new GlanceError("MODEL_CORRUPT", `${manifest.name}: manifest lacks a 5-point alignment template.`);
    }
    const [re, le, nose, ml, mr] = pts as Array<[number, number]> as [
      [number, number],
      [number, number],
      [number, number],
      [number, number],
      [number, number],
    ];
    const session = await openSession(modelPath, opts.threads ?? 1);
    try {
      checkIo(session, manifest);
    } catch (err) {
      await session.release();
      throw err;
    }
    const model = new AttributesModel(manifest, session, [re, le, nose, [(ml[0] + mr[0]) / 2, (ml[1] + mr[1]) / 2]]);
    const p = manifest.preprocessing;
    await model.analyseCrop({
      data: new Uint8Array(p.width * p.height * 3).fill(128),
      width: p.width,
      height: p.height,
    });
    return model;
  }

  /**
   * The crop this model wants, from a detected face: `landmarkNames` are the detector's (its manifest's
   * decoding.landmarkNames), of which rightEye, leftEye, noseTip and mouthCentre are used.
   */
  align(img: RawImage, face: DetectedFace, landmarkNames: readonly string[]): RawImage {
    const p = this.manifest.preprocessing;
    return warpAffine(img, this.alignmentTransform(face, landmarkNames), p.width, p.height);
  }

  alignmentTransform(face: DetectedFace, landmarkNames: readonly string[]): Affine {
    const pick = (name: string): [number, number] => {
      const p = face.landmarks[landmarkNames.indexOf(name)];
      if (!p)
        throw new GlanceError("INTERNAL", `The detector gives no ${name} landmark (${landmarkNames.join(", ")}).`);
      // detector coordinates are continuous (pixel centres at .5); the template uses pixel-centre integers
      return [p[0] - 0.5, p[1] - 0.5];
    };
    const src = [pick("rightEye"), pick("leftEye"), pick("noseTip"), pick("mouthCentre")];
    return umeyama(src, this.target);
  }

  async analyse(img: RawImage, face: DetectedFace, landmarkNames: readonly string[]): Promise<FaceAttributes> {
    return this.analyseCrop(this.align(img, face, landmarkNames));
  }

  /** attributes of an aligned crop of the model's input size (RGB, as align() makes it) */
  async analyseCrop(crop: RawImage): Promise<FaceAttributes> {
    const p = this.manifest.preprocessing;
    if (crop.width !== p.width || crop.height !== p.height || crop.data.length !== p.width * p.height * 3) {
      throw new GlanceError(
        "VALIDATION_FAILED",
        `Attribute crops must be ${p.width}×${p.height} RGB, got ${crop.width}×${crop.height}.`,
      );
    }
    const t = new Float32Array(crop.data.length);
    for (let i = 0; i < t.length; i++) {
      const c = i % 3;
      t[i] = ((crop.data[i] ?? 0) - (p.mean[c] ?? 0)) / (p.std[c] ?? 1);
    }
    const input = this.manifest.inputs[0]?.name ?? "face";
    const out = await this.session.run({ [input]: new ort.Tensor("float32", t, [1, p.height, p.width, 3]) });
    const get = (name: string) => {
      const v = out[name]?.data as Float32Array | undefined;
      if (!v) throw new GlanceError("MODEL_SHAPE_MISMATCH", `${this.manifest.name} produced no ${name}.`);
      return v;
    };
    return interpret(get(ATTRIBUTES_OUTPUTS.age), get(ATTRIBUTES_OUTPUTS.gender), get(ATTRIBUTES_OUTPUTS.emotion));
  }

  async close(): Promise<void> {
    await this.session.release();
  }
}

/** FaceAttributes from the model's three outputs (batch 1). */
export function interpret(age: Float32Array, gender: Float32Array, emotion: Float32Array): FaceAttributes {
  const bands = Object.fromEntries(AgeBand.options.map((b) => [b, 0])) as Record<AgeBand, number>;
  let total = 0;
  for (let i = 0; i < age.length; i++) total += age[i] ?? 0;
  // bin i is age i + 1 (HSE_FaceRec_tf facial_analysis.py: min_age = 1)
  for (let i = 0; i < age.length; i++) {
    const band = AgeBand.options[bandIndex(i + 1)] as AgeBand;
    bands[band] += (age[i] ?? 0) / (total || 1);
  }
  let i1 = 0;
  let i2 = -1;
  for (let i = 1; i < age.length; i++) if ((age[i] ?? 0) > (age[i1] ?? 0)) i1 = i;
  for (let i = 0; i < age.length; i++) if (i !== i1 && (i2 < 0 || (age[i] ?? 0) > (age[i2] ?? 0))) i2 = i;
  const p1 = age[i1] ?? 0;
  const p2 = age[i2] ?? 0;
  const ageYears = 1 + (p1 + p2 > 0 ? (i1 * p1 + i2 * p2) / (p1 + p2) : i1);
  const emotions = Object.fromEntries(EMOTIONS.map((e, k) => [e, emotion[k] ?? 0])) as Record<Emotion, number>;
  return { ageYears, ageBands: bands, pMale: gender[0] ?? 0.5, emotions };
}

function bandIndex(years: number): number {
  let k = 0;
  for (let i = 0; i < BAND_FROM.length; i++) if (years >= (BAND_FROM[i] ?? 0)) k = i;
  return k;
}

/**
 * One coarse answer for a track from the attributes of several of its faces: the probabilities are averaged, then
 * the most likely band, gender and emotion are taken, each with its averaged probability (rounded to 0.01).
 */
export function summariseAttributes(faces: readonly FaceAttributes[]): CoarseFaceAttributes | undefined {
  if (faces.length === 0) return undefined;
  const n = faces.length;
  const mean = <K extends string>(pick: (f: FaceAttributes) => Record<K, number>): Record<K, number> => {
    const acc = {} as Record<K, number>;
    for (const f of faces)
      for (const [k, v] of Object.entries(pick(f)) as Array<[K, number]>) acc[k] = (acc[k] ?? 0) + v / n;
    return acc;
  };
  const top = <K extends string>(r: Record<K, number>): [K, number] =>
    (Object.entries(r) as Array<[K, number]>).reduce((a, b) => (b[1] > a[1] ? b : a));
  const [ageBand, ageP] = top(mean((f) => f.ageBands));
  const [emotion, emotionP] = top(mean((f) => f.emotions));
  const pMale = faces.reduce((s, f) => s + f.pMale, 0) / n;
  const round = (x: number) => Math.min(1, Math.max(0, Math.round(x * 100) / 100));
  return {
    ageBand,
    ageBandConfidence: round(ageP),
    gender: pMale >= 0.5 ? "male" : "female",
    genderConfidence: round(Math.max(pMale, 1 - pMale)),
    emotion,
    emotionConfidence: round(emotionP),
    samples: n,
  };
}
