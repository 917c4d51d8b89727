import * as ort from "onnxruntime-node";
import { describe, expect, it } from "vitest";
import { DataType, encodeModel, makeNode, makeTensor, makeValueInfo, onnx } from "./proto.ts";
import { decomposePRelu } from "./rewrite.ts";

describe("PRelu decomposition", () => {
  it("gives the same numbers as PRelu, for negative, positive and above-one slopes", async () => {
    const slope = Float32Array.from([-1.3, 0, 0.25, 1.2]);
    const model = onnx.ModelProto.create({
      irVersion: 7,
      opsetImport: [{ domain: "", version: 13 }],
      graph: onnx.GraphProto.create({
        node: [makeNode("PRelu", ["x", "s"], ["y"])],
        initializer: [makeTensor("s", DataType.FLOAT, [4, 1, 1], slope)],
        input: [makeValueInfo("x", DataType.FLOAT, [1, 4, 3, 3])],
        output: [makeValueInfo("y", DataType.FLOAT, [1, 4, 3, 3])],
      }),
    });
    const { model: rewritten, replaced } = decomposePRelu(model);
    expect(replaced).toBe(1);
    expect(rewritten.graph?.node?.map((n) => n.opType)).toEqual(["Relu", "Sub", "Mul", "Add"]);
    const x = new ort.Tensor(
      "float32",
      Float32Array.from({ length: 36 }, (_, i) => (i - 18) / 4),
      [1, 4, 3, 3],
    );
    const a = await (await ort.InferenceSession.create(encodeModel(model))).run({ x });
    const b = await (await ort.InferenceSession.create(encodeModel(rewritten))).run({ x });
    const want = a.y?.data as Float32Array;
    const got = b.y?.data as Float32Array;
    // equal up to the sign of zero (PRelu gives -0 where 0 · negative; Relu + … gives +0)
    expect(Array.from(got, (v, i) => Math.abs(v - (want[i] ?? Number.NaN)))).toEqual(new Array(36).fill(0));
  });
});
