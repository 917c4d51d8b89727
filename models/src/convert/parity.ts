/**
 * Parity of a converted model with its source: the same inputs through TF.js (CPU backend) and onnxruntime-node.
 * Test and benchmark support; imports @tensorflow/tfjs (a devDependency).
 */
import * as ort from "onnxruntime-node";
import sharp from "sharp";
import type { ConvertedModel } from "./convert.ts";
import { loadTfjsRunner } from "./tfjs-runtime.ts";

export interface OutputDiff {
  output: string;
  shape: number[];
  maxAbsDiff: number;
  maxAbsRef: number;
  /** maxAbsDiff / max(1, maxAbsRef): absolute for small outputs, relative for large ones */
  scaledDiff: number;
}

export interface ParityCase {
  label: string;
  /** NHWC, batch 1 */
  data: Float32Array;
}

/** Fixed-seed uniform noise in [lo, hi] (mulberry32), so failures reproduce. */
export function noise(n: number, lo: number, hi: number, seed = 1): Float32Array {
  let a = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = lo + (((t ^ (t >>> 14)) >>> 0) / 4294967296) * (hi - lo);
  }
  return out;
}

/** An image stretched to w×h with `channels` (1 = grey, 3 = RGB), pixel 0..255 mapped linearly onto [lo, hi]. */
export async function imageInput(
  path: string,
  w: number,
  h: number,
  channels: number,
  [lo, hi]: [number, number],
): Promise<Float32Array> {
  let img = sharp(path).removeAlpha().resize(w, h, { fit: "fill", kernel: "linear" });
  img = channels === 1 ? img.greyscale() : img.toColourspace("srgb");
  const { data, info } = await img.raw().toBuffer({ resolveWithObject: true });
  if (info.channels !== channels) throw new Error(`${path}: got ${info.channels} channels, wanted ${channels}`);
  return Float32Array.from(data, (p) => lo + ((hi - lo) * p) / 255);
}

/** The fixed input shape (batch 1) of a converted model. */
export function inputShape(model: ConvertedModel): number[] {
  const input = model.inputs[0];
  if (!input) throw new Error("model has no input");
  return input.shape.map((d) => (typeof d === "number" ? d : 1));
}

export async function compareWithTfjs(
  modelJsonPath: string,
  model: ConvertedModel,
  cases: ParityCase[],
): Promise<Record<string, OutputDiff[]>> {
  const input = model.inputs[0];
  if (!input) throw new Error("model has no input");
  const shape = inputShape(model);
  const session = await ort.InferenceSession.create(model.onnx, { intraOpNumThreads: 1 });
  const tfjs = await loadTfjsRunner(modelJsonPath);
  const names = model.outputs.map((o) => o.name);
  const result: Record<string, OutputDiff[]> = {};
  try {
    for (const c of cases) {
      const got = await session.run({ [input.name]: new ort.Tensor("float32", c.data, shape) });
      const want = await tfjs.run(c.data, shape, names);
      result[c.label] = names.map((name, i) => {
        const a = got[name]?.data as Float32Array | undefined;
        const ref = want[i];
        if (!a || !ref) throw new Error(`${name}: missing from one runtime`);
        if (a.length !== ref.data.length)
          throw new Error(`${name}: ${a.length} values from ONNX, ${ref.data.length} from TF.js`);
        let maxAbsDiff = 0;
        let maxAbsRef = 0;
        for (let k = 0; k < a.length; k++) {
          const d = Math.abs((a[k] ?? 0) - (ref.data[k] ?? 0));
          maxAbsDiff = Number.isNaN(d) ? Number.POSITIVE_INFINITY : Math.max(maxAbsDiff, d);
          maxAbsRef = Math.max(maxAbsRef, Math.abs(ref.data[k] ?? 0));
        }
        return {
          output: name,
          shape: ref.shape,
          maxAbsDiff,
          maxAbsRef,
          scaledDiff: maxAbsDiff / Math.max(1, maxAbsRef),
        };
      });
    }
  } finally {
    tfjs.dispose();
    await session.release();
  }
  return result;
}
