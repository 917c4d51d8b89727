/**
 * TF op → ONNX opset 13 mappings, one function per TF op. Each takes the TF node and its input values and returns
 * its output values (index k is the TF tensor "name:k").
 */
import { floatAttr, intAttr, intsAttr, stringAttr } from "../onnx/proto.ts";
import {
  type ConversionContext,
  dataTypeOf,
  type ElemType,
  nchwAxis,
  perm,
  TO_NCHW,
  TO_NHWC,
  tfDtype,
  transposeConst,
  type Value,
} from "./context.ts";
import {
  attrBool,
  attrFloat,
  attrInt,
  attrInts,
  attrString,
  attrStrings,
  attrType,
  type ConstTensor,
  type TfNode,
} from "./tfjs-model.ts";

export type OpConverter = (ctx: ConversionContext, node: TfNode, ins: Value[]) => Value[];

const BIG = Number.MAX_SAFE_INTEGER;

function arg(ins: Value[], i: number, node: TfNode): Value {
  const v = ins[i];
  if (!v) throw new Error(`${node.op} ${node.name}: missing input ${i}`);
  return v;
}

function constOf(v: Value, node: TfNode, what: string): ConstTensor {
  if (!v.constant) throw new Error(`${node.op} ${node.name}: ${what} must be a constant`);
  return v.constant;
}

function constInts(v: Value, node: TfNode, what: string): number[] {
  return Array.from(constOf(v, node, what).data, Number);
}

function val(name: string, layout: Value["layout"], rank: number | undefined, dtype: ElemType = "float32"): Value {
  return { name, layout, rank, dtype };
}

function isIncreasing(xs: readonly number[]): boolean {
  return xs.every((x, i) => i === 0 || x > (xs[i - 1] ?? -1));
}

/** Ops that only take 4-D tensors (convolutions, pools) tell us the rank of an input we could not follow. */
function rank4(v: Value): Value {
  if (v.rank === undefined) v.rank = 4;
  return v;
}

function requireNhwc(node: TfNode): void {
  const f = attrString(node, "data_format");
  if (f && f !== "NHWC") throw new Error(`${node.op} ${node.name}: data_format ${f} is not supported`);
}

/** TF padding → ONNX conv/pool attributes (TF "SAME" puts the odd pixel at the end, as ONNX SAME_UPPER does). */
function paddingAttrs(node: TfNode, kernel: readonly number[] = []) {
  const padding = attrString(node, "padding");
  const dilations = spatial(node, "dilations");
  if (padding === "SAME" && dilations.some((d) => d > 1)) {
    // onnxruntime refuses auto_pad with dilation; at stride 1 SAME's padding does not depend on the input size
    if (spatial(node, "strides").some((st) => st > 1)) {
      throw new Error(`${node.op} ${node.name}: SAME padding with both dilation and stride is not supported`);
    }
    const total = kernel.map((k, j) => (k - 1) * (dilations[j] ?? 1));
    const begin = total.map((t) => Math.floor(t / 2));
    return [intsAttr("pads", [...begin, ...total.map((t, j) => t - (begin[j] ?? 0))])];
  }
  if (padding === "SAME") return [stringAttr("auto_pad", "SAME_UPPER")];
  if (padding === "VALID") return [intsAttr("pads", [0, 0, 0, 0])];
  if (padding === "EXPLICIT") {
    const p = attrInts(node, "explicit_paddings") ?? [];
    return [intsAttr("pads", [p[2] ?? 0, p[4] ?? 0, p[3] ?? 0, p[5] ?? 0])];
  }
  throw new Error(`${node.op} ${node.name}: padding ${padding} is not supported`);
}

function spatial(node: TfNode, key: string): number[] {
  const v = attrInts(node, key) ?? [1, 1, 1, 1];
  return [v[1] ?? 1, v[2] ?? 1];
}

/** The activation part of a fused op (`fused_ops` after BiasAdd), applied to an NCHW or TF-layout value. */
function activation(
  ctx: ConversionContext,
  node: TfNode,
  act: string | undefined,
  x: Value,
  extra: Value | undefined,
  stem: string,
): Value {
  const src = x.name as string;
  const out = (name: string): Value => ({ ...x, name, tfName: undefined, nchwName: undefined });
  switch (act) {
    case undefined:
      return x;
    case "Relu":
      return out(ctx.add1("Relu", [src], stem));
    case "Relu6":
      return out(ctx.add1("Clip", [src, ctx.float([0], [], "zero"), ctx.float([6], [], "six")], stem));
    case "Elu":
      return out(ctx.add1("Elu", [src], stem));
    case "Sigmoid":
      return out(ctx.add1("Sigmoid", [src], stem));
    case "Tanh":
      return out(ctx.add1("Tanh", [src], stem));
    case "LeakyRelu":
      return out(ctx.add1("LeakyRelu", [src], stem, [floatAttr("alpha", attrFloat(node, "leakyrelu_alpha", 0.2))]));
    case "Prelu": {
      if (!extra) throw new Error(`${node.name}: Prelu without alpha`);
      const alpha = x.layout === "nchw" ? ctx.nchwOperand(extra, `${stem}/alpha`) : ctx.tf(extra, `${stem}/alpha`);
      return out(ctx.add1("PRelu", [src, alpha], stem));
    }
    default:
      throw new Error(`${node.op} ${node.name}: fused activation ${act} is not supported`);
  }
}

