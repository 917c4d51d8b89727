/**
 * The state of one conversion: the ONNX nodes and initializers emitted so far, and for every TF tensor the ONNX
 * value that holds it.
 *
 * Layout: TF graphs are NHWC, ONNX convolutions are NCHW. Rather than wrapping every convolution in a pair of
 * Transposes, each value remembers whether it is held in TF order ("tf") or channels-first ("nchw", rank 4 only).
 * Convolutions, pools and layout-agnostic ops (element-wise, Pad, Concat, reductions with remapped axes) keep values
 * channels-first; an op that needs TF order (Reshape, Softmax, StridedSlice, graph outputs...) asks for it and gets
 * one Transpose, cached per value. A MobileNet thus carries one Transpose at its input and one before its head.
 */
import type { onnx as O } from "onnx-proto";
import { DataType, makeNode, makeTensor, onnx } from "../onnx/proto.ts";
import type { ConstTensor } from "./tfjs-model.ts";

export type ElemType = "float32" | "int32" | "int64" | "bool";
export type Layout = "tf" | "nchw";

export interface Value {
  /** ONNX name holding the tensor in `layout`; absent for a constant not yet emitted */
  name?: string;
  layout: Layout;
  /** rank in TF terms, when known */
  rank?: number;
  dtype: ElemType;
  /** the tensor's value in TF layout, when it is a graph constant (weights, shapes, axes) */
  constant?: ConstTensor;
  /** static length of a 1-D value (a shape being computed), when known */
  len?: number;
  /** cached conversions */
  tfName?: string;
  nchwName?: string;
}

export const TO_NCHW = [0, 3, 1, 2] as const;
export const TO_NHWC = [0, 2, 3, 1] as const;

const elemDataType: Record<ElemType, number> = {
  float32: DataType.FLOAT,
  int32: DataType.INT32,
  int64: DataType.INT64,
  bool: DataType.BOOL,
};

export function dataTypeOf(t: ElemType): number {
  return elemDataType[t];
}

export function tfDtype(type: string | undefined): ElemType {
  switch (type) {
    case undefined:
    case "DT_FLOAT":
      return "float32";
    case "DT_INT32":
      return "int32";
    case "DT_INT64":
      return "int64";
    case "DT_BOOL":
      return "bool";
    default:
      throw new Error(`TF dtype ${type} is not supported`);
  }
}

/** Transpose a row-major constant by `perm` (output dim k = input dim perm[k]). */
export function transposeConst(c: ConstTensor, perm: readonly number[]): ConstTensor {
  const rank = c.shape.length;
  if (perm.length !== rank) throw new Error(`transpose: perm [${perm}] for rank ${rank}`);
  const outShape = perm.map((p) => c.shape[p] ?? 0);
  const inStrides = new Array<number>(rank).fill(1);
  for (let d = rank - 2; d >= 0; d--) inStrides[d] = (inStrides[d + 1] ?? 1) * (c.shape[d + 1] ?? 1);
  const strideOut = perm.map((p) => inStrides[p] ?? 0);
  const n = c.data.length;
  const out = new (c.data.constructor as new (n: number) => Float32Array | Int32Array | Uint8Array)(n);
  const idx = new Array<number>(rank).fill(0);
  let src = 0;
  for (let i = 0; i < n; i++) {
    out[i] = c.data[src] ?? 0;
    for (let d = rank - 1; d >= 0; d--) {
      idx[d] = (idx[d] ?? 0) + 1;
      src += strideOut[d] ?? 0;
      if ((idx[d] ?? 0) < (outShape[d] ?? 0)) break;
      src -= (strideOut[d] ?? 0) * (outShape[d] ?? 0);
      idx[d] = 0;
    }
  }
  return { dtype: c.dtype, shape: outShape, data: out };
}

/** Where TF axis `a` of a rank-4 tensor sits when the tensor is held channels-first. */
export function nchwAxis(a: number): number {
  return TO_NCHW.indexOf((((a % 4) + 4) % 4) as 0 | 1 | 2 | 3);
}

export class ConversionContext {
  readonly nodes: O.NodeProto[] = [];
  readonly initializers: O.TensorProto[] = [];
  private readonly used = new Set<string>();
  private readonly int64Cache = new Map<string, string>();

  unique(stem: string): string {
    let name = stem;
    for (let i = 1; this.used.has(name); i++) name = `${stem}_${i}`;
    this.used.add(name);
    return name;
  }

