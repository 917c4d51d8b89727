/**
 * Static int8 quantization in QDQ form (QuantizeLinear → DequantizeLinear pairs, opset ≥ 13), written over the ONNX
 * protobuf. The float graph is kept; QDQ pairs mark where values are rounded, and onnxruntime's graph optimiser
 * fuses `DQ → Conv → Q` into QLinearConv (and Add into QLinearAdd) at session creation on x64 and arm64.
 *
 * - Weights of Conv/Gemm/MatMul: int8, symmetric, per output channel (axis 0 for Conv, per-tensor for MatMul).
 * - Biases of Conv/Gemm: int32 with scale = input scale × weight scale, zero point 0 — the form QLinearConv needs.
 * - Activations feeding or leaving a quantizable op: uint8 or int8, asymmetric, from calibrated ranges.
 * Ops without an integer kernel (PRelu, Reshape, ...) stay float between a DQ and the next Q.
 */
import type { onnx as O } from "onnx-proto";
import {
  cloneModel,
  DataType,
  dims,
  getIntAttr,
  initializerMap,
  intAttr,
  type ModelProto,
  makeNode,
  makeTensor,
  opsChangedBefore13,
  opsetVersion,
  requireGraph,
  setOpsetVersion,
  tensorToFloat32,
  uniqueNamer,
} from "../onnx/proto.ts";

export type ActivationType = "uint8" | "int8";

export interface Range {
  min: number;
  max: number;
}

/** Ops whose float inputs and outputs get QDQ pairs: the ones ORT has integer kernels for. */
export const quantizableOps = new Set(["Conv", "Gemm", "MatMul", "Add"]);
/** Ops whose weight initializer (input 1) is quantized to int8. */
const weightOps = new Set(["Conv", "Gemm", "MatMul"]);

/** Activation tensors to calibrate: float inputs/outputs of quantizable ops that are not initializers. */
export function activationsToQuantize(model: O.IModelProto): string[] {
  const graph = requireGraph(model);
  const inits = initializerMap(graph);
  const names = new Set<string>();
  for (const node of graph.node ?? []) {
    if (!quantizableOps.has(node.opType ?? "")) continue;
    const inputs = node.input ?? [];
    const acts = weightOps.has(node.opType ?? "") ? inputs.slice(0, 1) : inputs;
    for (const t of acts) if (t && !inits.has(t)) names.add(t);
    for (const t of node.output ?? []) if (t) names.add(t);
  }
  return [...names];
}

export interface QParams {
  scale: number;
  zeroPoint: number;
}

/** Asymmetric activation parameters; the range is widened to hold 0 exactly, as QLinear ops require. */
export function activationQParams(range: Range, type: ActivationType): QParams {
  const lo = Math.min(range.min, 0);
  const hi = Math.max(range.max, 0);
  const [qmin, qmax] = type === "uint8" ? [0, 255] : [-128, 127];
  const scale = hi > lo ? (hi - lo) / (qmax - qmin) : 1;
  // + 0 turns -0 into 0
  const zeroPoint = Math.min(qmax, Math.max(qmin, roundHalfEven(qmin - lo / scale))) + 0;
  return { scale, zeroPoint };
}

/**
 * Symmetric per-channel int8: scale_c = max|w_c| / qmax, zero point 0. qmax 63 ("reduce range", 7-bit weights)
 * keeps u8×s8 pair sums inside int16 on AVX2 without VNNI, where VPMADDUBSW would otherwise saturate.
 */
export function quantizeWeightsPerChannel(
  w: Float32Array,
  shape: readonly number[],
  axis: number,
  qmax = 127,
): { q: Int8Array; scales: Float32Array } {
  const channels = shape[axis] ?? 1;
  const inner = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
  const outer = shape.slice(0, axis).reduce((a, b) => a * b, 1);
  const maxAbs = new Float32Array(channels);
  const at = (o: number, c: number, i: number) => (o * channels + c) * inner + i;
  for (let o = 0; o < outer; o++)
    for (let c = 0; c < channels; c++)
      for (let i = 0; i < inner; i++) maxAbs[c] = Math.max(maxAbs[c] ?? 0, Math.abs(w[at(o, c, i)] ?? 0));
  const scales = Float32Array.from(maxAbs, (m) => (m > 0 ? m / qmax : 1));
  const q = new Int8Array(w.length);
  for (let o = 0; o < outer; o++)
    for (let c = 0; c < channels; c++)
      for (let i = 0; i < inner; i++) {
        const k = at(o, c, i);
        q[k] = clampRound((w[k] ?? 0) / (scales[c] ?? 1), -qmax, qmax);
      }
  return { q, scales };
}

