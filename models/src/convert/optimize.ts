/**
 * Peephole rewrites on the emitted ONNX graph that onnxruntime does not do itself.
 *
 * Keras exports ReLU6 as Relu → Minimum(6) → Maximum(0). onnxruntime fuses Conv+Clip (and keeps its blocked NCHWc
 * layout across the whole network) but not Conv+Min+Max: with the three ops each convolution's output is reordered
 * out of and back into NCHWc, which costs faceres about a third of its run time.
 */
import type { onnx as O } from "onnx-proto";
import { DataType, makeNode, makeTensor, tensorToFloat32 } from "../onnx/proto.ts";

function scalarOf(t: O.ITensorProto | undefined): number | undefined {
  if (!t || t.dataType !== DataType.FLOAT) return undefined;
  const v = tensorToFloat32(t);
  return v.length === 1 ? v[0] : undefined;
}

/** Fold chains of Relu / Min(x, scalar) / Max(x, scalar) into one Clip. Edits `nodes` and `initializers` in place. */
export function fuseClampChains(
  nodes: O.NodeProto[],
  initializers: O.TensorProto[],
  graphOutputs: ReadonlySet<string>,
): number {
  const inits = new Map(initializers.map((t) => [t.name, t]));
  const uses = new Map<string, number>();
  for (const n of nodes) for (const i of n.input) uses.set(i, (uses.get(i) ?? 0) + 1);
  const producer = new Map<string, O.NodeProto>();
  for (const n of nodes) for (const o of n.output) producer.set(o, n);

  /** the clamp a node applies to its data input, or undefined when it is not a clamp */
  const clampOf = (n: O.NodeProto): { input: string; lo: number; hi: number } | undefined => {
    if (n.opType === "Relu" && n.input.length === 1)
      return { input: n.input[0] as string, lo: 0, hi: Number.POSITIVE_INFINITY };
    if ((n.opType === "Min" || n.opType === "Max") && n.input.length === 2) {
      for (const k of [0, 1]) {
        const c = scalarOf(inits.get(n.input[k] as string));
        if (c === undefined) continue;
        const input = n.input[1 - k] as string;
        return n.opType === "Min"
          ? { input, lo: Number.NEGATIVE_INFINITY, hi: c }
          : { input, lo: c, hi: Number.POSITIVE_INFINITY };
      }
    }
    return undefined;
  };

  const removed = new Set<O.NodeProto>();
  const replacement = new Map<O.NodeProto, O.NodeProto>();
  let fused = 0;
  // from the end, so that each chain is met at its last clamp
  for (const last of [...nodes].reverse()) {
    if (removed.has(last) || !clampOf(last)) continue;
    // walk up while the producer is a clamp used only by this chain
    const chain: O.NodeProto[] = [last];
    for (;;) {
      const head = chain[0] as O.NodeProto;
      const up = producer.get(clampOf(head)?.input ?? "");
      if (!up || removed.has(up) || !clampOf(up)) break;
      const out = up.output[0] as string;
      if (uses.get(out) !== 1 || graphOutputs.has(out)) break;
      chain.unshift(up);
    }
    if (chain.length < 2) continue;
    let lo = Number.NEGATIVE_INFINITY;
    let hi = Number.POSITIVE_INFINITY;
    for (const n of chain) {
      const c = clampOf(n) as { lo: number; hi: number };
      // max(·, b) then min(·, a) composes into another clamp
      lo = Math.min(Math.max(lo, c.lo), c.hi);
      hi = Math.min(Math.max(hi, c.lo), c.hi);
    }
    const first = chain[0] as O.NodeProto;
    const name = `${last.output[0]}/clip`;
    const bounds = [lo, hi].map((v, i) => {
      if (!Number.isFinite(v)) return "";
      const t = makeTensor(`${name}/${i === 0 ? "min" : "max"}`, DataType.FLOAT, [], [v]);
      initializers.push(t);
      return t.name;
    });
    for (const n of chain) removed.add(n);
    if (bounds[1] === "") bounds.pop();
    replacement.set(
      last,
      makeNode("Clip", [clampOf(first)?.input as string, ...bounds], [last.output[0] as string], { name }),
    );
    fused++;
  }
  const out: O.NodeProto[] = [];
  for (const n of nodes) {
    const r = replacement.get(n);
    if (r) out.push(r);
    else if (!removed.has(n)) out.push(n);
  }
  nodes.splice(0, nodes.length, ...out);
  const used = new Set(out.flatMap((n) => n.input));
  initializers.splice(0, initializers.length, ...initializers.filter((t) => used.has(t.name)));
  return fused;
}
