import * as ort from "onnxruntime-node";
import { describe, expect, it } from "vitest";
import {
  DataType,
  decodeModel,
  dims,
  encodeModel,
  intsAttr,
  makeNode,
  makeTensor,
  makeValueInfo,
  onnx,
  opsetVersion,
  tensorToFloat32,
  tensorToInts,
  withExtraOutputs,
} from "./proto.ts";

/** x[1,1,3,3] → Conv(2×1×1×1 weights, bias) → Relu → y; hand-checkable. */
function tinyModel() {
  const graph = onnx.GraphProto.create({
    name: "tiny",
    node: [
      makeNode("Conv", ["x", "w", "b"], ["conv_out"], { attributes: [intsAttr("kernel_shape", [1, 1])] }),
      makeNode("Relu", ["conv_out"], ["y"]),
    ],
    initializer: [
      makeTensor("w", DataType.FLOAT, [2, 1, 1, 1], Float32Array.from([2, -1])),
      makeTensor("b", DataType.FLOAT, [2], Float32Array.from([0.5, 0])),
    ],
    input: [makeValueInfo("x", DataType.FLOAT, [1, 1, 3, 3])],
    output: [makeValueInfo("y", DataType.FLOAT, [1, 2, 3, 3])],
  });
  return onnx.ModelProto.create({ irVersion: 7, opsetImport: [{ domain: "", version: 13 }], graph });
}

describe("ONNX protobuf helpers", () => {
  it("a model built by hand runs in onnxruntime and gives the hand-computed answer", async () => {
    const bytes = encodeModel(tinyModel());
    const session = await ort.InferenceSession.create(bytes);
    const x = Float32Array.from([-2, -1, 0, 1, 2, 3, 4, 5, 6]);
    const { y } = await session.run({ x: new ort.Tensor("float32", x, [1, 1, 3, 3]) });
    const expected = [...x].map((v) => Math.max(0, 2 * v + 0.5)).concat([...x].map((v) => Math.max(0, -v)));
    expect(Array.from(y?.data as Float32Array)).toEqual(expected);
  });

  it("exposing an intermediate tensor as an extra output shows the value before Relu", async () => {
    const model = withExtraOutputs(tinyModel(), ["conv_out"]);
    const session = await ort.InferenceSession.create(encodeModel(model));
    const x = Float32Array.from([-2, -1, 0, 1, 2, 3, 4, 5, 6]);
    const out = await session.run({ x: new ort.Tensor("float32", x, [1, 1, 3, 3]) });
    const convOut = out.conv_out?.data as Float32Array | undefined;
    expect(Array.from(convOut ?? []).slice(0, 2)).toEqual([-3.5, -1.5]);
  });

  it("tensors survive an encode/decode round trip with their values and shapes", () => {
    const model = decodeModel(encodeModel(tinyModel()));
    const [w, b] = model.graph?.initializer ?? [];
    expect(dims(w ?? {})).toEqual([2, 1, 1, 1]);
    expect(Array.from(tensorToFloat32(w ?? {}))).toEqual([2, -1]);
    expect(Array.from(tensorToFloat32(b ?? {}))).toEqual([0.5, 0]);
    expect(opsetVersion(model)).toBe(13);
    const i8 = decodeModel(
      encodeModel(
        onnx.ModelProto.create({
          graph: { initializer: [makeTensor("q", DataType.INT8, [3], Int8Array.from([-128, 0, 127]))] },
        }),
      ),
    );
    expect(tensorToInts(i8.graph?.initializer?.[0] ?? {})).toEqual([-128, 0, 127]);
  });
});
