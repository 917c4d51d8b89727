import { type FalseAcceptRate, GlanceError, type ModelManifest } from "@glance/shared";
import type { TrustedKey } from "../signing/keys.ts";
import { resolveTrust } from "../signing/trust.ts";
import { type Affine, umeyama, warpAffine } from "./align.ts";
import { type BlazeFaceDecoding, type DetectedFace, decodeBlazeFace, letterbox } from "./blazeface.ts";
import type { RawImage } from "./image.ts";
import { defaultModelsDir, loadManifest } from "./manifest.ts";
import { type FaceQuality, faceQuality } from "./quality.ts";
import { checkIo, openSession, ort } from "./session.ts";

export interface EmbeddedFace {
  face: DetectedFace;
  /** L2-normalised */
  embedding: Float32Array;
  quality: FaceQuality;
}

export interface FacePipelineOptions {
  modelsDir?: string;
  /** manifest name (or name@version) */
  detector?: string;
  /** default GLANCE_EMBEDDER, else DEFAULT_EMBEDDER (see defaultEmbedder) */
  embedder?: string;
  /** intra-op threads per model; 1 on a node (one core per stage) */
  threads?: number;
  /**
   * model-signing keys whose signatures are accepted; default GLANCE_MODEL_TRUST, else (outside production)
   * this checkout's development key. Unsigned or untrusted manifests are refused either way.
   */
  trustedKeys?: readonly TrustedKey[];
}

export const DEFAULT_DETECTOR = "blazeface-back";
/**
 * The shipped embedder: the most accurate one whose weights may be used commercially (models/README.md, "Choosing
 * the embedder"): dlib's ResNet, public-domain weights, LFW 0.983 through this pipeline; in int8, which
 * `models:build` makes from it on the bundled demo set (LFW 0.9818, 0.11 pt under fp32, within the 0.5 pt target;
 * a quarter of the size and faster per face). Its space is `dlib-resnet-int8@1.0.0`, not fp32's: fp32 and int8
 * templates are not mixed (models/README.md, "int8 by default").
 */
export const DEFAULT_EMBEDDER = "dlib-resnet-int8";

/**
 * The embedder a pipeline loads when not told otherwise: GLANCE_EMBEDDER (a manifest name, or name@version), else
 * DEFAULT_EMBEDDER. Nodes and the orchestrator must use the same one: templates carry their embedding space and the
 * orchestrator refuses any space other than its own.
 */
export function defaultEmbedder(env: NodeJS.ProcessEnv = process.env): string {
  return env.GLANCE_EMBEDDER?.trim() || DEFAULT_EMBEDDER;
}

interface LandmarkIndex {
  rightEye: number;
  leftEye: number;
  noseTip: number;
  mouthCentre: number;
  rightEar: number;
  leftEar: number;
}

/**
 * detect → align → embed on the CPU with onnxruntime. The only place in Glance that runs a model: the node uses
 * it on live frames, the orchestrator on enrolment photos, so both make templates in the same space.
 */
export class FacePipeline {
  private readonly crops = new WeakMap<DetectedFace, { img: RawImage; crop: RawImage }>();

  private constructor(
    readonly detector: ModelManifest,
    readonly embedder: ModelManifest,
    private readonly det: ort.InferenceSession,
    private readonly emb: ort.InferenceSession,
    private readonly decoding: BlazeFaceDecoding,
    private readonly lm: LandmarkIndex,
    /** the 4 alignment targets: eyes, nose tip, mouth centre (mean of the template's mouth corners) */
    private readonly target: Array<[number, number]>,
  ) {}

  static async load(opts: FacePipelineOptions = {}): Promise<FacePipeline> {
    const dir = opts.modelsDir ?? defaultModelsDir();
    const threads = opts.threads ?? 1;
    const trust = await resolveTrust(opts.trustedKeys);
    const [d, e] = await Promise.all([
      loadManifest(dir, opts.detector ?? DEFAULT_DETECTOR, { trust }),
      loadManifest(dir, opts.embedder ?? defaultEmbedder(), { trust }),
    ]);
    if (d.manifest.task !== "detector" || e.manifest.task !== "embedder") {
      throw new GlanceError(
        "CONFIG_INVALID",
        `${d.manifest.name} must be a detector and ${e.manifest.name} an embedder.`,
      );
    }
    const decoding = blazeFaceDecoding(d.manifest);
    const lm = landmarkIndex(decoding.landmarkNames, d.manifest.name);
    const target = alignmentTarget(e.manifest);
    const [det, emb] = await Promise.all([openSession(d.modelPath, threads), openSession(e.modelPath, threads)]);
    try {
      checkIo(det, d.manifest);
      checkIo(emb, e.manifest);
    } catch (err) {
      await Promise.all([det.release(), emb.release()]);
      throw err;
    }
    const p = new FacePipeline(d.manifest, e.manifest, det, emb, decoding, lm, target);
    await p.warmUp();
    return p;
  }