  reserve(name: string): void {
    this.used.add(name);
  }

  /** Emit one node; returns its output names. */
  add(
    op: string,
    inputs: readonly string[],
    stem: string,
    attributes: O.IAttributeProto[] = [],
    outputCount = 1,
  ): string[] {
    const outputs = Array.from({ length: outputCount }, (_, i) => this.unique(i === 0 ? stem : `${stem}:${i}`));
    this.nodes.push(makeNode(op, inputs, outputs, { name: this.unique(`${stem}/${op}`), attributes }));
    return outputs;
  }

  add1(op: string, inputs: readonly string[], stem: string, attributes: O.IAttributeProto[] = []): string {
    return this.add(op, inputs, stem, attributes)[0] as string;
  }

  initializer(c: ConstTensor, stem: string): string {
    const name = this.unique(stem);
    if (c.dtype === "bool") {
      this.initializers.push(
        onnx.TensorProto.create({ name, dataType: DataType.BOOL, dims: c.shape, rawData: Uint8Array.from(c.data) }),
      );
    } else {
      const dt = c.dtype === "float32" ? DataType.FLOAT : DataType.INT32;
      this.initializers.push(makeTensor(name, dt, c.shape, c.data as Float32Array | Int32Array));
    }
    return name;
  }

  float(values: readonly number[] | Float32Array, shape: readonly number[], stem: string): string {
    const name = this.unique(stem);
    this.initializers.push(makeTensor(name, DataType.FLOAT, shape, Float32Array.from(values)));
    return name;
  }

  /** An int64 constant (shapes, axes, pads), shared between nodes that need the same one. */
  int64(values: readonly number[], shape: readonly number[] = [values.length]): string {
    const key = `${shape.join(",")}|${values.join(",")}`;
    const hit = this.int64Cache.get(key);
    if (hit) return hit;
    const name = this.unique(`const_i64_${this.int64Cache.size}`);
    this.initializers.push(
      makeTensor(
        name,
        DataType.INT64,
        shape,
        BigInt64Array.from(values, (v) => BigInt(v)),
      ),
    );
    this.int64Cache.set(key, name);
    return name;
  }

  /** The ONNX name of `v` in TF layout, emitting a constant or a Transpose back from NCHW when needed. */
  tf(v: Value, stem = "value"): string {
    if (v.layout === "tf") {
      if (v.name) return v.name;
      if (!v.constant) throw new Error(`value ${stem} has neither a name nor a constant`);
      v.name = this.initializer(v.constant, stem);
      return v.name;
    }
    if (!v.tfName) v.tfName = this.add1("Transpose", [v.name as string], `${v.name}/to_nhwc`, [perm(TO_NHWC)]);
    return v.tfName;
  }

  /** The ONNX name of rank-4 `v` in NCHW layout. */
  nchw(v: Value, stem = "value"): string {
    if (v.layout === "nchw") return v.name as string;
    if (v.rank !== 4) throw new Error(`${stem}: NCHW wanted for a value of rank ${v.rank ?? "unknown"}`);
    if (v.constant) {
      if (!v.nchwName) v.nchwName = this.initializer(transposeConst(v.constant, TO_NCHW), `${stem}_nchw`);
      return v.nchwName;
    }
    if (!v.nchwName) v.nchwName = this.add1("Transpose", [this.tf(v, stem)], `${v.name}/to_nchw`, [perm(TO_NCHW)]);
    return v.nchwName;
  }

  /**
   * `v` as an operand of an element-wise op whose other operand is channels-first: a rank-4 value is transposed,
   * a constant of lower rank is broadcast-aligned to rank 4 first (a per-channel [C] becomes [1,C,1,1]).
   */
  nchwOperand(v: Value, stem: string): string {
    if (v.layout === "nchw") return v.name as string;
    if (v.constant) {
      const c = v.constant;
      if (c.shape.length === 0 || c.data.length === 1) return this.tf(v, stem);
      if (!v.nchwName) {
        const shape4 = [...new Array<number>(4 - c.shape.length).fill(1), ...c.shape];
        v.nchwName = this.initializer(transposeConst({ ...c, shape: shape4 }, TO_NCHW), `${stem}_nchw`);
      }
      return v.nchwName;
    }
    return this.nchw(v, stem);
  }
}

export function perm(p: readonly number[]) {
  return onnx.AttributeProto.create({ name: "perm", type: onnx.AttributeProto.AttributeType.INTS, ints: [...p] });
}