function fusedParts(node: TfNode): { bias: boolean; act: string | undefined } {
  const ops = attrStrings(node, "fused_ops");
  if (ops.length === 0) return { bias: false, act: undefined };
  if (ops[0] !== "BiasAdd") throw new Error(`${node.op} ${node.name}: fused ops [${ops}] are not supported`);
  if (ops.length > 2) throw new Error(`${node.op} ${node.name}: fused ops [${ops}] are not supported`);
  return { bias: true, act: ops[1] };
}

function conv(depthwise: boolean): OpConverter {
  return (ctx, node, ins) => {
    requireNhwc(node);
    const x = rank4(arg(ins, 0, node));
    const k = constOf(arg(ins, 1, node), node, "filter");
    const [kh, kw, cin, m] = k.shape as [number, number, number, number];
    let weights: ConstTensor;
    let group = 1;
    if (depthwise) {
      // [H,W,C,M] → [C*M,1,H,W]: output channel c*M+m convolves input channel c, as in TF
      const t = transposeConst(k, [2, 3, 0, 1]);
      weights = { ...t, shape: [cin * m, 1, kh, kw] };
      group = cin;
    } else {
      weights = transposeConst(k, [3, 2, 0, 1]); // HWIO → OIHW
    }
    const inputs = [ctx.nchw(x, `${node.name}/input`), ctx.initializer(weights, `${node.name}/weights`)];
    const { bias, act } = fusedParts(node);
    if (bias) inputs.push(ctx.tf(arg(ins, 2, node), `${node.name}/bias`));
    const attrs = [
      intsAttr("kernel_shape", [kh, kw]),
      intsAttr("strides", spatial(node, "strides")),
      intsAttr("dilations", spatial(node, "dilations")),
      intAttr("group", group),
      ...paddingAttrs(node, [kh, kw]),
    ];
    const y = val(ctx.add1("Conv", inputs, act ? `${node.name}/conv` : node.name, attrs), "nchw", 4);
    return [activation(ctx, node, act, y, ins[3], node.name)];
  };
}

function matmul(fused: boolean): OpConverter {
  return (ctx, node, ins) => {
    const a = arg(ins, 0, node);
    const b = arg(ins, 1, node);
    let an = ctx.tf(a, `${node.name}/a`);
    if (attrBool(node, "transpose_a", false)) an = ctx.add1("Transpose", [an], `${node.name}/aT`, [perm([1, 0])]);
    let bn: string;
    if (attrBool(node, "transpose_b", false)) {
      bn = b.constant
        ? ctx.initializer(transposeConst(b.constant, [1, 0]), `${node.name}/bT`)
        : ctx.add1("Transpose", [ctx.tf(b)], `${node.name}/bT`, [perm([1, 0])]);
    } else bn = ctx.tf(b, `${node.name}/b`);
    const { bias, act } = fused ? fusedParts(node) : { bias: false, act: undefined };
    let y = ctx.add1("MatMul", [an, bn], bias || act ? `${node.name}/matmul` : node.name);
    if (bias)
      y = ctx.add1(
        "Add",
        [y, ctx.tf(arg(ins, 2, node), `${node.name}/bias`)],
        act ? `${node.name}/bias_add` : node.name,
      );
    return [activation(ctx, node, act, val(y, "tf", 2), ins[3], node.name)];
  };
}

/** Element-wise op over any number of inputs with numpy broadcasting, kept channels-first where possible. */
function elementwise(op: string, outDtype?: ElemType): OpConverter {
  return (ctx, node, ins) => {
    const ranks = ins.map((v) => v.rank ?? v.constant?.shape.length);
    const rank = ranks.every((r) => r !== undefined) ? Math.max(...(ranks as number[])) : undefined;
    const anyNchw = ins.some((v) => v.layout === "nchw");
    const nchwOk = ins.every(
      (v) => v.layout === "nchw" || v.rank === 4 || (v.constant && v.constant.shape.length <= 4),
    );
    const dtype = outDtype ?? ins.find((v) => !v.constant)?.dtype ?? arg(ins, 0, node).dtype;
    if (anyNchw && nchwOk) {
      const names = ins.map((v, i) => ctx.nchwOperand(v, `${node.name}/${i}`));
      return [val(ctx.add1(op, names, node.name), "nchw", 4, dtype)];
    }
    const names = ins.map((v, i) => ctx.tf(v, `${node.name}/${i}`));
    return [val(ctx.add1(op, names, node.name), "tf", rank, dtype)];
  };
}