  get space(): string {
    const space = this.embedder.embedding?.space;
    if (!space) throw new GlanceError("MODEL_CORRUPT", `${this.embedder.name} has no embedding space in its manifest.`);
    return space;
  }

  /** cosine threshold at the given 1:1 false-accept rate (default 1e-3) */
  threshold(far: FalseAcceptRate = "1e-3"): number {
    const t = this.embedder.embedding?.thresholds[far];
    if (t === undefined) {
      throw new GlanceError("CONFIG_INVALID", `${this.embedder.name} has no threshold calibrated at FAR ${far}.`);
    }
    return t;
  }

  async detect(img: RawImage, opts: { minScore?: number } = {}): Promise<DetectedFace[]> {
    if (img.width < 1 || img.height < 1 || img.data.length !== img.width * img.height * 3) {
      throw new GlanceError(
        "IMAGE_UNREADABLE",
        `Expected ${img.width}×${img.height} RGB (${img.width * img.height * 3} bytes), got ${img.data.length} bytes; decode frames with decodeImage().`,
      );
    }
    const p = this.detector.preprocessing;
    const size = this.decoding.inputSize;
    const lb = await letterbox(img, size, p.mean[0] ?? 127.5, p.std[0] ?? 127.5);
    const input = this.detector.inputs[0]?.name ?? "input";
    const out = await this.det.run({ [input]: new ort.Tensor("float32", lb.tensor, [1, size, size, 3]) });
    const arrays: Record<string, Float32Array> = {};
    for (const [k, v] of Object.entries(out)) arrays[k] = v.data as Float32Array;
    return decodeBlazeFace(arrays, this.decoding, lb, opts.minScore ?? this.decoding.minScore);
  }

  /** the similarity transform taking frame pixels to aligned-crop pixels */
  alignmentTransform(face: DetectedFace): Affine {
    const pick = (i: number): [number, number] => {
      const p = face.landmarks[i];
      if (!p) throw new GlanceError("INTERNAL", `Face has no landmark ${i}.`);
      // detector coordinates are continuous (pixel centres at .5); the template uses pixel-centre integers
      return [p[0] - 0.5, p[1] - 0.5];
    };
    const src = [pick(this.lm.rightEye), pick(this.lm.leftEye), pick(this.lm.noseTip), pick(this.lm.mouthCentre)];
    return umeyama(src, this.target);
  }

  align(img: RawImage, face: DetectedFace): RawImage {
    // the node asks for quality() then embed() of the same face in the same frame: warp once
    const hit = this.crops.get(face);
    if (hit && hit.img === img) return hit.crop;
    const p = this.embedder.preprocessing;
    const crop = warpAffine(img, this.alignmentTransform(face), p.width, p.height);
    this.crops.set(face, { img, crop });
    return crop;
  }

  async embed(img: RawImage, face: DetectedFace): Promise<Float32Array> {
    return this.embedCrop(this.align(img, face));
  }

  /** embeds an already aligned crop of the embedder's input size (e.g. LFW's pre-aligned faces) */
  async embedCrop(crop: RawImage): Promise<Float32Array> {
    const p = this.embedder.preprocessing;
    if (crop.width !== p.width || crop.height !== p.height) {
      throw new GlanceError(
        "VALIDATION_FAILED",
        `Aligned crops must be ${p.width}×${p.height}, got ${crop.width}×${crop.height}.`,
      );
    }
    const input = this.embedder.inputs[0]?.name ?? "input";
    const output = this.embedder.outputs[0]?.name ?? "output";
    const { data, dims } = embedderInput(crop, p);
    const out = await this.emb.run({ [input]: new ort.Tensor("float32", data, dims) });
    const v = out[output]?.data as Float32Array | undefined;
    if (!v) throw new GlanceError("MODEL_SHAPE_MISMATCH", `${this.embedder.name} produced no ${output}.`);
    return l2normalise(Float32Array.from(v));
  }

  quality(img: RawImage, face: DetectedFace): FaceQuality {
    return faceQuality(img, face, this.align(img, face), this.lm);
  }

  async process(img: RawImage): Promise<EmbeddedFace[]> {
    const faces = await this.detect(img);
    const out: EmbeddedFace[] = [];
    for (const face of faces) {
      const crop = this.align(img, face);
      const embedding = await this.embedCrop(crop);
      out.push({ face, embedding, quality: faceQuality(img, face, crop, this.lm) });
    }
    return out;
  }

  async close(): Promise<void> {
    await Promise.all([this.det.release(), this.emb.release()]);
  }

