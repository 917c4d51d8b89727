/**
 * Op mappings the face models do not exercise (or exercise in one configuration only), checked against TF.js on a
 * hand-written graph: padding modes, resize coordinate modes, layout-sensitive reductions and reshapes on
 * channels-first values, adjoint matmuls, negative-stride slices, and weight dequantization.
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as tf from "@tensorflow/tfjs";
import { describe, expect, it } from "vitest";
import { convertTfjsModel } from "./convert.ts";
import { compareWithTfjs, noise } from "./parity.ts";
import { decodeWeight, type TfAttrValue, type TfNode, type WeightEntry } from "./tfjs-model.ts";

const s = (v: string): TfAttrValue => ({ s: Buffer.from(v).toString("base64") });
const i = (v: number): TfAttrValue => ({ i: String(v) });
const ints = (v: number[]): TfAttrValue => ({ list: { i: v.map(String) } });
const b = (v: boolean): TfAttrValue => ({ b: v });
const f32: TfAttrValue = { type: "DT_FLOAT" };

interface Const {
  name: string;
  dtype: "float32" | "int32";
  shape: number[];
  values: number[];
}

function node(name: string, op: string, input: string[] = [], attr: Record<string, TfAttrValue> = {}): TfNode {
  return { name, op, input, attr: { T: f32, ...attr } };
}

/** Write a TF.js graph model (model.json + one float32/int32 shard) to a temp dir; returns the model.json path. */
function writeGraph(nodes: TfNode[], consts: Const[]): string {
  const dir = mkdtempSync(join(tmpdir(), "glance-tfjs-"));
  const chunks: Buffer[] = [];
  for (const c of consts) {
    const arr = c.dtype === "float32" ? Float32Array.from(c.values) : Int32Array.from(c.values);
    chunks.push(Buffer.from(arr.buffer));
  }
  writeFileSync(join(dir, "w.bin"), Buffer.concat(chunks));
  const constNodes = consts.map((c) => ({
    name: c.name,
    op: "Const",
    attr: { dtype: { type: c.dtype === "float32" ? "DT_FLOAT" : "DT_INT32" } },
  }));
  const json = {
    format: "graph-model",
    modelTopology: { node: [...constNodes, ...nodes], versions: { producer: 1 } },
    weightsManifest: [
      { paths: ["w.bin"], weights: consts.map((c) => ({ name: c.name, shape: c.shape, dtype: c.dtype })) },
    ],
  };
  writeFileSync(join(dir, "model.json"), JSON.stringify(json));
  return join(dir, "model.json");
}

const conv = (name: string, input: string, filter: string, extra: Record<string, TfAttrValue> = {}) =>
  node(name, "Conv2D", [input, filter], {
    strides: ints([1, 1, 1, 1]),
    dilations: ints([1, 1, 1, 1]),
    padding: s("SAME"),
    data_format: s("NHWC"),
    ...extra,
  });