function unary(op: string, attrs: (node: TfNode) => ReturnType<typeof floatAttr>[] = () => []): OpConverter {
  return (ctx, node, ins) => {
    const x = arg(ins, 0, node);
    const src = x.layout === "nchw" ? (x.name as string) : ctx.tf(x, `${node.name}/x`);
    return [
      {
        ...x,
        name: ctx.add1(op, [src], node.name, attrs(node)),
        constant: undefined,
        tfName: undefined,
        nchwName: undefined,
      },
    ];
  };
}

function sameLayout(x: Value, name: string): Value {
  return { name, layout: x.layout, rank: x.rank, dtype: x.dtype };
}

function xName(ctx: ConversionContext, x: Value, node: TfNode): string {
  return x.layout === "nchw" ? (x.name as string) : ctx.tf(x, `${node.name}/x`);
}

const rsqrt: OpConverter = (ctx, node, ins) => {
  const x = arg(ins, 0, node);
  const s = ctx.add1("Sqrt", [xName(ctx, x, node)], `${node.name}/sqrt`);
  return [sameLayout(x, ctx.add1("Reciprocal", [s], node.name))];
};

const square: OpConverter = (ctx, node, ins) => {
  const x = arg(ins, 0, node);
  const n = xName(ctx, x, node);
  return [sameLayout(x, ctx.add1("Mul", [n, n], node.name))];
};

const relu6: OpConverter = (ctx, node, ins) => {
  const x = arg(ins, 0, node);
  return [
    sameLayout(
      x,
      ctx.add1("Clip", [xName(ctx, x, node), ctx.float([0], [], "zero"), ctx.float([6], [], "six")], node.name),
    ),
  ];
};

const prelu: OpConverter = (ctx, node, ins) => {
  const x = arg(ins, 0, node);
  const alpha = arg(ins, 1, node);
  if (x.layout === "nchw") {
    return [
      val(ctx.add1("PRelu", [x.name as string, ctx.nchwOperand(alpha, `${node.name}/alpha`)], node.name), "nchw", 4),
    ];
  }
  return [val(ctx.add1("PRelu", [ctx.tf(x), ctx.tf(alpha, `${node.name}/alpha`)], node.name), "tf", x.rank)];
};

function pool(op: "MaxPool" | "AveragePool"): OpConverter {
  return (ctx, node, ins) => {
    requireNhwc(node);
    const x = rank4(arg(ins, 0, node));
    const attrs = [intsAttr("kernel_shape", spatial(node, "ksize")), intsAttr("strides", spatial(node, "strides"))];
    const padding = attrString(node, "padding");
    if (padding === "SAME") attrs.push(stringAttr("auto_pad", "SAME_UPPER"));
    else if (padding !== "VALID") throw new Error(`${node.op} ${node.name}: padding ${padding} is not supported`);
    // TF's SAME average pool divides by the in-image count: ONNX's default count_include_pad=0
    return [val(ctx.add1(op, [ctx.nchw(x, `${node.name}/x`)], node.name, attrs), "nchw", 4)];
  };
}

function reduce(op: string): OpConverter {
  return (ctx, node, ins) => {
    const x = arg(ins, 0, node);
    const rawAxes = constInts(arg(ins, 1, node), node, "reduction axes");
    const keep = attrBool(node, "keep_dims", false);
    if (rawAxes.length === 0) return [x];
    let layout: Value["layout"] = "tf";
    let src: string;
    let axes = rawAxes;
    if (x.layout === "nchw") {
      const tfAxes = rawAxes.map((a) => ((a % 4) + 4) % 4);
      const kept = TO_NCHW.filter((d) => !tfAxes.includes(d));
      if (keep || isIncreasing(kept)) {
        axes = tfAxes.map(nchwAxis);
        src = x.name as string;
        layout = keep ? "nchw" : "tf";
      } else src = ctx.tf(x);
    } else src = ctx.tf(x, `${node.name}/x`);
    const rank =
      x.rank === undefined
        ? undefined
        : keep
          ? x.rank
          : x.rank - new Set(rawAxes.map((a) => (a + (x.rank ?? 0)) % (x.rank ?? 1))).size;
    const name =
      op === "ReduceSum"
        ? ctx.add1(op, [src, ctx.int64(axes)], node.name, [intAttr("keepdims", keep ? 1 : 0)])
        : ctx.add1(op, [src], node.name, [intsAttr("axes", axes), intAttr("keepdims", keep ? 1 : 0)]);
    return [val(name, layout, rank, x.dtype)];
  };
}

