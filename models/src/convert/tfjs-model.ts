/**
 * Reading a TF.js graph model from disk: model.json (a TensorFlow GraphDef as JSON plus a weights manifest) and
 * its binary weight shards, dequantized to the dtypes the graph was trained in.
 */
import { readFile } from "node:fs/promises";
import { dirname, join } from "node:path";

export interface TfAttrValue {
  s?: string;
  i?: string | number;
  f?: number;
  b?: boolean;
  type?: string;
  list?: { s?: string[]; i?: (string | number)[]; f?: number[]; type?: string[] };
  shape?: TfShape;
}

export interface TfShape {
  dim?: { size?: string | number }[];
  unknownRank?: boolean;
}

export interface TfNode {
  name: string;
  op: string;
  input?: string[];
  attr?: Record<string, TfAttrValue>;
}

export interface TfSignatureEntry {
  name: string;
  dtype?: string;
  tensorShape?: TfShape;
}

export interface WeightEntry {
  name: string;
  shape: number[];
  dtype: "float32" | "int32" | "bool" | "string" | "complex64";
  quantization?: { dtype: "uint8" | "uint16" | "float16"; scale?: number; min?: number; original_dtype?: string };
}

export interface TfjsModelJson {
  format?: string;
  generatedBy?: string;
  convertedBy?: string;
  modelTopology: { node: TfNode[]; library?: { function?: unknown[] } };
  weightsManifest: { paths: string[]; weights: WeightEntry[] }[];
  signature?: { inputs?: Record<string, TfSignatureEntry>; outputs?: Record<string, TfSignatureEntry> };
}

export type ConstDtype = "float32" | "int32" | "bool";

/** A constant tensor in TF layout (row-major, TF dim order). */
export interface ConstTensor {
  dtype: ConstDtype;
  shape: number[];
  data: Float32Array | Int32Array | Uint8Array;
}

export interface TfjsGraph {
  json: TfjsModelJson;
  nodes: TfNode[];
  weights: Map<string, ConstTensor>;
  /** how the weights were stored on disk, for the report: e.g. { "float32←float16": 127, int32: 1 } */
  storage: Record<string, number>;
}

function isModelJson(v: unknown): v is TfjsModelJson {
  if (typeof v !== "object" || v === null) return false;
  const o = v as Record<string, unknown>;
  const topo = o.modelTopology as Record<string, unknown> | undefined;
  return Array.isArray(topo?.node) && Array.isArray(o.weightsManifest);
}

const halfTable = (() => {
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    if (exp === 0) t[h] = sign * 2 ** -14 * (frac / 1024);
    else if (exp === 31) t[h] = frac ? Number.NaN : sign * Number.POSITIVE_INFINITY;
    else t[h] = sign * 2 ** (exp - 15) * (1 + frac / 1024);
  }
  return t;
})();

