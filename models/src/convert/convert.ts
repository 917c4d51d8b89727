/**
 * TF.js graph model → ONNX (opset 13), in Node, with no Python toolchain: the models workspace builds its ONNX files
 * from npm packages at install time.
 *
 * Only the tensors the graph outputs depend on are converted. The ONNX model keeps the TF.js input (NHWC, same
 * name) and names its outputs after the TF tensors ("Identity:0"), so a caller can swap runtimes without
 * remapping anything.
 */
import * as ort from "onnxruntime-node";
import { DataType, decodeModel, encodeModel, makeNode, makeValueInfo, onnx } from "../onnx/proto.ts";
import { ConversionContext, dataTypeOf, tfDtype, type Value } from "./context.ts";
import { converters } from "./ops.ts";
import { fuseClampChains } from "./optimize.ts";
import { attrType, loadTfjsGraph, shapeDims, type TfjsGraph, type TfNode } from "./tfjs-model.ts";

export const OPSET = 13;

export interface TensorInfo {
  name: string;
  type: "float32" | "int32" | "int64" | "bool";
  /** dims, "batch" where the TF.js graph leaves the batch size open */
  shape: (number | string)[];
}

export interface ConvertedModel {
  onnx: Uint8Array;
  inputs: TensorInfo[];
  /** ONNX output names (= TF tensor names), with the signature key where the model.json has one */
  outputs: OutputInfo[];
  /** TF ops converted (reachable from the outputs), with counts */
  tfOps: Record<string, number>;
  onnxOps: Record<string, number>;
  /** how the weights were stored in the shards, e.g. { "float32←float16": 127 } */
  weightStorage: Record<string, number>;
}

export interface OutputInfo {
  name: string;
  signatureKey?: string;
  type: TensorInfo["type"];
  /** probed by running the model (batch 1, and 2 when the batch is open); empty until probed */
  shape: (number | string)[];
}

export interface ConvertOptions {
  /** TF tensor names to output instead of the model's own outputs */
  outputs?: string[];
  /** fix the batch dimension (the TF.js graphs mostly leave it open) */
  batch?: number;
}

/** "a", "a:0", "^a" → { node: "a", index: 0 } (control inputs are dropped by the caller). */
function parseRef(ref: string): { node: string; index: number; key: string } {
  const m = /^(.*?)(?::(\d+))?$/.exec(ref);
  const node = m?.[1] ?? ref;
  const index = Number(m?.[2] ?? 0);
  return { node, index, key: `${node}:${index}` };
}

/** The graph's outputs: the signature's when it has one, otherwise every tensor nothing else consumes. */
export function graphOutputs(graph: TfjsGraph): { name: string; signatureKey?: string }[] {
  const sig = graph.json.signature?.outputs;
  if (sig && Object.keys(sig).length > 0) {
    return Object.entries(sig).map(([key, e]) => ({ name: parseRef(e.name).key, signatureKey: key }));
  }
  const consumed = new Set<string>();
  for (const n of graph.nodes) for (const i of n.input ?? []) if (!i.startsWith("^")) consumed.add(parseRef(i).node);
  return graph.nodes
    .filter((n) => !consumed.has(n.name) && n.op !== "Const" && n.op !== "Placeholder" && n.op !== "NoOp")
    .map((n) => ({ name: `${n.name}:0` }));
}

function histogram(xs: readonly string[]): Record<string, number> {
  const h: Record<string, number> = {};
  for (const x of xs) h[x] = (h[x] ?? 0) + 1;
  return h;
}

/** Nodes needed for `outputs`, producers before consumers. */
function reachable(graph: TfjsGraph, outputs: readonly string[]): TfNode[] {
  const byName = new Map(graph.nodes.map((n) => [n.name, n]));
  const order: TfNode[] = [];
  const state = new Map<string, "open" | "done">();
  const stack: { node: TfNode; next: number }[] = [];
  for (const out of outputs) {
    const root = byName.get(parseRef(out).node);
    if (!root) throw new Error(`output ${out} is not a node of the graph`);
    if (state.has(root.name)) continue;
    state.set(root.name, "open");
    stack.push({ node: root, next: 0 });
    while (stack.length > 0) {
      const top = stack[stack.length - 1] as { node: TfNode; next: number };
      const inputs = (top.node.input ?? []).filter((i) => !i.startsWith("^"));
      if (top.next < inputs.length) {
        const ref = parseRef(inputs[top.next++] as string);
        const child = byName.get(ref.node);
        if (!child) throw new Error(`${top.node.name} reads ${ref.node}, which is not in the graph`);
        const s = state.get(child.name);
        if (s === "open")
          throw new Error(`the graph has a cycle through ${child.name} (control flow is not supported)`);
        if (!s) {
          state.set(child.name, "open");
          stack.push({ node: child, next: 0 });
        }
      } else {
        state.set(top.node.name, "done");
        order.push(top.node);
        stack.pop();
      }
    }
  }
  return order;
}