const pad: OpConverter = (ctx, node, ins) => {
  const x = arg(ins, 0, node);
  const p = constInts(arg(ins, 1, node), node, "paddings");
  const r = p.length / 2;
  const pairs = Array.from({ length: r }, (_, i) => [p[2 * i] ?? 0, p[2 * i + 1] ?? 0] as const);
  const nchw = x.layout === "nchw" && r === 4;
  const ordered = nchw ? TO_NCHW.map((d) => pairs[d] ?? ([0, 0] as const)) : pairs;
  const pads = [...ordered.map((q) => q[0]), ...ordered.map((q) => q[1])];
  const inputs = [nchw ? (x.name as string) : ctx.tf(x, `${node.name}/x`), ctx.int64(pads)];
  const attrs = [];
  if (node.op === "PadV2") inputs.push(ctx.tf(arg(ins, 2, node), `${node.name}/value`));
  if (node.op === "MirrorPad") {
    const mode = attrString(node, "mode");
    if (mode !== "REFLECT") throw new Error(`MirrorPad ${node.name}: mode ${mode} has no ONNX equivalent`);
    attrs.push(stringAttr("mode", "reflect"));
  }
  return [val(ctx.add1("Pad", inputs, node.name, attrs), nchw ? "nchw" : "tf", x.rank ?? r, x.dtype)];
};

/** Static length of a 1-D value (a shape), when known. */
function length1d(v: Value): number | undefined {
  if (v.constant) return v.constant.data.length;
  return v.len;
}

const reshape: OpConverter = (ctx, node, ins) => {
  const x = arg(ins, 0, node);
  const s = arg(ins, 1, node);
  const shape = s.constant
    ? ctx.int64(Array.from(s.constant.data, Number))
    : ctx.add1("Cast", [ctx.tf(s)], `${node.name}/shape`, [intAttr("to", dataTypeOf("int64"))]);
  return [val(ctx.add1("Reshape", [ctx.tf(x, `${node.name}/x`), shape], node.name), "tf", length1d(s), x.dtype)];
};

const squeeze: OpConverter = (ctx, node, ins) => {
  const x = arg(ins, 0, node);
  const axes = attrInts(node, "squeeze_dims") ?? attrInts(node, "axis") ?? [];
  if (axes.length === 0) return [val(ctx.add1("Squeeze", [ctx.tf(x)], node.name), "tf", undefined, x.dtype)];
  const rank = x.rank === undefined ? undefined : x.rank - axes.length;
  if (x.layout === "nchw") {
    const tfAxes = axes.map((a) => ((a % 4) + 4) % 4);
    if (isIncreasing(TO_NCHW.filter((d) => !tfAxes.includes(d)))) {
      return [
        val(ctx.add1("Squeeze", [x.name as string, ctx.int64(tfAxes.map(nchwAxis))], node.name), "tf", rank, x.dtype),
      ];
    }
  }
  return [val(ctx.add1("Squeeze", [ctx.tf(x), ctx.int64(axes)], node.name), "tf", rank, x.dtype)];
};

const expandDims: OpConverter = (ctx, node, ins) => {
  const x = arg(ins, 0, node);
  const axis = constInts(arg(ins, 1, node), node, "axis");
  const rank = x.rank ?? x.constant?.shape.length;
  return [
    val(
      ctx.add1("Unsqueeze", [ctx.tf(x, `${node.name}/x`), ctx.int64(axis)], node.name),
      "tf",
      rank === undefined ? undefined : rank + 1,
      x.dtype,
    ),
  ];
};

const concat: OpConverter = (ctx, node, ins) => {
  const values = ins.slice(0, -1);
  const axis = constInts(arg(ins, ins.length - 1, node), node, "axis")[0] ?? 0;
  const dtype = values.find((v) => !v.constant)?.dtype ?? arg(values, 0, node).dtype;
  const rank = values.map((v) => v.rank ?? v.constant?.shape.length).find((r) => r !== undefined);
  const toNchw =
    values.some((v) => v.layout === "nchw") &&
    values.every((v) => v.layout === "nchw" || v.rank === 4 || v.constant?.shape.length === 4);
  if (toNchw) {
    const names = values.map((v, i) => ctx.nchw(v, `${node.name}/${i}`));
    return [val(ctx.add1("Concat", names, node.name, [intAttr("axis", nchwAxis(axis))]), "nchw", 4, dtype)];
  }
  const names = values.map((v, i) => ctx.tf(v, `${node.name}/${i}`));
  return [val(ctx.add1("Concat", names, node.name, [intAttr("axis", axis)]), "tf", rank, dtype)];
};

