/**
 * ONNX protobuf read/write helpers over `onnx-proto` (protobufjs static code, ONNX 1.10 schema).
 *
 * Why by hand and not through a Python toolchain: the models workspace must build, quantize and convert models with
 * nothing but Node at install time. Everything here works on the decoded `onnx.ModelProto` object graph; int64 fields
 * arrive as `Long` objects from protobufjs and are normalised with `toNumber`.
 */
import { readFileSync, writeFileSync } from "node:fs";
import type { onnx as O } from "onnx-proto";
import onnxProto from "onnx-proto";

export const { onnx } = onnxProto;

export type ModelProto = O.ModelProto;
export type GraphProto = O.IGraphProto;
export type NodeProto = O.INodeProto;
export type TensorProto = O.ITensorProto;
export type ValueInfoProto = O.IValueInfoProto;
export type AttributeProto = O.IAttributeProto;

export const DataType = onnx.TensorProto.DataType;
export type DataType = O.TensorProto.DataType;
export const AttributeType = onnx.AttributeProto.AttributeType;

/** A protobufjs int64: a number or a `Long`. */
type Int64 = number | { toNumber(): number };

export function toNumber(v: Int64 | null | undefined): number {
  if (v === null || v === undefined) return 0;
  return typeof v === "number" ? v : v.toNumber();
}

export function decodeModel(bytes: Uint8Array): ModelProto {
  return onnx.ModelProto.decode(bytes);
}

export function encodeModel(model: O.IModelProto): Uint8Array {
  return onnx.ModelProto.encode(model).finish();
}

export function readModel(path: string): ModelProto {
  return decodeModel(readFileSync(path));
}

export function writeModel(path: string, model: O.IModelProto): Uint8Array {
  const bytes = encodeModel(model);
  writeFileSync(path, bytes);
  return bytes;
}

/** A deep copy, so that a transform never edits the model it was given. */
export function cloneModel(model: O.IModelProto): ModelProto {
  return decodeModel(encodeModel(model));
}

export function requireGraph(model: O.IModelProto): GraphProto {
  if (!model.graph) throw new Error("ONNX model has no graph");
  return model.graph;
}

/** The opset version of the default ("" or "ai.onnx") domain. */
export function opsetVersion(model: O.IModelProto): number {
  const entry = (model.opsetImport ?? []).find((o) => !o.domain || o.domain === "ai.onnx");
  return toNumber(entry?.version);
}

/**
 * Raise the default-domain opset. Callers must know the ops in the graph did not change meaning between the two
 * versions (e.g. Conv/Add/PRelu/Reshape 9 → 13); `opsChangedBetween` lists the ones we know do.
 */
export function setOpsetVersion(model: O.IModelProto, version: number): void {
  const imports = model.opsetImport ?? [];
  const entry = imports.find((o) => !o.domain || o.domain === "ai.onnx");
  if (entry) entry.version = version;
  else imports.push({ domain: "", version });
  model.opsetImport = imports;
  // IR 7 is the lowest IR that opset 13 allows; keep newer IRs as they are.
  if (toNumber(model.irVersion) < 7) model.irVersion = 7;
}

/** Ops whose signature or semantics changed between opset 9 and 13 in a way that breaks a plain version bump. */
export const opsChangedBefore13 = new Set([
  "Upsample",
  "Resize",
  "Slice",
  "Split",
  "Squeeze",
  "Unsqueeze",
  "ReduceSum",
  "Pad",
  "Clip",
  "TopK",
  "Scatter",
  "BatchNormalization",
  "Dropout",
]);

export function dims(t: O.ITensorProto): number[] {
  return (t.dims ?? []).map((d) => toNumber(d));
}