describe("op mappings beyond the face models", () => {
  it("padding, resize, pooling, layout-sensitive reductions and slicing give TF.js's results", async () => {
    const consts: Const[] = [
      { name: "k3", dtype: "float32", shape: [3, 3, 3, 4], values: [...noise(108, -0.5, 0.5, 3)] },
      { name: "kd", dtype: "float32", shape: [3, 3, 4, 2], values: [...noise(72, -0.5, 0.5, 4)] },
      { name: "explicit_pads", dtype: "int32", shape: [4, 2], values: [0, 0, 1, 2, 2, 1, 0, 0] },
      { name: "size", dtype: "int32", shape: [2], values: [13, 7] },
      { name: "axes12", dtype: "int32", shape: [2], values: [1, 2] },
      { name: "axis3", dtype: "int32", shape: [1], values: [3] },
      { name: "perm", dtype: "int32", shape: [4], values: [0, 3, 1, 2] },
      { name: "pad_value", dtype: "float32", shape: [], values: [0.5] },
      { name: "ss_begin", dtype: "int32", shape: [4], values: [0, -1, 0, 2] },
      { name: "ss_begin", dtype: "int32", shape: [4], values: [0, -1, 3, 0] },
      { name: "ss_end", dtype: "int32", shape: [4], values: [0, 0, 4, 0] },
      { name: "ss_strides", dtype: "int32", shape: [4], values: [1, -2, 1, 1] },
      { name: "sh_begin", dtype: "int32", shape: [4], values: [0, 2, 3, 1] },
      { name: "sh_end", dtype: "int32", shape: [4], values: [1, 3, 4, 3] },
      { name: "ones4", dtype: "int32", shape: [4], values: [1, 1, 1, 1] },
      { name: "w", dtype: "float32", shape: [8, 5], values: [...noise(40, -1, 1, 5)] },
      { name: "wT", dtype: "float32", shape: [5, 8], values: [...noise(40, -1, 1, 6)] },
      { name: "flat", dtype: "int32", shape: [2], values: [-1, 8] },
      { name: "pairs", dtype: "int32", shape: [2], values: [-1, 2] },
      { name: "cat_axis", dtype: "int32", shape: [], values: [3] },
      { name: "alpha", dtype: "float32", shape: [4], values: [0.1, 0.2, 0.3, 0.4] },
    ];
    const nodes: TfNode[] = [
      node("x", "Placeholder", [], {
        dtype: f32,
        shape: { shape: { dim: [{ size: "-1" }, { size: "9" }, { size: "9" }, { size: "3" }] } },
      }),
      conv("c_explicit", "x", "k3", {
        padding: s("EXPLICIT"),
        explicit_paddings: ints([0, 0, 1, 2, 2, 1, 0, 0]),
        strides: ints([1, 2, 2, 1]),
      }),
      conv("c_dilated", "x", "k3", { dilations: ints([1, 2, 2, 1]) }),
      node("relu6", "Relu6", ["c_dilated"]),
      node("leaky", "LeakyRelu", ["c_explicit"], { alpha: { f: 0.3 } }),
      node("elu", "Elu", ["c_dilated"]),
      node("prelu", "Prelu", ["c_dilated", "alpha"]),
      node("dw", "DepthwiseConv2dNative", ["relu6", "kd"], {
        strides: ints([1, 2, 2, 1]),
        dilations: ints([1, 1, 1, 1]),
        padding: s("VALID"),
        data_format: s("NHWC"),
      }),
      node("mirror", "MirrorPad", ["relu6", "explicit_pads"], { mode: s("REFLECT") }),
      node("padv2", "PadV2", ["leaky", "explicit_pads", "pad_value"]),
      node("resize_asym", "ResizeBilinear", ["relu6", "size"], {
        align_corners: b(false),
        half_pixel_centers: b(false),
      }),
      node("resize_half", "ResizeBilinear", ["relu6", "size"], {
        align_corners: b(false),
        half_pixel_centers: b(true),
      }),
      node("resize_corners", "ResizeBilinear", ["relu6", "size"], {
        align_corners: b(true),
        half_pixel_centers: b(false),
      }),
      node("nearest_half", "ResizeNearestNeighbor", ["relu6", "size"], {
        align_corners: b(false),
        half_pixel_centers: b(true),
      }),
      node("nearest", "ResizeNearestNeighbor", ["relu6", "size"], {
        align_corners: b(false),
        half_pixel_centers: b(false),
      }),
      node("avg_same", "AvgPool", ["elu"], {
        ksize: ints([1, 3, 3, 1]),
        strides: ints([1, 2, 2, 1]),
        padding: s("SAME"),
        data_format: s("NHWC"),
      }),
      node("max_same", "MaxPool", ["elu"], {
        ksize: ints([1, 3, 3, 1]),
        strides: ints([1, 2, 2, 1]),
        padding: s("SAME"),
        data_format: s("NHWC"),
      }),
      node("softmax", "Softmax", ["prelu"]),
      node("transposed", "Transpose", ["prelu", "perm"], { Tperm: { type: "DT_INT32" } }),
      node("mean_keep", "Mean", ["prelu", "axes12"], { keep_dims: b(true) }),
      node("squeezed", "Squeeze", ["mean_keep"], { squeeze_dims: ints([1, 2]) }),
      node("max_c", "Max", ["prelu", "axis3"], { keep_dims: b(false) }),
      // tfjs 4.22 misplaces shrink_axis_mask when begin/end masks are set, so the two are tested apart
      node("sliced", "StridedSlice", ["prelu", "ss_begin", "ss_end", "ss_strides"], {
        begin_mask: i(0b1001),
        end_mask: i(0b1011),
        ellipsis_mask: i(0),
        new_axis_mask: i(0),
        shrink_axis_mask: i(0),
        Index: { type: "DT_INT32" },
      }),
      node("shrunk", "StridedSlice", ["prelu", "sh_begin", "sh_end", "ones4"], {
        begin_mask: i(0),
        end_mask: i(0),
        ellipsis_mask: i(0),
        new_axis_mask: i(0),
        shrink_axis_mask: i(0b0110),
        Index: { type: "DT_INT32" },
      }),
      node("concat", "ConcatV2", ["relu6", "elu", "cat_axis"], { N: i(2) }),
      node("flattened", "Reshape", ["squeezed", "pairs"]),
      node("head_in", "Reshape", ["dw", "flat"]),
      node("matmul", "MatMul", ["head_in", "w"], { transpose_a: b(false), transpose_b: b(false) }),
      node("matmul_tb", "MatMul", ["head_in", "wT"], { transpose_a: b(false), transpose_b: b(true) }),
      node("matmul_adj", "BatchMatMulV2", ["head_in", "wT"], { adj_x: b(false), adj_y: b(true) }),
    ];
    const outputs = [
      "mirror",
      "padv2",
      "resize_asym",
      "resize_half",
      "resize_corners",
      "nearest_half",
      "nearest",
      "avg_same",
      "max_same",
      "softmax",
      "transposed",
      "squeezed",
      "max_c",
      "sliced",
      "shrunk",
      "concat",
      "flattened",
      "matmul",
      "matmul_tb",
      "matmul_adj",
      "dw",
      "prelu",
    ];
    const path = writeGraph(nodes, consts);
    const model = await convertTfjsModel(path, { outputs });
    const diffs = await compareWithTfjs(path, model, [{ label: "noise", data: noise(9 * 9 * 3, -1, 1, 11) }]);
    const off = (diffs.noise ?? []).filter((d) => !(d.maxAbsRef > 0 && d.scaledDiff < 1e-5));
    expect(off.map((d) => `${d.output} max|Δ|=${d.maxAbsDiff} max|ref|=${d.maxAbsRef}`)).toEqual([]);
    expect(diffs.noise?.length).toBe(outputs.length);
  });

  it("weights quantized to uint8, uint16 or float16 decode as TF.js decodes them", async () => {
    const entries: WeightEntry[] = [
      { name: "u8", shape: [3, 5], dtype: "float32", quantization: { dtype: "uint8", scale: 0.013, min: -1.7 } },
      { name: "u16", shape: [7], dtype: "float32", quantization: { dtype: "uint16", scale: 0.0007, min: 2.5 } },
      { name: "f16", shape: [2, 4], dtype: "float32", quantization: { dtype: "float16" } },
      { name: "i8", shape: [6], dtype: "int32", quantization: { dtype: "uint8", scale: 1, min: -3 } },
    ];
    const bytes = [15, 14, 16, 6];
    const buffers = bytes.map((n, k) => Uint8Array.from(noise(n, 0, 255, 20 + k), (v) => Math.floor(v)));
    // keep the float16 bytes finite: clear the top exponent bit of every high byte
    const f16 = buffers[2] as Uint8Array;
    for (let j = 1; j < f16.length; j += 2) f16[j] = (f16[j] ?? 0) & 0xbf;
    const all = Buffer.concat(buffers);
    const ref = tf.io.decodeWeights(
      all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength),
      entries as tf.io.WeightsManifestEntry[],
    );
    for (const [k, e] of entries.entries()) {
      const ours = decodeWeight(e, buffers[k] as Uint8Array);
      const theirs = await (ref[e.name] as tf.Tensor).data();
      expect(Array.from(ours.data), e.name).toEqual(Array.from(theirs));
      expect(ours.dtype).toBe(e.dtype);
    }
  });
});