const pack: OpConverter = (ctx, node, ins) => {
  const axis = attrInt(node, "axis", 0);
  const first = arg(ins, 0, node);
  if (axis === 0 && ins.every((v) => v.constant && v.constant.shape.length === 0)) {
    const data = ins.map((v) => v.constant?.data[0] ?? 0);
    const dtype = first.constant?.dtype ?? "float32";
    const constant: ConstTensor = {
      dtype,
      shape: [ins.length],
      data:
        dtype === "float32"
          ? Float32Array.from(data)
          : dtype === "int32"
            ? Int32Array.from(data)
            : Uint8Array.from(data),
    };
    return [{ layout: "tf", rank: 1, dtype: first.dtype, constant, len: ins.length }];
  }
  const parts = ins.map((v, i) =>
    ctx.add1("Unsqueeze", [ctx.tf(v, `${node.name}/${i}`), ctx.int64([axis])], `${node.name}/${i}`),
  );
  const rank = first.rank ?? first.constant?.shape.length;
  const dtype = ins.find((v) => !v.constant)?.dtype ?? first.dtype;
  const out = val(
    ctx.add1("Concat", parts, node.name, [intAttr("axis", axis)]),
    "tf",
    rank === undefined ? undefined : rank + 1,
    dtype,
  );
  if (rank === 0) out.len = ins.length;
  return [out];
};

const shape: OpConverter = (ctx, node, ins) => {
  const x = arg(ins, 0, node);
  const to = tfDtype(attrType(node, "out_type") ?? "DT_INT32");
  let s: string;
  if (x.layout === "nchw") {
    // the TF shape of a channels-first value: gather its dims back into NHWC order
    const raw = ctx.add1("Shape", [x.name as string], `${node.name}/nchw`);
    s = ctx.add1("Gather", [raw, ctx.int64([0, 2, 3, 1])], `${node.name}/nhwc`, [intAttr("axis", 0)]);
  } else s = ctx.add1("Shape", [ctx.tf(x, `${node.name}/x`)], `${node.name}/i64`);
  const out = val(ctx.add1("Cast", [s], node.name, [intAttr("to", dataTypeOf(to))]), "tf", 1, to);
  out.len = x.rank;
  return [out];
};

const stridedSlice: OpConverter = (ctx, node, ins) => {
  const x = arg(ins, 0, node);
  const begin = constInts(arg(ins, 1, node), node, "begin");
  const end = constInts(arg(ins, 2, node), node, "end");
  const strides = constInts(arg(ins, 3, node), node, "strides");
  const [bm, em, ellipsis, newAxis, shrink] = [
    "begin_mask",
    "end_mask",
    "ellipsis_mask",
    "new_axis_mask",
    "shrink_axis_mask",
  ].map((k) => attrInt(node, k, 0)) as [number, number, number, number, number];
  const rankIn = x.rank ?? x.constant?.shape.length;
  if (ellipsis && rankIn === undefined)
    throw new Error(`StridedSlice ${node.name}: ellipsis_mask on a value of unknown rank`);
  const starts: number[] = [];
  const ends: number[] = [];
  const axes: number[] = [];
  const steps: number[] = [];
  const shrinkAxes: number[] = [];
  const newAxes: number[] = [];
  let ax = 0;
  let outPos = 0;
  for (let i = 0; i < begin.length; i++) {
    const bit = 1 << i;
    if (ellipsis & bit) {
      // the ellipsis stands for every axis the other (non-new-axis) specs leave out
      let named = 0;
      for (let j = 0; j < begin.length; j++) if (j !== i && !(newAxis & (1 << j))) named++;
      const span = (rankIn ?? 0) - named;
      ax += span;
      outPos += span;
      continue;
    }
    if (newAxis & bit) {
      newAxes.push(outPos++);
      continue;
    }
    const s = strides[i] ?? 1;
    const b = begin[i] ?? 0;
    if (shrink & bit) {
      starts.push(b);
      ends.push(b === -1 ? BIG : b + 1);
      steps.push(1);
      axes.push(ax);
      shrinkAxes.push(ax++);
      continue;
    }
    starts.push(bm & bit ? (s > 0 ? 0 : BIG) : b);
    ends.push(em & bit ? (s > 0 ? BIG : -BIG) : (end[i] ?? 0));
    steps.push(s);
    axes.push(ax++);
    outPos++;
  }
  let y = ctx.add1(
    "Slice",
    [ctx.tf(x, `${node.name}/x`), ctx.int64(starts), ctx.int64(ends), ctx.int64(axes), ctx.int64(steps)],
    shrinkAxes.length || newAxes.length ? `${node.name}/slice` : node.name,
  );
  if (shrinkAxes.length)
    y = ctx.add1("Squeeze", [y, ctx.int64(shrinkAxes)], newAxes.length ? `${node.name}/squeeze` : node.name);
  if (newAxes.length) y = ctx.add1("Unsqueeze", [y, ctx.int64(newAxes)], node.name);
  const rank = rankIn === undefined ? undefined : rankIn - shrinkAxes.length + newAxes.length;
  return [val(y, "tf", rank, x.dtype)];
};

