/**
 * Graph rewrites that keep a model's meaning and make onnxruntime faster.
 */
import type { onnx as O } from "onnx-proto";
import { cloneModel, type ModelProto, makeNode, requireGraph, uniqueNamer } from "./proto.ts";

/**
 * PRelu(x, s) → Relu(x) + s · (x − Relu(x)). onnxruntime's CPU PRelu with a per-channel slope is an Eigen
 * broadcast select that runs ~4× slower than these four vectorised ops together (measured on [1,64,56,56]:
 * 1.58 ms vs 0.37 ms, 1 thread, AVX2). Exact up to float rounding: x − Relu(x) = min(x, 0).
 * In a QDQ model the decomposition sits between the DequantizeLinear and QuantizeLinear that bracketed the PRelu.
 */
export function decomposePRelu(input: O.IModelProto): { model: ModelProto; replaced: number } {
  const model = cloneModel(input);
  const graph = requireGraph(model);
  const name = uniqueNamer(graph);
  const nodes: O.INodeProto[] = [];
  let replaced = 0;
  for (const node of graph.node ?? []) {
    const [x, slope] = node.input ?? [];
    const [y] = node.output ?? [];
    if (node.opType !== "PRelu" || !x || !slope || !y) {
      nodes.push(node);
      continue;
    }
    const stem = node.name || y;
    const r = name(`${stem}_relu`);
    const neg = name(`${stem}_negpart`);
    const scaled = name(`${stem}_scaled`);
    nodes.push(
      makeNode("Relu", [x], [r], { name: name(`${stem}/Relu`) }),
      makeNode("Sub", [x, r], [neg], { name: name(`${stem}/Sub`) }),
      makeNode("Mul", [neg, slope], [scaled], { name: name(`${stem}/Mul`) }),
      makeNode("Add", [r, scaled], [y], { name: name(`${stem}/Add`) }),
    );
    replaced++;
  }
  graph.node = nodes;
  return { model, replaced };
}