export function convertGraph(graph: TfjsGraph, options: ConvertOptions = {}): ConvertedModel {
  const wanted = options.outputs ? options.outputs.map((name) => ({ name: parseRef(name).key })) : graphOutputs(graph);
  const outputs: OutputInfo[] = wanted.map((o) => ({ ...o, type: "float32", shape: [] }));
  const order = reachable(
    graph,
    outputs.map((o) => o.name),
  );
  const ctx = new ConversionContext();
  for (const o of outputs) ctx.reserve(o.name);
  const values = new Map<string, Value>();
  const inputs: TensorInfo[] = [];

  for (const node of order) {
    if (node.op === "Const") {
      const c = graph.weights.get(node.name);
      if (!c) throw new Error(`Const ${node.name} has no value in the weights manifest`);
      values.set(`${node.name}:0`, { layout: "tf", rank: c.shape.length, dtype: c.dtype, constant: c });
      continue;
    }
    if (node.op === "Placeholder") {
      const dims = shapeDims(node.attr?.shape?.shape);
      if (!dims) throw new Error(`input ${node.name} has no static rank`);
      const type = tfDtype(attrType(node, "dtype"));
      const shape = dims.map((d, i) => (d >= 0 ? d : i === 0 ? (options.batch ?? "batch") : `${node.name}_dim${i}`));
      ctx.reserve(node.name);
      inputs.push({ name: node.name, type, shape });
      values.set(`${node.name}:0`, { name: node.name, layout: "tf", rank: dims.length, dtype: type });
      continue;
    }
    const convert = converters[node.op];
    if (!convert) throw new Error(`TF op ${node.op} (node ${node.name}) is not supported by the converter`);
    const ins = (node.input ?? [])
      .filter((i) => !i.startsWith("^"))
      .map((i) => {
        const v = values.get(parseRef(i).key);
        if (!v) throw new Error(`${node.name}: input ${i} was not converted`);
        return v;
      });
    const outs = convert(ctx, node, ins);
    for (const [k, v] of outs.entries()) values.set(`${node.name}:${k}`, v);
  }

  const outputInfos = outputs.map((o) => {
    const v = values.get(o.name);
    if (!v) throw new Error(`output ${o.name} was not produced`);
    ctx.nodes.push(makeNode("Identity", [ctx.tf(v, o.name)], [o.name], { name: `${o.name}/output` }));
    o.type = v.dtype;
    return makeValueInfo(o.name, dataTypeOf(v.dtype));
  });

  fuseClampChains(ctx.nodes, ctx.initializers, new Set(outputs.map((o) => o.name)));

  const model = onnx.ModelProto.create({
    irVersion: 7,
    opsetImport: [{ domain: "", version: OPSET }],
    producerName: "glance-tfjs-to-onnx",
    producerVersion: "1",
    graph: {
      name: "tfjs",
      node: ctx.nodes,
      initializer: ctx.initializers,
      input: inputs.map((i) =>
        makeValueInfo(i.name, i.type === "float32" ? DataType.FLOAT : dataTypeOf(i.type), i.shape),
      ),
      output: outputInfos,
    },
  });
  return {
    onnx: encodeModel(model),
    inputs,
    outputs,
    tfOps: histogram(order.map((n) => n.op)),
    onnxOps: histogram(ctx.nodes.map((n) => n.opType ?? "")),
    weightStorage: graph.storage,
  };
}

/** Convert a TF.js graph model (path to its model.json) to ONNX, with what a manifest needs to describe it. */
export async function convertTfjsModel(modelJsonPath: string, options: ConvertOptions = {}): Promise<ConvertedModel> {
  return withOutputShapes(convertGraph(await loadTfjsGraph(modelJsonPath), options));
}

/**
 * Declare the outputs' shapes in the model, found by running it on zeros: at batch 1, and at batch 2 when the batch
 * is open (a dim that follows the batch becomes "batch"). Consumers read I/O shapes from the session metadata.
 */
export async function withOutputShapes(converted: ConvertedModel): Promise<ConvertedModel> {
  const session = await ort.InferenceSession.create(converted.onnx, { intraOpNumThreads: 1 });
  const probe = async (batch: number) => {
    const feeds: Record<string, ort.Tensor> = {};
    for (const i of converted.inputs) {
      const shape = i.shape.map((d, k) => (typeof d === "number" ? d : k === 0 ? batch : 1));
      const n = shape.reduce((a, b) => a * b, 1);
      const data =
        i.type === "float32"
          ? new Float32Array(n)
          : i.type === "int32"
            ? new Int32Array(n)
            : i.type === "int64"
              ? new BigInt64Array(n)
              : new Uint8Array(n);
      feeds[i.name] = new ort.Tensor(i.type === "bool" ? "bool" : i.type, data, shape);
    }
    const res = await session.run(feeds);
    return converted.outputs.map((o) => [...(res[o.name]?.dims ?? [])]);
  };
  const openBatch = converted.inputs.some((i) => typeof i.shape[0] === "string");
  const one = await probe(1);
  const two = openBatch ? await probe(2) : one;
  await session.release();
  const outputs = converted.outputs.map((o, k) => ({
    ...o,
    shape: (one[k] ?? []).map((d, j) => (two[k]?.[j] === d ? d : "batch")),
  }));
  const model = decodeModel(converted.onnx);
  const graph = model.graph;
  if (graph) graph.output = outputs.map((o) => makeValueInfo(o.name, dataTypeOf(o.type), o.shape));
  return { ...converted, outputs, onnx: encodeModel(model) };
}

/** Convert a TF.js graph model (path to its model.json) to ONNX model bytes. */
export async function convertTfjsGraph(modelJsonPath: string): Promise<Uint8Array> {
  return (await convertTfjsModel(modelJsonPath)).onnx;
}