const softmax: OpConverter = (ctx, node, ins) => {
  const x = arg(ins, 0, node);
  if (x.layout === "nchw")
    return [val(ctx.add1("Softmax", [x.name as string], node.name, [intAttr("axis", 1)]), "nchw", 4)];
  return [val(ctx.add1("Softmax", [ctx.tf(x, `${node.name}/x`)], node.name, [intAttr("axis", -1)]), "tf", x.rank)];
};

const cast: OpConverter = (ctx, node, ins) => {
  const x = arg(ins, 0, node);
  const to = tfDtype(attrType(node, "DstT"));
  if (x.constant && to !== "int64") {
    const d = x.constant.data;
    const data =
      to === "float32"
        ? Float32Array.from(d)
        : to === "int32"
          ? Int32Array.from(d, Math.trunc)
          : Uint8Array.from(d, (v) => (v ? 1 : 0));
    return [
      {
        layout: "tf",
        rank: x.constant.shape.length,
        dtype: to,
        constant: { dtype: to, shape: x.constant.shape, data },
      },
    ];
  }
  return [
    {
      ...sameLayout(x, ctx.add1("Cast", [xName(ctx, x, node)], node.name, [intAttr("to", dataTypeOf(to))])),
      dtype: to,
      len: x.len,
    },
  ];
};

const depthToSpace: OpConverter = (ctx, node, ins) => {
  requireNhwc(node);
  const x = arg(ins, 0, node);
  // TF's NHWC depth order (block row, block column, channel) is ONNX's DCR mode
  const attrs = [intAttr("blocksize", attrInt(node, "block_size", 2)), stringAttr("mode", "DCR")];
  return [val(ctx.add1("DepthToSpace", [ctx.nchw(x, `${node.name}/x`)], node.name, attrs), "nchw", 4)];
};

function resize(mode: "linear" | "nearest"): OpConverter {
  return (ctx, node, ins) => {
    const x = arg(ins, 0, node);
    const size = arg(ins, 1, node);
    const xn = ctx.nchw(x, `${node.name}/x`);
    const alignCorners = attrBool(node, "align_corners", false);
    const halfPixel = attrBool(node, "half_pixel_centers", false);
    const nc = ctx.add1(
      "Slice",
      [ctx.add1("Shape", [xn], `${node.name}/shape`), ctx.int64([0]), ctx.int64([2])],
      `${node.name}/nc`,
    );
    const hw = size.constant
      ? ctx.int64(Array.from(size.constant.data, Number))
      : ctx.add1("Cast", [ctx.tf(size)], `${node.name}/hw`, [intAttr("to", dataTypeOf("int64"))]);
    const sizes = ctx.add1("Concat", [nc, hw], `${node.name}/sizes`, [intAttr("axis", 0)]);
    const attrs = [stringAttr("mode", mode)];
    if (mode === "linear") {
      attrs.push(
        stringAttr(
          "coordinate_transformation_mode",
          alignCorners ? "align_corners" : halfPixel ? "half_pixel" : "asymmetric",
        ),
      );
    } else {
      attrs.push(
        stringAttr(
          "coordinate_transformation_mode",
          alignCorners ? "align_corners" : halfPixel ? "tf_half_pixel_for_nn" : "asymmetric",
        ),
      );
      attrs.push(stringAttr("nearest_mode", alignCorners ? "round_prefer_ceil" : "floor"));
    }
    return [val(ctx.add1("Resize", [xn, "", "", sizes], node.name, attrs), "nchw", 4)];
  };
}

const transpose: OpConverter = (ctx, node, ins) => {
  const x = arg(ins, 0, node);
  const p = constInts(arg(ins, 1, node), node, "perm");
  if (x.constant) return [{ layout: "tf", rank: p.length, dtype: x.dtype, constant: transposeConst(x.constant, p) }];
  if (x.layout === "nchw" && p.length === 4) {
    // transpose(tf(x), p) = transpose(x_nchw, q∘p) with q = NCHW → NHWC
    const composed = p.map((d) => TO_NHWC[d] ?? d);
    return [val(ctx.add1("Transpose", [x.name as string], node.name, [perm(composed)]), "tf", 4, x.dtype)];
  }
  return [val(ctx.add1("Transpose", [ctx.tf(x, `${node.name}/x`)], node.name, [perm(p)]), "tf", p.length, x.dtype)];
};