function elementCount(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Decode one weight from its bytes, undoing the converter's uint8/uint16 affine or float16 quantization. */
export function decodeWeight(entry: WeightEntry, bytes: Uint8Array): ConstTensor {
  const n = elementCount(entry.shape);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const q = entry.quantization;
  if (entry.dtype !== "float32" && entry.dtype !== "int32" && entry.dtype !== "bool") {
    throw new Error(`weight ${entry.name}: dtype ${entry.dtype} is not supported`);
  }
  if (q) {
    const raw = new Float64Array(n);
    if (q.dtype === "float16") for (let i = 0; i < n; i++) raw[i] = halfTable[view.getUint16(i * 2, true)] ?? 0;
    else {
      const scale = q.scale ?? 1;
      const min = q.min ?? 0;
      if (q.dtype === "uint8") for (let i = 0; i < n; i++) raw[i] = view.getUint8(i) * scale + min;
      else for (let i = 0; i < n; i++) raw[i] = view.getUint16(i * 2, true) * scale + min;
    }
    // tfjs rounds dequantized integer weights back to integers (io/io_utils.ts)
    if (entry.dtype === "int32") return { dtype: "int32", shape: entry.shape, data: Int32Array.from(raw, Math.round) };
    return { dtype: "float32", shape: entry.shape, data: Float32Array.from(raw) };
  }
  if (entry.dtype === "float32") {
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = view.getFloat32(i * 4, true);
    return { dtype: "float32", shape: entry.shape, data };
  }
  if (entry.dtype === "int32") {
    const data = new Int32Array(n);
    for (let i = 0; i < n; i++) data[i] = view.getInt32(i * 4, true);
    return { dtype: "int32", shape: entry.shape, data };
  }
  return { dtype: "bool", shape: entry.shape, data: Uint8Array.from(bytes.subarray(0, n)) };
}

function storedBytes(entry: WeightEntry): number {
  const n = elementCount(entry.shape);
  const q = entry.quantization?.dtype;
  if (q === "uint8") return n;
  if (q === "uint16" || q === "float16") return n * 2;
  if (entry.dtype === "bool") return n;
  return n * 4;
}

/** Load model.json and its shards (paths in the manifest are relative to model.json). */
export async function loadTfjsGraph(modelJsonPath: string): Promise<TfjsGraph> {
  const json: unknown = JSON.parse(await readFile(modelJsonPath, "utf8"));
  if (!isModelJson(json)) throw new Error(`${modelJsonPath} is not a TF.js graph model (no modelTopology.node)`);
  if (json.format && json.format !== "graph-model") {
    throw new Error(`${modelJsonPath}: format "${json.format}" is not a graph model; only graph models convert`);
  }
  if ((json.modelTopology.library?.function ?? []).length > 0) {
    throw new Error(`${modelJsonPath}: graphs with function libraries (control flow) are not supported`);
  }
  const weights = new Map<string, ConstTensor>();
  const storage: Record<string, number> = {};
  const dir = dirname(modelJsonPath);
  for (const group of json.weightsManifest) {
    const shards = await Promise.all(group.paths.map((p) => readFile(join(dir, p))));
    const buf = new Uint8Array(Buffer.concat(shards));
    let offset = 0;
    for (const entry of group.weights) {
      const size = storedBytes(entry);
      if (offset + size > buf.byteLength) throw new Error(`weight ${entry.name} runs past the end of its shards`);
      weights.set(entry.name, decodeWeight(entry, buf.subarray(offset, offset + size)));
      offset += size;
      const key = entry.quantization ? `${entry.dtype}←${entry.quantization.dtype}` : entry.dtype;
      storage[key] = (storage[key] ?? 0) + 1;
    }
  }
  return { json, nodes: json.modelTopology.node, weights, storage };
}

// attribute readers: the JSON GraphDef stores int64 as strings and strings as base64

export function attrString(node: TfNode, key: string): string | undefined {
  const s = node.attr?.[key]?.s;
  return s === undefined ? undefined : Buffer.from(s, "base64").toString("utf8");
}
export function attrInt(node: TfNode, key: string, fallback: number): number {
  const i = node.attr?.[key]?.i;
  return i === undefined ? fallback : Number(i);
}
export function attrFloat(node: TfNode, key: string, fallback: number): number {
  return node.attr?.[key]?.f ?? fallback;
}
export function attrBool(node: TfNode, key: string, fallback: boolean): boolean {
  return node.attr?.[key]?.b ?? fallback;
}
export function attrInts(node: TfNode, key: string): number[] | undefined {
  const l = node.attr?.[key]?.list;
  return l ? (l.i ?? []).map(Number) : undefined;
}
export function attrStrings(node: TfNode, key: string): string[] {
  return (node.attr?.[key]?.list?.s ?? []).map((s) => Buffer.from(s, "base64").toString("utf8"));
}
export function attrType(node: TfNode, key: string): string | undefined {
  return node.attr?.[key]?.type;
}
/** Dims of a shape attribute, -1 for unknown. */
export function shapeDims(shape: TfShape | undefined): number[] | undefined {
  if (!shape || shape.unknownRank) return undefined;
  return (shape.dim ?? []).map((d) => Number(d.size ?? -1));
}