function clampRound(v: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, roundHalfEven(v)));
}

/** Round half to even, as ONNX QuantizeLinear does. */
export function roundHalfEven(v: number): number {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

export interface QuantizeOptions {
  ranges: Map<string, Range>;
  activationType: ActivationType;
  /** 7-bit weights (see quantizeWeightsPerChannel) */
  reduceRange?: boolean;
}

export interface QuantizeSummary {
  quantizedWeights: number;
  quantizedActivations: number;
  opsetFrom: number;
  opsetTo: number;
}

/** Returns a new model; the input model is not changed. */
export function quantizeQdq(
  input: O.IModelProto,
  opts: QuantizeOptions,
): { model: ModelProto; summary: QuantizeSummary } {
  const model = cloneModel(input);
  const graph = requireGraph(model);
  const opsetFrom = opsetVersion(model);
  if (opsetFrom < 13) {
    const blocked = (graph.node ?? []).map((n) => n.opType ?? "").filter((op) => opsChangedBefore13.has(op));
    if (blocked.length > 0) {
      throw new Error(
        `model is opset ${opsetFrom} and uses ${[...new Set(blocked)].join(", ")}, which changed before opset 13; ` +
          "convert it to opset ≥ 13 first",
      );
    }
    setOpsetVersion(model, 13);
  }

  const inits = initializerMap(graph);
  const name = uniqueNamer(graph);
  const newInits: O.ITensorProto[] = [];
  const actType = opts.activationType === "uint8" ? DataType.UINT8 : DataType.INT8;
  const graphOutputs = new Set((graph.output ?? []).map((o) => o.name ?? ""));

  // 1. activation QDQ pairs: tensor T → Q → DQ → T_dq, consumers rewired to T_dq
  const actParams = new Map<string, QParams>();
  const rewire = new Map<string, string>(); // original tensor name → name consumers should read
  const qdqAfter = new Map<string, O.INodeProto[]>(); // producer output → its Q/DQ nodes
  const renameOutput = new Map<string, string>(); // graph outputs: producer writes here instead
  for (const t of activationsToQuantize(model)) {
    const range = opts.ranges.get(t);
    if (!range) continue;
    const qp = activationQParams(range, opts.activationType);
    actParams.set(t, qp);
    const scaleName = name(`${t}_scale`);
    const zpName = name(`${t}_zero_point`);
    newInits.push(makeTensor(scaleName, DataType.FLOAT, [], [qp.scale]));
    newInits.push(makeTensor(zpName, actType, [], [qp.zeroPoint]));
    const quantized = name(`${t}_quantized`);
    let source = t;
    let dequantized: string;
    if (graphOutputs.has(t)) {
      // the graph output keeps its name: the producer writes T_pre, the DQ writes T
      source = name(`${t}_pre_quant`);
      renameOutput.set(t, source);
      dequantized = t;
    } else {
      dequantized = name(`${t}_dequantized`);
      rewire.set(t, dequantized);
    }
    qdqAfter.set(t, [
      makeNode("QuantizeLinear", [source, scaleName, zpName], [quantized], { name: name(`${t}_QuantizeLinear`) }),
      makeNode("DequantizeLinear", [quantized, scaleName, zpName], [dequantized], {
        name: name(`${t}_DequantizeLinear`),
      }),
    ]);
  }

  // 2. weights and biases, and the new node order (Q/DQ right after each producer keeps it topological)
  const nodes: O.INodeProto[] = [];
  for (const gi of graph.input ?? []) nodes.push(...(qdqAfter.get(gi.name ?? "") ?? []));
  let quantizedWeights = 0;
  const replacedInits = new Set<string>();
  for (const node of graph.node ?? []) {
    const op = node.opType ?? "";
    const inputs = [...(node.input ?? [])];
    if (weightOps.has(op)) {
      const wName = inputs[1] ?? "";
      const w = inits.get(wName);
      const xParams = actParams.get(inputs[0] ?? "");
      if (w && w.dataType === DataType.FLOAT && xParams) {
        const shape = dims(w);
        const axis = op === "Conv" ? 0 : op === "Gemm" ? (getIntAttr(node, "transB", 0) ? 0 : 1) : -1;
        const perTensor = axis < 0;
        const values = tensorToFloat32(w);
        const qmax = opts.reduceRange ? 63 : 127;
        const { q, scales } = perTensor
          ? quantizeWeightsPerChannel(values, [1, values.length], 0, qmax)
          : quantizeWeightsPerChannel(values, shape, axis, qmax);
        const qName = name(`${wName}_quantized`);
        const sName = name(`${wName}_scale`);
        const zName = name(`${wName}_zero_point`);
        const dqName = name(`${wName}_dequantized`);
        const channels = scales.length;
        newInits.push(makeTensor(qName, DataType.INT8, shape, q));
        newInits.push(makeTensor(sName, DataType.FLOAT, perTensor ? [] : [channels], scales));
        newInits.push(makeTensor(zName, DataType.INT8, perTensor ? [] : [channels], new Int8Array(channels)));
        nodes.push(
          makeNode("DequantizeLinear", [qName, sName, zName], [dqName], {
            name: name(`${wName}_DequantizeLinear`),
            attributes: perTensor ? [] : [intAttr("axis", axis)],
          }),
        );
        inputs[1] = dqName;
        replacedInits.add(wName);
        quantizedWeights++;

        const bName = inputs[2];
        const b = bName ? inits.get(bName) : undefined;
        if (bName && b && b.dataType === DataType.FLOAT && (op === "Conv" || op === "Gemm")) {
          const bias = tensorToFloat32(b);
          const bScales = Float32Array.from(bias, (_, c) => xParams.scale * (scales[perTensor ? 0 : c] ?? 1));
          const bq = Int32Array.from(bias, (v, c) => roundHalfEven(v / (bScales[c] ?? 1)));
          const bqName = name(`${bName}_quantized`);
          const bsName = name(`${bName}_scale`);
          const bzName = name(`${bName}_zero_point`);
          const bdqName = name(`${bName}_dequantized`);
          newInits.push(makeTensor(bqName, DataType.INT32, [bias.length], bq));
          newInits.push(makeTensor(bsName, DataType.FLOAT, [bias.length], bScales));
          newInits.push(makeTensor(bzName, DataType.INT32, [bias.length], new Int32Array(bias.length)));
          nodes.push(
            makeNode("DequantizeLinear", [bqName, bsName, bzName], [bdqName], {
              name: name(`${bName}_DequantizeLinear`),
              attributes: [intAttr("axis", 0)],
            }),
          );
          inputs[2] = bdqName;
          replacedInits.add(bName);
        }
      }
    }
    node.input = inputs.map((t) => rewire.get(t) ?? t);
    node.output = (node.output ?? []).map((t) => renameOutput.get(t) ?? t);
    nodes.push(node);
    for (const t of node.output) {
      const original = [...renameOutput.entries()].find(([, v]) => v === t)?.[0] ?? t;
      nodes.push(...(qdqAfter.get(original) ?? []));
    }
  }

  // drop float weights nothing reads any more
  const stillRead = new Set(nodes.flatMap((n) => n.input ?? []));
  graph.initializer = [
    ...(graph.initializer ?? []).filter((t) => !replacedInits.has(t.name ?? "") || stillRead.has(t.name ?? "")),
    ...newInits,
  ];
  graph.node = nodes;
  // intermediate value_info may describe renamed tensors; ORT re-infers shapes, so drop it rather than mislead
  graph.valueInfo = [];
  model.producerName = "glance-models quantize";
  return {
    model,
    summary: {
      quantizedWeights,
      quantizedActivations: actParams.size,
      opsetFrom,
      opsetTo: opsetVersion(model),
    },
  };
}