const gather: OpConverter = (ctx, node, ins) => {
  const x = arg(ins, 0, node);
  const idx = arg(ins, 1, node);
  const axis = constInts(arg(ins, 2, node), node, "axis")[0] ?? 0;
  if (attrInt(node, "batch_dims", 0) !== 0) throw new Error(`GatherV2 ${node.name}: batch_dims is not supported`);
  const xr = x.rank ?? x.constant?.shape.length;
  const ir = idx.rank ?? idx.constant?.shape.length;
  const rank = xr === undefined || ir === undefined ? undefined : xr - 1 + ir;
  const y = ctx.add1("Gather", [ctx.tf(x, `${node.name}/x`), ctx.tf(idx, `${node.name}/indices`)], node.name, [
    intAttr("axis", axis),
  ]);
  return [val(y, "tf", rank, x.dtype)];
};

const gatherNd: OpConverter = (ctx, node, ins) => {
  const x = arg(ins, 0, node);
  const idx = arg(ins, 1, node);
  const i64 = ctx.add1("Cast", [ctx.tf(idx, `${node.name}/indices`)], `${node.name}/indices_i64`, [
    intAttr("to", dataTypeOf("int64")),
  ]);
  return [val(ctx.add1("GatherND", [ctx.tf(x, `${node.name}/x`), i64], node.name), "tf", undefined, x.dtype)];
};

/** numpy-style matmul with TF's adjoint flags (transpose of the last two dims) */
const batchMatMul: OpConverter = (ctx, node, ins) => {
  const side = (v: Value, adj: boolean, tag: string): string => {
    if (!adj) return ctx.tf(v, `${node.name}/${tag}`);
    const r = v.rank ?? v.constant?.shape.length;
    if (r === undefined) throw new Error(`BatchMatMulV2 ${node.name}: adjoint of a value of unknown rank`);
    const p = [...Array.from({ length: r - 2 }, (_, i) => i), r - 1, r - 2];
    if (v.constant) return ctx.initializer(transposeConst(v.constant, p), `${node.name}/${tag}T`);
    return ctx.add1("Transpose", [ctx.tf(v)], `${node.name}/${tag}T`, [perm(p)]);
  };
  const a = arg(ins, 0, node);
  const b = arg(ins, 1, node);
  const ra = a.rank ?? a.constant?.shape.length;
  const rb = b.rank ?? b.constant?.shape.length;
  const rank = ra === undefined || rb === undefined ? undefined : Math.max(ra, rb);
  const y = ctx.add1(
    "MatMul",
    [side(a, attrBool(node, "adj_x", false), "a"), side(b, attrBool(node, "adj_y", false), "b")],
    node.name,
  );
  return [val(y, "tf", rank, a.dtype)];
};

function toInt64(ctx: ConversionContext, v: Value, stem: string): string {
  if (v.constant) return ctx.int64(Array.from(v.constant.data, Number), v.constant.shape);
  return ctx.add1("Cast", [ctx.tf(v)], stem, [intAttr("to", dataTypeOf("int64"))]);
}

const tile: OpConverter = (ctx, node, ins) => {
  const x = arg(ins, 0, node);
  const y = ctx.add1(
    "Tile",
    [ctx.tf(x, `${node.name}/x`), toInt64(ctx, arg(ins, 1, node), `${node.name}/repeats`)],
    node.name,
  );
  return [val(y, "tf", x.rank ?? x.constant?.shape.length, x.dtype)];
};

const range: OpConverter = (ctx, node, ins) => {
  const [start, limit, delta] = [0, 1, 2].map((i) => arg(ins, i, node));
  const names = [start, limit, delta].map((v, i) => ctx.tf(v as Value, `${node.name}/${i}`));
  return [val(ctx.add1("Range", names, node.name), "tf", 1, (start as Value).dtype)];
};

/** TF Fill(dims, value): a tensor of `dims` filled with the scalar `value` */
const fill: OpConverter = (ctx, node, ins) => {
  const dims = arg(ins, 0, node);
  const value = arg(ins, 1, node);
  const y = ctx.add1(
    "Expand",
    [ctx.tf(value, `${node.name}/value`), toInt64(ctx, dims, `${node.name}/dims`)],
    node.name,
  );
  return [val(y, "tf", dims.constant?.data.length ?? dims.len, value.dtype)];
};

