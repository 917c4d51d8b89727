/**
 * dlib's face recognition ResNet (dlib_face_recognition_resnet_model_v1, Davis King) as an ONNX graph, built from
 * the TF.js weights that `@vladmandic/face-api` ships (model/face_recognition_model-weights_manifest.json + .bin).
 *
 * face-api does not ship a graph: it runs the network with tfjs-core ops in src/faceRecognitionNet/. This file
 * writes the same network as ONNX, op for op:
 *   conv 7×7/2 valid → max pool 3×3/2 valid → 3 × residual(32) → down(64) + 3 × residual(64) → down(128) +
 *   2 × residual(128) → down(256) + 2 × residual(256) → down(256) → global mean → fc 256×128.
 * Every conv is conv + bias, then a per-channel affine "scale layer" (dlib's affine, i.e. batch norm folded);
 * both are folded into the ONNX Conv (W·s, b·s + β), which is exact up to float rounding.
 * A "down" block adds, as its shortcut, a 2×2/2 average pool of its input, zero-padded in channels, and pads its
 * conv branch with a zero row/column when the pool came out one larger (odd sizes: 8 → 3 vs 4, 4 → 1 vs 2).
 */
import { readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import {
  DataType,
  encodeModel,
  intAttr,
  intsAttr,
  makeNode,
  makeTensor,
  makeValueInfo,
  type NodeProto,
  onnx,
  type TensorProto,
} from "../onnx/proto.ts";

export const FACE_API_RECOGNITION_MANIFEST = "model/face_recognition_model-weights_manifest.json";
export const DLIB_INPUT_SIZE = 150;
export const DLIB_DIM = 128;
/** face-api's preprocessing: (RGB - mean) / 255 (src/faceRecognitionNet/FaceRecognitionNet.ts) */
export const DLIB_MEAN_RGB: [number, number, number] = [122.782, 117.001, 104.298];
export const DLIB_STD = 255;

interface WeightEntry {
  name: string;
  shape: number[];
  dtype: string;
  quantization?: { dtype: "uint8" | "uint16" | "float16"; scale?: number; min?: number };
}

interface WeightGroup {
  paths: string[];
  weights: WeightEntry[];
}

export interface Weight {
  shape: number[];
  data: Float32Array;
}

/** Reads a TF.js weights manifest and its shards into float32 tensors (uint8/uint16 affine-dequantized). */
export async function readTfjsWeights(manifestPath: string): Promise<Map<string, Weight>> {
  const groups = JSON.parse(await readFile(manifestPath, "utf8")) as WeightGroup[];
  const out = new Map<string, Weight>();
  for (const g of groups) {
    const shards = await Promise.all(g.paths.map((p) => readFile(join(dirname(manifestPath), p))));
    const buf = Buffer.concat(shards);
    let off = 0;
    for (const w of g.weights) {
      const n = w.shape.reduce((a, b) => a * b, 1);
      const q = w.quantization;
      const data = new Float32Array(n);
      if (!q) {
        if (w.dtype !== "float32") throw new Error(`${w.name}: unsupported dtype ${w.dtype}`);
        for (let i = 0; i < n; i++) data[i] = buf.readFloatLE(off + 4 * i);
        off += 4 * n;
      } else if (q.dtype === "uint8" || q.dtype === "uint16") {
        const bytes = q.dtype === "uint8" ? 1 : 2;
        const scale = q.scale ?? 1;
        const min = q.min ?? 0;
        for (let i = 0; i < n; i++) {
          const v = bytes === 1 ? (buf[off + i] ?? 0) : buf.readUInt16LE(off + 2 * i);
          data[i] = min + scale * v;
        }
        off += bytes * n;
      } else {
        throw new Error(`${w.name}: unsupported quantization ${q.dtype}`);
      }
      out.set(w.name, { shape: w.shape, data });
    }
    if (off !== buf.length) throw new Error(`${manifestPath}: read ${off} of ${buf.length} shard bytes`);
  }
  return out;
}

const BLOCKS: Array<{ name: string; down: boolean }> = [
  { name: "conv32_1", down: false },
  { name: "conv32_2", down: false },
  { name: "conv32_3", down: false },
  { name: "conv64_down", down: true },
  { name: "conv64_1", down: false },
  { name: "conv64_2", down: false },
  { name: "conv64_3", down: false },
  { name: "conv128_down", down: true },
  { name: "conv128_1", down: false },
  { name: "conv128_2", down: false },
  { name: "conv256_down", down: true },
  { name: "conv256_1", down: false },
  { name: "conv256_2", down: false },
  { name: "conv256_down_out", down: true },
];

export const DLIB_INPUT = "input";
export const DLIB_OUTPUT = "embedding";

/** The ONNX model (opset 13, NCHW input [1, 3, 150, 150] already normalised, output [1, 128]). */
export function buildDlibResnetOnnx(weights: Map<string, Weight>, docString = ""): Uint8Array {
  const nodes: NodeProto[] = [];
  const inits: TensorProto[] = [];
  const get = (name: string): Weight => {
    const w = weights.get(name);
    if (!w) throw new Error(`face-api weights lack ${name}`);
    return w;
  };
  const int64 = (name: string, v: number[]) => {
    inits.push(makeTensor(name, DataType.INT64, [v.length], v));
    return name;
  };

  /** conv + bias + scale layer folded into one Conv; returns [output name, output spatial size] */
  const conv = (x: string, prefix: string, stride: number, same: boolean, relu: boolean, out: string): string => {
    const f = get(`${prefix}/conv/filters`);
    const [kh, kw, cin, cout] = f.shape as [number, number, number, number];
    const b = get(`${prefix}/conv/bias`).data;
    const s = get(`${prefix}/scale/weights`).data;
    const beta = get(`${prefix}/scale/biases`).data;
    const w = new Float32Array(cout * cin * kh * kw);
    for (let y = 0; y < kh; y++)
      for (let xx = 0; xx < kw; xx++)
        for (let i = 0; i < cin; i++)
          for (let o = 0; o < cout; o++)
            w[((o * cin + i) * kh + y) * kw + xx] = (f.data[((y * kw + xx) * cin + i) * cout + o] ?? 0) * (s[o] ?? 0);
    const bias = Float32Array.from({ length: cout }, (_, o) => (b[o] ?? 0) * (s[o] ?? 0) + (beta[o] ?? 0));
    inits.push(makeTensor(`${prefix}/W`, DataType.FLOAT, [cout, cin, kh, kw], w));
    inits.push(makeTensor(`${prefix}/B`, DataType.FLOAT, [cout], bias));
    // TF "same" with stride 1 and odd kernels pads symmetrically
    const pad = same ? (kh - 1) / 2 : 0;
    const y = relu ? `${out}/pre` : out;
    nodes.push(
      makeNode("Conv", [x, `${prefix}/W`, `${prefix}/B`], [y], {
        name: `${prefix}/conv`,
        attributes: [
          intsAttr("kernel_shape", [kh, kw]),
          intsAttr("strides", [stride, stride]),
          intsAttr("pads", [pad, pad, pad, pad]),
        ],
      }),
    );
    if (relu) nodes.push(makeNode("Relu", [y], [out]));
    return out;
  };

  let x = DLIB_INPUT;
  let size = DLIB_INPUT_SIZE;
  let channels = 3;
  x = conv(x, "conv32_down", 2, false, true, "conv32_down");
  size = Math.floor((size - 7) / 2) + 1;
  channels = 32;
  nodes.push(
    makeNode("MaxPool", [x], ["pool"], {
      attributes: [intsAttr("kernel_shape", [3, 3]), intsAttr("strides", [2, 2])],
    }),
  );
  x = "pool";
  size = Math.floor((size - 3) / 2) + 1;

  for (const blk of BLOCKS) {
    const cout = get(`${blk.name}/conv2/conv/filters`).shape[3] ?? channels;
    if (!blk.down) {
      const a = conv(x, `${blk.name}/conv1`, 1, true, true, `${blk.name}/a`);
      const c = conv(a, `${blk.name}/conv2`, 1, true, false, `${blk.name}/b`);
      nodes.push(makeNode("Add", [c, x], [`${blk.name}/sum`]));
      nodes.push(makeNode("Relu", [`${blk.name}/sum`], [`${blk.name}/out`]));
      x = `${blk.name}/out`;
      continue;
    }
    const a = conv(x, `${blk.name}/conv1`, 2, false, true, `${blk.name}/a`);
    let c = conv(a, `${blk.name}/conv2`, 1, true, false, `${blk.name}/b`);
    const convSize = Math.floor((size - 3) / 2) + 1;
    const poolSize = Math.floor((size - 2) / 2) + 1;
    nodes.push(
      makeNode("AveragePool", [x], [`${blk.name}/avg`], {
        attributes: [intsAttr("kernel_shape", [2, 2]), intsAttr("strides", [2, 2])],
      }),
    );
    let shortcut = `${blk.name}/avg`;
    if (cout !== channels) {
      // face-api concatenates zeros after the pooled channels
      const pads = int64(`${blk.name}/cpad`, [0, 0, 0, 0, 0, cout - channels, 0, 0]);
      nodes.push(makeNode("Pad", [shortcut, pads], [`${blk.name}/avgpad`]));
      shortcut = `${blk.name}/avgpad`;
    }
    if (poolSize !== convSize) {
      // face-api appends one zero row (bottom) and one zero column (right) to the conv branch
      const d = poolSize - convSize;
      const pads = int64(`${blk.name}/spad`, [0, 0, 0, 0, 0, 0, d, d]);
      nodes.push(makeNode("Pad", [c, pads], [`${blk.name}/bpad`]));
      c = `${blk.name}/bpad`;
    }
    nodes.push(makeNode("Add", [shortcut, c], [`${blk.name}/sum`]));
    nodes.push(makeNode("Relu", [`${blk.name}/sum`], [`${blk.name}/out`]));
    x = `${blk.name}/out`;
    size = poolSize;
    channels = cout;
  }

  nodes.push(makeNode("GlobalAveragePool", [x], ["gap"]));
  nodes.push(makeNode("Flatten", ["gap"], ["gap/flat"], { attributes: [intAttr("axis", 1)] }));
  const fc = get("fc");
  inits.push(makeTensor("fc", DataType.FLOAT, fc.shape, fc.data));
  nodes.push(makeNode("MatMul", ["gap/flat", "fc"], [DLIB_OUTPUT]));

  const graph = onnx.GraphProto.create({
    name: "dlib_face_recognition_resnet_model_v1",
    node: nodes,
    initializer: inits,
    input: [makeValueInfo(DLIB_INPUT, DataType.FLOAT, [1, 3, DLIB_INPUT_SIZE, DLIB_INPUT_SIZE])],
    output: [makeValueInfo(DLIB_OUTPUT, DataType.FLOAT, [1, fc.shape[1] ?? DLIB_DIM])],
  });
  return encodeModel(
    onnx.ModelProto.create({
      irVersion: 7,
      opsetImport: [{ domain: "", version: 13 }],
      producerName: "glance-models/dlib",
      docString,
      graph,
    }),
  );
}

/** face-api's package folder (or an extracted npm tarball's package/) → ONNX bytes */
export async function dlibOnnxFromFaceApi(packageDir: string): Promise<Uint8Array> {
  const weights = await readTfjsWeights(join(packageDir, FACE_API_RECOGNITION_MANIFEST));
  return buildDlibResnetOnnx(
    weights,
    "dlib_face_recognition_resnet_model_v1 (Davis King, public domain) from @vladmandic/face-api's uint8-quantized TF.js weights",
  );
}