export function elementCount(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function rawView(t: O.ITensorProto): DataView | undefined {
  const raw = t.rawData;
  if (!raw || raw.length === 0) return undefined;
  return new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
}

/** Float values of a FLOAT tensor, from raw_data (little-endian) or float_data. */
export function tensorToFloat32(t: O.ITensorProto): Float32Array {
  if (t.dataType !== DataType.FLOAT) {
    throw new Error(`tensor ${t.name}: expected FLOAT, got data type ${t.dataType}`);
  }
  const n = elementCount(dims(t));
  const view = rawView(t);
  if (view) {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = view.getFloat32(i * 4, true);
    return out;
  }
  return Float32Array.from(t.floatData ?? []);
}

/** Integer values of an INT64/INT32/INT8/UINT8 tensor as plain numbers. */
export function tensorToInts(t: O.ITensorProto): number[] {
  const n = elementCount(dims(t));
  const view = rawView(t);
  const out: number[] = [];
  switch (t.dataType) {
    case DataType.INT64:
      if (view) for (let i = 0; i < n; i++) out.push(Number(view.getBigInt64(i * 8, true)));
      else for (const v of t.int64Data ?? []) out.push(toNumber(v));
      return out;
    case DataType.INT32:
      if (view) for (let i = 0; i < n; i++) out.push(view.getInt32(i * 4, true));
      else out.push(...(t.int32Data ?? []));
      return out;
    case DataType.INT8:
      if (view) for (let i = 0; i < n; i++) out.push(view.getInt8(i));
      else out.push(...(t.int32Data ?? []));
      return out;
    case DataType.UINT8:
      if (view) for (let i = 0; i < n; i++) out.push(view.getUint8(i));
      else out.push(...(t.int32Data ?? []));
      return out;
    default:
      throw new Error(`tensor ${t.name}: data type ${t.dataType} is not an integer type`);
  }
}

/** Build a tensor with raw_data from a typed array (the compact form ORT and onnx both prefer). */
export function makeTensor(
  name: string,
  dataType: DataType,
  shape: readonly number[],
  values: Float32Array | Int8Array | Uint8Array | Int32Array | BigInt64Array | readonly number[],
): O.TensorProto {
  const n = elementCount(shape);
  if (values.length !== n) throw new Error(`tensor ${name}: ${values.length} values for shape [${shape.join(",")}]`);
  let raw: Uint8Array;
  switch (dataType) {
    case DataType.FLOAT: {
      const a = values instanceof Float32Array ? values : Float32Array.from(values as ArrayLike<number>);
      raw = new Uint8Array(a.buffer.slice(a.byteOffset, a.byteOffset + a.byteLength));
      break;
    }
    case DataType.INT8: {
      const a = values instanceof Int8Array ? values : Int8Array.from(values as ArrayLike<number>);
      raw = new Uint8Array(a.buffer.slice(a.byteOffset, a.byteOffset + a.byteLength));
      break;
    }
    case DataType.UINT8:
      raw = Uint8Array.from(values as ArrayLike<number>);
      break;
    case DataType.INT32: {
      const a = values instanceof Int32Array ? values : Int32Array.from(values as ArrayLike<number>);
      raw = new Uint8Array(a.buffer.slice(a.byteOffset, a.byteOffset + a.byteLength));
      break;
    }
    case DataType.INT64: {
      const a =
        values instanceof BigInt64Array
          ? values
          : BigInt64Array.from(Array.from(values as ArrayLike<number | bigint>, (v) => BigInt(v)));
      raw = new Uint8Array(a.buffer.slice(a.byteOffset, a.byteOffset + a.byteLength));
      break;
    }
    default:
      throw new Error(`makeTensor: data type ${dataType} not supported`);
  }
  // little-endian hosts only (x64, arm64): typed arrays are already in ONNX's raw_data byte order
  return onnx.TensorProto.create({ name, dataType, dims: [...shape], rawData: raw });
}

export function makeNode(
  opType: string,
  inputs: readonly string[],
  outputs: readonly string[],
  opts: { name?: string; domain?: string; attributes?: O.IAttributeProto[] } = {},
): O.NodeProto {
  return onnx.NodeProto.create({
    opType,
    input: [...inputs],
    output: [...outputs],
    name: opts.name ?? outputs[0] ?? opType,
    domain: opts.domain ?? "",
    attribute: opts.attributes ?? [],
  });
}

export function intAttr(name: string, i: number): O.AttributeProto {
  return onnx.AttributeProto.create({ name, type: AttributeType.INT, i });
}
export function intsAttr(name: string, ints: readonly number[]): O.AttributeProto {
  return onnx.AttributeProto.create({ name, type: AttributeType.INTS, ints: [...ints] });
}
export function floatAttr(name: string, f: number): O.AttributeProto {
  return onnx.AttributeProto.create({ name, type: AttributeType.FLOAT, f });
}
export function floatsAttr(name: string, floats: readonly number[]): O.AttributeProto {
  return onnx.AttributeProto.create({ name, type: AttributeType.FLOATS, floats: [...floats] });
}
export function stringAttr(name: string, s: string): O.AttributeProto {
  return onnx.AttributeProto.create({ name, type: AttributeType.STRING, s: new TextEncoder().encode(s) });
}
export function tensorAttr(name: string, t: O.ITensorProto): O.AttributeProto {
  return onnx.AttributeProto.create({ name, type: AttributeType.TENSOR, t });
}

/** Read an attribute of a node by name (int, float, ints, floats, string or tensor), or undefined. */
export function getAttr(node: O.INodeProto, name: string): O.IAttributeProto | undefined {
  return (node.attribute ?? []).find((a) => a.name === name);
}
export function getIntAttr(node: O.INodeProto, name: string, fallback: number): number {
  const a = getAttr(node, name);
  return a ? toNumber(a.i) : fallback;
}
export function getIntsAttr(node: O.INodeProto, name: string): number[] | undefined {
  const a = getAttr(node, name);
  return a ? (a.ints ?? []).map((v) => toNumber(v)) : undefined;
}

/** A tensor value-info with a fixed or symbolic shape (strings are dim_params). */
export function makeValueInfo(
  name: string,
  elemType: DataType,
  shape?: readonly (number | string)[],
): O.ValueInfoProto {
  return onnx.ValueInfoProto.create({
    name,
    type: {
      tensorType: {
        elemType,
        shape: shape
          ? { dim: shape.map((d) => (typeof d === "number" ? { dimValue: d } : { dimParam: d })) }
          : undefined,
      },
    },
  });
}

/** Shape of a value-info: numbers for fixed dims, strings for symbolic ones, "?" for unknown. */
export function valueInfoShape(v: O.IValueInfoProto): (number | string)[] {
  return (v.type?.tensorType?.shape?.dim ?? []).map((d) =>
    d.dimParam ? d.dimParam : d.dimValue !== null && d.dimValue !== undefined ? toNumber(d.dimValue) : "?",
  );
}

export function initializerMap(graph: GraphProto): Map<string, O.ITensorProto> {
  const m = new Map<string, O.ITensorProto>();
  for (const t of graph.initializer ?? []) if (t.name) m.set(t.name, t);
  return m;
}

/** Real graph inputs: inputs that are not also initializers (IR < 4 models list weights as inputs too). */
export function graphInputs(graph: GraphProto): O.IValueInfoProto[] {
  const inits = initializerMap(graph);
  return (graph.input ?? []).filter((i) => !inits.has(i.name ?? ""));
}

/** Map from tensor name to the nodes that consume it. */
export function consumers(graph: GraphProto): Map<string, O.INodeProto[]> {
  const m = new Map<string, O.INodeProto[]>();
  for (const n of graph.node ?? []) {
    for (const i of n.input ?? []) {
      if (!i) continue;
      const list = m.get(i) ?? [];
      list.push(n);
      m.set(i, list);
    }
  }
  return m;
}

/** Map from tensor name to the node that produces it. */
export function producers(graph: GraphProto): Map<string, O.INodeProto> {
  const m = new Map<string, O.INodeProto>();
  for (const n of graph.node ?? []) for (const o of n.output ?? []) if (o) m.set(o, n);
  return m;
}

/** Names of all float activations produced by nodes (candidates to expose or quantize). */
export function nodeOutputNames(graph: GraphProto): string[] {
  const out: string[] = [];
  for (const n of graph.node ?? []) for (const o of n.output ?? []) if (o) out.push(o);
  return out;
}

/**
 * A copy of the model whose graph also outputs the given intermediate tensors (for calibration or debugging).
 * Their types are declared FLOAT with unknown shape, which ORT accepts for outputs.
 */
export function withExtraOutputs(model: O.IModelProto, names: readonly string[]): ModelProto {
  const copy = cloneModel(model);
  const graph = requireGraph(copy);
  const existing = new Set((graph.output ?? []).map((o) => o.name));
  graph.output = graph.output ?? [];
  for (const name of names) if (!existing.has(name)) graph.output.push(makeValueInfo(name, DataType.FLOAT));
  return copy;
}

/** A name not yet used by any tensor or node in the graph, built from a stem. */
export function uniqueNamer(graph: GraphProto): (stem: string) => string {
  const used = new Set<string>();
  for (const n of graph.node ?? []) {
    if (n.name) used.add(n.name);
    for (const s of [...(n.input ?? []), ...(n.output ?? [])]) if (s) used.add(s);
  }
  for (const t of graph.initializer ?? []) if (t.name) used.add(t.name);
  for (const v of [...(graph.input ?? []), ...(graph.output ?? [])]) if (v.name) used.add(v.name);
  return (stem: string) => {
    let name = stem;
    for (let i = 1; used.has(name); i++) name = `${stem}_${i}`;
    used.add(name);
    return name;
  };
}