  /** first runs allocate and pick kernels; do it before the first real frame */
  private async warmUp(): Promise<void> {
    const size = this.decoding.inputSize;
    const blank: RawImage = { data: new Uint8Array(size * size * 3).fill(128), width: size, height: size };
    await this.detect(blank);
    const p = this.embedder.preprocessing;
    await this.embedCrop({ data: new Uint8Array(p.width * p.height * 3).fill(128), width: p.width, height: p.height });
  }
}

export function cosine(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length)
    throw new GlanceError("VALIDATION_FAILED", `Embeddings differ in length (${a.length} vs ${b.length}).`);
  let dot = 0,
    na = 0,
    nb = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i] ?? 0;
    const y = b[i] ?? 0;
    dot += x * y;
    na += x * x;
    nb += y * y;
  }
  return na > 0 && nb > 0 ? dot / Math.sqrt(na * nb) : 0;
}

export function l2normalise(v: Float32Array): Float32Array {
  let s = 0;
  for (const x of v) s += x * x;
  const inv = s > 0 ? 1 / Math.sqrt(s) : 0;
  for (let i = 0; i < v.length; i++) v[i] = (v[i] ?? 0) * inv;
  return v;
}

/**
 * An aligned crop as the embedder's input tensor: (pixel − mean) / std per channel, in the manifest's colour order
 * and layout. The one place that does it, so that int8 calibration (quantize/demo-set.ts) sees what embed() feeds.
 */
export function embedderInput(
  crop: RawImage,
  p: ModelManifest["preprocessing"],
): { data: Float32Array; dims: number[] } {
  const n = p.width * p.height;
  const t = new Float32Array(n * 3);
  const src = crop.data;
  for (let c = 0; c < 3; c++) {
    const m = p.mean[c] ?? 127;
    const inv = 1 / (p.std[c] ?? 128);
    const ch = p.colour === "BGR" ? 2 - c : c;
    const off = c * n;
    for (let i = 0; i < n; i++) t[off + i] = ((src[i * 3 + ch] ?? 0) - m) * inv;
  }
  return p.layout === "NCHW"
    ? { data: t, dims: [1, 3, p.height, p.width] }
    : { data: toNhwc(t, n), dims: [1, p.height, p.width, 3] };
}

function toNhwc(t: Float32Array, n: number): Float32Array {
  const o = new Float32Array(t.length);
  for (let i = 0; i < n; i++) for (let c = 0; c < 3; c++) o[i * 3 + c] = t[c * n + i] ?? 0;
  return o;
}

function blazeFaceDecoding(m: ModelManifest): BlazeFaceDecoding {
  const d = m.decoding as Partial<BlazeFaceDecoding>;
  const ok =
    typeof d.inputSize === "number" &&
    Array.isArray(d.layers) &&
    d.layers.length > 0 &&
    Array.isArray(d.landmarkNames) &&
    typeof d.minScore === "number" &&
    typeof d.iouThreshold === "number";
  if (!ok)
    throw new GlanceError(
      "MODEL_CORRUPT",
      `${m.name}: manifest decoding is not a BlazeFace decoding; rebuild the models.`,
    );
  const outputs = new Set(m.outputs.map((o) => o.name));
  for (const l of d.layers ?? []) {
    if (!outputs.has(l.scores) || !outputs.has(l.boxes)) {
      throw new GlanceError(
        "MODEL_SHAPE_MISMATCH",
        `${m.name}: decoding names outputs ${l.scores}/${l.boxes} the model lacks.`,
      );
    }
  }
  return {
    anchorOffset: 0.5,
    scoreClip: 100,
    nms: "weighted",
    maxFaces: 32,
    ...d,
  } as BlazeFaceDecoding;
}

function landmarkIndex(names: string[], model: string): LandmarkIndex {
  const keys = ["rightEye", "leftEye", "noseTip", "mouthCentre", "rightEar", "leftEar"] as const;
  const idx = {} as LandmarkIndex;
  for (const k of keys) {
    const i = names.indexOf(k);
    if (i < 0) throw new GlanceError("MODEL_CORRUPT", `${model}: no ${k} among its landmarks (${names.join(", ")}).`);
    idx[k] = i;
  }
  return idx;
}

function alignmentTarget(m: ModelManifest): Array<[number, number]> {
  const pts = m.preprocessing.alignment?.points;
  if (m.preprocessing.resize !== "aligned-crop" || !pts || pts.length !== 5) {
    throw new GlanceError("MODEL_CORRUPT", `${m.name}: embedder manifest lacks a 5-point alignment template.`);
  }
  const [re, le, nose, ml, mr] = pts as [
    [number, number],
    [number, number],
    [number, number],
    [number, number],
    [number, number],
  ];
  return [re, le, nose, [(ml[0] + mr[0]) / 2, (ml[1] + mr[1]) / 2]];
}
