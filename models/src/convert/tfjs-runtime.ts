/**
 * The source runtime, for parity tests and benchmarks only: the original TF.js graph executed by @tensorflow/tfjs
 * on its pure-JS CPU backend (a devDependency; nothing at run time imports this file).
 */
import { readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import * as tf from "@tensorflow/tfjs";
import type { TfjsModelJson } from "./tfjs-model.ts";

let ready: Promise<void> | undefined;

async function cpuBackend(): Promise<void> {
  ready ??= (async () => {
    await tf.setBackend("cpu");
    await tf.ready();
  })();
  return ready;
}

export interface TfjsRunner {
  /** run the graph on an NHWC float input, returning the requested TF tensors as flat arrays with their shapes */
  run(input: Float32Array, shape: number[], outputs: string[]): Promise<{ data: Float32Array; shape: number[] }[]>;
  inputName: string;
  dispose(): void;
}

export async function loadTfjsRunner(modelJsonPath: string): Promise<TfjsRunner> {
  await cpuBackend();
  const json = JSON.parse(await readFile(modelJsonPath, "utf8")) as TfjsModelJson;
  const dir = dirname(modelJsonPath);
  const shards: Buffer[] = [];
  for (const group of json.weightsManifest) for (const p of group.paths) shards.push(await readFile(join(dir, p)));
  const all = Buffer.concat(shards);
  const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength) as ArrayBuffer;
  const artifacts = {
    modelTopology: json.modelTopology as unknown as tf.io.ModelArtifacts["modelTopology"],
    format: json.format,
    generatedBy: json.generatedBy,
    convertedBy: json.convertedBy,
    weightSpecs: json.weightsManifest.flatMap((g) => g.weights) as unknown as tf.io.WeightsManifestEntry[],
    weightData,
    signature: json.signature,
  };
  const model = await tf.loadGraphModel(tf.io.fromMemory(artifacts));
  const inputName = model.inputs[0]?.name ?? "input";
  return {
    inputName,
    async run(input, shape, outputs) {
      const x = tf.tensor(input, shape, "float32");
      const ys = (await model.executeAsync({ [inputName]: x }, outputs)) as tf.Tensor | tf.Tensor[];
      const list = Array.isArray(ys) ? ys : [ys];
      const result = await Promise.all(
        list.map(async (y) => ({ data: Float32Array.from(await y.data()), shape: y.shape })),
      );
      tf.dispose([x, ...list]);
      return result;
    },
    dispose: () => model.dispose(),
  };
}