const zerosLike: OpConverter = (ctx, node, ins) => {
  const x = arg(ins, 0, node);
  const src = xName(ctx, x, node);
  const zero = ctx.initializer(
    {
      dtype: x.dtype === "int32" ? "int32" : "float32",
      shape: [],
      data: x.dtype === "int32" ? new Int32Array(1) : new Float32Array(1),
    },
    `${node.name}/zero`,
  );
  const shapeOf = ctx.add1("Shape", [src], `${node.name}/shape`);
  return [sameLayout(x, ctx.add1("Expand", [zero, shapeOf], node.name))];
};

/** atan2 from Atan: atan(y/x), moved by ±π where x < 0 (ONNX has no Atan2) */
const atan2: OpConverter = (ctx, node, ins) => {
  const y = ctx.tf(arg(ins, 0, node), `${node.name}/y`);
  const x = ctx.tf(arg(ins, 1, node), `${node.name}/x`);
  const n = node.name;
  const base = ctx.add1("Atan", [ctx.add1("Div", [y, x], `${n}/ratio`)], `${n}/atan`);
  const zero = ctx.float([0], [], `${n}/zero`);
  const shift = ctx.add1(
    "Where",
    [
      ctx.add1("GreaterOrEqual", [y, zero], `${n}/y_nonneg`),
      ctx.float([Math.PI], [], `${n}/pi`),
      ctx.float([-Math.PI], [], `${n}/minus_pi`),
    ],
    `${n}/shift`,
  );
  const shifted = ctx.add1("Add", [base, shift], `${n}/shifted`);
  const out = ctx.add1("Where", [ctx.add1("Less", [x, zero], `${n}/x_neg`), shifted, base], n);
  const a = arg(ins, 0, node);
  return [val(out, "tf", a.rank ?? a.constant?.shape.length)];
};

const identity: OpConverter = (_ctx, node, ins) => [arg(ins, 0, node)];

export const converters: Record<string, OpConverter> = {
  Conv2D: conv(false),
  _FusedConv2D: conv(false),
  DepthwiseConv2dNative: conv(true),
  FusedDepthwiseConv2dNative: conv(true),
  MatMul: matmul(false),
  _FusedMatMul: matmul(true),
  Add: elementwise("Add"),
  AddV2: elementwise("Add"),
  BiasAdd: elementwise("Add"),
  AddN: elementwise("Sum"),
  Sub: elementwise("Sub"),
  Mul: elementwise("Mul"),
  RealDiv: elementwise("Div"),
  Maximum: elementwise("Max"),
  Minimum: elementwise("Min"),
  Pow: elementwise("Pow"),
  Relu: unary("Relu"),
  Relu6: relu6,
  Elu: unary("Elu"),
  LeakyRelu: unary("LeakyRelu", (n) => [floatAttr("alpha", attrFloat(n, "alpha", 0.2))]),
  Sigmoid: unary("Sigmoid"),
  Tanh: unary("Tanh"),
  Abs: unary("Abs"),
  Neg: unary("Neg"),
  Exp: unary("Exp"),
  Log: unary("Log"),
  Sqrt: unary("Sqrt"),
  Floor: unary("Floor"),
  Ceil: unary("Ceil"),
  Sin: unary("Sin"),
  Cos: unary("Cos"),
  Reciprocal: unary("Reciprocal"),
  Rsqrt: rsqrt,
  Square: square,
  Prelu: prelu,
  MaxPool: pool("MaxPool"),
  AvgPool: pool("AveragePool"),
  Mean: reduce("ReduceMean"),
  Sum: reduce("ReduceSum"),
  Max: reduce("ReduceMax"),
  Min: reduce("ReduceMin"),
  Prod: reduce("ReduceProd"),
  Pad: pad,
  PadV2: pad,
  MirrorPad: pad,
  Reshape: reshape,
  Squeeze: squeeze,
  ExpandDims: expandDims,
  ConcatV2: concat,
  Pack: pack,
  Shape: shape,
  StridedSlice: stridedSlice,
  Softmax: softmax,
  Cast: cast,
  DepthToSpace: depthToSpace,
  ResizeBilinear: resize("linear"),
  ResizeNearestNeighbor: resize("nearest"),
  Transpose: transpose,
  GatherV2: gather,
  GatherNd: gatherNd,
  BatchMatMulV2: batchMatMul,
  BatchMatMul: batchMatMul,
  Tile: tile,
  Range: range,
  Fill: fill,
  ZerosLike: zerosLike,
  Atan2: atan2,
  Less: elementwise("Less", "bool"),
  LessEqual: elementwise("LessOrEqual", "bool"),
  Greater: elementwise("Greater", "bool"),
  GreaterEqual: elementwise("GreaterOrEqual", "bool"),
  Equal: elementwise("Equal", "bool"),
  LogicalAnd: elementwise("And", "bool"),
  LogicalOr: elementwise("Or", "bool"),
  Identity: identity,
  StopGradient: identity,
  Snapshot: identity,
};
